"""What a worker pod is doing, from the plugin's ``/status`` answer (pure functions).

``PluginCluster`` polls the plugin with one ``/status`` call for all its pods and turns each
answer into a ``Phase`` with the reason the plugin gave, so that held, failed and
never-starting HTCondor jobs are visible to the user instead of silently missing workers.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


class Phase(enum.StrEnum):
    SUBMITTING = "submitting"  # /create in flight
    PENDING = "pending"  # job idle (waiting for a slot)
    HELD = "held"  # job held; the reason is HTCondor's hold reason
    STARTING = "starting"  # container running, worker not yet connected
    RUNNING = "running"  # worker connected to the scheduler
    FAILED = "failed"  # create refused, job ended, or lost
    CLOSING = "closing"  # being retired/deleted on request

    @property
    def ends_worker(self) -> bool:
        """The worker will not arrive (or has left): a failure to report and replace. A
        held job is one: its worker process is gone, and waiting for a release would only
        end in a timeout."""
        return self in (Phase.FAILED, Phase.HELD)

    @property
    def waiting(self) -> bool:
        """Not yet doing work, so the first to cancel on scale-down."""
        return self in (Phase.SUBMITTING, Phase.PENDING, Phase.HELD, Phase.STARTING)


@dataclass(frozen=True)
class Observed:
    """One poll's view of a pod: phase, and the plugin's reason and message."""

    phase: Phase
    reason: str = ""
    message: str = ""
    exit_code: int | None = None

    def describe(self) -> str:
        parts = [self.reason or self.phase.value]
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.message:
            parts.append(self.message.strip())
        return ": ".join(parts)


# Waiting reasons of a pod the plugin knows can never run (no slot of the pool is big
# enough): waiting for it would only end in a timeout.
NEVER_RUNS = frozenset({"Unschedulable"})


def _is_held(reason: str, message: str) -> bool:
    return "held" in reason.lower() or message.lower().startswith("held")


def observe(entry: Mapping[str, Any] | None, *, connected: bool) -> Observed:
    """Classify one ``/status`` entry (or ``None`` when the plugin did not list the pod)."""
    if connected:
        return Observed(Phase.RUNNING)
    if entry is None:
        # /status can race /create; an unlisted pod is still being set up.
        return Observed(Phase.PENDING, "NotYetKnown", "the plugin does not list the pod yet")
    statuses = list(entry.get("initContainers") or []) + list(entry.get("containers") or [])
    if not statuses:
        return Observed(Phase.PENDING)
    # The most advanced problem wins: any terminated container ends the worker.
    for st in statuses:
        term = (st.get("state") or {}).get("terminated")
        if term is not None:
            return Observed(
                Phase.FAILED,
                str(term.get("reason") or "Terminated"),
                str(term.get("message") or ""),
                int(term.get("exitCode", 0)),
            )
    for st in statuses:
        wait = (st.get("state") or {}).get("waiting")
        if wait is not None:
            reason, message = str(wait.get("reason") or ""), str(wait.get("message") or "")
            if _is_held(reason, message):
                return Observed(Phase.HELD, reason or "Held", message)
            if reason in NEVER_RUNS:
                return Observed(Phase.FAILED, reason, message)
            return Observed(Phase.PENDING, reason, message)
    return Observed(Phase.STARTING)


@dataclass(frozen=True)
class Counts:
    """Worker counts for the repr, the widget and the progress display."""

    requested: int = 0
    submitting: int = 0
    pending: int = 0
    held: int = 0
    starting: int = 0
    running: int = 0
    failed: int = 0

    @classmethod
    def of(cls, phases: Iterable[Phase], failed: int = 0, requested: int = 0) -> Counts:
        c = Counter(phases)
        return cls(
            requested=requested,
            submitting=c[Phase.SUBMITTING],
            pending=c[Phase.PENDING],
            held=c[Phase.HELD],
            starting=c[Phase.STARTING],
            running=c[Phase.RUNNING],
            failed=c[Phase.FAILED] + failed,
        )

    def text(self) -> str:
        parts = [f"{self.running}/{self.requested} running"]
        for name in ("submitting", "pending", "held", "starting", "failed"):
            value = getattr(self, name)
            if value:
                parts.append(f"{value} {name}")
        return ", ".join(parts)


def scale_down_order(phases: Mapping[str, Phase], order: Iterable[str]) -> list[str]:
    """Worker names in the order to remove them: failed, then not yet working (held,
    submitting, pending, starting), then running ones; newest first inside each group.

    ``order`` lists the names oldest first (the order they were requested)."""
    rank = {
        Phase.FAILED: 0,
        Phase.HELD: 1,
        Phase.SUBMITTING: 2,
        Phase.PENDING: 3,
        Phase.STARTING: 4,
        Phase.CLOSING: 5,
        Phase.RUNNING: 6,
    }
    names = list(reversed(list(order)))
    return sorted(names, key=lambda n: rank[phases.get(n, Phase.PENDING)])
