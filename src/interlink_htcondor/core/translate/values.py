"""What a pod's value may hold to reach a submit description or a ClassAd intact.

The submit language is line-based, and the gateway's batched submit separates per-pod
values with the ASCII unit separator (``\\x1f``): a control character anywhere in a value
could end it early or shift it into another command. So no value bound for a submit
description holds any control character (Unicode category Cc: C0, DEL, C1) or a line or
paragraph separator, and its size is bounded.
"""

from __future__ import annotations

import unicodedata

from interlink_htcondor.core.translate.errors import TranslationError

_FORBIDDEN = ("Cc", "Zl", "Zp")


def first_control(value: str) -> str | None:
    """The first control character or line separator in ``value``, if any."""
    for ch in value:
        if unicodedata.category(ch) in _FORBIDDEN:
            return ch
    return None


def no_controls(value: str, where: str) -> str:
    ch = first_control(value)
    if ch is not None:
        raise TranslationError(f"{where}: contains the control character {ch!r}")
    return value


def bounded(value: str, where: str, limit: int, setting: str) -> str:
    """``value`` if it is at most ``limit`` UTF-8 bytes and holds no control character."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise TranslationError(
            f"{where}: {size} bytes, more than this site's limit of {limit} bytes ({setting})"
        )
    return no_controls(value, where)
