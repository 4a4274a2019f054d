"""The HTTP shell: interLink's plugin API on FastAPI.

Request -> models -> translate -> schedd gateway -> response. Handlers never block the
event loop: binding calls run in the gateway's pool, file reads in threads. ``/status``
is served from the shared job snapshot, never one schedd query per call.

Errors are plain text (interLink shows the body to the user): 400 malformed JSON, 401 no
or wrong bearer token, 404 unknown pod or container for logs, 413 body too large, 422 a
pod the plugin cannot run, 503 the schedd cannot be reached, 500 anything unexpected.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interlink_htcondor import attrs, jobspec, models
from interlink_htcondor.itemdata import SubmitRefused
from interlink_htcondor.logs import LogOptionError, LogOptions, LogSource, follow_log, read_log
from interlink_htcondor.metrics import CONTENT_TYPE, Metrics
from interlink_htcondor.schedd import Capacity, ScheddError, ScheddGateway
from interlink_htcondor.settings import Settings
from interlink_htcondor.snapshot import (
    JobSnapshot,
    MissingJobResolver,
    Snapshot,
    SnapshotUnavailable,
)
from interlink_htcondor.status import (
    COMPLETED,
    FROM_HISTORY,
    IDLE,
    REMOVED,
    FileState,
    PodRef,
    StatusResult,
    pod_status,
    runs_wrapper,
    unmatchable,
)

log = logging.getLogger("interlink_htcondor.server")

SESSION_HEADER = "interlink-http-session"
session_var: contextvars.ContextVar[str] = contextvars.ContextVar("session", default="-")
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz"})
ENDPOINTS = frozenset(
    {"/create", "/status", "/getLogs", "/delete", "/healthz", "/readyz", "/metrics"}
)
READY_CACHE_SECONDS = 5.0
CAPACITY_CACHE_SECONDS = 10.0
DIAGNOSIS_CAPACITY_SECONDS = 60.0
SPOOL_RUNNING_NOTE = (
    "storage.mode is 'spool': the logs of a running container reach the plugin only when "
    "its job has ended and its output was retrieved; ask again then.\n"
)


# ----------------------------------------------------------------------------- errors


class HTTPError(Exception):
    """An answer other than 200, with a message meant for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_response(status: int, message: str) -> Response:
    return PlainTextResponse(message.rstrip("\n") + "\n", status_code=status)


# ----------------------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, session and extras."""

    _STD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "session": session_var.get(),
        }
        for k, v in record.__dict__.items():
            if k not in self._STD and not k.startswith("_") and k != "color_message":
                out[k] = v if isinstance(v, str | int | float | bool | None) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The middleware logs each request (with its session); uvicorn's access log would not.
    logging.getLogger("uvicorn.access").disabled = True


def _clean_session(raw: str | None) -> str:
    if not raw:
        return "-"
    return "".join(ch for ch in raw[:128] if ch.isprintable()) or "-"


# ----------------------------------------------------------------------------- middleware


class Gatekeeper:
    """Pure ASGI middleware: session id, bearer token, body size, metrics, access log.

    Pure ASGI (not BaseHTTPMiddleware) so that streamed logs are not buffered.
    """

    def __init__(
        self, app: ASGIApp, *, token: bytes | None, max_body: int, metrics: Metrics
    ) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        session = _clean_session(headers.get(SESSION_HEADER))
        ctx_token = session_var.set(session)
        path: str = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        start = time.perf_counter()
        code = 500
        first_byte: float | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal code, first_byte
            if message["type"] == "http.response.start":
                code = message["status"]
                first_byte = time.perf_counter()
            await send(message)

        try:
            rejection = self._reject(path, headers)
            if rejection is not None:
                await rejection(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = (first_byte or time.perf_counter()) - start
            self.metrics.observe_request(endpoint, code, elapsed)
            if endpoint not in ("/status", "/metrics", "/healthz", "/readyz") or code >= 400:
                log.info(
                    "request",
                    extra={
                        "method": scope.get("method", ""),
                        "path": endpoint,
                        "status": code,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            session_var.reset(ctx_token)

    def _reject(self, path: str, headers: Mapping[str, str]) -> Response | None:
        if self.token is not None and path not in UNAUTHENTICATED_PATHS:
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), self.token
            )
            if not ok:
                resp = _error_response(401, "a valid bearer token is required")
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error_response(400, "invalid Content-Length")
            if int(length) > self.max_body:
                return _error_response(413, f"request body larger than {self.max_body} bytes")
        return None


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing more than ``limit`` bytes even when chunked."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise HTTPError(400, "the request body is empty; a JSON document is expected")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise HTTPError(400, "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise HTTPError(
            400, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise HTTPError(400, "JSON nested too deeply") from None


# ----------------------------------------------------------------------------- the plugin


@dataclass
class _Cached:
    at: float
    value: Any


Translator = Callable[[models.CreateRequest, Settings], Any]
SandboxFor = Callable[[Settings, str, str, str], Path]


class Plugin:
    """What the endpoints do, apart from HTTP."""

    def __init__(
        self,
        settings: Settings,
        gateway: ScheddGateway,
        metrics: Metrics,
        translate: Translator,
        sandbox_for: SandboxFor,
        translation_error: type[Exception],
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.metrics = metrics
        self._translate = translate
        self._sandbox_for = sandbox_for
        self._translation_error = translation_error
        self.snapshot = JobSnapshot(
            gateway.query_jobs,
            settings.schedd.status_refresh_seconds,
            max_stale_seconds=max(30.0, 10 * settings.schedd.status_refresh_seconds),
            on_refresh=self._on_refresh,
        )
        self.missing = MissingJobResolver(gateway.find_jobs)
        self._removing: set[str] = set()
        self._ready: _Cached | None = None
        self._capacity: _Cached | None = None
        self._capacity_refreshing = False
        self._file_states: dict[str, dict[str, FileState]] = {}
        self._retrieved: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()

    def _on_refresh(self, snap: Any) -> None:
        self.metrics.set_job_counts(snap.state_counts(), snap.wall)

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("background task failed", extra={"task": what})

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        self.gateway.close()

    def sandbox(
        self, namespace: str, name: str, uid: str, ad: Mapping[str, Any] | None
    ) -> Path | None:
        if ad is not None and isinstance(ad.get(attrs.SANDBOX), str) and ad[attrs.SANDBOX]:
            return Path(ad[attrs.SANDBOX])
        try:
            return self._sandbox_for(self.settings, namespace, name, uid)
        except self._translation_error:
            return None  # such a pod could never have been created

    # ------------------------------------------------------------------ create

    async def create(self, raw: Any) -> dict[str, str]:
        try:
            req = models.parse_create_body(raw)
        except ValidationError as e:
            raise HTTPError(422, f"invalid pod data: {models.validation_message(e)}") from None
        except ValueError as e:
            raise HTTPError(422, f"invalid pod data: {e}") from None
        meta = req.pod.metadata
        uid = meta.uid
        log.info("create", extra={"pod": f"{meta.namespace}/{meta.name}", "uid": uid})
        try:
            snap: Snapshot | None = await self.snapshot.get()  # shared, at most ~1 s old
        except SnapshotUnavailable:
            snap = None
        if snap is not None:
            known = self.snapshot.lookup(snap, uid)
            if known is not None and known.get("JobStatus") != REMOVED:
                jid = f"{known.get('ClusterId')}.{known.get('ProcId', 0)}"
                log.info("create: pod already has a job", extra={"uid": uid, "job": jid})
                return {"PodUID": uid, "PodJID": jid}
        loop = asyncio.get_running_loop()
        try:
            plan = await loop.run_in_executor(None, self._translate, req, self.settings)
            sandbox = self._sandbox_for(self.settings, meta.namespace, meta.name, uid)
        except self._translation_error as e:
            raise HTTPError(422, f"pod {meta.namespace}/{meta.name} cannot run: {e}") from None
        try:
            submitted = await self.gateway.submit(plan, sandbox)
        except SubmitRefused as e:
            raise HTTPError(422, f"pod {meta.namespace}/{meta.name} cannot run: {e}") from None
        except ScheddError as e:
            raise HTTPError(503, f"cannot submit pod {meta.namespace}/{meta.name}: {e}") from None
        except OSError as e:
            raise HTTPError(
                500, f"cannot write the sandbox of pod {meta.namespace}/{meta.name}: {e.strerror}"
            ) from None
        if submitted.created:
            self.snapshot.note_submitted(uid, submitted.ad)
            self.missing.forget(uid)
        log.info(
            "create: submitted" if submitted.created else "create: pod already has a job",
            extra={"uid": uid, "job": submitted.job_id},
        )
        return {"PodUID": uid, "PodJID": submitted.job_id}

    # ------------------------------------------------------------------ status

    async def status(self, raw: Any) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise HTTPError(400, "the /status body must be a JSON list of pods")
        pods = [PodRef.from_pod(p) for p in raw if isinstance(p, dict)]
        pods = [p for p in pods if p.uid]
        try:
            snap = await self.snapshot.get()
        except SnapshotUnavailable as e:
            raise HTTPError(503, str(e)) from None
        ads: dict[str, dict[str, Any] | None] = {
            p.uid: self.snapshot.lookup(snap, p.uid) for p in pods
        }
        missing = [p.uid for p in pods if ads[p.uid] is None and p.job_id]
        if missing:
            try:
                ads.update(await self.missing.resolve(missing))
            except Exception as e:
                # Leave those pods out rather than fail the others (or call them lost).
                log.warning("history lookup failed", extra={"error": str(e)})
                for uid in missing:
                    ads[uid] = None
                pods = [p for p in pods if p.uid not in set(missing)]
        now = time.time()
        out: list[dict[str, Any]] = []
        for pod in pods:
            try:
                result = await self._status_of(pod, ads.get(pod.uid), now)
            except Exception:
                log.exception("status mapping failed", extra={"uid": pod.uid})
                continue
            if result is not None:
                out.append(result.status)
        return out

    async def _status_of(
        self, pod: PodRef, ad: dict[str, Any] | None, now: float
    ) -> StatusResult | None:
        file_states = None
        if ad is not None and (ad.get("JobStatus") == COMPLETED or ad.get(FROM_HISTORY)):
            # The job is over: its status.json is final (read once, cached).
            file_states = await self._final_file_states(pod, ad)
        grace = self.settings.policy.held_grace_seconds
        diagnosis = None
        if ad is not None and ad.get("JobStatus") == IDLE:
            diagnosis = self._diagnose(ad)
        result = pod_status(
            pod,
            ad,
            now=now,
            held_grace_seconds=grace,
            file_states=file_states,
            diagnosis=diagnosis,
        )
        if (
            result is not None
            and result.terminal
            and file_states is None
            and ad is not None
            and not self.gateway.spool
            and runs_wrapper(ad)
        ):
            # About to answer a terminal state that interLink will cache for good: take it
            # from status.json, which also carries the messages the chirped states cannot.
            sandbox = self.sandbox(pod.namespace, pod.name, pod.uid, ad)
            if sandbox is not None:
                live = await asyncio.get_running_loop().run_in_executor(
                    None, read_status_file, sandbox / STATUS_FILE
                )
                result = pod_status(pod, ad, now=now, held_grace_seconds=grace, file_states=live)
        if result is not None and result.remove_reason and ad is not None:
            jid = result.status["JID"]
            if jid not in self._removing:
                if len(self._removing) > 10_000:
                    self._removing.clear()  # a bound; at worst a job is removed twice
                self._removing.add(jid)
                log.warning("removing held job", extra={"job": jid, "reason": result.remove_reason})
                self.spawn(self.gateway.remove_job(jid, result.remove_reason), "remove held job")
        return result

    def _diagnose(self, ad: Mapping[str, Any]) -> str | None:
        """Why an idle job can never match, from the last known slot sizes (never waits:
        a stale or missing capacity is refreshed in the background)."""
        now = time.monotonic()
        cached = self._capacity
        if (cached is None or now - cached.at >= DIAGNOSIS_CAPACITY_SECONDS) and (
            not self._capacity_refreshing
        ):
            self._capacity_refreshing = True
            self.spawn(self._refresh_capacity(), "refresh capacity")
        if cached is None:
            return None
        capacity: Capacity = cached.value
        return unmatchable(ad, capacity.largest)

    async def _refresh_capacity(self) -> None:
        try:
            self._capacity = _Cached(time.monotonic(), await self.gateway.capacity())
        finally:
            self._capacity_refreshing = False

    async def _final_file_states(
        self, pod: PodRef, ad: Mapping[str, Any]
    ) -> dict[str, FileState] | None:
        """Final container states from the job's status.json (chirp may have missed some)."""
        jid = f"{ad.get('ClusterId')}.{ad.get('ProcId')}"
        if jid in self._file_states:
            return self._file_states[jid]
        sandbox = self.sandbox(pod.namespace, pod.name, pod.uid, ad)
        if sandbox is None:
            return None
        if self.gateway.spool:
            await self._ensure_retrieved(jid, ad)
        states = await asyncio.get_running_loop().run_in_executor(
            None, read_status_file, sandbox / STATUS_FILE
        )
        if len(self._file_states) > 10_000:
            self._file_states.clear()
        self._file_states[jid] = states
        return states

    async def _ensure_retrieved(self, jid: str, ad: Mapping[str, Any]) -> None:
        if jid in self._retrieved or ad.get("JobStatus") != COMPLETED:
            return
        try:
            await self.gateway.retrieve(jid)
            if len(self._retrieved) > 10_000:
                self._retrieved.clear()  # a bound; at worst an output is retrieved again
            self._retrieved.add(jid)
        except ScheddError as e:
            log.warning("output retrieval failed", extra={"job": jid, "error": str(e)})

    # ------------------------------------------------------------------ ping / ready

    async def ready(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._ready is not None and now - self._ready.at < READY_CACHE_SECONDS:
            return self._ready.value  # type: ignore[no-any-return]
        try:
            await self.gateway.ping()
            value = (True, "schedd reachable")
        except ScheddError as e:
            value = (False, str(e))
        self._ready = _Cached(now, value)
        return value

    async def ping(self) -> tuple[int, dict[str, Any]]:
        ok, why = await self.ready()
        if not ok:
            return 503, {"status": "error", "message": f"HTCondor pool not ready: {why}"}
        now = time.monotonic()
        if self._capacity is None or now - self._capacity.at >= CAPACITY_CACHE_SECONDS:
            try:
                self._capacity = _Cached(now, await self.gateway.capacity())
            except ScheddError as e:
                return 503, {"status": "error", "message": f"HTCondor collector: {e}"}
        cap: Capacity = self._capacity.value
        policy = self.settings.policy
        resources = models.PingResources(
            cpu=str(cap.cpus),
            memory=f"{cap.memory_mib}Mi",
            pods=str(policy.max_pods or max(cap.cpus, 1)),
            accelerators=(
                [models.Accelerator(resource_type="nvidia.com/gpu", available=str(cap.gpus))]
                if cap.gpus
                else []
            ),
        )
        body = models.PingResponse(status="ok", resources=resources).wire()
        if policy.node_taints is None:
            body.pop("taints", None)  # leave the node's taints alone
        else:
            body["taints"] = [t.model_dump() for t in policy.node_taints]
        return 200, body

    # ------------------------------------------------------------------ logs

    async def logs(self, raw: Any) -> Response:
        if not isinstance(raw, dict):
            raise HTTPError(400, "the /getLogs body must be a JSON object")
        try:
            req = models.LogRequest.model_validate(raw)
            opts = LogOptions.from_opts(raw.get("Opts") or {})
        except ValidationError as e:
            raise HTTPError(422, f"invalid log request: {models.validation_message(e)}") from None
        except LogOptionError as e:
            raise HTTPError(400, f"invalid log options: {e}") from None
        pod = f"{req.namespace}/{req.pod_name}"
        if opts.previous:
            raise HTTPError(
                400,
                f"previous terminated container {req.container_name!r} in pod {pod} not "
                "found (containers are never restarted)",
            )
        ad = await self._find_job(req.pod_uid)
        if ad is None:
            raise HTTPError(404, f"pod {pod} (uid {req.pod_uid}) is not known to this plugin")
        names = _split(ad.get(attrs.INIT_CONTAINERS)) + _split(ad.get(attrs.CONTAINERS))
        if req.container_name not in names:
            raise HTTPError(404, f"container {req.container_name!r} is not in pod {pod}")
        sandbox = self.sandbox(req.namespace, req.pod_name, req.pod_uid, ad)
        if sandbox is None:
            raise HTTPError(404, f"pod {pod} has no sandbox")
        name = req.container_name
        if runs_wrapper(ad):
            source = LogSource((sandbox / jobspec.LOG_DIR / f"{name}.log",))
        else:
            source = LogSource((sandbox / f"{name}.stdout", sandbox / f"{name}.stderr"), cri=False)
        if self.gateway.spool:
            jid = f"{ad.get('ClusterId')}.{ad.get('ProcId')}"
            if ad.get("JobStatus") != COMPLETED:
                return PlainTextResponse(SPOOL_RUNNING_NOTE)
            await self._ensure_retrieved(jid, ad)
        if not opts.follow:
            data = await asyncio.get_running_loop().run_in_executor(None, read_log, source, opts)
            return Response(data, media_type="text/plain; charset=utf-8")

        async def is_done() -> bool:
            return await self._container_done(req.pod_uid, req.container_name)

        return StreamingResponse(
            _guard_stream(follow_log(source, opts, is_done)),
            media_type="text/plain; charset=utf-8",
        )

    async def _find_job(self, uid: str) -> dict[str, Any] | None:
        try:
            snap = await self.snapshot.get()
        except SnapshotUnavailable as e:
            raise HTTPError(503, str(e)) from None
        ad = self.snapshot.lookup(snap, uid)
        if ad is None:
            try:
                ad = (await self.missing.resolve([uid])).get(uid)
            except Exception as e:
                raise HTTPError(503, f"cannot look the pod up in the schedd history: {e}") from e
        return ad

    async def _container_done(self, uid: str, container: str) -> bool:
        try:
            snap = await self.snapshot.get()
        except SnapshotUnavailable:
            return False  # keep following; the schedd may come back
        ad = self.snapshot.lookup(snap, uid)
        if ad is None:
            return True  # the job left the queue: nothing more will be written
        ref = PodRef(uid=uid, name="", namespace="")
        result = pod_status(
            ref, ad, now=time.time(), held_grace_seconds=self.settings.policy.held_grace_seconds
        )
        if result is None:
            return True
        for c in result.status["containers"] + result.status["initContainers"]:
            if c["name"] == container:
                return "terminated" in c["state"]
        return True

    # ------------------------------------------------------------------ delete

    async def delete(self, raw: Any) -> str:
        if not isinstance(raw, dict):
            raise HTTPError(400, "the /delete body must be a JSON pod object")
        try:
            ref = models.PodRef.model_validate(raw)
        except ValidationError as e:
            raise HTTPError(422, f"invalid pod: {models.validation_message(e)}") from None
        meta = ref.metadata
        uid = meta.uid
        grace = _grace_seconds(raw)
        snap = self.snapshot.current
        ad = self.snapshot.lookup(snap, uid) if snap is not None else None
        sandbox = self.sandbox(meta.namespace, meta.name, uid, ad)
        log.info("delete", extra={"pod": f"{meta.namespace}/{meta.name}", "uid": uid})
        try:
            removed = await self.gateway.remove_pod(uid, "pod deleted through interLink")
        except ScheddError as e:
            raise HTTPError(
                503, f"cannot remove the job of pod {meta.namespace}/{meta.name}: {e}"
            ) from None
        self.snapshot.note_deleted(uid)
        self.missing.forget(uid)
        gone = True
        if removed:
            # The wrapper runs preStop hooks on SIGTERM, within the grace period.
            try:
                gone = await self.gateway.wait_gone(uid, min(grace + 10, 60))
            except ScheddError:
                gone = False
        if gone:
            await self.gateway.run("clean", lambda: self.gateway.clean_pod_files(uid, sandbox))
            return f"pod {meta.namespace}/{meta.name} deleted\n"
        self.spawn(self._finish_delete(uid, sandbox), "finish delete")
        return f"pod {meta.namespace}/{meta.name} is being deleted\n"

    async def _finish_delete(self, uid: str, sandbox: Path | None) -> None:
        """The job outlived the grace period: force it out, then clean up."""
        if not await self.gateway.wait_gone(uid, 300):
            for ad in await self.gateway.jobs_of(uid):
                jid = f"{ad.get('ClusterId')}.{ad.get('ProcId')}"
                await self.gateway.remove_job(jid, "pod deleted; grace period over", force=True)
            await self.gateway.wait_gone(uid, 60)
        await self.gateway.run("clean", lambda: self.gateway.clean_pod_files(uid, sandbox))


STATUS_FILE = "status.json"


def read_status_file(path: Path) -> dict[str, FileState]:
    """Container states the wrapper wrote (``status.json``), by container name; anything
    unreadable gives no states (the job's own exit code is used then)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    out: dict[str, FileState] = {}
    if not isinstance(data, dict):
        return out
    for key in ("init_containers", "containers"):
        group = data.get(key)
        for value in group if isinstance(group, list) else []:
            state = _state_from_json(value)
            if state is not None and isinstance(value.get("name"), str):
                out[value["name"]] = state
    return out


def _state_from_json(value: Any) -> FileState | None:
    """One entry of the wrapper's ``status.json`` (see ``jobside/wrapper.py``)."""
    if not isinstance(value, dict):
        return None
    state = value.get("state")
    if state not in ("waiting", "running", "terminated"):
        return None
    try:
        return FileState(
            attrs.ContainerState(
                state,
                int(value.get("exit_code") or 0),
                str(value.get("reason") or ""),
                int(value.get("started") or 0),
                int(value.get("finished") or 0),
            ),
            str(value.get("message") or ""),
            int(value.get("restart_count") or 0),
        )
    except (TypeError, ValueError):
        return None


def _split(v: Any) -> list[str]:
    return [x for x in v.split(",") if x] if isinstance(v, str) else []


def _grace_seconds(pod: Mapping[str, Any]) -> int:
    spec = pod.get("spec")
    if isinstance(spec, dict):
        v = spec.get("terminationGracePeriodSeconds")
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 3600:
            return v
    return 30


async def _guard_stream(gen: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failing follow ends the stream with a note rather than a broken connection."""
    try:
        async for chunk in gen:
            yield chunk
    except Exception as e:
        log.exception("log follow failed")
        yield f"\n[interlink-htcondor: log stream ended: {type(e).__name__}]\n".encode()


# ----------------------------------------------------------------------------- app


def _default_translation() -> tuple[Translator, SandboxFor, type[Exception]]:
    from interlink_htcondor import translate as t

    return t.translate, t.sandbox_dir, t.TranslationError


def create_app(
    settings: Settings,
    *,
    gateway: ScheddGateway | None = None,
    bearer_token: bytes | None = None,
) -> FastAPI:
    """The plugin's ASGI app. Nothing contacts the schedd until a request needs it.

    ``bearer_token`` is the token already read (``serve`` reads it before dropping
    privileges); otherwise ``server.bearer_token_file`` is read here.
    """
    metrics = Metrics()
    gw = gateway or ScheddGateway(settings, observer=metrics.observe_schedd)
    translate, sandbox_for, translation_error = _default_translation()
    plugin = Plugin(settings, gw, metrics, translate, sandbox_for, translation_error)
    limit = settings.server.max_request_bytes

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await plugin.close()

    app = FastAPI(
        title="interlink-htcondor",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.plugin = plugin

    @app.exception_handler(HTTPError)
    async def _http_error(_: Request, exc: HTTPError) -> Response:
        if exc.status >= 500:
            log.error("request failed", extra={"status": exc.status, "error": exc.message})
        return _error_response(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.error("unexpected error", exc_info=exc)
        return _error_response(
            500, f"internal error in the plugin (session {session_var.get()}); see its log"
        )

    @app.post("/create")
    async def create(request: Request) -> Response:
        return JSONResponse(await plugin.create(await read_json(request, limit)))

    @app.get("/status")
    async def status(request: Request) -> Response:
        raw = await read_json(request, limit)
        if raw == []:
            code, body = await plugin.ping()
            return JSONResponse(body, status_code=code)
        return JSONResponse(await plugin.status(raw))

    @app.get("/getLogs")
    async def get_logs(request: Request) -> Response:
        return await plugin.logs(await read_json(request, limit))

    @app.post("/delete")
    async def delete(request: Request) -> Response:
        return PlainTextResponse(await plugin.delete(await read_json(request, limit)))

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        ok, why = await plugin.ready()
        return JSONResponse(
            {"status": "ok" if ok else "not ready", "schedd": why}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    token = bearer_token or _read_token(settings.server.bearer_token_file)
    app.add_middleware(Gatekeeper, token=token, max_body=limit, metrics=metrics)
    return app


def _read_token(path: Path | None) -> bytes | None:
    if path is None:
        return None
    token = path.read_bytes().strip()
    if not token:
        raise ValueError(f"bearer token file {path} is empty")
    return token
