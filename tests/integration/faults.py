"""Fault injection against the shared personal pool, always undone.

- ``schedd_stopped(pool)``: SIGSTOP of the real ``condor_schedd`` (found in the pool's PID
  namespace), SIGCONT in a ``finally``: a schedd that hangs.
- ``schedd_off(pool)``: ``condor_off -schedd`` inside the pool, ``condor_on -schedd`` in a
  ``finally``, then waits until the schedd answers again: a schedd that is down.

The pool is shared with other test sessions: keep each fault to a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx

from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.devpool.daemons import processes_in
from interlink_htcondor.local_plugin import pool_schedd

# Settings of a plugin under fault injection: deadlines short enough to prove promptness
# in a few seconds of fault.
FAST = {
    "INTERLINK_HTCONDOR_SCHEDD__TIMEOUT_SECONDS": "3",
    "INTERLINK_HTCONDOR_SCHEDD__PROBE_TIMEOUT_SECONDS": "1",
    "INTERLINK_HTCONDOR_SCHEDD__UNREADY_AFTER_SECONDS": "3",
    "INTERLINK_HTCONDOR_SCHEDD__STATUS_WAIT_SECONDS": "0.5",
}


def schedd_pid(pool: PoolInfo) -> int:
    pids = [p for p in processes_in(pool.pid_ns) if _comm(p) == "condor_schedd"]
    assert len(pids) == 1, f"expected one condor_schedd in the pool, found {pids}"
    return pids[0]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def schedd_stopped(pool: PoolInfo) -> Iterator[int]:
    pid = schedd_pid(pool)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def schedd_off(pool: PoolInfo) -> Iterator[None]:
    r = pool.run_in_pool(["condor_off", "-schedd"], user="root", timeout=60)
    try:
        assert r.returncode == 0, r.stderr.decode()
        deadline = time.monotonic() + 60
        while any(_comm(p) == "condor_schedd" for p in processes_in(pool.pid_ns)):
            assert time.monotonic() < deadline, "the schedd did not stop"
            time.sleep(0.2)
        yield
    finally:
        pool.run_in_pool(["condor_on", "-schedd"], user="root", timeout=60)
        wait_schedd_answers(pool)


def wait_schedd_answers(pool: PoolInfo, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pool_schedd(pool).query(constraint="false", projection=["ClusterId"], limit=1)
            return
        except Exception:
            assert time.monotonic() < deadline, "the schedd did not come back"
            time.sleep(0.5)


def jobs_of(pool: PoolInfo, instance: str, uid: str) -> list[Any]:
    """The queued jobs of a pod of this plugin instance, straight from the schedd."""
    c = f'InterlinkPodUID == "{uid}" && InterlinkPlugin == "{instance}"'
    return list(pool_schedd(pool).query(constraint=c, projection=["ClusterId", "ProcId"]))


def timed(method: str, url: str, **kw: Any) -> tuple[float, httpx.Response]:
    t0 = time.monotonic()
    r = httpx.request(method, url, timeout=120, **kw)
    return time.monotonic() - t0, r


def poll(check: Any, timeout: float, what: str) -> Any:
    """``check()`` until it returns something true (each call is itself prompt)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
