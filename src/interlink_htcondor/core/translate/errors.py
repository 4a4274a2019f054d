"""The one error the translator raises: the pod cannot become a job, and why."""

from __future__ import annotations


class TranslationError(ValueError):
    """A pod the plugin refuses (a client error: answer 4xx with ``str(e)``).

    Messages name the container and field at fault and never include secret values.
    """
