"""What the endpoint handlers share: settings, the gateway, the snapshot, the sandbox store,
metrics, background tasks and the small caches that spare the schedd.

Every cache is bounded: none grows with the number of requests, and a plugin restart
loses nothing that HTCondor does not hold (the snapshot is rebuilt by one query).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from interlink_htcondor.core.classad_attrs import ReportedState, job_id
from interlink_htcondor.core.pod_status import COMPLETED
from interlink_htcondor.service.gateway import Capacity, Gateway, ScheddError
from interlink_htcondor.service.metrics import Metrics
from interlink_htcondor.service.sandbox_store import SandboxStore
from interlink_htcondor.service.snapshot import JobSnapshot, MissingJobResolver, Snapshot
from interlink_htcondor.settings import Settings

log = logging.getLogger("interlink_htcondor.server")

T = TypeVar("T")
# Entries kept at most in each of the per-job caches below; past that a cache starts
# over, which costs at worst one more read or schedd call per job.
CACHE_LIMIT = 10_000
READY_CACHE_SECONDS = 5.0


@dataclass
class Cached(Generic[T]):
    at: float  # monotonic time the value was obtained
    value: T


@dataclass
class PluginState:
    """The one object every handler receives."""

    settings: Settings
    gateway: Gateway
    store: SandboxStore
    metrics: Metrics
    snapshot: JobSnapshot = field(init=False)
    missing: MissingJobResolver = field(init=False)
    # Readiness (schedd reachable), cached a few seconds: probes and pings share it.
    ready_cache: Cached[tuple[bool, str]] | None = None
    # Slot sizes from the collector: the ping reports them, /status diagnoses with them.
    capacity_cache: Cached[Capacity] | None = None
    capacity_refreshing: bool = False
    # The first read of the slot sizes after a start, which /status waits for.
    first_capacity: asyncio.Future[Capacity] | None = None
    first_capacity_logged: bool = False
    # Final container reports by job id, read once from a finished job's status.json.
    final_reports: dict[str, dict[str, ReportedState]] = field(default_factory=dict)
    # Spool mode: jobs whose output was brought back.
    retrieved: set[str] = field(default_factory=set)
    # Held jobs this process has asked the schedd to remove.
    removing: set[str] = field(default_factory=set)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        refresh = self.settings.schedd.status_refresh_seconds
        self.snapshot = JobSnapshot(
            self.gateway.query_jobs,
            refresh,
            max_stale_seconds=max(30.0, 10 * refresh),
            on_refresh=self._on_refresh,
        )
        self.missing = MissingJobResolver(self.gateway.find_jobs)

    def _on_refresh(self, snap: Snapshot) -> None:
        self.metrics.set_job_counts(snap.state_counts(), snap.wall)

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        """Run ``coro`` in the background; a failure is logged, never raised."""

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("background task failed", extra={"task": what})

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        self.gateway.close()

    async def ready(self) -> tuple[bool, str]:
        """Whether the schedd answers, and why not (cached ``READY_CACHE_SECONDS``)."""
        now = time.monotonic()
        cached = self.ready_cache
        if cached is not None and now - cached.at < READY_CACHE_SECONDS:
            return cached.value
        try:
            await self.gateway.ping()
            value = (True, "schedd reachable")
        except ScheddError as e:
            value = (False, str(e))
        self.ready_cache = Cached(now, value)
        return value

    async def refresh_capacity(self) -> Capacity:
        capacity = await self.gateway.capacity()
        self.capacity_cache = Cached(time.monotonic(), capacity)
        return capacity

    async def ensure_retrieved(self, ad: Mapping[str, Any]) -> None:
        """Spool mode: bring a completed job's output back once (a failure is logged; the
        next call tries again)."""
        jid = job_id(ad)
        if jid in self.retrieved or ad.get("JobStatus") != COMPLETED:
            return
        try:
            await self.gateway.retrieve(jid)
        except ScheddError as e:
            log.warning("output retrieval failed", extra={"job": jid, "error": str(e)})
            return
        if len(self.retrieved) > CACHE_LIMIT:
            self.retrieved.clear()  # at worst an output is retrieved again
        self.retrieved.add(jid)
