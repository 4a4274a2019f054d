"""``interlink-htcondor cluster up|env|status|logs|restart|down``."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..devpool.cli import tail_log
from ..devpool.config import export_lines
from . import components
from . import operator as dask_operator
from .cluster import down, ensure_up, health, read_info, restart
from .errors import ClusterError
from .selection import default_paths
from .state import ClusterInfo

BUILD_LOGS = ("build-kubernetes", "build-interlink", "fetch-etcd")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = (
        "A Kubernetes control plane with interLink's API server and virtual kubelet in front "
        "of the personal pool, as local processes on 127.0.0.1. State: "
        "<pool state dir>/cluster; a private cluster instead when "
        "INTERLINK_HTCONDOR_CLUSTER_DIR and INTERLINK_HTCONDOR_CLUSTER_PORT_OFFSET are set "
        "(its own state directory and ports, the same builds and pool)."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start the cluster (and the pool; build what is missing)")
    up.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds to wait for the processes and the node (default 300; builds not counted)",
    )
    up.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub.add_parser("env", help="print `export` lines: KUBECONFIG, and PATH with kubectl first")
    sub.add_parser("status", help="show the processes, the node and the pods")
    names = [*components.BY_NAME, *components.ALIASES]
    logs = sub.add_parser("logs", help="print the end of a component's (or a build's) log")
    logged = [*names, dask_operator.NAME, *BUILD_LOGS]
    logs.add_argument(
        "component",
        choices=logged,
        metavar="COMPONENT",
        help=f"one of: {', '.join(logged)}",
    )
    logs.add_argument("-n", "--lines", type=int, default=40, help="lines to print (default 40)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    rs = sub.add_parser("restart", help="restart one component and wait until it is ready")
    rs.add_argument(
        "component", choices=names, metavar="COMPONENT", help=f"one of: {', '.join(names)}"
    )
    sub.add_parser("down", help="stop every process of the cluster (data and binaries stay)")


def run(args: argparse.Namespace, name: str) -> int:
    """Run the action; a ``ClusterError`` reaches the caller (``cli.cluster`` reports it)."""
    return _ACTIONS[args.action](args)


def _say(msg: str) -> None:
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


def _require_info() -> ClusterInfo:
    info = read_info()
    if info is None:
        raise ClusterError(
            "the cluster is not running; start it with: interlink-htcondor cluster up"
        )
    return info


def _up(args: argparse.Namespace) -> int:
    say = None if args.quiet else _say
    info = ensure_up(timeout=args.timeout, say=say)
    try:
        dask_operator.package_versions()
    except ClusterError as e:  # the add-on needs the dask extra; the cluster works without
        _say(f"the Dask operator is not started: {e}")
    else:
        dask_operator.ensure_operator(info, say=say)
    if not args.quiet:
        _say(
            f"running: API server {info.server}, node {info.node_name}; configure a shell "
            'with: eval "$(interlink-htcondor cluster env)"'
        )
    return 0


def _env(args: argparse.Namespace) -> int:
    info = _require_info()
    sys.stdout.write(export_lines({"KUBECONFIG": str(info.kubeconfig)}))
    sys.stdout.write(f'export PATH={shlex.quote(str(info.kubectl_path.parent))}:"$PATH"\n')
    return 0


def _status(args: argparse.Namespace) -> int:
    info = _require_info()
    print(
        f"cluster: running, API server {info.server}, node {info.node_name}, state {info.state_dir}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()))
    print("\n== processes ==")
    for comp, why in health(info).items():
        state = "ready" if why is None else f"NOT READY: {why}"
        print(f"{comp:<24} pid {info.pids.get(comp, 0):<8} {state}")
    op = dask_operator.read_operator(default_paths())
    if op is None:
        print(f"{dask_operator.NAME:<24} {'':<12} not running (add-on: cluster up starts it)")
    else:
        version = op.versions.get("dask-kubernetes", "?")
        print(f"{dask_operator.NAME:<24} pid {op.pid:<8} ready (dask-kubernetes {version})")
    for title, argv in (
        ("node", ["get", "node", "-o", "wide"]),
        (
            "taints and capacity",
            [
                "get",
                "node",
                info.node_name,
                "-o",
                "jsonpath={.spec.taints}{'\\n'}{.status.capacity}{'\\n'}",
            ],
        ),
        ("pods", ["get", "pods", "-A", "-o", "wide"]),
    ):
        r = info.kubectl(*argv)
        print(f"\n== {title} ==")
        sys.stdout.write((r.stdout or r.stderr).decode(errors="replace"))
    sys.stdout.flush()
    return 0


def _logs(args: argparse.Namespace) -> int:
    paths = default_paths()
    name = args.component
    if name not in (*BUILD_LOGS, dask_operator.NAME):
        name = components.named(name).name
    path = paths.log(name)
    if not path.exists():
        raise ClusterError(f"no log yet at {path}")
    return tail_log(path, args.lines, args.follow)


def _restart(args: argparse.Namespace) -> int:
    info = restart(args.component, say=_say)
    comp = components.named(args.component).name
    _say(f"{comp} restarted, pid {info.pids[comp]}")
    return 0


def _down(args: argparse.Namespace) -> int:
    was_running = down(say=_say)
    _say("stopped" if was_running else "was not running; nothing of it is left")
    return 0


_ACTIONS = {
    "up": _up,
    "env": _env,
    "status": _status,
    "logs": _logs,
    "restart": _restart,
    "down": _down,
}
