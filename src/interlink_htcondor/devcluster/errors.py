"""The one exception of the development cluster: a problem a person can act on, in one line."""

from __future__ import annotations


class ClusterError(Exception):
    """The cluster cannot be built, started, reached or stopped; the message says why."""
