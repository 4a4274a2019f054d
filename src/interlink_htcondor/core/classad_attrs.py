"""ClassAd attribute names, the job-id format and the per-container state encoding.

HTCondor is the plugin's database: a job carries the pod's identity, and the job wrapper
writes each container's live state into the job ad with condor_chirp. The job wrapper
(stdlib only) repeats ``encode_state``'s format; ``tests/unit`` checks both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

POD_UID = "InterlinkPodUID"
POD_NAME = "InterlinkPodName"
POD_NAMESPACE = "InterlinkPodNamespace"
CONTAINERS = "InterlinkContainers"  # comma-separated app container names, pod order
INIT_CONTAINERS = "InterlinkInitContainers"  # comma-separated init container names
IMAGES = "InterlinkImages"  # comma-separated images, init containers first
SANDBOX = "InterlinkSandbox"  # plugin-side sandbox directory
PLUGIN = "InterlinkPlugin"  # marks jobs this plugin owns (value: plugin instance name)
HELD_SINCE = "EnteredCurrentStatus"


def job_id(ad: Mapping[str, Any]) -> str:
    """The job's id as HTCondor writes it, ``<ClusterId>.<ProcId>`` (what /create answers)."""
    return f"{_int(ad.get('ClusterId'))}.{_int(ad.get('ProcId'))}"


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | float) else 0


def state_attr(kind: Literal["init", "app"], index: int) -> str:
    """Attribute holding the state of container ``index`` (names may not be ClassAd-safe)."""
    return f"InterlinkState{'I' if kind == 'init' else 'C'}{index}"


StateName = Literal["waiting", "running", "terminated"]

# Longest message carried in the job ad (the whole message stays in status.json).
MAX_MESSAGE = 512


@dataclass(frozen=True)
class LastState:
    """The previous instance of a restarted container, as it terminated (``lastState``)."""

    exit_code: int
    reason: str
    started: int
    finished: int


@dataclass(frozen=True)
class ReportedState:
    """A container's state as the job wrapper reports it: chirped into the job ad as
    ``"<state> <exit> <reason> <started> <finished> <restarts> <flags> <last> [message]"``,
    and written to ``status.json``.

    Times are Unix seconds (0 = unknown); reason is one token (e.g. ``OOMKilled``). ``flags``
    is ``-`` or letters: ``S`` the container has started (its startup probe passed), ``R``
    it is ready. ``last`` is ``-`` or ``<exit>:<reason>:<started>:<finished>`` of the
    previous instance. The message is the rest of the value, cleaned by ``clean_message``.
    Values of five words (older wrappers) leave ``is_started`` and ``ready`` unknown (None).
    """

    state: StateName
    exit_code: int = 0
    reason: str = ""
    started: int = 0
    finished: int = 0
    restarts: int = 0
    is_started: bool | None = None
    ready: bool | None = None
    last: LastState | None = None
    message: str = ""


def clean_message(message: str) -> str:
    """One line without quotes or backslashes (a ClassAd string literal needs no escape),
    at most ``MAX_MESSAGE`` characters."""
    text = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in message)
    text = " ".join(text.replace('"', "'").replace("\\", "/").split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text


def encode_state(s: ReportedState) -> str:
    flags = ("S" if s.is_started else "") + ("R" if s.ready else "")
    last = "-"
    if s.last is not None:
        last = f"{s.last.exit_code}:{s.last.reason or '-'}:{s.last.started}:{s.last.finished}"
    out = (
        f"{s.state} {s.exit_code} {s.reason or '-'} {s.started} {s.finished} "
        f"{s.restarts} {flags or '-'} {last}"
    )
    message = clean_message(s.message)
    return f"{out} {message}" if message else out


def decode_state(value: str) -> ReportedState | None:
    parts = value.split(" ", 8)
    if len(parts) not in (5, 8, 9) or parts[0] not in ("waiting", "running", "terminated"):
        return None
    try:
        exit_code, started, finished = int(parts[1]), int(parts[3]), int(parts[4])
        restarts = int(parts[5]) if len(parts) > 5 else 0
        last = _decode_last(parts[7]) if len(parts) > 5 else None
    except ValueError:
        return None
    state: StateName = parts[0]  # type: ignore[assignment]
    reason = "" if parts[2] == "-" else parts[2]
    if len(parts) == 5:
        return ReportedState(state, exit_code, reason, started, finished)
    flags = "" if parts[6] == "-" else parts[6]
    if not set(flags) <= {"S", "R"}:
        return None
    return ReportedState(
        state,
        exit_code,
        reason,
        started,
        finished,
        restarts,
        "S" in flags,
        "R" in flags,
        last,
        parts[8] if len(parts) == 9 else "",
    )


def _decode_last(value: str) -> LastState | None:
    if value == "-":
        return None
    fields = value.split(":")
    if len(fields) != 4:
        raise ValueError(value)
    reason = "" if fields[1] == "-" else fields[1]
    return LastState(int(fields[0]), reason, int(fields[2]), int(fields[3]))
