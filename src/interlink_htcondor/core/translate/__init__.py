"""Pod -> job translation: the plugin's pure core.

``translate(request, settings)`` turns one /create request into a ``JobPlan``: the submit
description, the job spec (``pod.json``) and every file of the pod's sandbox. It performs
no I/O besides reading the packaged job wrapper, and raises ``TranslationError`` (a
``ValueError``; answer 4xx with its message) for pods it refuses.
"""

from __future__ import annotations

from interlink_htcondor.core.translate.errors import TranslationError
from interlink_htcondor.core.translate.pod import sandbox_dir, translate

__all__ = ["TranslationError", "sandbox_dir", "translate"]
