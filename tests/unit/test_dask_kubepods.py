"""VirtualNodeCluster's failure classification from Kubernetes objects (pure): the plugin's
container states as the virtual node copies them into a worker pod, and Warning Events."""

from __future__ import annotations

from typing import Any

from interlink_htcondor.dask.kubepods import (
    fatal_event,
    observe_pod,
    worker_name,
    worker_state,
)
from interlink_htcondor.dask.podstate import Phase


def pod(*states: dict[str, Any], phase: str = "Pending", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "zpeak-default-worker-1f2e3d", "annotations": {"JobID": "12.0"}},
        "spec": {
            "containers": [
                {"name": "worker", "env": [{"name": "DASK_WORKER_NAME", "value": "zpeak-w-1"}]}
            ]
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "worker", "ready": False, "restartCount": 0, "state": s} for s in states
            ],
            **status,
        },
    }


def test_held_job_through_the_virtual_node_ends_the_worker() -> None:
    msg = "HTCondor job 12.0 is held: over quota"
    obs = observe_pod(pod({"waiting": {"reason": "JobHeld", "message": msg}}), connected=False)
    assert obs.phase == Phase.HELD and obs.phase.ends_worker
    assert obs.describe() == f"JobHeld: {msg}"


def test_unschedulable_and_removed_and_missing_image_end_the_worker() -> None:
    cases: list[dict[str, Any]] = [
        {"waiting": {"reason": "Unschedulable", "message": "more than any slot offers"}},
        {"terminated": {"exitCode": 143, "reason": "JobRemoved", "message": "condor_rm"}},
        {"terminated": {"exitCode": 128, "reason": "ContainerCannotRun", "message": "no image"}},
    ]
    for state in cases:
        obs = observe_pod(pod(state, phase="Failed"), connected=False)
        assert obs.phase == Phase.FAILED, state


def test_pending_and_connected_workers_do_not() -> None:
    idle = {"waiting": {"reason": "Pending", "message": "idle, waiting for a slot"}}
    assert observe_pod(pod(idle), connected=False).phase == Phase.PENDING
    running = {"running": {"startedAt": "2026-11-23T10:00:00Z"}}
    assert observe_pod(pod(running, phase="Running"), connected=True).phase == Phase.RUNNING
    assert observe_pod(pod(), connected=False).phase == Phase.PENDING  # no status yet


def test_a_failed_pod_without_container_statuses_says_why() -> None:
    obs = observe_pod(
        pod(phase="Failed", reason="ProviderFailed", message="interLink: plugin said 422"),
        connected=False,
    )
    assert obs.phase == Phase.FAILED and "plugin said 422" in obs.describe()


def test_warning_events_explain_a_pod_that_never_started() -> None:
    events = [
        {"type": "Normal", "reason": "Scheduled", "message": "assigned to interlink-node"},
        {"type": "Warning", "reason": "FailedScheduling", "message": "0/1 nodes available"},
        {
            "type": "Warning",
            "reason": "ProviderCreateFailed",
            "message": "create: 422 image rule: no image for 'nope:1'",
            "lastTimestamp": "2026-11-23T10:00:05Z",
        },
    ]
    obs = worker_state(pod(), events, connected=False)
    assert obs.phase == Phase.FAILED and obs.reason == "ProviderCreateFailed"
    assert "no image for 'nope:1'" in obs.describe()
    # FailedScheduling alone is retried by the scheduler: not a failure.
    assert fatal_event(events[:2]) is None
    # A pod with its own state keeps it, whatever old events say.
    idle = {"waiting": {"reason": "Pending", "message": "idle"}}
    assert worker_state(pod({"running": {}}), events, connected=True).phase == Phase.RUNNING
    assert worker_state(pod(idle), events, connected=False).phase == Phase.PENDING


def test_worker_name_is_the_dask_name() -> None:
    assert worker_name(pod()) == "zpeak-w-1"
    assert worker_name({"metadata": {"name": "p"}, "spec": {}}) == "p"
