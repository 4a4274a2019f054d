"""Classifying the plugin's /status answers, counting workers, and scale-down order."""

from __future__ import annotations

from typing import Any

import pytest

from interlink_htcondor.dask.podstate import Counts, Phase, observe, scale_down_order


def entry(state: dict[str, Any], init: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "w",
        "UID": "u",
        "namespace": "dask",
        "JID": "7.0",
        "containers": [{"name": "worker", "state": state}],
        "initContainers": [] if init is None else [{"name": "init", "state": init}],
    }


def test_connected_wins() -> None:
    assert observe(entry({"waiting": {"reason": "Pending"}}), connected=True).phase == Phase.RUNNING


def test_unlisted_pod_is_pending_not_lost() -> None:
    obs = observe(None, connected=False)
    assert obs.phase == Phase.PENDING and obs.reason == "NotYetKnown"


def test_idle_job_is_pending_with_its_reason() -> None:
    msg = "HTCondor job 7.0 is idle, waiting for a slot (last match attempt: no match found)"
    obs = observe(entry({"waiting": {"reason": "Pending", "message": msg}}), connected=False)
    assert obs.phase == Phase.PENDING and obs.message == msg
    assert "no match found" in obs.describe()


def test_held_job_is_held_with_the_hold_reason_and_ends_the_worker() -> None:
    msg = "HTCondor job 7.0 is held: Error from slot1@host: memory limit exceeded"
    obs = observe(entry({"waiting": {"reason": "JobHeld", "message": msg}}), connected=False)
    assert obs.phase == Phase.HELD and obs.phase.ends_worker
    assert obs.describe() == f"JobHeld: {msg}"


def test_job_the_plugin_knows_can_never_run_is_a_failure_with_the_diagnosis() -> None:
    msg = "HTCondor job 7.0 cannot run: no slot has 64 GiB of memory"
    obs = observe(entry({"waiting": {"reason": "Unschedulable", "message": msg}}), connected=False)
    assert obs.phase == Phase.FAILED and obs.phase.ends_worker
    assert obs.describe() == f"Unschedulable: {msg}"


def test_idle_job_waiting_for_a_slot_does_not_end_the_worker() -> None:
    msg = "HTCondor job 7.0 is idle, waiting for a slot"
    obs = observe(entry({"waiting": {"reason": "Pending", "message": msg}}), connected=False)
    assert obs.phase == Phase.PENDING and not obs.phase.ends_worker


def test_running_container_not_connected_is_starting() -> None:
    obs = observe(entry({"running": {"startedAt": "2026-11-23T10:00:00Z"}}), connected=False)
    assert obs.phase == Phase.STARTING


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ({"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled: exit code 137"),
        ({"exitCode": 1, "reason": "Error", "message": "boom"}, "Error: exit code 1: boom"),
        ({"exitCode": 1, "reason": "JobLost", "message": "gone"}, "JobLost: exit code 1: gone"),
    ],
)
def test_terminated_is_failed_with_reason_and_exit_code(term: dict[str, Any], text: str) -> None:
    obs = observe(entry({"terminated": term}), connected=False)
    assert obs.phase == Phase.FAILED and obs.describe() == text


def test_failed_init_container_fails_the_worker() -> None:
    obs = observe(
        entry({"waiting": {"reason": "PodInitializing"}}, init={"terminated": {"exitCode": 2}}),
        connected=False,
    )
    assert obs.phase == Phase.FAILED and obs.exit_code == 2


def test_counts_text() -> None:
    c = Counts.of(
        [Phase.RUNNING, Phase.RUNNING, Phase.PENDING, Phase.HELD, Phase.STARTING],
        failed=1,
        requested=5,
    )
    assert (c.running, c.pending, c.held, c.starting, c.failed) == (2, 1, 1, 1, 1)
    assert c.text() == "2/5 running, 1 pending, 1 held, 1 starting, 1 failed"


def test_scale_down_order_removes_idle_before_working_and_newest_first() -> None:
    phases = {
        "w0": Phase.RUNNING,
        "w1": Phase.RUNNING,
        "w2": Phase.STARTING,
        "w3": Phase.PENDING,
        "w4": Phase.PENDING,
        "w5": Phase.HELD,
        "w6": Phase.FAILED,
    }
    order = scale_down_order(phases, list(phases))
    assert order == ["w6", "w5", "w4", "w3", "w2", "w1", "w0"]
    assert Phase.PENDING.waiting and not Phase.RUNNING.waiting


def test_terminal_display_prints_changes_and_each_note_once() -> None:
    import io

    from interlink_htcondor.dask.progress import TerminalDisplay

    out = io.StringIO()
    d = TerminalDisplay(out)
    pending = Counts.of([Phase.PENDING, Phase.PENDING], requested=2)
    d.update(pending)
    d.update(pending)  # unchanged: not printed again
    d.update(Counts.of([Phase.RUNNING, Phase.HELD], requested=2), ["w-1 held: JobHeld: quota"])
    d.update(Counts.of([Phase.RUNNING, Phase.HELD], requested=2), ["w-1 held: JobHeld: quota"])
    d.close()
    lines = out.getvalue().splitlines()
    assert [ln.split("] ", 1)[1] for ln in lines if "workers:" in ln] == [
        "workers: 0/2 running, 2 pending",
        "workers: 1/2 running, 1 held",
    ]
    assert lines.count("  ! w-1 held: JobHeld: quota") == 1


def test_counts_html_escapes_reasons() -> None:
    from interlink_htcondor.dask.progress import counts_html

    page = counts_html(Counts.of([Phase.FAILED], requested=1), ["<script>x</script>"])
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "0/1 running" in page
