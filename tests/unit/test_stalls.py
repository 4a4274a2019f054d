"""The server's stalls on /metrics: garbage collections and a late event loop."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from interlink_htcondor.service.metrics import Metrics
from interlink_htcondor.service.stalls import StallWatch

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


LAG = "interlink_htcondor_event_loop_lag_seconds"


def late(metrics: Metrics, cause: str, over: str = "0.05") -> float:
    """Wake-ups of ``cause`` later than ``over`` seconds."""
    labels = {"cause": cause}
    return sample(metrics, LAG + "_count", labels) - sample(
        metrics, LAG + "_bucket", {**labels, "le": over}
    )


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_a_held_loop_and_a_full_collection_are_measured() -> None:
    metrics = Metrics()
    watch = StallWatch(metrics, period=0.01)
    watch.start()
    try:
        await asyncio.sleep(0.05)  # the probe runs
        woke = sum(sample(metrics, LAG + "_count", {"cause": c}) for c in ("server", "machine"))
        assert woke >= 1
        server, machine = late(metrics, "server", "0.1"), late(metrics, "machine", "0.1")
        spin(0.15)  # the server's own work holds the loop
        await asyncio.sleep(0.03)
        assert late(metrics, "server", "0.1") == server + 1
        time.sleep(0.15)  # the thread runs nothing: as when the machine gives it no CPU
        await asyncio.sleep(0.03)
        assert late(metrics, "machine", "0.1") >= machine + 1
        assert late(metrics, "server", "0.1") == server + 1
        gc.collect()
        full = {"generation": "2"}
        assert sample(metrics, "interlink_htcondor_gc_pause_seconds_count", full) >= 1
        assert sample(metrics, "interlink_htcondor_gc_pause_seconds_sum", full) > 0
    finally:
        await watch.stop()
    # Stopped: no callback left behind, nothing measured any more.
    full_count = ("interlink_htcondor_gc_pause_seconds_count", {"generation": "2"})
    count = sample(metrics, *full_count)
    gc.collect()
    assert sample(metrics, *full_count) == count
