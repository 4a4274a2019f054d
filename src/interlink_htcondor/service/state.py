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
from interlink_htcondor.service.answer_cache import AnswerCache, BodyCache
from interlink_htcondor.service.breaker import Contact
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
# A schedd contact younger than this needs no probe to vouch for the schedd.
PROBE_AFTER_SECONDS = 2.0
# A call waiting this long for the schedd casts doubt on it: a probe decides.
STUCK_AFTER_SECONDS = 0.5


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
    # The readiness probe in flight (one at a time), and the outcome of the last one.
    probe_task: asyncio.Future[tuple[bool, str]] | None = None
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
    # Serialised /status entries of pods whose job has not changed, and parsed bodies.
    answers: AnswerCache = field(default_factory=lambda: AnswerCache(CACHE_LIMIT))
    status_bodies: BodyCache = field(default_factory=lambda: BodyCache(CACHE_LIMIT))
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        cfg = self.settings.schedd
        self.snapshot = JobSnapshot(
            self.gateway.job_changes,
            cfg.status_refresh_seconds,
            max_stale_seconds=cfg.max_stale_seconds,
            wait_seconds=cfg.status_wait_seconds,
            keep_fresh_seconds=cfg.status_keep_fresh_seconds,
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
        self.snapshot.close()
        for t in list(self._background):
            t.cancel()
        await asyncio.to_thread(self.gateway.close)

    async def ready(self, wait: float) -> tuple[bool, str]:
        """Readiness: whether a schedd call succeeded within ``unready_after_seconds``.

        Never waits for the schedd longer than ``wait``: a probe is started when the last
        contact is a little old, and its outcome counts if it comes in time.
        """
        contact = self.gateway.contact()
        if not _fresh(contact):
            await self._probe(wait)
            contact = self.gateway.contact()
        age = contact.age(time.monotonic())
        limit = self.settings.schedd.unready_after_seconds
        if age is None:
            return False, f"the schedd has not answered yet{_last_error(contact)}"
        if age > limit:
            return False, f"no schedd call has succeeded for {age:.0f} s{_last_error(contact)}"
        return True, f"last schedd contact {age:.1f} s ago"

    async def pool_up(self, wait: float) -> tuple[bool, str]:
        """Whether the schedd answers now (interLink's ping): false at once while calls
        fail or time out, and when a probe gets no answer within ``wait``."""
        contact = self.gateway.contact()
        if contact.open:
            return False, f"the schedd does not answer ({contact.error})"
        if _fresh(contact):
            return True, "schedd reachable"
        outcome = await self._probe(wait)
        if outcome is None:
            return False, f"the schedd has not answered a probe within {wait:g} s"
        return outcome

    async def _probe(self, wait: float) -> tuple[bool, str] | None:
        """Probe the schedd (one probe at a time): its outcome, None if not in ``wait``."""
        if self.probe_task is None:
            self.probe_task = asyncio.ensure_future(self._run_probe())
        task = self.probe_task
        done, _ = await asyncio.wait([task], timeout=wait)
        return task.result() if done else None

    async def _run_probe(self) -> tuple[bool, str]:
        try:
            await self.gateway.ping()
            return True, "schedd reachable"
        except ScheddError as e:
            return False, str(e)
        finally:
            self.probe_task = None

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


def _fresh(contact: Contact) -> bool:
    """The last call succeeded, recently, and no call has been waiting long since."""
    now = time.monotonic()
    age = contact.age(now)
    waiting = contact.waiting_since
    return (
        age is not None
        and age < PROBE_AFTER_SECONDS
        and contact.failing_since is None
        and (waiting is None or now - waiting < STUCK_AFTER_SECONDS)
    )


def _last_error(contact: Contact) -> str:
    return f" (last error: {contact.error})" if contact.error else ""
