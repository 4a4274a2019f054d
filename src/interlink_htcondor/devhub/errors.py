"""The one exception of the development hub: a problem a person can act on, in one line."""

from __future__ import annotations


class HubError(Exception):
    """The hub cannot be installed, started, reached or stopped; the message says why."""
