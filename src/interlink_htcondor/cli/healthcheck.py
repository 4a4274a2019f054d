"""``interlink-htcondor healthcheck``: probe a running plugin's ``/healthz`` or ``/readyz``;
exit 0 when it answers 200.

Kubernetes ``httpGet`` probes cannot reach a plugin that listens only on a unix socket, and a
container image has no curl, so the chart's exec probes and the image's HEALTHCHECK use this::

    interlink-htcondor healthcheck --socket /run/interlink-htcondor/plugin.sock /readyz
    interlink-htcondor healthcheck --url http://127.0.0.1:4000 /healthz
    interlink-htcondor healthcheck --config /etc/interlink-htcondor/config.yaml

``--config`` finds the listener (socket, or TCP with TLS pinned to the configured
certificate) and the bearer token file from the plugin's own settings. Only the standard
library is imported on the ``--socket``/``--url`` path, so a probe starts fast.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Target:
    """Where the plugin listens: a unix socket path or an http(s) base URL."""

    socket: str | None = None
    url: str | None = None
    cafile: str | None = None  # trust exactly this certificate (or CA bundle) for https
    token_file: str | None = None


def target_from_config(path: Path) -> Target:
    """The listener a plugin started with this config file serves on."""
    from interlink_htcondor.settings import load  # heavier import, only for --config

    server = load(path).server
    token = str(server.bearer_token_file) if server.bearer_token_file else None
    if server.socket is not None:
        return Target(socket=str(server.socket), token_file=token)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(server.host, server.host)  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if server.tls_cert else "http"
    cafile = str(server.tls_cert) if server.tls_cert else None
    return Target(url=f"{scheme}://{host}:{server.port}", cafile=cafile, token_file=token)


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    if target.socket is not None:
        return _UnixConnection(target.socket, timeout)
    parts = urlsplit(target.url or "")
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=target.cafile)
        if target.cafile:
            # Pinned to the server's own certificate: the probe reaches it by a loopback
            # address that the certificate need not name.
            ctx.check_hostname = False
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return http.client.HTTPSConnection(
            parts.hostname or "localhost", parts.port, timeout=timeout, context=ctx
        )
    if parts.scheme == "http":
        return http.client.HTTPConnection(
            parts.hostname or "localhost", parts.port, timeout=timeout
        )
    raise ValueError(f"unsupported URL {target.url!r}: use http:// or https://")


def probe(target: Target, path: str = "/healthz", timeout: float = 5.0) -> tuple[bool, str]:
    """``(ok, one-line reason)``; ok means the plugin answered 200."""
    headers = {"Host": "localhost"}
    if target.token_file:
        try:
            token = Path(target.token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            return False, f"cannot read bearer token file: {e.strerror}"
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn = _connection(target, timeout)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read(4096)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        return False, f"{path}: {type(e).__name__}: {e}"
    return resp.status == 200, f"{path}: HTTP {resp.status} {resp.reason}"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = "Exit 0 if the plugin answers 200 on PATH, 1 otherwise."
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="unix socket the plugin listens on")
    where.add_argument("--url", help="base URL, e.g. http://127.0.0.1:4000")
    where.add_argument("--config", type=Path, help="plugin config file to take the listener from")
    parser.add_argument("--token-file", help="send the bearer token in this file")
    parser.add_argument("--cafile", help="trust this certificate/CA bundle for https")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("path", nargs="?", default="/healthz", help="default /healthz")


def run(args: argparse.Namespace, name: str) -> int:
    if args.config is not None:
        try:
            target = target_from_config(args.config)
        except Exception as e:  # a broken config is an unhealthy plugin, said in one line
            print(f"healthcheck: {e}", file=sys.stderr)
            return 1
        if args.token_file:
            target = Target(target.socket, target.url, target.cafile, args.token_file)
    else:
        target = Target(args.socket, args.url, args.cafile, args.token_file)
    ok, reason = probe(target, args.path, args.timeout)
    if not ok:
        print(f"healthcheck: {reason}", file=sys.stderr)
    return 0 if ok else 1
