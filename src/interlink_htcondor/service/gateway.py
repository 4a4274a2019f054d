"""The schedd gateway: the only module that talks to HTCondor (htcondor2 bindings).

Every binding call blocks, and holds Python's GIL while it waits: so each runs in a worker
process (``service.worker_pool``), never in the plugin's own threads. There are four
lanes of workers, so that one kind of call stuck on the schedd never starves another:
``probe`` (one worker: readiness probes), ``query`` and ``change`` (``schedd.workers``
each: queries; submits and removals), ``snapshot`` (one worker: the job snapshot's change
queries, whose state it keeps between calls). Every call has a deadline (``schedd.timeout_seconds``,
``schedd.probe_timeout_seconds``); a query past it is abandoned and its worker killed. Calls
safe to repeat are retried on errors (not on timeouts), locating the schedd again. A
circuit breaker (``service.breaker``) makes calls fail at once while the schedd does not
answer, and closes again by itself when it does.

Worker processes run the blocking ``_*_remote`` methods on a copy of the gateway built
from the same settings (``_worker_setup``); the event loop never waits on the schedd.

Submits that arrive together go to the schedd together: one transaction (one cluster, one
proc per pod) instead of one per pod, which is what makes a burst of creates fast. That a
pod gets one job only is the create handler's business (``service.create``), with the
pod's lock file from the sandbox store.

The job snapshot is kept up to date by change queries (``job_changes``) in a lane of
its own, whose one worker keeps the plugin's jobs as it last saw them and hands the server
only the ads that changed.

``Gateway`` is the interface the service uses; ``ScheddGateway`` implements it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import classad2
import htcondor2

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.classad_attrs import job_id
from interlink_htcondor.core.itemdata import (
    SubmitRefused,
    batch,
    check_commands,
    refused_description,
)
from interlink_htcondor.core.job_changes import ChangeQueries, JobChanges, Progress
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.core.pod_status import FROM_HISTORY, PROJECTION
from interlink_htcondor.service.breaker import Breaker, CircuitOpen, Contact
from interlink_htcondor.service.worker_pool import (
    CallTimeout,
    Handover,
    PoolBusy,
    RemoteError,
    WorkerLost,
    WorkerPool,
    portable,
)
from interlink_htcondor.settings import ScheddSettings, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Ad = dict[str, Any]
Observer = Callable[[str, float, bool], None]  # (operation, seconds, ok)

# At most this many pod UIDs in one ``member(...)`` constraint.
UID_BATCH = 200
# An open circuit lets one trial call through this often.
BREAKER_RETRY_SECONDS = 2.0
# The snapshot worker is recycled sooner: it makes a query every second, each of which the
# bindings leak a bytes object per projected attribute of (about 0.5 MiB a minute in all).
# A full listing of 10,000 jobs leaves about 10 MiB of Python's heap behind, so at that
# size the view changes hands after nearly every listing (a pickle of the view each time).
SNAPSHOT_RECYCLE_MIB = 8.0
# How the bindings say a submit failed before reaching the schedd (safe to try again).
_NOT_CONNECTED = "Failed to connect to schedd"
# What a failed binding call raises: in a worker, or in the pipe to it.
_CALL_ERRORS = (htcondor2.HTCondorException, RemoteError, WorkerLost, OSError, RuntimeError)
_configured = False
_config_lock = threading.Lock()


class ScheddError(Exception):
    """The schedd (or collector) could not be reached or refused the call."""


class SubmitInDoubt(ScheddError):
    """A submit timed out but may still happen: ``outcome`` resolves to its ``Submitted``
    once the schedd call really ends (or raises ``ScheddError``)."""

    def __init__(self, message: str, outcome: asyncio.Future[Submitted]) -> None:
        super().__init__(message)
        self.outcome = outcome


class _SubmitTimeout(Exception):
    def __init__(self, message: str, work: asyncio.Future[None]) -> None:
        super().__init__(message)
        self.work = work


@dataclass(frozen=True)
class Capacity:
    cpus: int
    memory_mib: int
    gpus: int
    slots: int
    # The most one slot can give a job, per resource (a partitionable slot's total).
    largest: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    job_id: str
    created: bool  # False when the pod already had a job (idempotent create)
    ad: Ad


class Gateway(Protocol):
    """What the service asks of HTCondor. Every call raises ``ScheddError`` when the schedd
    or collector cannot be reached or refuses."""

    spool: bool  # storage.mode is "spool": job files travel with the job

    async def ping(self) -> None:
        """Return once the schedd answers a trivial query."""

    async def query_jobs(self) -> list[Ad]:
        """All of this plugin's jobs in the queue (one query, ``PROJECTION``)."""

    async def job_changes(self) -> JobChanges:
        """What changed among this plugin's jobs since the previous call (every job on the
        first call, with ``reset``): what the job snapshot is kept up to date with."""

    async def jobs_of(self, uid: str) -> list[Ad]:
        """The queued jobs of one pod (normally zero or one)."""

    async def find_jobs(self, uids: Sequence[str]) -> dict[str, Ad]:
        """Jobs of these pods by pod UID, from the queue, else the history (those ads carry
        ``FROM_HISTORY``)."""

    async def capacity(self) -> Capacity:
        """What the pool's execute slots offer."""

    async def submit(self, plan: JobPlan, sandbox: Path) -> Submitted:
        """Submit one pod's job (its sandbox already written)."""

    async def remove_pod(self, uid: str, reason: str, *, namespace: str, name: str) -> int:
        """Remove every job of the pod (matched by UID, namespace and name); the number
        removed."""

    async def remove_job(self, jid: str, reason: str, *, force: bool = False) -> None:
        """Remove one job (``force``: at once, without its starter's cleanup)."""

    async def retrieve(self, jid: str) -> None:
        """Spool mode: bring a finished job's output back into its sandbox."""

    async def start(self) -> None:
        """Get ready for the first calls (the app starts it in the background)."""

    def contact(self) -> Contact:
        """What the gateway knows of the schedd now (its last successful call...)."""

    def close(self) -> None:
        """Stop the gateway's workers."""


def configure_htcondor(cfg: ScheddSettings) -> None:
    """Point the bindings at the configured pool and credentials (once per process).

    The bindings read ``_CONDOR_<KNOB>`` environment variables; only knobs the admin set
    are touched, so a site's own ``CONDOR_CONFIG`` keeps working.
    """
    global _configured
    with _config_lock:
        knobs: dict[str, str] = {}
        if cfg.collector:
            knobs["COLLECTOR_HOST"] = cfg.collector
        if cfg.auth_methods:
            knobs["SEC_CLIENT_AUTHENTICATION_METHODS"] = cfg.auth_methods
        if cfg.token_dir is not None:
            # A root client reads the system directory, others the user one.
            knobs["SEC_TOKEN_DIRECTORY"] = str(cfg.token_dir)
            knobs["SEC_TOKEN_SYSTEM_DIRECTORY"] = str(cfg.token_dir)
        if cfg.scitoken_file is not None:
            knobs["SCITOKENS_FILE"] = str(cfg.scitoken_file)
        changed = False
        for knob, value in knobs.items():
            key = f"_CONDOR_{knob}"
            if os.environ.get(key) != value:
                os.environ[key] = value
                changed = True
        if changed or not _configured:
            htcondor2.reload_config()
        _configured = True


def locate_schedd(cfg: ScheddSettings) -> Any:
    """The schedd's location (a ClassAd), through the collector (blocking)."""
    coll = htcondor2.Collector(cfg.collector or None)
    return coll.locate(htcondor2.DaemonType.Schedd, cfg.schedd_name or None)


def quote(value: str) -> str:
    """A ClassAd string literal (escapes quotes and backslashes)."""
    return str(classad2.quote(value))


# Shorter string values are interned (see ``plain``).
INTERN_MAX_CHARS = 64


def plain(ad: Any) -> Ad:
    """A ClassAd as a plain dict of Python values (expressions evaluated, UNDEFINED and
    ERROR dropped). Iterates the ad's own items: with a projection, only those.

    The bindings make new strings for every ad; attribute names, and the short values
    that repeat from job to job (images, namespaces, reasons), are interned, so that
    10,000 ads hold each once (half the memory of the job snapshot, on both sides of the
    worker's pipe: pickle sends a shared string once)."""
    out: Ad = {}
    for k, v in ad.items():
        if isinstance(v, classad2.ExprTree):
            try:
                v = ad.eval(k)
            except Exception:  # noqa: S112 - an unevaluable expression is as good as absent
                continue
        if isinstance(v, classad2.Value):
            continue
        if type(v) is str and len(v) <= INTERN_MAX_CHARS:
            v = sys.intern(v)
        out[sys.intern(k)] = v
    return out


def plain_all(ads: list[Any]) -> list[Ad]:
    """``plain`` of every ad of a query's answer, which it consumes: each ClassAd is freed
    once converted. The bindings hand the whole answer over at once; converting it into a
    second list while the first lives holds both (for 10,000 jobs, the worker's peak)."""
    ads.reverse()
    out: list[Ad] = []
    while ads:
        out.append(plain(ads.pop()))
    return out


@dataclass
class _Pending:
    """One submit waiting in a batch."""

    plan: JobPlan
    sandbox: Path
    commands: dict[str, str]
    result: Submitted | None = None
    error: BaseException | None = None


class _Batcher:
    """Gathers the submits that arrive within ``window`` seconds (at most ``limit``) and
    hands them to ``run`` (one call in a worker process) as one batch per set of submit
    commands (a cluster's procs share one template)."""

    def __init__(
        self,
        run: Callable[[list[_Pending]], Awaitable[None]],
        window: float = 0.005,
        limit: int = 64,
    ) -> None:
        self._run = run
        self._window = window
        self._limit = limit
        self._queue: list[tuple[_Pending, asyncio.Future[Submitted]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._full = asyncio.Event()

    async def submit(self, item: _Pending) -> Submitted:
        fut: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if len(self._queue) >= self._limit:
            self._full.set()
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._window)
            self._full.clear()
            queue, self._queue = self._queue[: self._limit], self._queue[self._limit :]
            groups: dict[tuple[str, ...], list[tuple[_Pending, asyncio.Future[Submitted]]]] = {}
            for item, fut in queue:
                key = tuple(sorted(item.commands))
                groups.setdefault(key, []).append((item, fut))
            await asyncio.gather(*(self._one_batch(g) for g in groups.values()))
        finally:
            self._flusher = None
            if self._queue:
                self._flusher = asyncio.ensure_future(self._flush())

    async def _one_batch(self, group: list[tuple[_Pending, asyncio.Future[Submitted]]]) -> None:
        items = [item for item, _ in group]
        try:
            await self._run(items)
        except _SubmitTimeout as e:
            for item, fut in group:
                if not fut.done():
                    outcome = asyncio.ensure_future(_settled(e.work, item))
                    outcome.add_done_callback(_retrieve)
                    fut.set_exception(SubmitInDoubt(str(e), outcome))
            return
        except Exception as e:
            for item in items:
                if item.result is None and item.error is None:
                    item.error = e
        for item, fut in group:
            if fut.done():
                continue
            if item.result is not None:
                fut.set_result(item.result)
            else:
                fut.set_exception(item.error or RuntimeError("submit gave no result"))


async def _settled(work: asyncio.Future[None], item: _Pending) -> Submitted:
    try:
        await work
    except Exception as e:
        raise ScheddError(f"schedd submit failed: {e or type(e).__name__}") from e
    if item.result is None:
        raise item.error or RuntimeError("submit gave no result")
    return item.result


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # Read by whoever awaits the outcome; this keeps an unawaited failure quiet.
    if not fut.cancelled():
        fut.exception()


class ScheddGateway:
    """Async facade over the bindings for everything the plugin asks of HTCondor.

    ``worker_side``: the copy a worker process builds (no lanes of its own; only its
    blocking ``_*_remote`` methods are called).
    """

    def __init__(
        self, settings: Settings, observer: Observer | None = None, *, worker_side: bool = False
    ) -> None:
        self._settings = settings
        self._cfg = settings.schedd
        configure_htcondor(self._cfg)
        self._observer = observer
        self._location: Any = None
        self._location_lock = threading.Lock()
        self.instance = settings.policy.instance
        self.spool = settings.storage.mode == "spool"
        self.mine = f"{classad_attrs.PLUGIN} == {quote(self.instance)}"
        self._changes: ChangeQueries | None = None  # the snapshot worker's view
        if worker_side:
            return
        self._breaker = Breaker(retry_seconds=BREAKER_RETRY_SECONDS)

        recycle = self._cfg.worker_recycle_mib or None

        def lane(
            name: str,
            size: int,
            recycle_mib: float | None = recycle,
            handover: Handover | None = None,
        ) -> WorkerPool:
            return WorkerPool(
                f"schedd-{name}",
                size,
                preload=[__name__],
                setup=_worker_setup,
                setup_args=lambda: (settings, _condor_env()),
                recycle_mib=recycle_mib,
                handover=handover,
            )

        self._lanes = {
            "probe": lane("probe", 1),
            "query": lane("query", self._cfg.workers),
            "change": lane("change", self._cfg.workers),
            # One worker keeps the job snapshot's view between its calls (``job_changes``)
            # and hands it to its successor when it is recycled.
            "snapshot": lane(
                "snapshot",
                1,
                recycle and min(recycle, SNAPSHOT_RECYCLE_MIB),
                (_give_changes, _take_changes),
            ),
        }
        self._batcher = _Batcher(self._submit_items)
        # Pods and jobs removed since the last job_changes: it checks whether they left.
        self._removed_uids: set[str] = set()
        self._removed_jids: set[str] = set()

    async def start(self) -> None:
        """Start a worker of each lane ahead of the first calls."""
        await asyncio.gather(*(pool.prestart() for pool in self._lanes.values()))

    def close(self) -> None:
        for pool in self._lanes.values():
            pool.close()

    def contact(self) -> Contact:
        return self._breaker.contact()

    # ------------------------------------------------------------------ plumbing

    def _schedd(self) -> Any:
        """The schedd, located through the collector once and again after failures
        (blocking: worker processes only)."""
        with self._location_lock:
            if self._location is None:
                self._location = locate_schedd(self._cfg)
            return htcondor2.Schedd(self._location)

    def _forget_location(self) -> None:
        with self._location_lock:
            self._location = None

    async def _call(
        self,
        op: str,
        method: str,
        *args: Any,
        lane: str = "query",
        retry: bool = True,
        probe: bool = False,
    ) -> Any:
        """Run the blocking method ``method(*args)`` in a worker of ``lane``, within the
        deadline, retried on errors (never on a timeout: the schedd hangs). ``probe``: a
        readiness probe, tried even while the circuit is open."""
        timeout = self._cfg.probe_timeout_seconds if probe else self._cfg.timeout_seconds
        attempts = 1 + (self._cfg.retries if retry else 0)
        for attempt in range(attempts):
            trial = False
            if not probe:
                try:
                    trial = self._breaker.admit()
                except CircuitOpen as e:
                    self._observe(op, 0.0, False)
                    raise ScheddError(f"schedd {op} not tried: {e}") from None
            t0 = time.perf_counter()
            token = self._breaker.begin()
            try:
                result = await self._lanes[lane].run(
                    _invoke, method, *args, timeout=timeout, retire_on_error=True
                )
            except CallTimeout:
                self._observe(op, time.perf_counter() - t0, False)
                self._breaker.failed(f"{op} timed out after {timeout:g} s", hung=True)
                raise ScheddError(f"schedd {op} failed: timed out") from None
            except PoolBusy as e:
                self._observe(op, time.perf_counter() - t0, False)
                if trial:
                    self._breaker.abandoned()
                raise ScheddError(f"schedd {op} not tried: {e}") from None
            except _CALL_ERRORS as e:
                self._observe(op, time.perf_counter() - t0, False)
                what = str(e) or type(e).__name__
                self._breaker.failed(f"{op}: {what}", hung=False)
                if attempt + 1 < attempts:
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
                    continue
                raise ScheddError(f"schedd {op} failed: {what}") from e
            except BaseException:
                if trial:
                    self._breaker.abandoned()
                raise
            finally:
                self._breaker.end(token)
            self._observe(op, time.perf_counter() - t0, True)
            self._breaker.succeeded()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, op: str, seconds: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer(op, seconds, ok)

    def _uid_constraint(
        self, uids: Sequence[str], *, namespace: str | None = None, name: str | None = None
    ) -> str:
        if len(uids) == 1:
            c = f"{classad_attrs.POD_UID} == {quote(uids[0])} && {self.mine}"
        else:
            members = ", ".join(quote(u) for u in uids)
            c = f"member({classad_attrs.POD_UID}, {{{members}}}) && {self.mine}"
        if namespace is not None:
            c += f" && {classad_attrs.POD_NAMESPACE} == {quote(namespace)}"
        if name is not None:
            c += f" && {classad_attrs.POD_NAME} == {quote(name)}"
        return c

    # ------------------------------------------------------------------ queries

    async def ping(self) -> None:
        """Raise ScheddError unless the schedd answers a (trivial) query in time."""
        await self._call("ping", "_ping_remote", lane="probe", retry=False, probe=True)

    def _ping_remote(self) -> None:
        self._schedd().query(constraint="false", projection=["ClusterId"], limit=1)

    def _query_remote(self, constraint: str, projection: list[str]) -> list[Ad]:
        return plain_all(self._schedd().query(constraint=constraint, projection=projection))

    def _history_remote(self, constraint: str, projection: list[str], match: int) -> list[Ad]:
        ads = self._schedd().history(constraint=constraint, projection=projection, match=match)
        return [{**plain(a), FROM_HISTORY: True} for a in ads]

    async def query_jobs(self) -> list[Ad]:
        """All of this plugin's jobs in the queue: one query, projected."""
        ads: list[Ad] = await self._call("query", "_query_remote", self.mine, list(PROJECTION))
        return ads

    async def job_changes(self) -> JobChanges:
        """What changed among this plugin's jobs since the previous call: mostly a change
        query, now and then a full listing (``core.job_changes.ChangeQueries``), run by the
        ``snapshot`` lane's worker, which keeps its view between calls and sends only what
        changed. A worker that failed or was killed is replaced; the first answer of a new
        one lists every job (``reset``)."""
        uids, self._removed_uids = self._removed_uids, set()
        jids, self._removed_jids = self._removed_jids, set()
        try:
            changes: JobChanges = await self._call(
                "query", "_changes_remote", sorted(uids), sorted(jids), lane="snapshot",
                retry=False,
            )  # fmt: skip
        except BaseException:
            # Still to be checked (a new worker starts from a full listing anyway).
            self._removed_uids |= uids
            self._removed_jids |= jids
            raise
        return changes

    def _changes_remote(self, uids: list[str], jids: list[str], full: bool = False) -> JobChanges:
        changes, _ = self._change_queries().run(uids, jids, full=full)
        return changes

    def _change_queries(self) -> ChangeQueries:
        if self._changes is None:
            self._changes = ChangeQueries(
                self.mine, self._cfg.full_refresh_seconds, self._snapshot_query, quote
            )
        return self._changes

    def _snapshot_query(self, constraint: str) -> list[Ad]:
        # With the schedd's ServerTime (ChangeQueries follows the schedd's clock).
        return self._query_remote(constraint, list(PROJECTION))

    async def jobs_of(self, uid: str) -> list[Ad]:
        """The queued jobs of one pod (normally zero or one)."""
        constraint = self._uid_constraint([uid])
        ads: list[Ad] = await self._call("query_pod", "_query_remote", constraint, list(PROJECTION))
        return ads

    async def find_jobs(self, uids: Sequence[str]) -> dict[str, Ad]:
        """Jobs of these pods, from the queue or else the history (newest first)."""
        found: dict[str, Ad] = {}
        projection = list(PROJECTION)
        for i in range(0, len(uids), UID_BATCH):
            batch = list(uids[i : i + UID_BATCH])
            queued = await self._call(
                "query_missing", "_query_remote", self._uid_constraint(batch), projection
            )
            for ad in queued:
                found.setdefault(str(ad.get(classad_attrs.POD_UID)), ad)
            rest = [u for u in batch if u not in found]
            if not rest:
                continue
            past = await self._call(
                "history", "_history_remote", self._uid_constraint(rest), projection, len(rest) * 4
            )
            for ad in past:
                found.setdefault(str(ad.get(classad_attrs.POD_UID)), ad)
        return found

    async def capacity(self) -> Capacity:
        """What the pool's execute slots offer, summed over the collector's slot ads."""
        cap: Capacity = await self._call("collector", "_capacity_remote")
        return cap

    def _capacity_remote(self) -> Capacity:
        projection = [*_RESOURCES, *(f"TotalSlot{r}" for r in _RESOURCES), "SlotType"]
        coll = htcondor2.Collector(self._cfg.collector or None)
        return capacity_of(plain_all(coll.query(htcondor2.AdType.Startd, projection=projection)))

    # ------------------------------------------------------------------ submit

    async def submit(self, plan: JobPlan, sandbox: Path) -> Submitted:
        """Submit ``plan`` (its sandbox already written), batched with the submits that
        arrive within a few milliseconds. Never retried: a submit that timed out may have
        happened (the create handler's lock file tells). A value that could not travel
        intact in a batch's row, or a description HTCondor refuses, fails this pod only
        (``SubmitRefused``), before it joins a batch or by a submit of its own."""
        commands = self.submit_commands(plan, sandbox)
        check_commands(commands)
        return await self._batcher.submit(_Pending(plan, sandbox, commands))

    async def _submit_items(self, items: list[_Pending]) -> None:
        """Submit a batch in a worker of the ``change`` lane; sets each item's outcome.
        Past the deadline the call goes on (the schedd may still queue the jobs):
        ``_SubmitTimeout`` carries its eventual outcome."""
        try:
            trial = self._breaker.admit()
        except CircuitOpen as e:
            self._observe("submit", 0.0, False)
            raise ScheddError(f"schedd submit not tried: {e}") from None
        # The files are on disk already: the worker needs only the identity and commands.
        light = [
            _Pending(dataclasses.replace(i.plan, files=()), i.sandbox, i.commands) for i in items
        ]
        timeout = self._cfg.timeout_seconds
        t0 = time.perf_counter()
        token = self._breaker.begin()
        try:
            try:
                outcomes = await self._lanes["change"].run(
                    _invoke,
                    "_submit_remote",
                    light,
                    timeout=timeout,
                    on_timeout="keep",
                    retire_on_error=True,
                )
            except _CALL_ERRORS as e:
                if not str(e).startswith(_NOT_CONNECTED):
                    raise
                # Nothing reached the schedd (a security session it no longer knows, after
                # a restart): once more, from a new worker.
                self._observe("submit", time.perf_counter() - t0, False)
                t0 = time.perf_counter()
                outcomes = await self._lanes["change"].run(
                    _invoke,
                    "_submit_remote",
                    light,
                    timeout=timeout,
                    on_timeout="keep",
                    retire_on_error=True,
                )
        except CallTimeout as e:
            self._observe("submit", time.perf_counter() - t0, False)
            self._breaker.failed(f"submit timed out after {timeout:g} s", hung=True)
            assert e.outcome is not None
            # Still waiting for the schedd until the call really ends.
            e.outcome.add_done_callback(lambda _: self._breaker.end(token))
            token = 0
            work = asyncio.ensure_future(self._late_submit(e.outcome, items))
            work.add_done_callback(_retrieve)
            raise _SubmitTimeout("schedd submit timed out; it may still happen", work) from None
        except PoolBusy as e:  # nothing was sent: not in doubt
            self._observe("submit", time.perf_counter() - t0, False)
            if trial:
                self._breaker.abandoned()
            raise ScheddError(f"schedd submit not tried: {e}") from None
        except _CALL_ERRORS as e:
            self._observe("submit", time.perf_counter() - t0, False)
            what = str(e) or type(e).__name__
            self._breaker.failed(f"submit: {what}", hung=False)
            raise ScheddError(f"schedd submit failed: {what}") from e
        except BaseException:
            if trial:
                self._breaker.abandoned()
            raise
        finally:
            if token:
                self._breaker.end(token)
        self._observe("submit", time.perf_counter() - t0, True)
        self._breaker.succeeded()
        _apply(items, outcomes)

    async def _late_submit(self, outcome: asyncio.Future[Any], items: list[_Pending]) -> None:
        try:
            outcomes = await outcome
        except _CALL_ERRORS as e:
            raise ScheddError(f"schedd submit failed: {e or type(e).__name__}") from e
        self._breaker.succeeded()
        _apply(items, outcomes)

    def _submit_remote(
        self, pending: list[_Pending]
    ) -> list[tuple[Submitted | None, BaseException | None]]:
        """In a worker: ``_submit_batch``, and each item's outcome to send back."""
        self._submit_batch(pending)
        return [(i.result, None if i.error is None else portable(i.error)) for i in pending]

    def _submit_batch(self, pending: list[_Pending]) -> None:
        """Blocking: submit the pods as one cluster (one transaction) and set each one's
        outcome. When HTCondor refuses the description (a value one pod set that it cannot
        turn into a job ad), each pod is submitted alone instead, so that only that pod
        fails: a transaction submits all of a cluster or nothing, so nothing is submitted
        twice. Any other failure raises (the schedd's, for every pod without an outcome)."""
        schedd = self._schedd()
        template, items = batch([item.commands for item in pending])
        try:
            result = schedd.submit(
                htcondor2.Submit(template), itemdata=iter(items), spool=self.spool
            )
            cluster = int(result.cluster())
            if self.spool:
                try:
                    schedd.spool(result)
                except Exception:
                    # Jobs without their input would wait for ever: take them back.
                    with contextlib.suppress(Exception):
                        schedd.act(
                            htcondor2.JobAction.RemoveX,
                            f"ClusterId == {cluster}",
                            _reason("spool failed"),
                        )
                    raise
        except Exception as e:
            if not refused_description(e):
                raise
            if len(pending) > 1:
                for item in pending:
                    self._submit_batch([item])
            else:
                pending[0].error = SubmitRefused(str(e))
            return
        # As condor_submit does: ask for a negotiation cycle now rather than at the next
        # interval (a minute on many pools). Best effort: the jobs are queued anyway.
        with contextlib.suppress(Exception):
            schedd.reschedule()
        now = int(time.time())
        for proc, item in enumerate(pending):
            plan = item.plan
            ad: Ad = {
                "ClusterId": cluster,
                "ProcId": proc,
                "JobStatus": 1,
                "QDate": now,
                "EnteredCurrentStatus": now,
                classad_attrs.POD_UID: plan.pod_uid,
                classad_attrs.POD_NAME: plan.name,
                classad_attrs.POD_NAMESPACE: plan.namespace,
                classad_attrs.INIT_CONTAINERS: ",".join(plan.init_containers),
                classad_attrs.CONTAINERS: ",".join(plan.containers),
                classad_attrs.SANDBOX: str(item.sandbox),
                classad_attrs.PLUGIN: self.instance,
            }
            item.result = Submitted(job_id(ad), True, ad)

    def submit_commands(self, plan: JobPlan, sandbox: Path) -> dict[str, str]:
        """The plan's submit commands, plus the identity the gateway's queries rely on."""
        commands = dict(plan.submit)
        present = {_attr_key(k) for k in commands}
        identity = {
            classad_attrs.PLUGIN: self.instance,
            classad_attrs.POD_UID: plan.pod_uid,
            classad_attrs.POD_NAME: plan.name,
            classad_attrs.POD_NAMESPACE: plan.namespace,
            classad_attrs.CONTAINERS: ",".join(plan.containers),
            classad_attrs.INIT_CONTAINERS: ",".join(plan.init_containers),
            classad_attrs.SANDBOX: str(sandbox),
        }
        for name, value in identity.items():
            if name.lower() not in present:
                commands[f"+{name}"] = quote(value)
        return commands

    # ------------------------------------------------------------------ remove

    async def remove_pod(self, uid: str, reason: str, *, namespace: str, name: str) -> int:
        """Remove every job of the pod (SIGTERM first: the wrapper runs preStop hooks).
        Only a job recording the same namespace and name as well as the UID matches."""
        constraint = self._uid_constraint([uid], namespace=namespace, name=name)
        self._removed_uids.add(uid)
        removed: int = await self._call(
            "remove", "_act_remote", "Remove", constraint, reason, lane="change"
        )
        return removed

    async def remove_job(self, jid: str, reason: str, *, force: bool = False) -> None:
        action = "RemoveX" if force else "Remove"
        self._removed_jids.add(jid)
        await self._call("remove", "_act_remote", action, [jid], reason, lane="change")

    def _act_remote(self, action: str, jobs: str | list[str], reason: str) -> int:
        result = self._schedd().act(getattr(htcondor2.JobAction, action), jobs, _reason(reason))
        return _num(plain(result).get("TotalSuccess"))

    async def retrieve(self, jid: str) -> None:
        """Spool mode: bring a finished job's output back into its sandbox."""
        await self._call("retrieve", "_retrieve_remote", jid, lane="change")

    def _retrieve_remote(self, jid: str) -> None:
        self._schedd().retrieve(jid)


# ---------------------------------------------------------------------- worker processes

# The gateway a worker process runs its calls on (built by ``_worker_setup``).
_WORKER_GATEWAY: ScheddGateway | None = None


def _condor_env() -> dict[str, str]:
    """This process's HTCondor configuration, to hand to a new worker."""
    return {k: v for k, v in os.environ.items() if k.startswith("_CONDOR_") or k == "CONDOR_CONFIG"}


def _worker_setup(settings: Settings, condor_env: dict[str, str]) -> None:
    """In a new worker: the parent's HTCondor configuration, and the gateway copy."""
    global _WORKER_GATEWAY
    for key in list(_condor_env()):
        del os.environ[key]
    os.environ.update(condor_env)
    htcondor2.reload_config()
    _WORKER_GATEWAY = ScheddGateway(settings, worker_side=True)


def _give_changes() -> Progress | None:
    """In a retiring snapshot worker: what its view of the jobs has learnt."""
    gw = _WORKER_GATEWAY
    return gw._changes.progress() if gw is not None and gw._changes is not None else None


def _take_changes(progress: Progress | None) -> None:
    """In its successor: go on from there (no full listing, no reset answer)."""
    if progress is not None and _WORKER_GATEWAY is not None:
        _WORKER_GATEWAY._change_queries().resume(progress)


def _invoke(method: str, *args: Any) -> Any:
    """In a worker: one blocking call; a failure makes the next one locate the schedd."""
    gw = _WORKER_GATEWAY
    assert gw is not None, "worker not set up"
    try:
        return getattr(gw, method)(*args)
    except BaseException:
        gw._forget_location()
        raise


def _apply(items: list[_Pending], outcomes: list[tuple[Submitted | None, Any]]) -> None:
    for item, (result, error) in zip(items, outcomes, strict=True):
        item.result = result
        item.error = error


def _reason(text: str) -> tuple[str, int]:
    """``act``'s reason: htcondor2 25.14 drops a plain string and keeps only a
    ``(text, code)`` tuple (code 1 is HTCondor's "user request")."""
    return (text, 1)


def _attr_key(command: str) -> str:
    c = command.strip().lower()
    if c.startswith("+"):
        return c[1:]
    if c.startswith("my."):
        return c[3:]
    return ""


_RESOURCES = ("Cpus", "Memory", "Disk", "GPUs")


def capacity_of(slots: Sequence[Mapping[str, Any]]) -> Capacity:
    """What execute slots offer, from their collector ads (plain dicts).

    A partitionable slot counts with its totals (``TotalSlotCpus``...), and its dynamic slots
    not at all: summing what each ad holds now dips while a job starts (the partitionable slot
    already advertises what is left, the new dynamic slot's ad is not in yet). Static slots
    count with their own resources."""
    cpus = mem = gpus = counted = 0
    largest = dict.fromkeys(_RESOURCES, 0)
    for p in slots:
        kind = p.get("SlotType")
        if kind == "Dynamic":
            continue
        prefix = "TotalSlot" if kind == "Partitionable" else ""

        def get(r: str, p: Mapping[str, Any] = p, prefix: str = prefix) -> int:
            return _num(p.get(f"{prefix}{r}", p.get(r)))

        counted += 1
        cpus += get("Cpus")
        mem += get("Memory")
        gpus += get("GPUs")
        for r in _RESOURCES:
            largest[r] = max(largest[r], _num(p.get(f"TotalSlot{r}", p.get(r))))
    return Capacity(cpus, mem, gpus, counted, largest)


def _num(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        return int(v)
    return 0
