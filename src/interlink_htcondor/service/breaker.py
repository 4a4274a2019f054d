"""A circuit breaker for the schedd, and what the plugin knows of its last contact.

While the schedd hangs, every call would wait for its full deadline and hold a worker
meanwhile. So once a call times out (or ``failures`` calls in a row fail), the circuit
opens: calls fail at once with the reason, except one trial every ``retry_seconds`` and
the readiness probes, whose success closes it again. Nothing needs resetting by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class CircuitOpen(Exception):
    """The schedd is known not to answer; the call was not tried."""


@dataclass(frozen=True)
class Contact:
    """The schedd as the plugin last saw it (monotonic times)."""

    last_ok: float | None = None  # the last call that succeeded
    failing_since: float | None = None  # the first failure after it (None: not failing)
    error: str = ""  # the last failure
    open: bool = False  # the circuit is open: calls fail fast
    waiting_since: float | None = None  # the oldest call still waiting for the schedd

    def age(self, now: float) -> float | None:
        """Seconds since the last successful call (None: never)."""
        return None if self.last_ok is None else now - self.last_ok


class Breaker:
    def __init__(
        self,
        *,
        retry_seconds: float = 2.0,
        failures: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retry = retry_seconds
        self._threshold = failures
        self._clock = clock
        self._last_ok: float | None = None
        self._failing_since: float | None = None
        self._error = ""
        self._consecutive = 0
        self._opened: float | None = None
        self._next_trial = 0.0
        self._trial = False
        self._waiting: dict[int, float] = {}
        self._tokens = 0

    def contact(self) -> Contact:
        return Contact(
            self._last_ok,
            self._failing_since,
            self._error,
            self._opened is not None,
            min(self._waiting.values(), default=None),
        )

    def begin(self) -> int:
        """A call starts waiting for the schedd; ``end`` it with the token returned."""
        self._tokens += 1
        self._waiting[self._tokens] = self._clock()
        return self._tokens

    def end(self, token: int) -> None:
        self._waiting.pop(token, None)

    def admit(self) -> bool:
        """Whether a call may go to the schedd now; True for the one trial call of an open
        circuit (the caller must report its outcome). Raises ``CircuitOpen`` otherwise."""
        if self._opened is None:
            return False
        now = self._clock()
        if not self._trial and now >= self._next_trial:
            self._trial = True
            return True
        since = now - (self._failing_since or self._opened)
        raise CircuitOpen(
            f"the schedd has not answered for {since:.0f} s ({self._error}); "
            "calls fail at once until it answers again"
        )

    def succeeded(self) -> None:
        self._last_ok = self._clock()
        self._failing_since = None
        self._consecutive = 0
        self._opened = None
        self._trial = False

    def failed(self, error: str, *, hung: bool) -> None:
        """A call failed; ``hung``: it timed out (the schedd may be stopped or stuck)."""
        now = self._clock()
        self._error = error
        if self._failing_since is None:
            self._failing_since = now
        self._consecutive += 1
        self._trial = False
        if hung or self._consecutive >= self._threshold or self._opened is not None:
            if self._opened is None:
                self._opened = now
            self._next_trial = now + self._retry

    def abandoned(self) -> None:
        """A trial call ended without an outcome (cancelled): allow another."""
        self._trial = False
