"""The HTTP shell: interLink's plugin API on FastAPI.

Request -> models -> translate -> schedd gateway -> response. Handlers never block the
event loop: binding calls run in the gateway's pool, file I/O in threads. Each endpoint's
work is in its own module (``create``, ``status``, ``logs``, ``delete``, ``health``); this
one wires them to routes, with the gatekeeper middleware (which also answers unexpected
errors) and the handler of ``HTTPError``. The status codes are listed in
``service.errors``; the OpenAPI document (``/openapi.json``, behind the token) in
``service.openapi``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from interlink_htcondor.service import create, delete, health, logs, openapi, status
from interlink_htcondor.service.errors import HTTPError, error_response
from interlink_htcondor.service.gatekeeper import Gatekeeper
from interlink_htcondor.service.gateway import Gateway, ScheddGateway
from interlink_htcondor.service.metrics import CONTENT_TYPE, Metrics
from interlink_htcondor.service.request_body import read_body, read_json
from interlink_htcondor.service.sandbox_store import SandboxStore
from interlink_htcondor.service.stalls import StallWatch
from interlink_htcondor.service.state import PluginState
from interlink_htcondor.settings import Settings

log = logging.getLogger("interlink_htcondor.server")

AGE_HEADER = "Snapshot-Age"
STALE_LOG_SECONDS = 30.0


def create_app(
    settings: Settings,
    *,
    gateway: Gateway | None = None,
    bearer_token: bytes | None = None,
) -> FastAPI:
    """The plugin's ASGI app. Nothing contacts the schedd until a request needs it.

    Parameters
    ----------
    settings
        The plugin's settings.
    gateway
        What talks to HTCondor; by default a ``ScheddGateway`` for ``settings.schedd``.
    bearer_token
        The token already read (``serve`` reads it before dropping privileges);
        otherwise ``server.bearer_token_file`` is read here.
    """
    metrics = Metrics()
    gw = gateway or ScheddGateway(settings, observer=metrics.observe_schedd)
    state = PluginState(settings, gw, SandboxStore(settings), metrics)
    limit = settings.server.max_request_bytes
    body_timeout = settings.server.request_timeout_seconds

    async def body(request: Request) -> Any:
        return await read_json(request, limit, body_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What exists now (modules, the app, the settings) lives as long as the process:
        # out of the garbage collector's reach, a full collection walks only the objects
        # made while serving (60 to 150 ms of a /status call's time otherwise).
        gc.collect()
        gc.freeze()
        stalls = StallWatch(metrics)
        stalls.start()
        state.spawn(gw.start(), "start the gateway")
        try:
            yield
        finally:
            await stalls.stop()
            await state.close()

    token = bearer_token or read_token(settings.server.bearer_token_file)
    app = FastAPI(
        title="interlink-htcondor",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.plugin = state

    @app.exception_handler(HTTPError)
    async def _http_error(_: Request, exc: HTTPError) -> Response:
        if exc.status >= 500:
            log.error("request failed", extra={"status": exc.status, "error": exc.message})
        return error_response(exc.status, exc.message)

    @app.post("/create")
    async def create_route(request: Request) -> Response:
        return JSONResponse(await create.create(state, await body(request)))

    cfg = settings.schedd
    stale = _StaleLog(cfg.status_refresh_seconds * 2 + cfg.status_wait_seconds)

    @app.get("/status")
    async def status_route(request: Request) -> Response:
        pods = status.read_pods(state, await read_body(request, limit, body_timeout))
        if pods is None:
            code, answer = await health.ping(state)
            return JSONResponse(answer, status_code=code)
        entries = await status.status(state, pods)
        # How old the job snapshot behind the answer is (stale while the schedd hangs).
        snap = state.snapshot.current
        if snap is None:
            return Response(entries, media_type="application/json")
        age = state.snapshot.age(snap)
        stale.note(age)
        return Response(entries, media_type="application/json", headers={AGE_HEADER: f"{age:.1f}"})

    @app.get("/getLogs")
    async def logs_route(request: Request) -> Response:
        return await logs.get_logs(state, await body(request))

    @app.post("/delete")
    async def delete_route(request: Request) -> Response:
        return PlainTextResponse(await delete.delete(state, await body(request)))

    @app.get("/healthz")
    async def healthz_route() -> Response:
        code, answer = health.healthz()
        return JSONResponse(answer, status_code=code)

    @app.get("/readyz")
    async def readyz_route() -> Response:
        code, answer = await health.readyz(state)
        return JSONResponse(answer, status_code=code)

    document = openapi.document(bearer=token is not None)

    @app.get("/openapi.json")
    async def openapi_route() -> Response:
        return JSONResponse(document)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(health.metrics(state), media_type=CONTENT_TYPE)

    app.add_middleware(Gatekeeper, token=token, max_body=limit, metrics=metrics)
    return app


class _StaleLog:
    """Says, at most every ``STALE_LOG_SECONDS``, that /status serves an old snapshot."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.last = float("-inf")

    def note(self, age: float) -> None:
        now = time.monotonic()
        if age > self.threshold and now - self.last >= STALE_LOG_SECONDS:
            self.last = now
            log.warning(
                "serving an old job snapshot: the schedd does not answer",
                extra={"age_seconds": round(age, 1)},
            )


def read_token(path: Path | None) -> bytes | None:
    """The bearer token in ``path`` (None: no token required)."""
    if path is None:
        return None
    token = path.read_bytes().strip()
    if not token:
        raise ValueError(f"bearer token file {path} is empty")
    return token
