"""Functions the Dask integration tests run on workers, shipped by value (the worker image
does not have the tests), and the host-side view of those workers."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]


def ancestors() -> list[str]:
    """Command names of this process and its ancestors, as far as it can see them (runs on
    a worker). Workers run contained, in a PID namespace of their own, so the chain ends
    at Apptainer's ``appinit``: what runs them is only visible from the host."""
    names, pid = [], "self"
    while pid not in ("0", ""):
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        names.append(fields["Name"].strip())
        pid = fields["PPid"].strip()
    return names


def host_ancestors(worker_name: str) -> list[list[str]]:
    """On the host (root sees every process of the pool): the ancestor chains, by command
    name, of the processes whose command line holds ``--name <worker_name>``."""
    chains = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pairs = itertools.pairwise(argv)
        if any(a == b"--name" and b == worker_name.encode() for a, b in pairs):
            chain, pid = [], proc.name
            while pid not in ("0", ""):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    break
                fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
                chain.append(fields["Name"].strip())
                pid = fields["PPid"].strip()
            chains.append(chain)
    return chains


cloudpickle.register_pickle_by_value(sys.modules[__name__])
