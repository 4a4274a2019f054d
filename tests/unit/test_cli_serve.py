"""``serve``'s settings resolution, root refusal and unix socket (no server started)."""

from __future__ import annotations

import argparse
import os
import socket
import stat
from pathlib import Path

import pytest

from interlink_htcondor.cli import UsageError, serve
from interlink_htcondor.settings import Settings


def args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "config": None,
        "host": None,
        "port": None,
        "socket": None,
        "log_level": None,
    }
    base.update(kw)
    return argparse.Namespace(**base)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_flags_override_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "server:\n  port: 5000\n  socket: /run/x.sock\n")
    s = serve.resolve_settings(args(config=cfg, host="127.0.0.2", port=4100))
    assert (s.server.host, s.server.port, s.server.socket) == ("127.0.0.2", 4100, None)
    s = serve.resolve_settings(args(config=cfg, log_level="debug"))
    assert s.server.socket == Path("/run/x.sock") and s.server.log_level == "debug"


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, "server:\n  port: lots\n  bogus: 1\n")
    with pytest.raises(UsageError) as e:
        serve.resolve_settings(args(config=cfg))
    msg = str(e.value)
    assert "server.port" in msg and "\n" not in msg
    with pytest.raises(UsageError, match="cannot read config"):
        serve.resolve_settings(args(config=tmp_path / "missing.yaml"))


def test_tls_needs_both_files_and_tcp(tmp_path: Path) -> None:
    cfg = write(tmp_path, "server:\n  tls_cert: /c.pem\n")
    with pytest.raises(UsageError, match="together"):
        serve.resolve_settings(args(config=cfg))
    cfg = write(tmp_path, "server:\n  tls_cert: /c.pem\n  tls_key: /k.pem\n  socket: /s\n")
    with pytest.raises(UsageError, match="TCP only"):
        serve.resolve_settings(args(config=cfg))


@pytest.mark.skipif(os.geteuid() != 0, reason="the root refusal applies to root")
def test_root_never_serves_without_run_as() -> None:
    with pytest.raises(UsageError, match="refusing to serve as root"):
        serve._target_account("")
    with pytest.raises(UsageError, match="no such user"):
        serve._target_account("no-such-user-here")
    with pytest.raises(UsageError, match="is root"):
        serve._target_account("root")


def test_unix_socket_mode_and_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "plugin.sock"
    s = Settings(server={"socket": str(path), "socket_mode": 0o660})
    sock = serve._listen(s, None)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
        # A live socket is refused...
        with pytest.raises(UsageError, match="in use"):
            serve._listen(s, None)
    finally:
        sock.close()
    # ...a stale one replaced.
    sock = serve._listen(s, None)
    sock.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(UsageError, match="not a socket"):
        serve._listen(s, None)


def test_tcp_listener_reports_a_busy_port() -> None:
    s = Settings(server={"host": "127.0.0.1", "port": 0})
    sock = serve._listen(s, None)
    try:
        port = sock.getsockname()[1]
        busy = Settings(server={"host": "127.0.0.1", "port": port})
        with pytest.raises(UsageError, match="cannot listen"):
            serve._listen(busy, None)
    finally:
        sock.close()
    assert isinstance(sock, socket.socket)


def test_the_server_leaves_a_working_directory_it_cannot_enter_by_its_path(
    tmp_path: Path,
) -> None:
    # The schedd worker processes start in the server's working directory (run as root,
    # as the suite is).
    import pwd

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    inside = closed / "open"  # open itself, but reached only through a closed parent
    inside.mkdir(mode=0o755)
    account = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops its privileges and reports where it stands
        try:
            os.close(r)
            os.chdir(inside)
            serve._drop_privileges(account)
            serve._enterable_working_directory()
            os.write(w, f"{os.geteuid()} {os.getcwd()}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        report = f.read()
    os.waitpid(pid, 0)
    assert report == f"{account.pw_uid} /"
