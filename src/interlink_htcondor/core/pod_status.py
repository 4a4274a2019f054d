"""Job ClassAd -> interLink pod status: a pure mapping, no I/O.

The virtual kubelet decides a pod's phase from the container states we return, so the
rules here are what makes a pod Pending, Running, Succeeded or Failed in Kubernetes:

- every known pod gets one entry per container and per init container (an empty list
  would read as "0 of 0 terminated", i.e. Succeeded);
- a terminal answer is final (interLink caches it), so it must carry the right exit codes;
- when an init container fails, every container that did not run is reported terminated,
  otherwise the pod would stay Pending for ever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.classad_attrs import job_id
from interlink_htcondor.core.models import PodRef, rfc3339

# HTCondor JobStatus codes.
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
STATE_NAMES = {
    IDLE: "idle",
    RUNNING: "running",
    REMOVED: "removed",
    COMPLETED: "completed",
    HELD: "held",
    TRANSFERRING_OUTPUT: "transferring_output",
    SUSPENDED: "suspended",
}

# Per-container chirp attributes are projected up to this many containers of each kind;
# containers beyond it are reported from the job's own state.
MAX_TRACKED_CONTAINERS = 32

# Exit codes for containers the job ended without them reporting one themselves.
EXIT_KILLED = 137  # like a container killed by the kubelet (128 + SIGKILL)
EXIT_FAILED = 1
# A container that exited 0 on the SIGTERM of a hold or a removal (as a Dask worker does):
# reported as if the signal had killed it, so the pod fails instead of succeeding.
EXIT_STOPPED = 143

# A container that ended this close to the job's hold or removal, or after it, was stopped
# by it (the execute point's clock may lag the schedd's by a little).
STOP_SKEW_SECONDS = 5

# Set by the gateway on ads that come from the schedd's history (not a ClassAd attribute).
FROM_HISTORY = "_InterlinkFromHistory"

# Attributes the status mapping reads (the snapshot query projects exactly these).
JOB_ATTRS: tuple[str, ...] = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "EnteredCurrentStatus",
    "QDate",
    "JobStartDate",
    "JobCurrentStartDate",
    "CompletionDate",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "RemoveReason",
    "LastRejMatchReason",
    "NumJobStarts",
    "LastJobStatus",
    "RequestCpus",
    "RequestMemory",
    "RequestDisk",
    "RequestGPUs",
    "JobUniverse",
    "SingularityImage",
    classad_attrs.POD_UID,
    classad_attrs.POD_NAME,
    classad_attrs.POD_NAMESPACE,
    classad_attrs.CONTAINERS,
    classad_attrs.INIT_CONTAINERS,
    classad_attrs.IMAGES,
    classad_attrs.SANDBOX,
    classad_attrs.PLUGIN,
)
STATE_ATTRS: tuple[str, ...] = tuple(
    classad_attrs.state_attr(kind, i)
    for kind in ("init", "app")
    for i in range(MAX_TRACKED_CONTAINERS)
)
PROJECTION: tuple[str, ...] = JOB_ATTRS + STATE_ATTRS

Json = dict[str, Any]
Kind = Literal["init", "app"]


@dataclass(frozen=True)
class StatusResult:
    """The pod status, plus a removal the caller should perform (held past its grace)."""

    status: Json
    remove_reason: str | None = None
    terminal: bool = False


def _time(ts: int) -> str | None:
    """Unix seconds -> Kubernetes' time format; None when unknown (0)."""
    return rfc3339(ts) if ts > 0 else None


CONTAINER_UNIVERSE = 14
_REQUESTS = (
    ("RequestCpus", "Cpus", "CPUs", ""),
    ("RequestMemory", "Memory", "memory", " MiB"),
    ("RequestDisk", "Disk", "disk", " KiB"),
    ("RequestGPUs", "GPUs", "GPUs", ""),
)


def unmatchable(ad: Mapping[str, Any], largest: Mapping[str, int]) -> str | None:
    """Why an idle job can never run in this pool: a request no slot can give, or None.

    ``largest`` is the most one execute slot offers per resource (``Cpus``, ``Memory``
    in MiB, ``Disk`` in KiB, ``GPUs``), from the collector."""
    if not largest:
        return None
    for req, res, what, unit in _REQUESTS:
        wanted = _int(ad, req)
        if res in largest and wanted > largest[res]:
            return (
                f"it requests {wanted}{unit} {what}, more than any slot of the pool offers "
                f"(at most {largest[res]}{unit})"
            )
    return None


def runs_wrapper(ad: Mapping[str, Any]) -> bool:
    """Whether the job runs the job wrapper (CRI logs, chirped states), rather than one
    container run by HTCondor itself (container universe or +SingularityImage)."""
    return ad.get("JobUniverse") != CONTAINER_UNIVERSE and not ad.get("SingularityImage")


def pod_status(
    pod: PodRef,
    ad: Mapping[str, Any] | None,
    *,
    now: float,
    held_grace_seconds: int,
    file_states: Mapping[str, classad_attrs.ReportedState] | None = None,
    diagnosis: str | None = None,
) -> StatusResult | None:
    """Map a job ad to the pod's status.

    ``ad`` is the job's ClassAd as a plain mapping (queue or history), None if the job is
    gone from both. ``file_states`` are final states by container name from the job's
    ``status.json`` (used where chirped attributes are missing). ``diagnosis`` explains an
    idle job that can never match. Returns None for a pod never seen (left out).
    """
    if ad is None:
        if not pod.job_id:
            return None
        return _lost(pod)
    init_names = _names(ad.get(classad_attrs.INIT_CONTAINERS), pod.init_containers)
    app_names = _names(ad.get(classad_attrs.CONTAINERS), pod.containers)
    images = _images(ad.get(classad_attrs.IMAGES), init_names + app_names)
    jid = job_id(ad)
    status = _int(ad, "JobStatus")
    view = _JobView(ad, jid, now, file_states or {})

    remove_reason: str | None = None
    states: dict[Kind, list[_State]]
    if status == IDLE:
        states = _all(_idle_waiting(ad, jid, diagnosis), init_names, app_names)
    elif status in (RUNNING, SUSPENDED, TRANSFERRING_OUTPUT):
        states = view.live_states(init_names, app_names)
    elif status == HELD:
        since = _int(ad, classad_attrs.HELD_SINCE, int(now))
        reason = _str(ad, "HoldReason") or "no reason given"
        if now - since >= held_grace_seconds:
            remove_reason = f"held for more than {held_grace_seconds} s: {reason}"
            end = _Terminated(EXIT_FAILED, "JobHeld", f"HTCondor job {jid} was {remove_reason}")
            states = view.final_states(init_names, app_names, end)
            _stopped_by(states, end, since)
        else:
            message = (
                f"HTCondor job {jid} is held: {reason} (the pod fails if still held "
                f"{held_grace_seconds} s after the hold)"
            )
            states = view.held_states(init_names, app_names, _Waiting("JobHeld", message), since)
    elif status == REMOVED:
        why = _str(ad, "RemoveReason") or "no reason given"
        end = _Terminated(EXIT_KILLED, "JobRemoved", f"HTCondor job {jid} was removed: {why}")
        if is_stopping(ad):
            # Still in the queue while the wrapper runs preStop hooks and stops the
            # containers: they end in a moment.
            states = view.live_states(init_names, app_names)
        else:
            states = view.final_states(init_names, app_names, end)
        _stopped_by(states, end, _int(ad, classad_attrs.HELD_SINCE))
    elif status == COMPLETED:
        states = view.final_states(init_names, app_names, _job_exit(ad, jid))
    else:
        waiting = _Waiting("Unknown", f"HTCondor job {jid} has unknown JobStatus {status}")
        states = _all(waiting, init_names, app_names)

    _apply_init_failure(states, init_names, app_names)
    init_list = [
        _render(n, images, pod, s, "init") for n, s in zip(init_names, states["init"], strict=True)
    ]
    app_list = [
        _render(n, images, pod, s, "app") for n, s in zip(app_names, states["app"], strict=True)
    ]
    terminal = (
        all(isinstance(s, _Terminated) for s in states["app"])
        and bool(app_list)
        and _consistent(states)
    )
    return StatusResult(
        status={
            "name": pod.name or _str(ad, classad_attrs.POD_NAME),
            "UID": pod.uid or _str(ad, classad_attrs.POD_UID),
            "namespace": pod.namespace or _str(ad, classad_attrs.POD_NAMESPACE),
            "JID": jid,
            "containers": app_list,
            "initContainers": init_list,
        },
        remove_reason=remove_reason,
        terminal=terminal,
    )


# --- internal state model -------------------------------------------------------------


@dataclass(frozen=True)
class _Restarts:
    """How many times the container was restarted, and how its previous instance ended."""

    restarts: int = field(default=0, kw_only=True)
    last: classad_attrs.LastState | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class _Waiting(_Restarts):
    reason: str
    message: str = ""


@dataclass(frozen=True)
class _Running(_Restarts):
    started: int = 0
    # Reported by the wrapper's probes; None (older wrappers) means started and ready.
    is_started: bool | None = None
    ready: bool | None = None


@dataclass(frozen=True)
class _Terminated(_Restarts):
    exit_code: int
    reason: str = ""
    message: str = ""
    started: int = 0
    finished: int = 0


_State = _Waiting | _Running | _Terminated


class _JobView:
    """Per-container states of one job from its chirped attributes and status.json."""

    def __init__(
        self,
        ad: Mapping[str, Any],
        jid: str,
        now: float,
        file_states: Mapping[str, classad_attrs.ReportedState],
    ) -> None:
        self.ad = ad
        self.jid = jid
        self.now = now
        self.file_states = file_states
        self.job_started = _int(ad, "JobCurrentStartDate") or _int(ad, "JobStartDate")

    def reported(self, kind: Kind, index: int, name: str) -> classad_attrs.ReportedState | None:
        raw = self.ad.get(classad_attrs.state_attr(kind, index))
        chirped = classad_attrs.decode_state(raw) if isinstance(raw, str) else None
        from_file = self.file_states.get(name)
        if from_file is not None:
            # status.json is written after each chirp, so it wins over a stale attribute;
            # it also carries the whole message, which the job ad gets cut and cleaned.
            return from_file
        return chirped

    def _from_report(self, s: classad_attrs.ReportedState) -> _State:
        n, last = s.restarts, s.last
        if s.state == "terminated":
            reason = s.reason or ("Completed" if s.exit_code == 0 else "Error")
            return _Terminated(
                s.exit_code, reason, s.message, s.started, s.finished, restarts=n, last=last
            )
        if s.state == "running":
            started = s.started or self.job_started
            return _Running(started, s.is_started, s.ready, restarts=n, last=last)
        return _Waiting(s.reason or "ContainerCreating", s.message, restarts=n, last=last)

    def live_states(self, init: Sequence[str], app: Sequence[str]) -> dict[Kind, list[_State]]:
        starting = _Waiting("ContainerCreating", f"HTCondor job {self.jid} is starting")
        out: dict[Kind, list[_State]] = {"init": [], "app": []}
        for kind, names in (("init", init), ("app", app)):
            for i, name in enumerate(names):
                rep = self.reported(kind, i, name)  # type: ignore[arg-type]
                out[kind].append(starting if rep is None else self._from_report(rep))  # type: ignore[index]
        return out

    def held_states(
        self, init: Sequence[str], app: Sequence[str], waiting: _Waiting, since: int
    ) -> dict[Kind, list[_State]]:
        """Containers that ended before the hold keep their result; the others, and those
        the hold stopped, wait on the hold."""
        out = self.live_states(init, app)
        for states in out.values():
            for i, s in enumerate(states):
                if not isinstance(s, _Terminated) or _ended_by_stop(s, since):
                    states[i] = replace(waiting, restarts=s.restarts, last=s.last)
        return out

    def final_states(
        self, init: Sequence[str], app: Sequence[str], end: _Terminated
    ) -> dict[Kind, list[_State]]:
        """The job is over: every container is terminated, from its own report if any."""
        finished = (
            _int(self.ad, "CompletionDate")
            or _int(self.ad, classad_attrs.HELD_SINCE)
            or int(self.now)
        )
        out = self.live_states(init, app)
        for states in out.values():
            for i, s in enumerate(states):
                if isinstance(s, _Terminated):
                    continue
                started = s.started if isinstance(s, _Running) else 0
                states[i] = _Terminated(
                    end.exit_code,
                    end.reason,
                    end.message,
                    started or (self.job_started if isinstance(s, _Running) else 0),
                    finished,
                    restarts=s.restarts,
                    last=s.last,
                )
        return out


def is_stopping(ad: Mapping[str, Any]) -> bool:
    """A removed job still in the queue after running: its starter is stopping it."""
    return (
        _int(ad, "JobStatus") == REMOVED
        and not ad.get(FROM_HISTORY)
        and _int(ad, "LastJobStatus") in (RUNNING, SUSPENDED, TRANSFERRING_OUTPUT)
    )


def _ended_by_stop(s: _Terminated, since: int) -> bool:
    """``s`` ended when the job was held or removed at ``since``, or after: stopped by it."""
    return bool(since) and s.finished >= since - STOP_SKEW_SECONDS


def _stopped_by(states: dict[Kind, list[_State]], end: _Terminated, since: int) -> None:
    """Containers the hold or removal stopped carry its reason and HTCondor's message, never
    a normal completion: one that exited 0 on the SIGTERM is reported as killed by it."""
    for kind, group in states.items():
        out: list[_State] = []
        for s in group:
            if isinstance(s, _Terminated) and s.reason != end.reason and _ended_by_stop(s, since):
                note = " (the container exited with code 0 when stopped)" if not s.exit_code else ""
                s = replace(
                    s,
                    exit_code=s.exit_code or EXIT_STOPPED,
                    reason=end.reason,
                    message=end.message + note,
                )
            out.append(s)
        states[kind] = out


def _all(s: _State, init: Sequence[str], app: Sequence[str]) -> dict[Kind, list[_State]]:
    return {"init": [s] * len(init), "app": [s] * len(app)}


def _job_exit(ad: Mapping[str, Any], jid: str) -> _Terminated:
    """Result for containers that reported nothing, from the job's own exit."""
    if ad.get("ExitBySignal") is True:
        sig = _int(ad, "ExitSignal")
        return _Terminated(128 + sig, "Error", f"HTCondor job {jid} was killed by signal {sig}")
    code = _int(ad, "ExitCode")
    note = f"exit code of HTCondor job {jid} (the container reported no state of its own)"
    return _Terminated(code, "Completed" if code == 0 else "Error", note)


def _idle_waiting(ad: Mapping[str, Any], jid: str, diagnosis: str | None) -> _Waiting:
    if diagnosis:
        return _Waiting("Unschedulable", f"HTCondor job {jid} cannot run: {diagnosis}")
    starts = _int(ad, "NumJobStarts")
    rejected = _str(ad, "LastRejMatchReason")
    if starts > 0:
        msg = f"HTCondor job {jid} is idle again after {starts} start(s), waiting for a slot"
    else:
        msg = f"HTCondor job {jid} is idle, waiting for a slot"
    if rejected:
        msg += f" (last match attempt: {rejected})"
    return _Waiting("Pending", msg)


def _apply_init_failure(
    states: dict[Kind, list[_State]], init: Sequence[str], app: Sequence[str]
) -> None:
    """Fail fast: after a failed init container nothing else runs, and says so.

    The failure is that of the first init container that did not succeed, and only the
    containers after it are marked as never started. While an earlier one has no end yet,
    the states came from a view of the job taken between two of its reports: nothing is
    made up for it (``_consistent`` keeps such an answer from being final)."""
    failed = None
    for i, s in enumerate(states["init"]):
        if isinstance(s, _Terminated) and s.exit_code == 0:
            continue
        if isinstance(s, _Terminated):
            failed = (i, init[i], s)
        break
    if failed is None:
        return
    index, name, s = failed
    # As the job wrapper reports them itself (exit 1, reason InitContainerFailed).
    skipped = _Terminated(
        EXIT_FAILED,
        "InitContainerFailed",
        f"not started: init container {name!r} failed with exit code {s.exit_code}",
        0,
        s.finished,
    )
    later = states["init"][index + 1 :]
    states["init"][index + 1 :] = [x if isinstance(x, _Terminated) else skipped for x in later]
    states["app"] = [x if isinstance(x, _Terminated) else skipped for x in states["app"]]


def _consistent(states: dict[Kind, list[_State]]) -> bool:
    """Whether the app containers' ends can stand: every init container before them ended
    (an app container runs only after all of them)."""
    return all(isinstance(s, _Terminated) for s in states["init"])


def _lost(pod: PodRef) -> StatusResult:
    message = (
        f"HTCondor job {pod.job_id} of this pod is gone from the schedd's queue and history; "
        "its outcome is unknown"
    )
    end = _Terminated(EXIT_FAILED, "JobLost", message)
    init = [_render(n, pod.images, pod, end, "init") for n in pod.init_containers]
    app = [_render(n, pod.images, pod, end, "app") for n in pod.containers]
    return StatusResult(
        status={
            "name": pod.name,
            "UID": pod.uid,
            "namespace": pod.namespace,
            "JID": pod.job_id,
            "containers": app,
            "initContainers": init,
        },
        terminal=True,
    )


def _render(name: str, images: Mapping[str, str], pod: PodRef, s: _State, kind: Kind) -> Json:
    state: Json
    if isinstance(s, _Waiting):
        state = {"waiting": _drop_empty({"reason": s.reason, "message": s.message})}
    elif isinstance(s, _Running):
        state = {"running": _drop_empty({"startedAt": _time(s.started)})}
    else:
        state = {
            "terminated": _drop_empty(
                {
                    "exitCode": s.exit_code,
                    "reason": s.reason,
                    "message": s.message,
                    "startedAt": _time(s.started),
                    "finishedAt": _time(s.finished),
                }
            )
        }
    # Started: running and past its startup probe. Ready: started and its readiness probe
    # passing (no probe: as soon as it runs). Init containers are never ready.
    started = isinstance(s, _Running) and s.is_started is not False
    ready = started and kind == "app" and isinstance(s, _Running) and s.ready is not False
    out: Json = {
        "name": name,
        "state": state,
        "ready": ready,
        "started": started,
        "restartCount": s.restarts,
        "image": pod.images.get(name) or images.get(name, ""),
        "imageID": images.get(name, ""),
    }
    if s.last is not None:
        out["lastState"] = {
            "terminated": _drop_empty(
                {
                    "exitCode": s.last.exit_code,
                    "reason": s.last.reason or ("Completed" if s.last.exit_code == 0 else "Error"),
                    "startedAt": rfc3339(s.last.started),
                    "finishedAt": rfc3339(s.last.finished),
                }
            )
        }
    return out


def _drop_empty(d: Json) -> Json:
    return {k: v for k, v in d.items() if (v is not None and v != "") or k == "exitCode"}


def _names(value: Any, fallback: Sequence[str]) -> list[str]:
    if isinstance(value, str) and value:
        return value.split(",")
    if isinstance(value, str):
        return []
    return list(fallback)


def _images(value: Any, names: Sequence[str]) -> dict[str, str]:
    if not isinstance(value, str) or not value:
        return {}
    return dict(zip(names, value.split(","), strict=False))


def _int(ad: Mapping[str, Any], key: str, default: int = 0) -> int:
    v = ad.get(key)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        return int(v)
    return default


def _str(ad: Mapping[str, Any], key: str) -> str:
    v = ad.get(key)
    return v if isinstance(v, str) else ""
