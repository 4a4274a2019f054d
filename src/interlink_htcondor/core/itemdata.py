"""Per-pod values of a batched submit, and the checks that keep pods apart in it.

The gateway submits the pods that arrive together as one cluster: a template whose every
value is a per-pod macro (``$(v0)``, ``$(v1)``...) and one itemdata row per pod. htcondor2
writes each row as one line with its columns joined by the ASCII unit separator
(``\\x1f``), and trims each column's surrounding blanks; HTCondor then reads the lines back
with the submit language's rules. So:

- a value holding the separator, a line break or surrounding blanks would shift or change
  another column, or start another pod's row: such a value is refused for its own pod
  before anything is written or submitted (``SubmitRefused``, a client error), and the
  others go on;
- a line starting with ``#`` is a comment, one that is ``)`` ends the rows, and one
  ending with ``\\`` continues on the next: every row therefore starts with a column of
  the plugin's own (the row number) and ends with one (a fixed word), so no pod's value
  can begin or end a line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# htcondor2's itemdata column separator (HTCondor's ``QUEUE ... FROM`` with a list).
SEPARATOR = "\x1f"
# What htcondor2 raises when HTCondor cannot turn a description into a job ad: the
# description is at fault (a value one pod set), not the schedd.
DESCRIPTION_ERROR = "Failed to create job ad"
# The plugin's own first and last columns of every row (macros the template never uses).
ROW, END, END_MARK = "InterlinkItemRow", "InterlinkItemEnd", "end"
_COMMAND = re.compile(r"^\+?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class SubmitRefused(ValueError):
    """HTCondor cannot take this pod's submit description as it is (answer 422)."""


def check_commands(commands: Mapping[str, str]) -> None:
    """Raise SubmitRefused unless every command and value travels intact in a row."""
    for key, value in commands.items():
        if not _COMMAND.fullmatch(key):
            raise SubmitRefused(f"submit command {key!r} is not a command name")
        bad = next((ch for ch in value if ord(ch) < 0x20 or ch == "\x7f"), None)
        if bad is not None:
            raise SubmitRefused(
                f"submit command {key}: the value holds the control character {bad!r}"
            )
        if value != value.strip():
            raise SubmitRefused(f"submit command {key}: the value has surrounding blanks")


def batch(commands: Sequence[Mapping[str, str]]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The template and the itemdata rows submitting these pods as one cluster.

    Every pod must have the same commands (the batcher groups them so); each value has
    passed ``check_commands``, so no row can spill into another column or row.
    """
    keys = list(commands[0])
    for cmds in commands:
        if set(cmds) != set(keys):
            raise ValueError("the pods of one submit batch must have the same commands")
        check_commands(cmds)
    template = {k: f"$(v{i})" for i, k in enumerate(keys)}
    rows = [
        {ROW: str(n), **{f"v{i}": cmds[k] for i, k in enumerate(keys)}, END: END_MARK}
        for n, cmds in enumerate(commands)
    ]
    return template, rows


def refused_description(error: BaseException) -> bool:
    """Whether HTCondor refused the description itself (not a schedd or network failure)."""
    return DESCRIPTION_ERROR in str(error)
