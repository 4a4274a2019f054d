"""The job wrapper's ``status.json``: each container's last state, as the wrapper wrote it.

The wrapper (``jobside/wrapper.py``) rewrites the file after every change of a container's
state, and once more when the pod ends. It carries what the chirped attributes cut short
(the whole message, a failed command's output included), and it survives a chirp that
never reached the schedd. Parsing is pure: the service reads the bytes.
"""

from __future__ import annotations

import json
from typing import Any

from interlink_htcondor.core.classad_attrs import LastState, ReportedState


def parse_status_file(data: bytes) -> dict[str, ReportedState]:
    """Each container's reported state by container name; anything unreadable gives none
    (the job's own exit code is used then)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # the job can write anything there
        return {}
    out: dict[str, ReportedState] = {}
    if not isinstance(doc, dict):
        return out
    for key in ("init_containers", "containers"):
        group = doc.get(key)
        for value in group if isinstance(group, list) else []:
            report = _report(value)
            if report is not None:
                out[value["name"]] = report
    return out


def _report(value: Any) -> ReportedState | None:
    """One entry of ``status.json``."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    state = value.get("state")
    if state not in ("waiting", "running", "terminated"):
        return None
    try:
        return ReportedState(
            state,
            int(value.get("exit_code") or 0),
            str(value.get("reason") or ""),
            int(value.get("started") or 0),
            int(value.get("finished") or 0),
            int(value.get("restart_count") or 0),
            _flag(value.get("is_started")),
            _flag(value.get("ready")),
            _last_state(value.get("last_state")),
            str(value.get("message") or ""),
        )
    except (TypeError, ValueError):
        return None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _last_state(value: Any) -> LastState | None:
    if not isinstance(value, dict):
        return None
    return LastState(
        int(value.get("exit_code") or 0),
        str(value.get("reason") or ""),
        int(value.get("started") or 0),
        int(value.get("finished") or 0),
    )
