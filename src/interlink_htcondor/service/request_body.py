"""Reading a request's JSON body, bounded in size even when it arrives chunked, and in
time: a client that stops sending half-way gets a 408 instead of holding the request (and
its connection) open for ever."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request

from interlink_htcondor.service.errors import HTTPError


async def read_json(request: Request, limit: int, timeout: float) -> Any:
    """The request body as JSON, refusing more than ``limit`` bytes even when chunked, and
    a body not received within ``timeout`` seconds."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, f"request body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPError(
            408, f"the request body was not received within {timeout:g} s ({size} bytes came)"
        ) from None
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
