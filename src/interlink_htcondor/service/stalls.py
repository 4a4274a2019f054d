"""What holds the server's event loop, measured while it serves.

Every request waits while the loop runs something else. Two measures make such stalls
visible on ``/metrics``: how long each garbage collection took (``gc.callbacks``), and how
late the loop woke up for a timer set every ``PROBE_SECONDS`` (a stall longer than that
delays one by at least its length minus the period). A late wake-up is put down to the
server when its loop's thread ran for most of the delay (``cause="server"``: work, a
collection) and to the machine otherwise (``cause="machine"``: the process waited for a
CPU or for the kernel). A slow call with neither behind it waited outside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from interlink_htcondor.service.metrics import Metrics

# 50 wake-ups a second, microseconds each: a 50 ms stall shows as at least 30 ms late.
PROBE_SECONDS = 0.02


class StallWatch:
    def __init__(self, metrics: Metrics, period: float = PROBE_SECONDS) -> None:
        self._metrics = metrics
        self._period = period
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._probe())

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_started
            self._metrics.gc_pause.labels(str(info.get("generation", ""))).observe(pause)

    async def _probe(self) -> None:
        while True:
            due = time.perf_counter() + self._period
            ran = time.thread_time()
            await asyncio.sleep(self._period)
            lag = max(0.0, time.perf_counter() - due)
            # The loop's thread is idle between timers unless something holds it.
            busy = time.thread_time() - ran
            cause = "server" if busy >= lag / 2 else "machine"
            self._metrics.loop_lag.labels(cause).observe(lag)
