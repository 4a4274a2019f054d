"""Pure parts of the development pool: its fixed identities, its HTCondor configuration and the
client environment that points the htcondor2 bindings at it. Nothing here touches the system.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The unprivileged owner of every job. It exists with the same ids on the host (where the plugin
# runs as this user and writes the sandboxes) and in the pool's root filesystem (where the
# starter runs the job as this user).
JOB_USER = "ilhtc"
JOB_UID = 7411
JOB_GID = 7411

# File name of the pool's IDTOKEN inside the token directory.
TOKEN_FILE = "pool.token"  # noqa: S105 (a file name, not a secret)

# Image names the pool builds, to the image references that map to them.
IMAGE_NAMES = ("busybox", "python")
IMAGE_REFERENCE_PATTERNS: dict[str, tuple[str, ...]] = {
    "busybox": ("busybox", "busybox:*", "docker.io/library/busybox:*"),
    "python": (
        "python:3.11*",
        "docker.io/library/python:3.11*",
        "ghcr.io/dask/dask",
        "ghcr.io/dask/dask:*",
    ),
}

CONFIG_FILE_NAME = "99-interlink-htcondor.conf"


@dataclass(frozen=True)
class PoolConfig:
    """The knobs of ``pool up``."""

    slots: int = 8
    slot_memory_mib: int = 2048
    port: int = 9618

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= 256:
            raise ValueError(f"slots must be between 1 and 256, not {self.slots}")
        if not 64 <= self.slot_memory_mib <= 1024 * 1024:
            raise ValueError(f"slot memory must be 64..1048576 MiB, not {self.slot_memory_mib}")
        if not 1024 <= self.port <= 65535:
            raise ValueError(f"port must be 1024..65535, not {self.port}")

    @property
    def collector(self) -> str:
        return f"127.0.0.1:{self.port}"


def condor_config_text(cfg: PoolConfig) -> str:
    """The pool's own configuration file, laid over Debian's minicondor defaults."""
    return f"""\
# Written by `interlink-htcondor pool up` at every start; edits are overwritten.

# Loopback only: the pool is for this machine (advertised addresses and listening sockets).
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = False
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = {cfg.collector}
SHARED_PORT_PORT = {cfg.port}
ENABLE_IPV6 = False

# The starter cannot make its own mount or PID namespace inside the pool's namespace.
MOUNT_UNDER_SCRATCH =
USE_PID_NAMESPACES = False

# One partitionable slot with {cfg.slots} CPUs (oversubscribed on purpose: test jobs mostly wait)
# and {cfg.slot_memory_mib} MiB per CPU, so {cfg.slots} one-CPU jobs run at once.
NUM_CPUS = {cfg.slots}
MEMORY = {cfg.slots * cfg.slot_memory_mib}
NUM_SLOTS = 1
NUM_SLOTS_TYPE_1 = 1
SLOT_TYPE_1 = 100%
SLOT_TYPE_1_PARTITIONABLE = True

# Fast matchmaking and status updates: tests wait on them.
SCHEDD_INTERVAL = 2
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
STARTER_UPDATE_INTERVAL = 2
SHADOW_QUEUE_UPDATE_INTERVAL = 2
UPDATE_INTERVAL = 2
JOB_START_DELAY = 0
RUNBENCHMARKS = False

# Jobs report their containers' state with `condor_chirp set_job_attr`.
ENABLE_CHIRP = True
ENABLE_CHIRP_IO = True
ENABLE_CHIRP_UPDATES = True
ENABLE_CHIRP_DELAYED = True

# Images are Apptainer sandbox directories built with `apptainer build --sandbox`; skip the
# per-job trial run of the image.
SINGULARITY_RUN_TEST_BEFORE_JOB = False
"""


def client_env(
    collector: str,
    token_dir: Path,
    state_dir: Path,
    shared_dir: Path,
    pods_dir: Path,
    job_user: str,
    images: Mapping[str, Path],
) -> dict[str, str]:
    """Environment that points the htcondor2 bindings (and tools) at the pool.

    ``CONDOR_CONFIG=ONLY_ENV`` makes HTCondor read no file at all, so the result is the same in
    every process whatever the machine's own HTCondor configuration. ``token_dir`` must belong
    to the client's user: HTCondor reads only token files the reading user owns.
    """
    env = {
        "CONDOR_CONFIG": "ONLY_ENV",
        "_CONDOR_COLLECTOR_HOST": collector,
        "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
        "_CONDOR_SEC_TOKEN_DIRECTORY": str(token_dir),
        "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY": str(token_dir),
        "INTERLINK_HTCONDOR_POOL_DIR": str(state_dir),
        "INTERLINK_HTCONDOR_POOL_SHARED_DIR": str(shared_dir),
        "INTERLINK_HTCONDOR_POOL_PODS_DIR": str(pods_dir),
        "INTERLINK_HTCONDOR_POOL_JOB_USER": job_user,
    }
    for name in sorted(images):
        env[f"INTERLINK_HTCONDOR_POOL_{name.upper()}_IMAGE"] = str(images[name])
    return env


def export_lines(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines, quoted for a POSIX shell."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def image_rules(images: Mapping[str, Path]) -> list[dict[str, str]]:
    """Embedded image rules: the usual references of the test images to the local images."""
    rules: list[dict[str, str]] = []
    for name in IMAGE_NAMES:
        if name in images:
            rules += [
                {"match": pattern, "target": str(images[name])}
                for pattern in IMAGE_REFERENCE_PATTERNS[name]
            ]
    return rules
