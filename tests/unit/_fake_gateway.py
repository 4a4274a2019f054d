"""An in-memory schedd gateway: the unit-test double of the service's one I/O boundary to
HTCondor (``service.gateway.Gateway``). The integration tests use the real pool.

Jobs live in ``queue`` and ``history`` (job id -> ad, as the real gateway returns them).
Removing an idle or finished job moves it to the history at once, as the schedd does; a
job marked ``linger`` stays in the queue as removed (a starter still stopping it) until a
forced removal. ``fail[op]`` makes an operation raise. ``hang(op)`` makes an operation
hang as a stopped schedd does, until ``resume()`` or ``hang_timeout`` (then it times out, as
the real gateway's deadline makes it). What the gateway knows of the schedd
(``contact()``) comes from the real ``Breaker``, fed by the outcome of every call. Every
call is recorded in ``calls``. The app runs in another thread (TestClient, uvicorn), so
state changes take ``lock``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.classad_attrs import job_id
from interlink_htcondor.core.job_changes import JobChanges, JobView
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.core.pod_status import COMPLETED, FROM_HISTORY, HELD, IDLE, REMOVED, RUNNING
from interlink_htcondor.service.breaker import Breaker, Contact
from interlink_htcondor.service.gateway import Capacity, ScheddError, SubmitInDoubt, Submitted

Ad = dict[str, Any]


class FakeGateway:
    def __init__(self, *, spool: bool = False) -> None:
        self.spool = spool
        self.lock = threading.Lock()
        self.queue: dict[str, Ad] = {}
        self.history: dict[str, Ad] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, BaseException] = {}
        self.linger: set[str] = set()  # job ids a graceful remove leaves in the queue
        # Job ids whose next graceful remove comes too late: the job completes instead.
        self.completes_first: set[str] = set()
        self.submitted: list[tuple[JobPlan, Path, dict[str, str]]] = []
        # What the next submit does instead of succeeding (raised once).
        self.next_submit_error: BaseException | None = None
        # The next submit times out but goes on: ``settle_doubt`` lets it finish.
        self.doubt_next_submit = False
        self._doubt: tuple[asyncio.AbstractEventLoop, asyncio.Future[Submitted], Ad] | None = None
        self.capacity_value = Capacity(
            cpus=8, memory_mib=16384, gpus=0, slots=1, largest={"Cpus": 8, "Memory": 16384}
        )
        self.on_retrieve: Any = None  # called with the job's ad (writes the job's output)
        self.closed = False
        self.started = False
        self._cluster = 100
        self._view = JobView()
        self.breaker = Breaker()
        self.hung: set[str] = set()
        self.hang_timeout = 0.5
        self._resumed = threading.Event()

    # ------------------------------------------------------------------ helpers for tests

    def ops(self, name: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [c for c in self.calls if c[0] == name]

    def job_of(self, uid: str) -> Ad | None:
        with self.lock:
            return next((a for a in self.queue.values() if a[classad_attrs.POD_UID] == uid), None)

    def update(self, uid: str, **attrs: Any) -> Ad:
        """Change the queued job of pod ``uid`` (as the schedd or a chirp would)."""
        with self.lock:
            ad = next(a for a in self.queue.values() if a[classad_attrs.POD_UID] == uid)
            ad.update(attrs)
            return dict(ad)

    def run(self, uid: str, started: int | None = None) -> Ad:
        now = int(time.time()) if started is None else started
        return self.update(uid, JobStatus=RUNNING, JobCurrentStartDate=now, LastJobStatus=IDLE)

    def complete(self, uid: str, exit_code: int = 0) -> Ad:
        now = int(time.time())
        return self.update(
            uid, JobStatus=COMPLETED, ExitCode=exit_code, CompletionDate=now, LastJobStatus=RUNNING
        )

    def hold(self, uid: str, reason: str, since: int) -> Ad:
        return self.update(
            uid, JobStatus=HELD, HoldReason=reason, EnteredCurrentStatus=since, LastJobStatus=IDLE
        )

    def to_history(self, uid: str) -> Ad:
        """The job leaves the queue (completed and cleaned out, or removed by an admin)."""
        with self.lock:
            jid, ad = next((j, a) for j, a in self.queue.items() if a[classad_attrs.POD_UID] == uid)
            del self.queue[jid]
            self.history[jid] = ad
            return dict(ad)

    def add_job(self, ad: Ad) -> str:
        """A job submitted behind this plugin's back (another process, a lost create)."""
        with self.lock:
            jid = job_id(ad)
            self.queue[jid] = dict(ad)
            return jid

    def hang(self, *ops: str) -> None:
        """These operations hang from now on (a SIGSTOPped schedd)."""
        with self.lock:
            self._resumed.clear()
            self.hung.update(ops)

    def resume(self) -> None:
        """The schedd answers again: hung calls return, new ones do not hang."""
        with self.lock:
            self.hung.clear()
            self._resumed.set()

    # ------------------------------------------------------------------ the interface

    async def _call(self, op: str, *args: Any) -> None:
        with self.lock:
            self.calls.append((op, *args))
            error = self.fail.get(op)
            hangs = op in self.hung
        if hangs:
            deadline = time.monotonic() + self.hang_timeout
            token = self.breaker.begin()
            try:
                while not self._resumed.is_set():
                    if time.monotonic() >= deadline:
                        self.breaker.failed(f"{op} timed out", hung=True)
                        raise ScheddError(f"schedd {op} failed: timed out")
                    await asyncio.sleep(0.005)
            finally:
                self.breaker.end(token)
        if error is not None:
            self.breaker.failed(str(error), hung=False)
            raise error
        self.breaker.succeeded()

    async def start(self) -> None:
        self.started = True

    def contact(self) -> Contact:
        return self.breaker.contact()

    async def ping(self) -> None:
        await self._call("ping")

    async def query_jobs(self) -> list[Ad]:
        await self._call("query_jobs")
        with self.lock:
            return [dict(a) for a in self.queue.values()]

    async def job_changes(self) -> JobChanges:
        """A full listing each time (as ``query_jobs``, which ``fail`` can break)."""
        return self._view.apply(await self.query_jobs(), full=True)

    async def jobs_of(self, uid: str) -> list[Ad]:
        await self._call("jobs_of", uid)
        with self.lock:
            return [dict(a) for a in self.queue.values() if a[classad_attrs.POD_UID] == uid]

    async def find_jobs(self, uids: Sequence[str]) -> dict[str, Ad]:
        await self._call("find_jobs", tuple(uids))
        found: dict[str, Ad] = {}
        with self.lock:
            for ad in self.queue.values():
                if ad[classad_attrs.POD_UID] in uids:
                    found.setdefault(ad[classad_attrs.POD_UID], dict(ad))
            for ad in reversed(list(self.history.values())):
                if ad[classad_attrs.POD_UID] in uids:
                    found.setdefault(ad[classad_attrs.POD_UID], {**ad, FROM_HISTORY: True})
        return found

    async def capacity(self) -> Capacity:
        await self._call("capacity")
        return self.capacity_value

    async def submit(self, plan: JobPlan, sandbox: Path) -> Submitted:
        await self._call("submit", plan.pod_uid)
        with self.lock:
            error, self.next_submit_error = self.next_submit_error, None
        if error is not None:
            raise error
        now = int(time.time())
        with self.lock:
            doubt, self.doubt_next_submit = self.doubt_next_submit, False
            self._cluster += 1
            ad: Ad = {
                "ClusterId": self._cluster,
                "ProcId": 0,
                "JobStatus": IDLE,
                "QDate": now,
                "EnteredCurrentStatus": now,
                classad_attrs.POD_UID: plan.pod_uid,
                classad_attrs.POD_NAME: plan.name,
                classad_attrs.POD_NAMESPACE: plan.namespace,
                classad_attrs.INIT_CONTAINERS: ",".join(plan.init_containers),
                classad_attrs.CONTAINERS: ",".join(plan.containers),
                classad_attrs.SANDBOX: str(sandbox),
                classad_attrs.PLUGIN: "test",
            }
            self.submitted.append((plan, sandbox, dict(plan.submit)))
            if doubt:
                loop = asyncio.get_running_loop()
                self._doubt = (loop, loop.create_future(), ad)
                raise SubmitInDoubt("schedd submit timed out; it may still happen", self._doubt[1])
            self.queue[job_id(ad)] = ad
        await asyncio.sleep(0)
        return Submitted(job_id(ad), True, dict(ad))

    def settle_doubt(self) -> str:
        """The submit that timed out reaches the schedd after all: its job id."""
        with self.lock:
            assert self._doubt is not None
            loop, outcome, ad = self._doubt
            self.queue[job_id(ad)] = ad
            self._doubt = None
        loop.call_soon_threadsafe(outcome.set_result, Submitted(job_id(ad), True, dict(ad)))
        return job_id(ad)

    async def remove_pod(self, uid: str, reason: str, *, namespace: str, name: str) -> int:
        await self._call("remove_pod", uid, reason)
        with self.lock:
            jids = [
                j
                for j, a in self.queue.items()
                if a[classad_attrs.POD_UID] == uid
                and a[classad_attrs.POD_NAMESPACE] == namespace
                and a[classad_attrs.POD_NAME] == name
            ]
            for jid in jids:
                self._remove(jid, reason, force=False)
            return len(jids)

    async def remove_job(self, jid: str, reason: str, *, force: bool = False) -> None:
        await self._call("remove_job", jid, reason, force)
        with self.lock:
            if jid in self.queue:
                self._remove(jid, reason, force=force)

    def _remove(self, jid: str, reason: str, *, force: bool) -> None:
        ad = self.queue[jid]
        if jid in self.completes_first and not force:
            self.completes_first.discard(jid)
            ad.update(JobStatus=COMPLETED, ExitCode=0, CompletionDate=int(time.time()))
            return
        ad.update(
            JobStatus=REMOVED,
            RemoveReason=reason,
            LastJobStatus=ad["JobStatus"],
            EnteredCurrentStatus=int(time.time()),
        )
        if force or jid not in self.linger:
            self.history[jid] = self.queue.pop(jid)

    async def retrieve(self, jid: str) -> None:
        await self._call("retrieve", jid)
        with self.lock:
            ad = dict(self.queue.get(jid) or self.history.get(jid) or {})
        if self.on_retrieve is not None:
            self.on_retrieve(ad)

    def close(self) -> None:
        self.closed = True


def schedd_down(op: str) -> ScheddError:
    return ScheddError(f"schedd {op} failed: timed out")
