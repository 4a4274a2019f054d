"""HTTP client of the plugin API, speaking exactly what interLink sends.

Used by the ``submit``/``status``/``logs`` commands and by ``PluginCluster``. Works over
TCP (optionally TLS and a bearer token) or a unix socket (``unix:///path``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

Json = dict[str, Any]


class PluginError(Exception):
    """The plugin answered with a non-200 status; ``detail`` is its message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"plugin answered {status}: {detail}")
        self.status = status
        self.detail = detail


def _transport_args(url: str) -> tuple[str, dict[str, Any]]:
    if url.startswith("unix://"):
        return "http://plugin", {"transport": httpx.AsyncHTTPTransport(uds=url[len("unix://") :])}
    return url.rstrip("/"), {}


class PluginClient:
    """Async client; one per event loop. ``close()`` (or ``async with``) when done."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        verify: bool | str = True,
        timeout: float = 60.0,
        session: str | None = None,
    ) -> None:
        base, extra = _transport_args(url)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if session:
            headers["InterLink-Http-Session"] = session
        self._http = httpx.AsyncClient(
            base_url=base, headers=headers, verify=verify, timeout=timeout, **extra
        )

    async def __aenter__(self) -> PluginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any) -> httpx.Response:
        resp = await self._http.request(method, path, json=body)
        if resp.status_code != 200:
            raise PluginError(resp.status_code, resp.text)
        return resp

    async def create(
        self,
        pod: Json,
        *,
        configmaps: Sequence[Json] = (),
        secrets: Sequence[Json] = (),
        projected: Sequence[Json] = (),
    ) -> Json:
        """POST /create with a RetrievedPodData body; returns ``{"PodUID", "PodJID"}``."""
        body = create_body(pod, configmaps, secrets, projected)
        result: Json = (await self._call("POST", "/create", body)).json()
        return result

    async def status(self, pods: Sequence[Json]) -> Any:
        """GET /status with a JSON list of pods (``[]`` is the ping)."""
        return (await self._call("GET", "/status", list(pods))).json()

    async def logs(self, namespace: str, name: str, uid: str, container: str, **opts: Any) -> str:
        body = log_request(namespace, name, uid, container, **opts)
        return (await self._call("GET", "/getLogs", body)).text

    async def follow_logs(
        self, namespace: str, name: str, uid: str, container: str, **opts: Any
    ) -> AsyncIterator[str]:
        body = log_request(namespace, name, uid, container, Follow=True, **opts)
        async with self._http.stream("GET", "/getLogs", json=body, timeout=None) as resp:
            if resp.status_code != 200:
                raise PluginError(resp.status_code, (await resp.aread()).decode(errors="replace"))
            async for chunk in resp.aiter_text():
                yield chunk

    async def delete(self, pod: Json) -> None:
        await self._call("POST", "/delete", pod)


def container_data(
    pod: Json, configmaps: Sequence[Json], secrets: Sequence[Json], projected: Sequence[Json]
) -> list[Json]:
    """The ``container`` list interLink sends: init containers first, each with the
    ConfigMaps/Secrets its pod references (as the API server attaches them)."""
    spec = pod.get("spec") or {}
    names = [c["name"] for c in (spec.get("initContainers") or [])]
    names += [c["name"] for c in (spec.get("containers") or [])]
    return [
        {
            "name": n,
            "configMaps": list(configmaps),
            "projectedvolumemaps": list(projected),
            "secrets": list(secrets),
            "emptyDirs": None,
        }
        for n in names
    ]


def create_body(
    pod: Json,
    configmaps: Sequence[Json] = (),
    secrets: Sequence[Json] = (),
    projected: Sequence[Json] = (),
) -> Json:
    """Exactly what interLink sends to /create (a RetrievedPodData)."""
    return {"pod": pod, "container": container_data(pod, configmaps, secrets, projected)}


def log_request(namespace: str, name: str, uid: str, container: str, **opts: Any) -> Json:
    defaults: Json = {
        "Tail": 0,
        "Bytes": 0,
        "Timestamps": False,
        "Follow": False,
        "Previous": False,
        "SinceSeconds": 0,
        "SinceTime": None,
    }
    unknown = set(opts) - set(defaults)
    if unknown:
        raise TypeError(f"unknown log options: {sorted(unknown)}")
    return {
        "Namespace": namespace,
        "PodUID": uid,
        "PodName": name,
        "ContainerName": container,
        "Opts": {**defaults, **opts},
    }
