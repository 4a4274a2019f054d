"""The HTTP server as ``serve`` runs it (uvicorn with ``serve.uvicorn_config``), on the app
with an in-memory gateway: half-sent requests and idle new connections are closed after
``server.request_timeout_seconds``, a body that stops half-way is a 408, and connections
past ``server.max_connections`` are closed at once. Before, uvicorn kept all of them open
(it arms no timer before a connection's first response)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from _fake_gateway import FakeGateway
from test_service_endpoints import make_settings

from interlink_htcondor.cli.serve import uvicorn_config
from interlink_htcondor.service.app import create_app

# Half-sent requests and idle connections opened at once in the test.
HALF_SENT = 300


@contextmanager
def server(tmp_path: Path, **limits: float) -> Iterator[tuple[str, int]]:
    settings = make_settings(tmp_path, server=limits)
    config = uvicorn_config(create_app(settings, gateway=FakeGateway()), settings)
    srv = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def closed_by_server(conns: list[socket.socket], within: float) -> int:
    """How many of ``conns`` the server closes (EOF or reset) within ``within`` s."""
    deadline = time.monotonic() + within
    closed = 0
    for c in conns:
        c.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while c.recv(4096):
                pass
            closed += 1
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
    return closed


def test_half_sent_requests_and_idle_connections_are_closed(tmp_path: Path) -> None:
    with server(tmp_path, request_timeout_seconds=1.0) as addr:
        conns = []
        for i in range(HALF_SENT):
            c = socket.create_connection(addr)
            if i % 3 == 0:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: half-sent
            elif i % 3 == 1:
                c.sendall(b"GET /heal")
            conns.append(c)  # else: connected, nothing sent
        # A kept-alive connection whose second request stops half-way is closed too.
        kept = socket.create_connection(addr)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /healthz HTTP/1.1\r\n")
        conns.append(kept)
        t0 = time.monotonic()
        assert closed_by_server(conns, within=15) == len(conns)
        assert time.monotonic() - t0 < 10
        for c in conns:
            c.close()
        # The server still serves.
        with socket.create_connection(addr) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert c.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_body_that_stops_half_way_is_a_408(tmp_path: Path) -> None:
    with server(tmp_path, request_timeout_seconds=1.0) as addr, socket.create_connection(addr) as c:
        c.sendall(
            b"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"pod": {'
        )
        c.settimeout(15)
        t0 = time.monotonic()
        answer = c.recv(4096)
        assert time.monotonic() - t0 < 10
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"not received within 1 s" in answer


def test_connections_past_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    with server(tmp_path, request_timeout_seconds=30.0, max_connections=20) as addr:
        held = [socket.create_connection(addr) for _ in range(20)]
        extra = [socket.create_connection(addr) for _ in range(10)]
        assert closed_by_server(extra, within=5) == len(extra)
        assert closed_by_server(held[:1], within=0.3) == 0  # within the cap: still open
        for c in held + extra:
            c.close()
        # Once they are gone, new connections are served again.
        deadline = time.monotonic() + 10
        while True:
            with socket.create_connection(addr) as c:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                c.settimeout(5)
                try:
                    if c.recv(4096).startswith(b"HTTP/1.1 200"):
                        break
                except (ConnectionResetError, TimeoutError):
                    pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
