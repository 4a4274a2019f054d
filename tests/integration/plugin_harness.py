"""Helpers of the plugin's integration tests: the real plugin as a subprocess.

``Plugin`` starts ``interlink-htcondor serve`` on loopback with the embedded default
(no --config: the running pool provides it), waits for ``/readyz``, and stops it when the
session ends. ``plugin.restart()`` restarts it mid-flight. Each session tags its jobs with
its own ``policy.instance``, so it sees none of any other session's jobs on the shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import htcondor2
import httpx
import yaml

from interlink_htcondor.client import PluginClient
from interlink_htcondor.client import create_body as client_create_body
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.local_plugin import ServeProcess, force_remove, pool_schedd
from interlink_htcondor.local_plugin import free_port as free_port  # used by the tests

PODS = Path(__file__).resolve().parent.parent / "pods"
T = TypeVar("T")
Json = dict[str, Any]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def load_pod(file: str, **meta: Any) -> Json:
    """A pod from tests/pods with a fresh uid (and a unique name when asked)."""
    path = PODS / file
    pod: Json = (
        json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    )
    pod["metadata"]["uid"] = str(uuid.uuid4())
    pod["metadata"].update(meta)
    return pod


def load_objects(name: str) -> list[Json]:
    return [d for d in yaml.safe_load_all((PODS / name).read_text()) if d]


class Plugin(ServeProcess):
    """A running ``interlink-htcondor serve`` subprocess."""

    def __init__(self, pool: PoolInfo, workdir: Path, **extra_env: str) -> None:
        self.pool = pool
        self.instance = f"test-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        # Where pods may mount hostPath volumes (visible at the same path in the pool).
        self.host_dir = pool.shared_dir / "hostpath" / self.instance
        self.host_dir.mkdir(parents=True, mode=0o755)
        os.chown(self.host_dir, pool.job_uid, pool.job_gid)
        os.chown(self.host_dir.parent, pool.job_uid, pool.job_gid)
        env = {
            **os.environ,
            "INTERLINK_HTCONDOR_POLICY__INSTANCE": self.instance,
            "INTERLINK_HTCONDOR_POLICY__HELD_GRACE_SECONDS": "8",
            "INTERLINK_HTCONDOR_STORAGE__HOST_PATH_ALLOW": json.dumps([str(self.host_dir)]),
            **extra_env,
        }
        super().__init__(env, log_path=workdir / "plugin.log")
        self.starts = 0

    def start(self, timeout: float = 60, attempts: int = 3) -> None:
        """Start and wait for /readyz. The pool is shared with other test sessions, which
        may restart it: a plugin that finds no running pool is started again once the pool
        is back up."""
        from interlink_htcondor import devpool

        for attempt in range(attempts):
            try:
                self.starts += 1
                super().start(timeout)
                return
            except RuntimeError:
                if attempt + 1 == attempts:
                    raise
                self.proc = None
                devpool.ensure_up()
                time.sleep(2)

    def restart(self) -> None:
        self.stop()
        self.start()

    def delete_everything(self) -> None:
        """Delete, through the plugin, every pod this session left (queue and history),
        so that no job or sandbox outlives the session."""
        try:
            self._delete_everything()
        finally:
            shutil.rmtree(self.host_dir, ignore_errors=True)

    def _delete_everything(self) -> None:
        schedd = pool_schedd(self.pool)
        c = f'InterlinkPlugin == "{self.instance}"'
        keys = ["InterlinkPodUID", "InterlinkPodName", "InterlinkPodNamespace"]
        try:
            ads = list(schedd.query(constraint=c, projection=keys))
        except htcondor2.HTCondorException:
            # A schedd restarted during the session (the pool-cycle test) rejects this
            # process's old security session once; the next call negotiates a new one.
            ads = list(schedd.query(constraint=c, projection=keys))
        ads += list(schedd.history(constraint=c, projection=keys, match=10_000))
        pods = {
            ad["InterlinkPodUID"]: {
                "metadata": {
                    "uid": ad["InterlinkPodUID"],
                    "name": ad["InterlinkPodName"],
                    "namespace": ad["InterlinkPodNamespace"],
                },
                "spec": {"terminationGracePeriodSeconds": 2},
            }
            for ad in ads
        }

        async def delete_all() -> None:
            sem = asyncio.Semaphore(8)
            async with self.client() as c:

                async def one(pod: Json) -> None:
                    async with sem:
                        await c.delete(pod)

                await asyncio.gather(*(one(pod) for pod in pods.values()))

        run(delete_all())
        if schedd.query(constraint=c, projection=["ClusterId"], limit=1):
            force_remove(schedd, c, "test session over", grace=2)

    def log_lines(self) -> list[Json]:
        assert self.log_path is not None
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    # -- calls -------------------------------------------------------------------------

    def client(self, **kw: Any) -> PluginClient:
        return PluginClient(self.url, timeout=kw.pop("timeout", 120), **kw)

    def raw(self, method: str, path: str, body: bytes | Any, **headers: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.request(
            method,
            self.url + path,
            content=content,
            headers={"Content-Type": "application/json", **headers},
            timeout=120,
        )

    # Exactly what interLink sends to /create.
    create_body = staticmethod(client_create_body)

    def create(self, pod: Json, **objects: Sequence[Json]) -> Json:
        r = self.raw("POST", "/create", self.create_body(pod, **objects))
        assert r.status_code == 200, r.text
        answer: Json = r.json()
        pod["metadata"].setdefault("annotations", {})["JobID"] = answer["PodJID"]
        return answer

    def status(self, pods: Sequence[Json]) -> list[Json]:
        r = self.raw("GET", "/status", list(pods))
        assert r.status_code == 200, r.text
        result: list[Json] = r.json()
        return result

    def status_of(self, pod: Json) -> Json | None:
        answer = self.status([pod])
        return answer[0] if answer else None

    def logs(self, pod: Json, container: str, **opts: Any) -> str:
        m = pod["metadata"]
        return run(self._logs(m["namespace"], m["name"], m["uid"], container, **opts))

    async def _logs(self, *args: str, **opts: Any) -> str:
        async with self.client() as c:
            return await c.logs(*args, **opts)

    def delete(self, pod: Json) -> httpx.Response:
        return self.raw("POST", "/delete", pod)

    def wait_terminal(self, pods: Sequence[Json], timeout: float = 240) -> dict[str, Json]:
        """Poll (one /status call for all) until every app container has terminated."""
        deadline = time.monotonic() + timeout
        last: dict[str, Json] = {}
        while True:
            for entry in self.status(pods):
                last[entry["UID"]] = entry
            pending = [p for p in pods if not terminal(last.get(p["metadata"]["uid"]))]
            if not pending:
                return last
            if time.monotonic() > deadline:
                names = [p["metadata"]["name"] for p in pending]
                raise AssertionError(
                    f"pods not finished after {timeout} s: {names}\n"
                    f"{json.dumps([last.get(p['metadata']['uid']) for p in pending], indent=1)}"
                )
            time.sleep(1)

    def wait_for(self, pod: Json, predicate: Any, timeout: float = 120) -> Json:
        deadline = time.monotonic() + timeout
        entry: Json | None = None
        while time.monotonic() < deadline:
            entry = self.status_of(pod)
            if entry is not None and predicate(entry):
                return entry
            time.sleep(0.5)
        raise AssertionError(f"condition not reached in {timeout} s; last status: {entry}")


@contextlib.contextmanager
def started(pool: PoolInfo, workdir: Path, **extra_env: str) -> Iterator[Plugin]:
    """A started plugin; afterwards every pod it left is deleted and it is stopped."""
    p = Plugin(pool, workdir, **extra_env)
    p.start()
    try:
        yield p
    finally:
        try:
            p.delete_everything()
        finally:
            p.stop()


def terminal(entry: Json | None) -> bool:
    if not entry or not entry.get("containers"):
        return False
    return all("terminated" in c["state"] for c in entry["containers"])


def state_of(entry: Json, name: str) -> Json:
    for c in entry["containers"] + entry["initContainers"]:
        if c["name"] == name:
            state: Json = c["state"]
            return state
    raise KeyError(name)
