"""configurable-http-proxy, JupyterHub's proxy, from the npm registry: installed once into a
prefix of the pool's state directory at a pinned version, reused after."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

from interlink_htcondor.devpool.errors import PoolError
from interlink_htcondor.devpool.host import run_step

from .errors import HubError

PACKAGE = "configurable-http-proxy"
VERSION = "5.3.0"


def command(prefix: Path) -> Path:
    return prefix / "node_modules" / ".bin" / PACKAGE


def installed_version(prefix: Path) -> str:
    try:
        meta = json.loads((prefix / "node_modules" / PACKAGE / "package.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(meta.get("version", ""))


def ensure(prefix: Path, log: Path) -> Path:
    """The proxy's command, installed with npm when missing or at another version."""
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version(prefix) == VERSION and command(prefix).exists():
            return command(prefix)
        _ensure_node(log)
        npm = shutil.which("npm")
        assert npm is not None
        env = {**os.environ, "npm_config_update_notifier": "false"}
        argv = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
        try:
            run_step(
                [*argv, f"{PACKAGE}@{VERSION}"],
                log,
                f"npm install {PACKAGE}@{VERSION}",
                env=env,
                timeout=600,
            )
        except PoolError as e:
            raise HubError(str(e)) from None
        if installed_version(prefix) != VERSION:
            raise HubError(f"npm did not install {PACKAGE} {VERSION} into {prefix} (log: {log})")
        return command(prefix)


def _ensure_node(log: Path) -> None:
    """Node.js and npm, from Debian when missing (as root)."""
    if shutil.which("node") and shutil.which("npm"):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise HubError(
            "the hub's proxy needs Node.js and npm; install them (apt-get install nodejs npm)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(PoolError):
        run_step(["apt-get", "update", "-q"], log, "apt-get update", env=env)
    try:
        run_step(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nodejs", "npm"],
            log,
            "installing nodejs and npm",
            env=env,
        )
    except PoolError as e:
        raise HubError(str(e)) from None
