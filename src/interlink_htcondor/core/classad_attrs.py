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


def same_pod(ad: Mapping[str, Any], namespace: str, name: str) -> bool:
    """The job was submitted for the pod of this namespace and name (its UID is matched by
    whoever found the job): a request naming another pod with a victim's UID never
    reaches the victim's job."""
    return ad.get(POD_NAMESPACE) == namespace and ad.get(POD_NAME) == name


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | float) else 0


def state_attr(kind: Literal["init", "app"], index: int) -> str:
    """Attribute holding the state of container ``index`` (names may not be ClassAd-safe)."""
    return f"InterlinkState{'I' if kind == 'init' else 'C'}{index}"


StateName = Literal["waiting", "running", "terminated"]


@dataclass(frozen=True)
class ReportedState:
    """A container's state as the job wrapper reports it: chirped into the job ad as
    ``"<state> <exit> <reason> <started> <finished>"``, and written to ``status.json``.

    Times are Unix seconds (0 = unknown); reason is one token (e.g. ``OOMKilled``).
    """

    state: StateName
    exit_code: int = 0
    reason: str = ""
    started: int = 0
    finished: int = 0


def encode_state(s: ReportedState) -> str:
    return f"{s.state} {s.exit_code} {s.reason or '-'} {s.started} {s.finished}"


def decode_state(value: str) -> ReportedState | None:
    parts = value.split()
    if len(parts) != 5 or parts[0] not in ("waiting", "running", "terminated"):
        return None
    try:
        exit_code, started, finished = int(parts[1]), int(parts[3]), int(parts[4])
    except ValueError:
        return None
    state: StateName = parts[0]  # type: ignore[assignment]
    reason = "" if parts[2] == "-" else parts[2]
    return ReportedState(state, exit_code, reason, started, finished)
