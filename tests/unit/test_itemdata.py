"""The per-pod values of a batched submit: no pod's value can move another pod's columns.

htcondor2 writes each pod of a batch as one itemdata line, columns joined with ``\\x1f``,
and HTCondor's own parser (``htcondor2.Submit.itemdata``) reads them back. These tests
feed that real parser what the gateway would send.
"""

from __future__ import annotations

import htcondor2
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from interlink_htcondor.core.itemdata import (
    SEPARATOR,
    SubmitRefused,
    batch,
    check_commands,
    refused_description,
)


def parsed_rows(template: dict[str, str], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows as HTCondor reads them back from the submit text htcondor2 writes."""
    keys = list(rows[0])
    text = "".join(f"{k} = {v}\n" for k, v in template.items())
    text += f"queue {','.join(keys)} from (\n"
    text += "".join(SEPARATOR.join(r[k] for k in keys) + "\n" for r in rows)
    text += ")\n"
    return list(htcondor2.Submit(text).itemdata())


def pod_commands(i: int, **extra: str) -> dict[str, str]:
    return {
        "executable": f"/pods/p{i}/interlink-job-wrapper.py",
        "requirements": f"(Memory > {i})",
        "+InterlinkPodName": f'"p{i}"',
        **extra,
    }


def test_the_separator_would_shift_columns() -> None:
    # What the defect did: a value holding the separator pushed text into the next column.
    template = {"executable": "$(v0)", "requirements": "$(v1)"}
    rows = [{"v0": "/bin/a", "v1": "true"}, {"v0": "/bin/b" + SEPARATOR + "evil", "v1": "x"}]
    assert parsed_rows(template, rows)[1] == {"v0": "/bin/b", "v1": "evil"}


@pytest.mark.parametrize(
    "value",
    [
        "true ]" + SEPARATOR + "executable = /bin/evil",
        "a\nqueue",
        "a\rb",
        "nul\x00",
        "tab\tinside",
        "del\x7f",
        " leading",
        "trailing ",
    ],
)
def test_a_value_that_cannot_travel_in_a_row_is_refused(value: str) -> None:
    with pytest.raises(SubmitRefused, match="requirements"):
        check_commands(pod_commands(1, requirements=value))
    with pytest.raises(SubmitRefused):
        batch([pod_commands(0), pod_commands(1, requirements=value)])


@pytest.mark.parametrize("key", ["a b", "x=y", "", "queue\nexecutable", "+"])
def test_command_names_are_checked(key: str) -> None:
    with pytest.raises(SubmitRefused, match="not a command name"):
        check_commands({key: "1"})


def test_every_pod_keeps_its_own_values() -> None:
    commands = [pod_commands(i) for i in range(6)]
    template, rows = batch(commands)
    assert template == {
        "executable": "$(v0)",
        "requirements": "$(v1)",
        "+InterlinkPodName": "$(v2)",
    }
    back = parsed_rows(template, rows)
    assert back == rows
    assert [{k: r[f"v{i}"] for i, k in enumerate(template)} for r in back] == commands


@pytest.mark.parametrize("value", ["#", "#comment", ")", "\\", "end\\", ""])
def test_no_value_can_begin_or_end_a_row(value: str) -> None:
    # Found by the property test below: a row starting with '#' was dropped (the next
    # pod's values moved up), and a value ending with '\\' joined the next row.
    commands = [{"a": value, "b": value}, {"a": "x", "b": "y"}, {"a": value, "b": ""}]
    template, rows = batch(commands)
    assert parsed_rows(template, rows) == rows


def test_pods_of_one_batch_share_their_commands() -> None:
    with pytest.raises(ValueError, match="same commands"):
        batch([pod_commands(0), pod_commands(1, priority="5")])


# Values that pass the check: any text without control characters or surrounding blanks.
VALUES = st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), max_size=40).map(
    str.strip
)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(VALUES, VALUES, VALUES), min_size=1, max_size=6))
def test_checked_values_survive_the_join_intact(values: list[tuple[str, str, str]]) -> None:
    commands = [{"a": a, "b": b, "MY.c": c} for a, b, c in values]
    template, rows = batch(commands)
    assert parsed_rows(template, rows) == rows


@hsettings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_value_is_carried_intact_or_refused(value: str) -> None:
    try:
        template, rows = batch([pod_commands(0), pod_commands(1, requirements=value)])
    except SubmitRefused:
        return
    assert parsed_rows(template, rows) == rows


def test_description_errors_are_told_from_schedd_failures() -> None:
    refused = htcondor2.HTCondorException(
        "Failed to create job ad, errmsg=Submit:-1:priority=x y is invalid, must eval to an "
        "integer."
    )
    assert refused_description(refused)
    assert not refused_description(htcondor2.HTCondorException("Failed to connect to schedd"))
    assert not refused_description(TimeoutError())
