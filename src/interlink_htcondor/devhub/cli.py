"""``interlink-htcondor hub up|env|status|down``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

from . import hub
from .errors import HubError
from .state import DEFAULT_USER, HubInfo, HubPorts, default_paths

# The repository's notebooks, when the package runs from a source checkout.
_REPO_NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = (
        "A personal JupyterHub on 127.0.0.1 next to the personal pool: JupyterLab with the "
        "Dask sidebar, whose clusters send their workers to HTCondor through a plugin "
        "serving the pool. State: the pool's state directory, under hub/."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start the pool, the plugin and the hub; idempotent")
    defaults = HubPorts()
    up.add_argument(
        "--port",
        type=int,
        default=defaults.public,
        help=f"the hub's port; the proxy API, hub and plugin take the next three "
        f"(default {defaults.public})",
    )
    up.add_argument(
        "--user", default=DEFAULT_USER, help=f"the user allowed to log in (default {DEFAULT_USER})"
    )
    up.add_argument(
        "--notebooks",
        type=Path,
        default=_REPO_NOTEBOOKS if _REPO_NOTEBOOKS.is_dir() else None,
        help="copy the notebooks of this directory into each new user's home "
        "(default: the repository's notebooks/)",
    )
    up.add_argument("--timeout", type=float, default=300, help="seconds to wait (default 300)")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub.add_parser("env", help="print `export NAME=value` lines: URL, user, password file")
    sub.add_parser("status", help="show the hub and its plugin")
    sub.add_parser("down", help="stop the hub, its proxy, the users' servers and the plugin")


def run(args: argparse.Namespace, name: str) -> int:
    """Run the action; a ``HubError`` is the caller's to report."""
    return _ACTIONS[args.action](args)


def _say(msg: str) -> None:
    print(f"hub: {msg}", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    try:
        p = args.port
        ports = HubPorts(public=p, proxy_api=p + 1, hub=p + 2, plugin=p + 3)
    except ValueError as e:
        raise HubError(str(e)) from None
    notebooks = sorted(args.notebooks.glob("*.ipynb")) if args.notebooks else []
    info = hub.ensure_up(
        ports=ports,
        user=args.user,
        examples=notebooks,
        timeout=args.timeout,
        say=None if args.quiet else _say,
    )
    if not args.quiet:
        _say(
            f"running: {info.url} (user {info.user}, password in {info.password_file}); "
            f"plugin {info.plugin_url}"
        )
    return 0


def _require() -> HubInfo:
    info = hub.read_info()
    if info is None:
        raise HubError("the hub is not running; start it with: interlink-htcondor hub up")
    return info


def _env(args: argparse.Namespace) -> int:
    for k, v in _require().env().items():
        print(f"export {k}={v}")
    return 0


def _status(args: argparse.Namespace) -> int:
    info = _require()
    print(f"hub: running, {info.url}, JupyterHub pid {info.hub_pid}, state {info.root}")
    print(f"plugin: {info.plugin_url} (instance {info.plugin_instance!r}), pid {info.plugin_pid}")
    try:
        ready = httpx.get(info.plugin_url + "/readyz", timeout=10)
        print(f"plugin readiness: {ready.status_code} {ready.text.strip()}")
    except httpx.HTTPError as e:
        print(f"plugin readiness: not answering ({e})")
    print(f"log in as {info.user} with the password in {info.password_file}")
    print(f"logs: {default_paths().logs}")
    return 0


def _down(args: argparse.Namespace) -> int:
    _say("stopped" if hub.down() else "was not running")
    return 0


_ACTIONS = {"up": _up, "env": _env, "status": _status, "down": _down}
