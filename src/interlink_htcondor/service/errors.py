"""Answers other than 200: plain text, because interLink shows the body to the user.

The codes: 400 malformed JSON or option values the plugin cannot honour, 401 no or wrong
bearer token, 404 unknown pod or container (logs), 408 a body not received in time
(``server.request_timeout_seconds``), 413 body too large, 422 a body of the wrong shape or
a pod the plugin cannot run, 503 the schedd cannot be reached or does not answer in time,
507 no space left for a pod's sandbox, 500 anything unexpected.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse, Response


class HTTPError(Exception):
    """An answer other than 200, with a message meant for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> Response:
    return PlainTextResponse(message.rstrip("\n") + "\n", status_code=status)
