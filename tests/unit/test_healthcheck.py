"""The probe used by the chart's exec probes and the image's HEALTHCHECK, against real
HTTP servers on a unix socket and on TLS-wrapped loopback TCP."""

from __future__ import annotations

import contextlib
import http.server
import os
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from interlink_htcondor import settings
from interlink_htcondor.cli import healthcheck, main

TOKEN = "s3cret-token"


class _Handler(http.server.BaseHTTPRequestHandler):
    require_token = False

    def do_GET(self) -> None:
        if self.require_token and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            status = 401
        else:
            status = {"/healthz": 200, "/readyz": 503}.get(self.path, 404)
        body = b"ok" if status == 200 else b"no"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _TokenHandler(_Handler):
    require_token = True


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def _serve(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "plugin.sock")
    with _serve(_UnixServer(path, _Handler)):
        yield path


@pytest.fixture
def token_socket(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "token.sock")
    with _serve(_UnixServer(path, _TokenHandler)):
        yield path


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}.example.org",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    cert, key = _self_signed(tmp_path, "plugin")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    with _serve(server):
        yield port, cert, key


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(settings.ENV_PREFIX):
            monkeypatch.delenv(key)


def test_unix_socket_health_and_readiness(unix_socket: str) -> None:
    assert main(["healthcheck", "--socket", unix_socket, "/healthz"]) == 0
    assert main(["healthcheck", "--socket", unix_socket]) == 0  # /healthz is the default
    assert main(["healthcheck", "--socket", unix_socket, "/readyz"]) == 1


def test_missing_socket_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["healthcheck", "--socket", str(tmp_path / "nothing.sock")]) == 1
    assert "healthcheck: /healthz:" in capsys.readouterr().err


def test_bearer_token_is_sent_and_never_printed(
    token_socket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert main(["healthcheck", "--socket", token_socket]) == 1
    assert main(["healthcheck", "--socket", token_socket, "--token-file", str(token_file)]) == 0
    token_file.write_text("wrong")
    assert main(["healthcheck", "--socket", token_socket, "--token-file", str(token_file)]) == 1
    assert TOKEN not in capsys.readouterr().err


def test_config_with_socket(unix_socket: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"server:\n  socket: {unix_socket}\n")
    assert main(["healthcheck", "--config", str(config)]) == 0
    assert main(["healthcheck", "--config", str(config), "/readyz"]) == 1


def test_config_with_tls_pins_the_servers_certificate(
    tls_server: tuple[int, Path, Path], tmp_path: Path
) -> None:
    port, cert, key = tls_server
    config = tmp_path / "config.yaml"
    # The plugin listens on all addresses; the probe goes to loopback, which the
    # certificate does not name.
    config.write_text(
        f"server:\n  host: 0.0.0.0\n  port: {port}\n  tls_cert: {cert}\n  tls_key: {key}\n"
    )
    assert healthcheck.target_from_config(config).url == f"https://127.0.0.1:{port}"
    assert main(["healthcheck", "--config", str(config)]) == 0
    # Any other certificate is refused.
    other, _ = _self_signed(tmp_path, "other")
    assert main(["healthcheck", "--url", f"https://127.0.0.1:{port}", "--cafile", str(other)]) == 1
    assert main(["healthcheck", "--url", f"https://127.0.0.1:{port}", "--cafile", str(cert)]) == 0


def test_broken_config_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server:\n  prot: 1\n")
    assert main(["healthcheck", "--config", str(config)]) == 1
    assert "healthcheck:" in capsys.readouterr().err


def test_plain_http_url() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    with _serve(server):
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["healthcheck", "--url", url]) == 0
        assert main(["healthcheck", "--url", url, "/readyz"]) == 1
    assert main(["healthcheck", "--url", "ftp://example.org"]) == 1


def test_probe_against_the_real_plugin_app(tmp_path: Path) -> None:
    """The chart's exec probe command, against the plugin itself on a unix socket: alive,
    and not ready while its schedd cannot be reached."""
    import uvicorn

    from interlink_htcondor.service.app import create_app

    sock = str(tmp_path / "plugin.sock")
    cfg = settings.Settings(
        server={"socket": sock},
        schedd={"collector": "127.0.0.1:1", "timeout_seconds": 2, "retries": 0},
        storage={"shared_dir": tmp_path / "pods"},
    )
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), uds=sock, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started
        assert main(["healthcheck", "--socket", sock, "/healthz"]) == 0
        assert main(["healthcheck", "--socket", sock, "/readyz"]) == 1
    finally:
        server.should_exit = True
        thread.join(timeout=30)
