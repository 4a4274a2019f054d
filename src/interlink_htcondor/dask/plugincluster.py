"""``PluginCluster``: Dask workers as pods sent straight to an interlink-htcondor plugin.

No Kubernetes: the cluster manager itself plays the virtual kubelet's part. It is a
``SpecCluster`` (like dask-jobqueue's clusters) with an in-process scheduler; each worker
is one pod built from the shared ``WorkerTemplate`` and created with ``POST /create``.
Unlike dask-jobqueue it watches its jobs (one ``/status`` call for all pods per interval),
so held, failed and never-starting workers are reported with HTCondor's reason, and
scale-down removes workers that are not working yet before it retires any that are.
"""

# distributed's SpecCluster/ProcessInterface methods carry no annotations.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.scheduler import Scheduler

from interlink_htcondor.client import PluginClient, PluginError
from interlink_htcondor.dask import config
from interlink_htcondor.dask.podstate import Counts, Observed, Phase, observe, scale_down_order
from interlink_htcondor.dask.progress import Display, make_display
from interlink_htcondor.dask.template import TEMPLATE_PARAMETERS, WORKER_CONTAINER, WorkerTemplate

logger = logging.getLogger(__name__)
Json = dict[str, Any]

CLUSTER_LABEL = "dask.org/cluster-name"
COMPONENT_LABEL = "dask.org/component"
# Scheduler metadata key under which the cluster publishes its workers' HTCondor job ids, so
# that any client of the scheduler (a notebook attached to a Dask sidebar cluster) sees them.
JOBS_METADATA = ("interlink-htcondor", "jobs")


@dataclass(frozen=True)
class WorkerFailure:
    """A worker that will not arrive (or left), with the plugin's reason."""

    name: str
    job_id: str
    reason: str
    at: float
    log_tail: str = ""

    def summary(self) -> str:
        """One line: the worker, its job and the reason."""
        job = f" (HTCondor job {self.job_id})" if self.job_id else ""
        return f"worker {self.name}{job}: {self.reason}"

    def __str__(self) -> str:
        tail = f"\n    last log lines:\n      {self.log_tail}" if self.log_tail else ""
        return self.summary() + tail


_LOG_LEVEL = re.compile(r"^(FATAL|ERROR|WARNING|INFO|DEBUG):\s*")


# Seconds between the attempts of a delete the plugin answered 503 (busy, or no schedd).
DELETE_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)

# What Python prints between the exceptions of a chain.
_CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


def log_excerpt(text: str, lines: int) -> str:
    """The last ``lines`` lines of a worker's log, preceded by the exception line of each
    traceback of a chain that ends above them: the cause of a worker that failed to start
    (``TypeError: ...``) sits above a long traceback ending in ``RuntimeError: Worker
    failed to start``."""
    all_lines = [ln.rstrip() for ln in text.strip().splitlines()]
    tail = all_lines[-lines:]
    start = len(all_lines) - len(tail)
    causes = [
        all_lines[i]
        for i in range(start)
        if all_lines[i].strip()
        and any(ln.strip().startswith(_CHAINED) for ln in all_lines[i + 1 : i + 3])
    ]
    if not causes:
        return "\n      ".join(tail)
    return "\n      ".join([*causes, "...", *tail])


def new_log_lines(log_tail: str, reason: str) -> str:
    """The lines of a worker's log tail that the failure's reason does not already say
    (a container that cannot start puts the same error in its log, after Apptainer's
    ``FATAL:`` label, and in its status)."""
    lines = [ln.strip() for ln in log_tail.splitlines()]
    return "\n      ".join(ln for ln in lines if ln and _LOG_LEVEL.sub("", ln) not in reason)


class WorkerStartError(RuntimeError):
    """Requested workers cannot all arrive; the message lists why."""

    def __init__(self, message: str, failures: Sequence[WorkerFailure]) -> None:
        super().__init__(message + "".join(f"\n  - {f}" for f in failures))
        self.failures = list(failures)


@dataclass
class PodRecord:
    """What the cluster knows about one worker pod."""

    name: str
    pod: Json
    job_id: str = ""
    observed: Observed = field(default_factory=lambda: Observed(Phase.SUBMITTING))
    since: float = field(default_factory=time.monotonic)
    warned: bool = False
    joined: bool = False  # its worker was seen connected to the scheduler

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    def set(self, observed: Observed) -> None:
        if observed.phase != self.observed.phase:
            self.since = time.monotonic()
            self.warned = False
        self.observed = observed

    def status_pod(self) -> Json:
        """The pod as interLink sends it to /status: with the ``JobID`` annotation, so the
        plugin can tell a lost job from one it has not seen yet."""
        if not self.job_id:
            return self.pod
        meta = dict(self.pod["metadata"])
        meta["annotations"] = {**meta.get("annotations", {}), "JobID": self.job_id}
        return {**self.pod, "metadata": meta}


class PodBackend:
    """Talks to the plugin for the cluster and its workers (one httpx client per loop)."""

    def __init__(
        self,
        url: str,
        *,
        template: WorkerTemplate,
        namespace: str,
        labels: dict[str, str],
        token: str | None,
        verify: bool | str,
        max_concurrency: int,
    ) -> None:
        self.url = url
        self.template = template
        self.namespace = namespace
        self.labels = labels
        self._client_args: Json = {"token": token, "verify": verify}
        self._client: PluginClient | None = None
        self._max_concurrency = max_concurrency
        self._sem: asyncio.Semaphore | None = None
        self.records: dict[str, PodRecord] = {}
        self.last_error = ""

    @property
    def client(self) -> PluginClient:
        if self._client is None:
            self._client = PluginClient(self.url, **self._client_args)
        return self._client

    @property
    def sem(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._max_concurrency)
        return self._sem

    def phase(self, name: str) -> Phase:
        rec = self.records.get(name)
        return rec.observed.phase if rec else Phase.SUBMITTING

    async def create(self, name: str, scheduler_address: str) -> PodRecord:
        template = self.template
        if not template.scheduler_address:
            template = template.with_options(scheduler_address=scheduler_address)
        pod = template.pod(name, namespace=self.namespace, labels=self.labels)
        rec = PodRecord(name, pod)
        self.records[name] = rec
        try:
            async with self.sem:
                answer = await self.client.create(pod)
        except PluginError as e:
            rec.set(Observed(Phase.FAILED, "CreateFailed", e.detail))
        except httpx.HTTPError as e:
            rec.set(Observed(Phase.FAILED, "PluginUnreachable", f"{self.url}: {e}"))
        else:
            rec.job_id = str(answer.get("PodJID", ""))
            rec.set(Observed(Phase.PENDING, "Submitted"))
        return rec

    async def delete(self, rec: PodRecord) -> None:
        rec.set(Observed(Phase.CLOSING))
        if not rec.job_id:
            return  # never created: nothing to remove
        for pause in (*DELETE_RETRY_PAUSES, None):
            try:
                async with self.sem:
                    await self.client.delete(rec.pod)
                break
            except (PluginError, httpx.HTTPError) as e:
                # 503: the plugin is busy (many deletes at once) or the schedd is away.
                if pause is not None and getattr(e, "status", 503) == 503:
                    await asyncio.sleep(pause)
                    continue
                # The job may outlive us: say which one, so it can be removed by hand.
                logger.error("could not delete worker pod %s (job %s): %s", rec.name, rec.job_id, e)
                break
        if self.records.get(rec.name) is rec:
            del self.records[rec.name]

    async def poll(self, names: Sequence[str]) -> dict[str, Json] | None:
        """One /status call for ``names``; ``None`` when the plugin cannot be asked."""
        recs = [self.records[n] for n in names if n in self.records and self.records[n].job_id]
        if not recs:
            return {}
        try:
            answer = await self.client.status([r.status_pod() for r in recs])
        except (PluginError, httpx.HTTPError) as e:
            self.last_error = f"{self.url}: {e}"
            return None
        self.last_error = ""
        by_uid = {str(e.get("UID")): e for e in answer if isinstance(e, dict)}
        return {r.name: by_uid[r.uid] for r in recs if r.uid in by_uid}

    async def log_tail(self, rec: PodRecord, lines: int = 15, scan: int = 200) -> str:
        """The worker's last ``lines`` log lines, with the causes found in the ``scan``
        lines before them (``log_excerpt``)."""
        if not rec.job_id:
            return ""
        try:
            text = await asyncio.wait_for(
                self.client.logs(self.namespace, rec.name, rec.uid, WORKER_CONTAINER, Tail=scan),
                timeout=10,
            )
        except (PluginError, httpx.HTTPError, TimeoutError):
            return ""
        return log_excerpt(text, lines)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class PluginWorker(ProcessInterface):
    """One Dask worker = one pod = one HTCondor job. ``start`` returns once the plugin
    has the job; the worker connects to the scheduler when the job runs."""

    def __init__(self, scheduler: str, name: str, backend: PodBackend) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler = scheduler
        self.name = name
        self.backend = backend
        self.record: PodRecord | None = None

    async def start(self) -> None:
        self.record = await self.backend.create(self.name, self.scheduler)
        await super().start()

    async def close(self) -> None:
        if self.record is not None:
            await self.backend.delete(self.record)
        await super().close()

    def __repr__(self) -> str:
        rec = self.record
        what = rec.observed.describe() if rec else "not submitted"
        job = rec.job_id if rec and rec.job_id else "-"
        return f"<PluginWorker {self.name}: job {job}, {what}>"


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:40].strip("-") or "dask"


def _read_token(path: str | Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as e:
        raise ValueError(
            f"cannot read the plugin's bearer token from {path}: {e.strerror}"
        ) from None
    if not token:
        raise ValueError(f"the bearer token file {path} is empty")
    return token


def _dashboard_options(address: str | None) -> Json:
    # The dashboard needs bokeh; without it the scheduler would only log a warning.
    if importlib.util.find_spec("bokeh") is None:
        return {"dashboard": False}
    return {"dashboard_address": address or ":0"}


PLUGIN_CLUSTER_PARAMETERS = """
    plugin_url : str, optional
        The plugin: ``http://``, ``https://`` or ``unix:///path``. Default: ``plugin-url``.
    n_workers : int
        Workers to start with (``scale(n_workers)``).
    template : WorkerTemplate, optional
        The worker pod; any ``WorkerTemplate`` field may also be given as a keyword
        (``memory="4Gi"``), on top of ``template`` or of the site's defaults.
    namespace : str, optional
        Namespace of the worker pods. Default: ``namespace``.
    token : str, optional
        The plugin's bearer token.
    token_file : str or Path, optional
        A file holding the bearer token (used when ``token`` is not given). Default:
        ``token-file``.
    verify : bool or str, optional
        TLS verification of an ``https://`` plugin: ``True``, ``False`` or a CA bundle.
        Default: ``verify``.
    scheduler_host, scheduler_port : str, int, optional
        Where the scheduler (in this process) listens. Default: ``plugin-cluster.*``,
        127.0.0.1 on any free port.
    scheduler_contact_address : str, optional
        The scheduler's address as the grid slots reach it (NAT, a tunnel).
    dashboard_address : str, optional
        The dashboard's address (needs bokeh); default any free port.
    status_interval : float, optional
        Seconds between the ``/status`` calls that watch the jobs (one call for all).
    pending_warning : float, optional
        Seconds after which a still-pending worker is reported with the plugin's reason.
    max_concurrent_requests : int, optional
        Concurrent ``/create`` and ``/delete`` calls.
    name : str, optional
        Cluster name; worker pods are named ``<name>-<n>``.
    asynchronous, loop
        As for any ``distributed`` cluster.
    **template_options
        ``WorkerTemplate`` fields (see Other Parameters).
"""


class PluginCluster(SpecCluster):
    """Dask workers as HTCondor jobs through an interlink-htcondor plugin, no Kubernetes.

    The scheduler runs in this process; each worker is one pod sent to the plugin's
    ``/create`` and becomes one HTCondor job. Options not given come from the site's
    ``dask.config`` section ``interlink-htcondor`` (keys named below), so a facility
    sets the plugin URL, image and accounting group once for all its users.

    Parameters
    ----------{parameters}
    Other Parameters
    ----------------{template_parameters}
    Examples
    --------
    >>> cluster = PluginCluster("http://127.0.0.1:4000", memory="1Gi")
    >>> cluster.scale(8)
    >>> cluster.wait_for_workers(8, progress=True)
    >>> client = cluster.get_client()
    """

    def __init__(
        self,
        plugin_url: str | None = None,
        *,
        n_workers: int = 0,
        template: WorkerTemplate | None = None,
        namespace: str | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        verify: bool | str | None = None,
        scheduler_host: str | None = None,
        scheduler_port: int | None = None,
        scheduler_contact_address: str | None = None,
        dashboard_address: str | None = None,
        status_interval: float | None = None,
        pending_warning: float | None = None,
        max_concurrent_requests: int | None = None,
        name: str | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        **template_options: Any,
    ) -> None:
        template = template or WorkerTemplate()
        if template_options:
            template = template.with_options(**template_options)
        name = name or f"dask-{uuid.uuid4().hex[:8]}"
        pc = "plugin-cluster."
        self._prefix = _dns_label(name)
        self._status_interval = float(config.pick(status_interval, pc + "status-interval"))
        self._pending_warning = float(config.pick(pending_warning, pc + "pending-warning"))
        self._monitor_task: asyncio.Task[None] | None = None
        self._waiters = 0  # wait_for_workers calls in progress (they raise with failures)
        self._published: dict[str, str] | None = None
        self.failures: list[WorkerFailure] = []
        if token is None:
            token = _read_token(config.pick(token_file, "token-file"))
        self._backend = PodBackend(
            str(config.pick(plugin_url, "plugin-url")),
            template=template,
            namespace=str(config.pick(namespace, "namespace")),
            labels={CLUSTER_LABEL: self._prefix, COMPONENT_LABEL: "worker"},
            token=token,
            verify=config.pick(verify, "verify"),
            max_concurrency=int(
                config.pick(max_concurrent_requests, pc + "max-concurrent-requests")
            ),
        )
        scheduler = {
            "cls": Scheduler,
            "options": {
                "host": config.pick(scheduler_host, pc + "scheduler-host"),
                "port": config.pick(scheduler_port, pc + "scheduler-port"),
                "contact_address": config.pick(
                    scheduler_contact_address, pc + "scheduler-contact-address"
                ),
                **_dashboard_options(config.pick(dashboard_address, pc + "dashboard-address")),
            },
        }
        worker = {"cls": PluginWorker, "options": {"backend": self._backend}}
        super().__init__(
            scheduler=scheduler,
            worker=worker,
            name=name,
            asynchronous=asynchronous,
            loop=loop,
        )
        if n_workers:
            self.scale(n_workers)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def template(self) -> WorkerTemplate:
        return self._backend.template

    def set_template(self, template: WorkerTemplate | None = None, **options: Any) -> None:
        """Change the pod of workers created from now on (running ones keep theirs)."""
        base = template or self._backend.template
        self._backend.template = base.with_options(**options) if options else base

    @property
    def plugin_url(self) -> str:
        return self._backend.url

    async def _start(self) -> None:
        await super()._start()
        if self._monitor_task is None:
            self._monitor_task = asyncio.create_task(self._monitor())

    async def _close(self) -> None:
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
            self._monitor_task = None
        try:
            await super()._close()
        finally:
            await self._backend.aclose()

    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self._prefix}-{worker_number}"

    def _threads_per_worker(self) -> int:
        return self.template.nthreads

    def _memory_per_worker(self) -> int:
        return self.template.memory_bytes

    # -- scaling ------------------------------------------------------------------------

    def scale(self, n: int = 0, memory: str | None = None, cores: int | None = None) -> Any:
        """Scale to ``n`` workers. Scaling down removes failed, held, pending and starting
        workers (newest first) before it gracefully retires connected ones."""
        if memory is not None:
            n = max(n, math.ceil(self._parse_bytes(memory) / self._memory_per_worker()))
        if cores is not None:
            n = max(n, math.ceil(cores / self._threads_per_worker()))
        excess = len(self.worker_spec) - n
        if excess > 0:
            phases = {name: self._phase(name) for name in self.worker_spec}
            for name in scale_down_order(phases, list(self.worker_spec))[:excess]:
                del self.worker_spec[name]
        return super().scale(n)

    @staticmethod
    def _parse_bytes(text: str) -> int:
        from dask.utils import parse_bytes

        return int(parse_bytes(text))

    def _connected(self) -> set[str]:
        return {str(w.get("name")) for w in self.scheduler_info.get("workers", {}).values()}

    def _phase(self, name: str) -> Phase:
        if name in self._connected():
            return Phase.RUNNING
        return self._backend.phase(name)

    async def _correct_state_internal(self) -> None:
        # SpecCluster asks the scheduler to retire workers by *address* using their
        # names, which matches nothing; retire connected ones by name first so their
        # data moves to the remaining workers before their jobs are removed.
        to_close = set(self.workers) - set(self.worker_spec)
        connected = self._connected()
        retire = sorted(str(n) for n in to_close if n in connected)
        if retire and self.status == Status.running and self.scheduler_comm is not None:
            try:
                await asyncio.wait_for(
                    self.scheduler_comm.retire_workers(
                        names=retire, close_workers=True, remove=True
                    ),
                    timeout=120,
                )
            except (OSError, TimeoutError) as e:
                logger.warning("graceful retirement of %s failed: %s", retire, e)
        await super()._correct_state_internal()

    # -- watching the jobs --------------------------------------------------------------

    async def _monitor(self) -> None:
        while True:
            try:
                await self._observe_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad answer
                logger.exception("watching worker pods failed")
            await asyncio.sleep(self._status_interval)

    async def _observe_once(self) -> None:
        backend = self._backend
        names = [n for n, r in backend.records.items() if r.observed.phase != Phase.CLOSING]
        connected = self._connected()
        # Create failures are known without asking.
        for n in names:
            if backend.records[n].observed.phase == Phase.FAILED:
                await self._handle_end(backend.records[n])
        names = [n for n in names if n in backend.records and backend.phase(n) != Phase.FAILED]
        entries = await backend.poll(names)
        if entries is None:
            return
        for n in names:
            rec = backend.records.get(n)
            if rec is None or not rec.job_id or rec.observed.phase == Phase.CLOSING:
                continue
            rec.set(observe(entries.get(n), connected=n in connected))
            phase = rec.observed.phase
            rec.joined = rec.joined or phase == Phase.RUNNING
            if phase.ends_worker:
                # Failed, held, or known never to run: reported now, not after a timeout.
                await self._handle_end(rec)
            elif (
                phase == Phase.PENDING
                and not rec.warned
                and time.monotonic() - rec.since > self._pending_warning
            ):
                rec.warned = True
                self._note(
                    f"worker {n} (HTCondor job {rec.job_id}) still pending after "
                    f"{time.monotonic() - rec.since:.0f}s: {rec.observed.describe()}"
                )
        self._publish_jobs()

    def _note(self, message: str, level: int = logging.WARNING) -> None:
        """Keep ``message`` in the cluster manager's logs (``cluster.get_logs()``) and log
        it, once. Cluster._log would also print it; the widget and the repr show it."""
        self._cluster_manager_logs.append((datetime.now(), message))
        # A wait_for_workers in progress raises with it: no second copy on stderr.
        logger.log(logging.INFO if self._waiters else level, "%s: %s", self.name, message)

    def _publish_jobs(self) -> None:
        jobs = self.jobs()
        if jobs != self._published and self.scheduler is not None:
            self.scheduler.set_metadata(keys=list(JOBS_METADATA), value=jobs)
            self._published = jobs

    async def _handle_end(self, rec: PodRecord) -> None:
        """A worker's job ended: record why (unless it ended cleanly); its pod is deleted.

        A worker that had joined the scheduler and is still part of the cluster's size is
        replaced by a new pod of the same name: what a nanny would do for a worker run
        without one (``nanny=False``: ``client.restart()`` ends such workers, the job
        wrapper ends one over its memory limit). One that never joined is dropped from the
        spec (its failure would likely repeat); ``scale``/``adapt`` replace it."""
        obs = rec.observed
        clean = obs.phase == Phase.FAILED and obs.exit_code == 0 and obs.reason in ("Completed", "")
        if clean:
            logger.info("worker %s (job %s) finished", rec.name, rec.job_id)
        else:
            reason = obs.describe()
            tail = new_log_lines(await self._backend.log_tail(rec), reason)
            failure = WorkerFailure(rec.name, rec.job_id, reason, time.time(), tail)
            self.failures.append(failure)
            self._note(f"{failure}")
        rec.set(Observed(Phase.CLOSING, obs.reason, obs.message, obs.exit_code))
        if (
            rec.joined
            and obs.phase == Phase.FAILED
            and rec.name in self.worker_spec
            and self.status == Status.running
        ):
            self._note(
                f"worker {rec.name} (job {rec.job_id}) ended; starting a new one",
                logging.INFO,
            )
            old = self.workers.pop(rec.name, None)
            if old is not None:
                await old.close()  # deletes its pod (and job)
        else:
            # SpecCluster then closes the worker, which deletes its pod (and job).
            self.worker_spec.pop(rec.name, None)
        # Shielded: cancelling the watcher (close) must not cancel the shared task close
        # awaits too.
        await asyncio.shield(self._correct_state())

    # -- what the user sees -------------------------------------------------------------

    def jobs(self) -> dict[str, str]:
        """HTCondor job id of every worker pod the plugin accepted, by worker name."""
        return {n: r.job_id for n, r in list(self._backend.records.items()) if r.job_id}

    def counts(self) -> Counts:
        """Workers by phase. ``running`` counts the workers connected to the scheduler, as
        its ``scheduler_info`` (and so the widget's Scheduler Info) does, retiring ones
        included; the other phases count the requested workers not connected."""
        connected = self._connected()
        phases = [self._phase(n) for n in list(self.worker_spec) if n not in connected]
        phases += [Phase.RUNNING] * len(connected)
        return Counts.of(phases, failed=len(self.failures), requested=len(self.worker_spec))

    def notes(self) -> list[str]:
        """Long-pending workers with their reason, the latest failures, and a plugin that
        does not answer, one line each."""
        out = []
        for rec in list(self._backend.records.values()):
            if rec.observed.phase == Phase.PENDING and rec.warned:
                out.append(f"{rec.name} {rec.observed.phase}: {rec.observed.describe()}")
        out += [f.summary() for f in self.failures[-5:]]
        if self._backend.last_error:
            out.append(f"plugin not answering: {self._backend.last_error}")
        return out

    def __repr__(self) -> str:
        base = str(super().__repr__())
        last = f"; last failure: {self.failures[-1].summary()}" if self.failures else ""
        return base[:-1] + f", {self.counts().text()}{last})"

    def _repr_html_(self, cluster_status: str | None = None) -> str:
        from interlink_htcondor.dask.widget import status_rows

        unreachable = self._backend.last_error
        status = status_rows(
            self.counts(),
            self._pod_rows(),
            [f"plugin not answering: {unreachable}"] if unreachable else [],
        )
        return str(super()._repr_html_(cluster_status=status + (cluster_status or "")))

    def _pod_rows(self) -> list[tuple[str, str, str, str]]:
        """(worker, HTCondor job, phase, reason) of each requested worker, then of the
        latest failures: each reason once."""
        rows = []
        connected = self._connected()
        for name in list(self.worker_spec):
            rec = self._backend.records.get(name)
            phase = self._phase(name)
            reason = rec.observed.describe() if rec and name not in connected else ""
            rows.append((name, rec.job_id if rec else "", str(phase), reason))
        rows += [(f.name, f.job_id, "failed", f.reason) for f in self.failures[-10:]]
        return rows

    # -- waiting for workers --------------------------------------------------------------

    def wait_for_workers(
        self,
        n_workers: int,
        timeout: float | None = None,
        *,
        progress: bool | Display = False,
    ) -> Any:
        """Block until ``n_workers`` are connected, showing arrivals when ``progress``.

        Raises ``WorkerStartError`` as soon as failures make ``n_workers`` unreachable
        (with each failed job's reason), and a timeout error listing held and pending
        workers' reasons when ``timeout`` passes.
        """
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive integer, not {n_workers!r}")
        if self.asynchronous:
            return self._await_workers(n_workers, timeout, make_display(progress))
        display = make_display(progress)
        start_failures = len(self.failures)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._waiters += 1
        try:
            while True:
                done = self._check_arrival(n_workers, start_failures, deadline, display)
                if done:
                    return None
                time.sleep(0.25)
        finally:
            self._waiters -= 1
            display.close()

    async def _await_workers(self, n_workers: int, timeout: float | None, display: Display) -> None:
        start_failures = len(self.failures)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._waiters += 1
        try:
            while not self._check_arrival(n_workers, start_failures, deadline, display):
                await asyncio.sleep(0.25)
        finally:
            self._waiters -= 1
            display.close()

    def _check_arrival(
        self, n: int, start_failures: int, deadline: float | None, display: Display
    ) -> bool:
        counts = self.counts()
        # The in-process scheduler's own view: scheduler_info keeps a worker's status
        # from when it joined (often "init").
        workers = list(self.scheduler.workers.values()) if self.scheduler is not None else []
        running = len([ws for ws in workers if ws.status == Status.running])
        if running >= n:
            display.update(counts, self.notes())
            return True
        new_failures = self.failures[start_failures:]
        if new_failures and len(self.worker_spec) < n:
            display.update(counts)  # the reasons are in the exception, once
            raise WorkerStartError(
                f"{n} workers were requested but {len(new_failures)} failed "
                f"({counts.text()}); call scale() again to replace them",
                new_failures,
            )
        if deadline is not None and time.monotonic() > deadline:
            notes = "".join(f"\n  - {x}" for x in self.notes())
            display.update(counts)
            raise TimeoutError(
                f"only {running} of {n} workers connected in time ({counts.text()}){notes}"
            )
        display.update(counts, self.notes())
        return False


assert PluginCluster.__doc__ is not None
PluginCluster.__doc__ = PluginCluster.__doc__.format(
    parameters=PLUGIN_CLUSTER_PARAMETERS, template_parameters=TEMPLATE_PARAMETERS
)
