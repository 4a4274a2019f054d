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


async def test_a_blocked_loop_and_a_full_collection_are_measured() -> None:
    metrics = Metrics()
    watch = StallWatch(metrics, period=0.01)
    watch.start()
    try:
        await asyncio.sleep(0.05)  # the probe runs on time: no lag over 50 ms
        assert sample(metrics, "interlink_htcondor_event_loop_lag_seconds_count") >= 1
        on_time = sample(
            metrics, "interlink_htcondor_event_loop_lag_seconds_bucket", {"le": "0.05"}
        )
        assert on_time == sample(metrics, "interlink_htcondor_event_loop_lag_seconds_count")
        time.sleep(0.12)  # something holds the loop
        await asyncio.sleep(0.03)
        late = sample(metrics, "interlink_htcondor_event_loop_lag_seconds_count") - sample(
            metrics, "interlink_htcondor_event_loop_lag_seconds_bucket", {"le": "0.1"}
        )
        assert late == 1
        gc.collect()
        full = {"generation": "2"}
        assert sample(metrics, "interlink_htcondor_gc_pause_seconds_count", full) >= 1
        assert sample(metrics, "interlink_htcondor_gc_pause_seconds_sum", full) > 0
    finally:
        await watch.stop()
    # Stopped: no callback left behind, nothing measured any more.
    count = sample(metrics, "interlink_htcondor_gc_pause_seconds_count", {"generation": "2"})
    gc.collect()
    assert (
        sample(metrics, "interlink_htcondor_gc_pause_seconds_count", {"generation": "2"}) == count
    )
