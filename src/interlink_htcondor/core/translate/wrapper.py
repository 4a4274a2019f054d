"""The job wrapper as shipped in the sandbox: the packaged script, with its interpreter.

The wrapper (``interlink_htcondor/jobside/wrapper.py``) is the job's executable; its
``#!`` line is set to ``containers.python`` so execute points run it with that Python.
"""

from __future__ import annotations

import functools
import importlib.resources
import shlex

from interlink_htcondor.core.translate.errors import TranslationError

PACKAGE = "interlink_htcondor.jobside"
RESOURCE = "wrapper.py"


@functools.cache
def wrapper_source() -> bytes:
    """The packaged wrapper (read once; a missing file is a broken installation)."""
    try:
        return importlib.resources.files(PACKAGE).joinpath(RESOURCE).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise RuntimeError(f"the job wrapper {PACKAGE}/{RESOURCE} is missing") from e


def shebang(python: str) -> bytes:
    """``#!`` line for ``containers.python`` (Linux passes at most one argument)."""
    if any(ord(ch) < 0x20 for ch in python):
        raise TranslationError("containers.python contains control characters")
    words = shlex.split(python)
    if not words or not words[0].startswith("/") or len(words) > 2:
        raise TranslationError(
            f"containers.python {python!r} must be an absolute interpreter path with at most "
            "one argument (it becomes the wrapper's #! line)"
        )
    return ("#!" + " ".join(words)).encode()


@functools.lru_cache(maxsize=8)
def wrapper_file(python: str) -> bytes:
    """The wrapper with its ``#!`` line (made once per interpreter: every pod ships it)."""
    source = wrapper_source()
    line = shebang(python)
    if source.startswith(b"#!"):
        _, nl, rest = source.partition(b"\n")
        return line + nl + rest
    return line + b"\n" + source
