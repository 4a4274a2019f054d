"""``interlink-htcondor pool up|env|status|down|logs|exec``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import config, daemons, host
from .errors import PoolError
from .pool import down, ensure_up, read_info
from .state import PoolInfo, default_paths


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = (
        "A personal HTCondor pool with Apptainer on this machine, for development, demos and "
        f"CI. State: ${'{'}INTERLINK_HTCONDOR_POOL_DIR{'}'} or ~/.cache/interlink-htcondor."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start the pool (build what is missing); idempotent")
    up.add_argument(
        "--slots",
        type=int,
        default=None,
        help=f"concurrent one-CPU job slots (default {config.PoolConfig.slots})",
    )
    up.add_argument(
        "--slot-memory",
        type=int,
        default=None,
        metavar="MIB",
        help=f"memory per slot in MiB (default {config.PoolConfig.slot_memory_mib})",
    )
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"collector port on 127.0.0.1 (default {config.PoolConfig.port})",
    )
    up.add_argument(
        "--timeout", type=float, default=180, help="seconds to wait for the daemons (default 180)"
    )
    up.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub.add_parser("env", help="print `export NAME=value` lines configuring clients")
    sub.add_parser("status", help="show the daemons, slots and queue")
    sub.add_parser("down", help="stop the pool: no condor process and no mount left")
    ex = sub.add_parser(
        "exec",
        help="run an HTCondor tool inside the pool, e.g. `pool exec condor_q -nobatch`",
        description="Run a command (condor_q, condor_status, condor_hold, condor_rm, ...) "
        "inside the pool's namespaces, where HTCondor's tools and configuration live, as "
        "the owner of the plugin's jobs. The arguments are passed as they are (no shell); "
        "the exit code is the command's.",
    )
    ex.add_argument(
        "--user",
        default=None,
        help=f"run as this user of the pool (default {config.JOB_USER}, the jobs' owner; "
        "root is the queue's administrator)",
    )
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND [ARG ...]")
    logs = sub.add_parser("logs", help="print the end of a daemon's log")
    logs.add_argument("daemon", nargs="?", default="master", choices=sorted(daemons.LOG_FILES))
    logs.add_argument("-n", "--lines", type=int, default=40, help="lines to print (default 40)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")


def run(args: argparse.Namespace, name: str) -> int:
    """Run the action; a ``PoolError`` is the caller's to report."""
    return _ACTIONS[args.action](args)


def _up(args: argparse.Namespace) -> int:
    info = ensure_up(
        slots=args.slots,
        slot_memory_mib=args.slot_memory,
        port=args.port,
        timeout=args.timeout,
        say=None if args.quiet else _say,
    )
    if not args.quiet:
        _say(
            f"running: condor_master pid {info.master_pid}, collector {info.collector}, "
            f'{info.slots} slots; configure a shell with: eval "$(interlink-htcondor pool env)"'
        )
    return 0


def _say(msg: str) -> None:
    print(f"pool: {msg}", file=sys.stderr, flush=True)


def _require_info() -> PoolInfo:
    info = read_info()
    if info is None:
        raise PoolError("the pool is not running; start it with: interlink-htcondor pool up")
    return info


def _env(args: argparse.Namespace) -> int:
    sys.stdout.write(config.export_lines(_require_info().client_env()))
    return 0


def _status(args: argparse.Namespace) -> int:
    info = _require_info()
    print(
        f"pool: running, condor_master pid {info.master_pid}, collector {info.collector}, "
        f"{info.slots} slots x {info.slot_memory_mib} MiB, state {info.state_dir}"
    )
    for title, argv in (
        ("daemons", ["condor_status", "-any", "-af", "MyType", "Name"]),
        ("slots", ["condor_status"]),
        ("queue", ["condor_q", "-allusers", "-nobatch"]),
    ):
        r = daemons.condor_tool(info.init_pid, *argv)
        print(f"\n== {title} ==")
        sys.stdout.write((r.stdout or r.stderr).decode(errors="replace"))
    sys.stdout.flush()
    return 0


def _down(args: argparse.Namespace) -> int:
    was_running = down(say=_say)
    _say("stopped" if was_running else "was not running; nothing of it is left")
    return 0


def _logs(args: argparse.Namespace) -> int:
    path = default_paths().condor_logs / daemons.LOG_FILES[args.daemon]
    if not path.exists():
        raise PoolError(f"no log yet at {path}")
    return tail_log(path, args.lines, args.follow)


def tail_log(path: Path, lines: int, follow: bool) -> int:
    """``tail`` a log file to this terminal (``-F`` to follow it); Ctrl-C ends it quietly."""
    argv = ["tail", "-n", str(max(lines, 0))]
    if follow:
        argv.append("-F")
    sys.stdout.flush()
    try:
        return subprocess.run([*argv, str(path)], check=False).returncode
    except KeyboardInterrupt:
        return 0


def _exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise PoolError("give the command to run, e.g.: interlink-htcondor pool exec condor_q")
    host.require_root("running a command inside the pool")
    info = _require_info()
    user = args.user or info.job_user
    env = daemons.namespace_env(user)
    if "TERM" in os.environ:  # for tools that page or colour their output
        env["TERM"] = os.environ["TERM"]
    sys.stdout.flush()
    try:
        return subprocess.run(
            daemons.namespace_argv(info.init_pid, argv, user=user), env=env, check=False
        ).returncode
    except KeyboardInterrupt:
        return 130


_ACTIONS = {
    "up": _up,
    "env": _env,
    "status": _status,
    "down": _down,
    "logs": _logs,
    "exec": _exec,
}
