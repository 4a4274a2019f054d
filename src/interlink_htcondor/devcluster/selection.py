"""Which cluster a command, a test session or a benchmark means when it names none: the
default one, or a private one chosen by two environment variables.

``INTERLINK_HTCONDOR_CLUSTER_DIR`` (an absolute path) puts the cluster's state elsewhere than
``<pool state dir>/cluster``, sharing the default cluster's builds (``bin/``), and
``INTERLINK_HTCONDOR_CLUSTER_PORT_OFFSET`` moves every one of its ports by that much. They
go together: a second cluster on the same machine needs both. Whatever they choose, the
personal pool stays the same one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from . import config
from .errors import ClusterError
from .state import ClusterPaths, builtin_paths

CLUSTER_DIR_ENV = "INTERLINK_HTCONDOR_CLUSTER_DIR"
PORT_OFFSET_ENV = "INTERLINK_HTCONDOR_CLUSTER_PORT_OFFSET"


def default_paths(env: Mapping[str, str] | None = None) -> ClusterPaths:
    """The layout of the cluster ``env`` (default: this process's environment) selects."""
    paths, _ = selected(env)
    return paths


def default_ports(env: Mapping[str, str] | None = None) -> config.Ports:
    """The ports of the cluster ``env`` selects (used when that cluster starts)."""
    _, ports = selected(env)
    return ports


def selected(env: Mapping[str, str] | None = None) -> tuple[ClusterPaths, config.Ports]:
    """(layout, ports) of the cluster ``env`` selects; ``ClusterError`` saying what to set
    when the variables are wrong or only one of them is set."""
    env = os.environ if env is None else env
    builtin = builtin_paths()
    raw_dir = env.get(CLUSTER_DIR_ENV, "").strip()
    raw_offset = env.get(PORT_OFFSET_ENV, "").strip()
    try:
        offset = int(raw_offset or "0")
    except ValueError:
        raise ClusterError(f"{PORT_OFFSET_ENV} must be an integer, not {raw_offset!r}") from None
    if not raw_dir or Path(raw_dir) == builtin.root:
        if offset:
            raise ClusterError(
                f"{PORT_OFFSET_ENV} moves the ports of a private cluster: set "
                f"{CLUSTER_DIR_ENV} to its state directory too (the default cluster's "
                "ports never move)"
            )
        return builtin, config.PORTS
    root = Path(raw_dir)
    if not root.is_absolute():
        raise ClusterError(f"{CLUSTER_DIR_ENV} must be an absolute path, not {raw_dir!r}")
    if not offset:
        raise ClusterError(
            f"a private cluster ({CLUSTER_DIR_ENV}={raw_dir}) needs ports of its own: set "
            f"{PORT_OFFSET_ENV} too (e.g. 4000)"
        )
    try:
        ports = config.ports_for_offset(offset)
    except ValueError as e:
        raise ClusterError(f"{PORT_OFFSET_ENV}={offset}: {e}") from None
    return ClusterPaths(root, bin_root=builtin.bin), ports
