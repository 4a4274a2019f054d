"""The one exception of the development pool: a problem a person can act on, in one line."""

from __future__ import annotations


class PoolError(Exception):
    """The pool cannot be built, started, reached or stopped; the message says why."""
