"""The gatekeeper middleware: session id, bearer token, body size, metrics, access log, and
the answer to an unexpected error (a 500 naming the session, to find it in the log).

Pure ASGI (not ``BaseHTTPMiddleware``) so that streamed logs are not buffered.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interlink_htcondor.service.errors import error_response
from interlink_htcondor.service.json_logging import session_var
from interlink_htcondor.service.metrics import Metrics

log = logging.getLogger("interlink_htcondor.server")

SESSION_HEADER = "interlink-http-session"
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz"})
ENDPOINTS = frozenset(
    {
        "/create",
        "/status",
        "/getLogs",
        "/delete",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
)
# Served often and uneventful: logged only when they fail.
QUIET_ENDPOINTS = frozenset({"/status", "/metrics", "/healthz", "/readyz"})


class Gatekeeper:
    """Wraps the app: every request passes here first and is accounted for here last."""

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
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception:
                if first_byte is not None:
                    raise  # the answer is under way: nothing can be added to it
                log.exception("unexpected error")
                message = f"internal error in the plugin (session {session}); see its log"
                await error_response(500, message)(scope, receive, send_wrapper)
        finally:
            elapsed = (first_byte or time.perf_counter()) - start
            self.metrics.observe_request(endpoint, code, elapsed)
            if endpoint not in QUIET_ENDPOINTS or code >= 400:
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
                resp = error_response(401, "a valid bearer token is required")
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, "invalid Content-Length")
            if int(length) > self.max_body:
                return error_response(413, f"request body larger than {self.max_body} bytes")
        return None


def _clean_session(raw: str | None) -> str:
    if not raw:
        return "-"
    return "".join(ch for ch in raw[:128] if ch.isprintable()) or "-"
