"""Shared fixtures: the real personal pool and a schedd client for it.

The pool starts only when a test asks for ``pool`` (or ``schedd``): ``pytest tests/unit`` never
starts it. A running pool is reused; one that is down is started (as root) and left running,
so the next session starts at once. Tests that use the pool are marked ``integration``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from interlink_htcondor.devpool import PoolInfo

# Set by `make test` (and so CI): also run the test that stops and restarts the shared pool.
POOL_CYCLE_ENV = "INTERLINK_HTCONDOR_TEST_POOL_CYCLE"

TERMINAL = {3, 4}  # Removed, Completed
HELD = 5


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "pool" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    # The pool restart goes last, so no other test sees the pool go away.
    items.sort(key=lambda item: item.get_closest_marker("pool_cycle") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pool_cycle: stops and restarts the shared pool (runs last)")
    _measure_subprocesses(config)


# Where the session's Python subprocesses (the plugin's `serve`, its schedd worker processes,
# the CLI) write their coverage data; `make test` combines it into the session's own.
SUBPROCESS_COVERAGE = Path("out/subprocess-coverage")


def _measure_subprocesses(config: pytest.Config) -> None:
    """When this session measures coverage, so do its Python subprocesses: the schedd
    gateway's binding calls run in fork-server workers, which the session's own tracer never
    sees. Coverage's ``.pth`` hook starts it in any process that inherits
    ``COVERAGE_PROCESS_START``; the ``fork`` and ``_exit`` patches cover the workers forked
    from the fork server, which end with ``os._exit``."""
    try:
        import coverage
    except ImportError:
        return
    if coverage.Coverage.current() is None:
        return
    out = Path(config.rootpath) / SUBPROCESS_COVERAGE
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    out.chmod(0o1777)  # the plugin may run as the job user
    rc = out / "coveragerc"
    rc.write_text(
        "[run]\n"
        "source = interlink_htcondor\n"
        "omit = */interlink_htcondor/jobside/*\n"
        f"data_file = {out / '.coverage'}\n"
        "parallel = true\n"
        "patch = fork, _exit\n"
        # Processes that never import the package (Dask, JupyterHub) say nothing.
        "disable_warnings = no-data-collected, module-not-imported, module-not-measured\n"
    )
    rc.chmod(0o644)
    os.environ["COVERAGE_PROCESS_START"] = str(rc)


@pytest.fixture(scope="session")
def pool() -> PoolInfo:
    """The running personal pool (started if absent), with this process's htcondor2 client
    configured for it."""
    from interlink_htcondor import devpool

    info = devpool.ensure_up()
    info.apply_client_env()
    return info


@pytest.fixture(scope="session")
def schedd(pool: PoolInfo) -> Any:
    """``htcondor2.Schedd`` of the pool, located through its collector."""
    import htcondor2

    ad = htcondor2.Collector(pool.collector).locate(htcondor2.DaemonType.Schedd)
    return htcondor2.Schedd(ad)


_counter = itertools.count()


@pytest.fixture
def job_dir(pool: PoolInfo) -> Iterator[Path]:
    """A fresh directory in the shared directory (same path in the pool), owned by the job
    user: a job's ``initialdir`` in shared-filesystem mode."""
    name = f"test-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
    yield pool.make_job_dir(name)


@pytest.fixture
def wait_job(schedd: Any) -> Callable[..., Any]:
    """``wait_job(cluster_id, timeout=180)``: the job's ClassAd once it has completed, been
    removed or held (from the queue, else from the history)."""

    def wait(cluster: int, timeout: float = 180, projection: list[str] | None = None) -> Any:
        constraint = f"ClusterId == {cluster}"
        deadline = time.monotonic() + timeout
        ad = None
        while time.monotonic() < deadline:
            ads = schedd.query(constraint=constraint, projection=projection or [])
            if ads:
                ad = ads[0]
                if ad.get("JobStatus") in TERMINAL | {HELD}:
                    return ad
            else:
                hist = schedd.history(constraint=constraint, projection=projection or [], match=1)
                if hist:
                    return hist[0]
            time.sleep(0.5)
        raise AssertionError(f"job {cluster} not finished after {timeout} s; last ad: {ad}")

    return wait
