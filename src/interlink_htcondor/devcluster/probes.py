"""Readiness probes of the components: HTTPS with the cluster's CA and a client certificate,
HTTP over the plugin's unix socket, HTTP on loopback. Each returns None when ready, else the
reason it is not (one line)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx

TIMEOUT = 5.0


def tls_context(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """Verify against ``ca`` (no verification when None: self-signed serving certificates of
    the controller manager and scheduler), with an optional client certificate."""
    if ca is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def https_ok(url: str, ctx: ssl.SSLContext, expect: str | None = None) -> str | None:
    try:
        r = httpx.get(url, verify=ctx, timeout=TIMEOUT)
    except httpx.HTTPError as e:
        return f"{url}: {e.__class__.__name__}: {e}"
    if r.status_code != 200:
        return f"{url}: HTTP {r.status_code}: {r.text[:200]}"
    if expect is not None and expect not in r.text:
        return f"{url}: unexpected answer {r.text[:200]!r}"
    return None


def _unix(socket: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=TIMEOUT)


def unix_ok(socket: Path, method: str, path: str) -> str | None:
    """HTTP ``method path`` over the unix socket answers 200."""
    if not socket.exists():
        return f"no socket at {socket} yet"
    try:
        with _unix(socket) as c:
            r = c.request(method, f"http://localhost{path}")
    except httpx.HTTPError as e:
        return f"{socket} {path}: {e.__class__.__name__}: {e}"
    if r.status_code != 200:
        return f"{socket} {path}: HTTP {r.status_code}: {r.text[:200]}"
    return None


def plugin_ready(socket: Path) -> str | None:
    if not socket.exists():
        return f"no socket at {socket} yet"
    try:
        with _unix(socket) as c:
            r = c.get("http://plugin/readyz")
    except httpx.HTTPError as e:
        return f"plugin socket: {e.__class__.__name__}: {e}"
    if r.status_code != 200:
        return f"plugin /readyz: HTTP {r.status_code}: {r.text[:200]}"
    return None


def plugin_ping(socket: Path) -> Any:
    """The plugin's answer to interLink's ping (``GET /status`` with the body ``[]``)."""
    with _unix(socket) as c:
        r = c.request(
            "GET",
            "http://plugin/status",
            content=b"[]",
            headers={"Content-Type": "application/json"},
        )
    if r.status_code != 200:
        raise ValueError(f"the plugin's ping answered HTTP {r.status_code}: {r.text[:200]}")
    return json.loads(r.text)
