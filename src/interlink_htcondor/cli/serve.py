"""``interlink-htcondor serve``: run the plugin API (uvicorn).

Configuration: ``--config FILE`` (YAML) with ``INTERLINK_HTCONDOR_*`` environment overrides.
Without ``--config``, a running personal pool (``interlink-htcondor pool up``) provides the
embedded default: its collector, token, shared directory, job user and local images.

Started as root, the plugin reads its config, token and TLS key, creates its socket, then
drops to ``server.run_as`` (the jobs' owner) before it serves or touches HTCondor. It
refuses to serve as root: sandboxes must belong to the jobs' owner, and nothing in the
plugin needs root once the listener exists.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import pwd
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interlink_htcondor.cli import UsageError
from interlink_htcondor.settings import ConfigError, Settings, load

log = logging.getLogger("interlink_htcondor.serve")

DEFAULT_BACKLOG = 2048
KEEP_ALIVE_SECONDS = 125


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = (
        "Serve interLink's plugin API. Without --config, use the running personal pool "
        "(embedded default)."
    )
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--host", help="TCP address to listen on (server.host)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (server.port)")
    parser.add_argument("--socket", type=Path, help="listen on this unix socket (server.socket)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="server.log_level"
    )


def run(args: argparse.Namespace, name: str) -> int:
    if args.socket is not None and (args.host is not None or args.port is not None):
        raise UsageError("--socket cannot be combined with --host/--port")
    settings = resolve_settings(args)
    from interlink_htcondor.service.json_logging import configure_logging

    configure_logging(settings.server.log_level)
    srv = settings.server
    account = _target_account(srv.run_as)
    sock = _listen(settings, account)
    ssl_context = _tls_context(settings)
    token = _read_token(srv.bearer_token_file)
    if account is not None:
        _drop_privileges(account)
    _enterable_working_directory()
    where = str(srv.socket) if srv.socket else f"{srv.host}:{sock.getsockname()[1]}"
    log.info(
        "serving",
        extra={
            "listen": where,
            "tls": ssl_context is not None,
            "user": pwd.getpwuid(os.geteuid()).pw_name,
            "storage": settings.storage.mode,
            "containers": settings.containers.mode,
        },
    )
    _serve(settings, sock, ssl_context, token)
    return 0


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Settings from --config (or the embedded default), the environment and the flags."""
    base: dict[str, Any] | None = None
    if args.config is None:
        from interlink_htcondor import devpool

        info = devpool.read_info()
        if info is not None:
            base = devpool.embedded_settings(info)
    try:
        settings = load(args.config, base)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    except ValidationError as e:
        raise UsageError(f"invalid settings: {_one_line(e)}") from None
    server_updates: dict[str, Any] = {}
    if args.host is not None:
        server_updates["host"] = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise UsageError(f"--port {args.port} is not a TCP port")
        server_updates["port"] = args.port
    if args.host is not None or args.port is not None:
        server_updates["socket"] = None
    if args.socket is not None:
        server_updates["socket"] = args.socket
    if args.log_level is not None:
        server_updates["log_level"] = args.log_level
    if server_updates:
        server = settings.server.model_copy(update=server_updates)
        settings = settings.model_copy(update={"server": server})
    if settings.server.socket is not None and (
        settings.server.tls_cert is not None or settings.server.tls_key is not None
    ):
        raise UsageError("TLS applies to TCP only; a unix socket is protected by its mode")
    if (settings.server.tls_cert is None) != (settings.server.tls_key is None):
        raise UsageError("server.tls_cert and server.tls_key must be set together")
    return settings


def _one_line(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _target_account(run_as: str) -> pwd.struct_passwd | None:
    """The account to switch to, or None to stay as we are. Root never serves."""
    if os.geteuid() != 0:
        if run_as and pwd.getpwuid(os.geteuid()).pw_name != run_as:
            logging.getLogger(__name__).warning(
                "not root: cannot switch to server.run_as; serving as the current user",
                extra={"run_as": run_as},
            )
        return None
    if not run_as:
        raise UsageError(
            "refusing to serve as root: set server.run_as to the jobs' owner (the plugin "
            "drops to it after creating its listener)"
        )
    try:
        account = pwd.getpwnam(run_as)
    except KeyError:
        raise UsageError(f"server.run_as: no such user {run_as!r}") from None
    if account.pw_uid == 0:
        raise UsageError(f"server.run_as {run_as!r} is root; name an unprivileged user")
    return account


def _listen(settings: Settings, account: pwd.struct_passwd | None) -> socket.socket:
    srv = settings.server
    if srv.socket is None:
        family = socket.AF_INET6 if ":" in srv.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((srv.host, srv.port))
        except OSError as e:
            sock.close()
            raise UsageError(f"cannot listen on {srv.host}:{srv.port}: {e.strerror}") from None
        sock.listen(DEFAULT_BACKLOG)
        return sock
    path = srv.socket
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o750, parents=True)
        if account is not None:
            os.chown(parent, account.pw_uid, account.pw_gid)
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window where the socket is wider than asked
    try:
        sock.bind(str(path))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {path}: {e.strerror}") from None
    finally:
        os.umask(old_umask)
    path.chmod(srv.socket_mode)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    sock.listen(DEFAULT_BACKLOG)
    return sock


def _remove_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink()
            return
        raise UsageError(f"cannot check {path}: {e.strerror}") from None
    finally:
        probe.close()
    raise UsageError(f"{path} is in use by another running server")


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    srv = settings.server
    if srv.tls_cert is None or srv.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(srv.tls_cert), str(srv.tls_key))
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot load the TLS certificate/key: {e}") from None
    return ctx


def _read_token(path: Path | None) -> bytes | None:
    from interlink_htcondor.service.app import read_token

    try:
        return read_token(path)
    except OSError as e:
        raise UsageError(f"cannot read server.bearer_token_file {path}: {e.strerror}") from None
    except ValueError:
        raise UsageError(f"server.bearer_token_file {path} is empty") from None


def _drop_privileges(account: pwd.struct_passwd) -> None:
    os.initgroups(account.pw_name, account.pw_gid)
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    with contextlib.suppress(PermissionError):
        os.setuid(0)
        raise UsageError("privilege drop failed: root could be regained")
    os.environ.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    os.umask(0o022)


def _enterable_working_directory() -> None:
    """The schedd worker processes start in this working directory (multiprocessing's
    forkserver enters it by its path): one this user cannot enter, e.g. below a closed
    parent such as ``/root``, would fail every schedd call."""
    try:
        os.chdir(Path.cwd())
    except OSError:
        log.warning("the working directory cannot be entered by its path; serving from /")
        os.chdir("/")


def _serve(
    settings: Settings, sock: socket.socket, ssl_context: ssl.SSLContext | None, token: bytes | None
) -> None:
    import uvicorn

    from interlink_htcondor.service.app import create_app

    config = uvicorn_config(create_app(settings, bearer_token=token), settings)
    config.load()
    config.ssl = ssl_context
    server = uvicorn.Server(config)
    server.run(sockets=[sock])  # uvloop when installed


def uvicorn_config(app: Any, settings: Settings) -> Any:
    """The uvicorn configuration ``serve`` runs ``app`` with."""
    import uvicorn

    from interlink_htcondor.service.connection_limits import guarded_protocol

    srv = settings.server
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # Longer than the Go clients' idle timeout (interLink: 120 s), so that the client,
        # not the server, closes idle connections (no reuse of a just-closed one).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        server_header=False,
        # Half-sent requests and idle new connections are closed; connections are capped.
        http=guarded_protocol(srv.request_timeout_seconds, srv.max_connections),
    )
