"""A real personal HTCondor + Apptainer pool for development, demos and CI.

Debian sid's ``minicondor`` daemons and ``apptainer`` run from a root file system built once
with debootstrap, in a mount namespace of their own (see ``docs/pool.md``).

Python API::

    info = ensure_up()            # idempotent; PoolInfo of the running pool
    info = read_info()            # PoolInfo, or None when the pool is down
    info.apply_client_env()       # point the htcondor2 bindings at it
    base = embedded_settings(info)  # plugin settings base for settings.load(base=...)
    info.run_in_pool(["apptainer", "exec", str(info.images["busybox"]), "true"])
"""

from __future__ import annotations

from .config import JOB_GID, JOB_UID, JOB_USER, PoolConfig
from .errors import PoolError
from .pool import down, embedded_settings, ensure_up, read_info
from .state import PoolInfo, PoolPaths, default_paths, state_dir

__all__ = [
    "JOB_GID",
    "JOB_UID",
    "JOB_USER",
    "PoolConfig",
    "PoolError",
    "PoolInfo",
    "PoolPaths",
    "default_paths",
    "down",
    "embedded_settings",
    "ensure_up",
    "read_info",
    "state_dir",
]
