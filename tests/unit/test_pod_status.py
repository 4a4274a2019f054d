"""The job ClassAd -> pod status mapping (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.classad_attrs import ReportedState, encode_state
from interlink_htcondor.core.models import PodRef, rfc3339
from interlink_htcondor.core.pod_status import (
    COMPLETED,
    EXIT_KILLED,
    FROM_HISTORY,
    HELD,
    IDLE,
    PROJECTION,
    REMOVED,
    RUNNING,
    SUSPENDED,
    TRANSFERRING_OUTPUT,
    pod_status,
)

NOW = 1_800_000_000.0
POD = PodRef(
    uid="11111111-2222-3333-4444-555555555555",
    name="web",
    namespace="ns",
    init_containers=("setup",),
    containers=("main", "side"),
    images={"setup": "busybox:1.36", "main": "python:3.11", "side": "busybox:1.36"},
)


def ad(status: int, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ClusterId": 42,
        "ProcId": 0,
        "JobStatus": status,
        "EnteredCurrentStatus": int(NOW) - 10,
        "QDate": int(NOW) - 100,
        classad_attrs.POD_UID: POD.uid,
        classad_attrs.POD_NAME: "web",
        classad_attrs.POD_NAMESPACE: "ns",
        classad_attrs.INIT_CONTAINERS: "setup",
        classad_attrs.CONTAINERS: "main,side",
        classad_attrs.IMAGES: "/img/busybox.sif,/img/python.sif,/img/busybox.sif",
    }
    base.update(extra)
    return base


def st(state: str, code: int = 0, reason: str = "", start: int = 0, end: int = 0, **kw: Any) -> str:
    """A chirped state; a running container is started and ready unless ``kw`` says not."""
    if state == "running":
        kw = {"is_started": True, "ready": True, **kw}
    return encode_state(ReportedState(state, code, reason, start, end, **kw))  # type: ignore[arg-type]


def states(result: Any, kind: str = "containers") -> list[dict[str, Any]]:
    return [c["state"] for c in result.status[kind]]


def run(a: dict[str, Any] | None, pod: PodRef = POD, **kw: Any) -> Any:
    kw.setdefault("held_grace_seconds", 300)
    return pod_status(pod, a, now=NOW, **kw)


def test_unknown_pod_is_left_out() -> None:
    assert run(None) is None


def test_lost_pod_is_terminated_with_a_clear_reason() -> None:
    pod = PodRef(**{**POD.__dict__, "job_id": "42.0"})
    r = run(None, pod)
    assert r.terminal
    assert r.status["JID"] == "42.0"
    for c in r.status["containers"] + r.status["initContainers"]:
        t = c["state"]["terminated"]
        assert t["exitCode"] != 0
        assert t["reason"] == "JobLost"
        assert "42.0" in t["message"] and "history" in t["message"]
    assert [c["name"] for c in r.status["containers"]] == ["main", "side"]


def test_identity_and_one_entry_per_container() -> None:
    r = run(ad(IDLE))
    s = r.status
    assert (s["name"], s["UID"], s["namespace"], s["JID"]) == ("web", POD.uid, "ns", "42.0")
    assert [c["name"] for c in s["containers"]] == ["main", "side"]
    assert [c["name"] for c in s["initContainers"]] == ["setup"]
    main = s["containers"][0]
    assert main["image"] == "python:3.11"
    assert main["imageID"] == "/img/python.sif"
    assert main["restartCount"] == 0 and main["ready"] is False


def test_idle_is_waiting_pending() -> None:
    r = run(ad(IDLE))
    for s in states(r) + states(r, "initContainers"):
        assert s["waiting"]["reason"] == "Pending"
        assert "idle" in s["waiting"]["message"]
    assert not r.terminal


def test_idle_with_diagnosis_is_unschedulable() -> None:
    r = run(ad(IDLE, LastRejMatchReason="no match found"), diagnosis="no slot has 900 GiB")
    w = states(r)[0]["waiting"]
    assert w["reason"] == "Unschedulable"
    assert "900 GiB" in w["message"]


def test_idle_mentions_last_rejection() -> None:
    r = run(ad(IDLE, LastRejMatchReason="no match found"))
    assert "no match found" in states(r)[0]["waiting"]["message"]


def test_idle_ignores_states_of_an_earlier_run() -> None:
    r = run(ad(IDLE, NumJobStarts=1, InterlinkStateC0=st("running", start=5)))
    assert states(r)[0]["waiting"]["reason"] == "Pending"
    assert "after 1 start" in states(r)[0]["waiting"]["message"]


def test_running_without_chirp_is_container_creating() -> None:
    r = run(ad(RUNNING, JobCurrentStartDate=int(NOW) - 5))
    assert states(r)[0]["waiting"]["reason"] == "ContainerCreating"


@pytest.mark.parametrize("status", [RUNNING, SUSPENDED, TRANSFERRING_OUTPUT])
def test_running_per_container_states(status: int) -> None:
    t0 = int(NOW) - 60
    r = run(
        ad(
            status,
            JobCurrentStartDate=t0,
            InterlinkStateI0=st("terminated", 0, "", t0, t0 + 1),
            InterlinkStateC0=st("running", start=t0 + 2),
            InterlinkStateC1=st("terminated", 3, "", t0 + 2, t0 + 4),
        )
    )
    init = states(r, "initContainers")[0]["terminated"]
    assert init["exitCode"] == 0 and init["reason"] == "Completed"
    assert init["startedAt"] == rfc3339(t0) and init["finishedAt"] == rfc3339(t0 + 1)
    main, side = states(r)
    assert main == {"running": {"startedAt": rfc3339(t0 + 2)}}
    assert side["terminated"]["exitCode"] == 3 and side["terminated"]["reason"] == "Error"
    assert r.status["containers"][0]["ready"] is True
    assert not r.terminal


def test_times_are_rfc3339_utc_and_unknown_ones_left_out() -> None:
    assert rfc3339(1_700_000_000) == "2023-11-14T22:13:20Z"
    r = run(ad(RUNNING, InterlinkStateC0=st("running", start=0)))
    assert states(r)[0] == {"running": {}}  # no start time known: no startedAt


def test_completed_uses_chirped_exit_codes_and_reasons() -> None:
    r = run(
        ad(
            COMPLETED,
            ExitCode=137,
            CompletionDate=int(NOW),
            InterlinkStateI0=st("terminated", 0, "", 1, 2),
            InterlinkStateC0=st("terminated", 137, "OOMKilled", 3, 4),
            InterlinkStateC1=st("terminated", 0, "", 3, 5),
        )
    )
    main, side = states(r)
    assert main["terminated"]["exitCode"] == 137
    assert main["terminated"]["reason"] == "OOMKilled"
    assert side["terminated"] == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": rfc3339(3),
        "finishedAt": rfc3339(5),
    }
    assert r.terminal


def test_completed_without_chirp_uses_job_exit_code() -> None:
    r = run(ad(COMPLETED, ExitCode=42, CompletionDate=int(NOW), JobCurrentStartDate=1))
    for s in states(r):
        assert s["terminated"]["exitCode"] == 42
        assert s["terminated"]["reason"] == "Error"
        assert s["terminated"]["finishedAt"] == rfc3339(NOW)
    assert r.terminal


def test_completed_by_signal() -> None:
    r = run(ad(COMPLETED, ExitBySignal=True, ExitSignal=9, CompletionDate=int(NOW)))
    t = states(r)[0]["terminated"]
    assert t["exitCode"] == 137 and "signal 9" in t["message"]


def test_status_file_fills_in_missing_chirps() -> None:
    file_states = {
        "setup": ReportedState("terminated", 0, "", 1, 2),
        "main": ReportedState(
            "terminated", 137, "DeadlineExceeded", 3, 9, message="deadline of 5 s"
        ),
        "side": ReportedState("terminated", 1, "", 3, 4, restarts=2),
    }
    r = run(
        ad(COMPLETED, ExitCode=1, InterlinkStateC0=st("running", start=3)),
        file_states=file_states,
    )
    main, side = states(r)
    assert main["terminated"]["reason"] == "DeadlineExceeded"
    assert main["terminated"]["message"] == "deadline of 5 s"
    assert side["terminated"]["exitCode"] == 1
    assert r.status["containers"][1]["restartCount"] == 2


def with_inits(status: int, inits: tuple[str, ...], **states: str) -> tuple[PodRef, dict[str, Any]]:
    """A pod with init containers ``inits`` and one app container ``main``, and its job ad
    in ``status`` with the chirped ``states``."""
    pod = PodRef(uid=POD.uid, name="web", namespace="ns", init_containers=inits,
                 containers=("main",))  # fmt: skip
    names = {
        classad_attrs.INIT_CONTAINERS: ",".join(inits),
        classad_attrs.CONTAINERS: "main",
        classad_attrs.IMAGES: "",
    }
    return pod, ad(status, **names, **states)


def test_init_failure_terminates_everything_not_run() -> None:
    pod, a = with_inits(RUNNING, ("a", "b"), InterlinkStateI0=st("terminated", 7, "", 1, 2))
    r = run(a, pod)
    first, second = states(r, "initContainers")
    assert first["terminated"]["exitCode"] == 7
    assert second["terminated"]["reason"] == "InitContainerFailed"
    main = states(r)[0]["terminated"]
    # As the job wrapper reports containers it never started.
    assert main["reason"] == "InitContainerFailed" and "'a'" in main["message"]
    assert main["exitCode"] == 1
    assert r.terminal


def test_a_view_between_two_reports_makes_up_no_failure_and_is_not_final() -> None:
    """The later containers' ends arrived, the failed init container's own end not yet:
    it is not reported as skipped (exit 1) and the answer is not terminal."""
    skipped = "init container a failed (exit 3)"
    pod, a = with_inits(
        RUNNING,
        ("a", "b"),
        InterlinkStateI0=st("running", start=1),
        InterlinkStateI1=st("terminated", 1, "InitContainerFailed", 0, 2, message=skipped),
        InterlinkStateC0=st("terminated", 1, "InitContainerFailed", 0, 2, message=skipped),
    )
    r = run(a, pod)
    first, second = states(r, "initContainers")
    assert "running" in first and "terminated" not in first
    assert second["terminated"]["exitCode"] == 1
    assert not r.terminal
    # Once the failed container's own end is in, the answer is final.
    a["InterlinkStateI0"] = st("terminated", 3, "", 1, 2)
    r = run(a, pod)
    assert states(r, "initContainers")[0]["terminated"]["exitCode"] == 3
    assert r.terminal


def test_only_containers_after_the_failed_init_container_are_skipped() -> None:
    pod, a = with_inits(
        RUNNING,
        ("a", "b", "c"),
        InterlinkStateI0=st("terminated", 0, "Completed", 1, 2),
        InterlinkStateI1=st("terminated", 5, "", 2, 3),
    )
    r = run(a, pod)
    first, second, third = (s["terminated"] for s in states(r, "initContainers"))
    assert (first["exitCode"], second["exitCode"]) == (0, 5)
    assert third["reason"] == "InitContainerFailed" and "'b'" in third["message"]
    assert states(r)[0]["terminated"]["reason"] == "InitContainerFailed"
    assert r.terminal


def test_held_is_waiting_with_hold_reason_within_grace() -> None:
    a = ad(
        HELD,
        HoldReason="Error from slot1: out of disk",
        EnteredCurrentStatus=int(NOW) - 10,
        InterlinkStateI0=st("terminated", 0, "", 1, 2),
        InterlinkStateC0=st("running", start=3),
    )
    r = run(a)
    assert r.remove_reason is None and not r.terminal
    assert "terminated" in states(r, "initContainers")[0]
    for s in states(r):
        assert s["waiting"]["reason"] == "JobHeld"
        assert "out of disk" in s["waiting"]["message"]


def test_held_past_grace_fails_and_asks_for_removal() -> None:
    a = ad(HELD, HoldReason="image missing", EnteredCurrentStatus=int(NOW) - 301)
    r = run(a)
    assert r.remove_reason is not None and "image missing" in r.remove_reason
    assert r.terminal
    for s in states(r) + states(r, "initContainers"):
        assert s["terminated"]["exitCode"] != 0
        assert "image missing" in s["terminated"]["message"]


def test_removed_is_terminated_with_reason() -> None:
    r = run(
        ad(
            REMOVED,
            RemoveReason="via condor_rm (by user alice)",
            InterlinkStateI0=st("terminated", 0, "", 1, 2),
            InterlinkStateC0=st("running", start=3),
        )
    )
    assert states(r, "initContainers")[0]["terminated"]["exitCode"] == 0
    main, side = states(r)
    assert main["terminated"]["exitCode"] == EXIT_KILLED
    assert main["terminated"]["startedAt"] == rfc3339(3)
    assert "condor_rm" in main["terminated"]["message"]
    assert side["terminated"]["reason"] == "JobRemoved"
    assert r.terminal


def test_removed_while_running_waits_for_the_wrapper() -> None:
    stopping = ad(
        REMOVED,
        LastJobStatus=RUNNING,
        RemoveReason="admin cleanup",
        EnteredCurrentStatus=100,
        InterlinkStateC0=st("running", start=3),
        InterlinkStateC1=st("terminated", 143, "", 3, 101),
    )
    r = run(stopping)
    main, side = states(r)
    assert "running" in main  # preStop hooks and the grace period are still under way
    assert side["terminated"]["exitCode"] == 143
    assert "admin cleanup" in side["terminated"]["message"]
    assert not r.terminal
    # Once it left the queue, the history ad is final.
    r = run({**stopping, FROM_HISTORY: True})
    main, side = states(r)
    assert main["terminated"]["exitCode"] == EXIT_KILLED
    assert side["terminated"]["exitCode"] == 143
    assert r.terminal


def test_removal_does_not_relabel_containers_that_ended_before() -> None:
    r = run(
        ad(
            REMOVED,
            RemoveReason="pod deleted",
            EnteredCurrentStatus=500,
            InterlinkStateC0=st("terminated", 0, "", 3, 10),
            InterlinkStateC1=st("terminated", 143, "", 3, 501),
        )
    )
    main, side = states(r)
    assert "message" not in main["terminated"]
    assert "pod deleted" in side["terminated"]["message"]


def test_containers_from_pod_when_ad_lacks_them() -> None:
    a = ad(IDLE)
    for k in (classad_attrs.CONTAINERS, classad_attrs.INIT_CONTAINERS, classad_attrs.IMAGES):
        del a[k]
    r = run(a)
    assert [c["name"] for c in r.status["containers"]] == ["main", "side"]
    assert [c["name"] for c in r.status["initContainers"]] == ["setup"]


def test_never_empty_containers_for_known_pod() -> None:
    for status in (IDLE, RUNNING, REMOVED, COMPLETED, HELD, SUSPENDED, TRANSFERRING_OUTPUT, 99):
        r = run(ad(status, HoldReason="x"))
        assert len(r.status["containers"]) == 2
        assert len(r.status["initContainers"]) == 1
        for c in r.status["containers"]:
            assert len(c["state"]) == 1


def test_podref_from_pod_json_tolerates_nulls() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "annotations": {"JobID": "7.0"}},
        "spec": {
            "initContainers": None,
            "containers": [{"name": "c", "image": "busybox"}, {"bad": 1}, "junk"],
        },
    }
    ref = PodRef.from_pod(pod)
    assert ref.job_id == "7.0" and ref.containers == ("c",) and ref.init_containers == ()
    assert PodRef.from_pod({}).uid == ""
    assert PodRef.from_pod({"metadata": None, "spec": []}).containers == ()


def test_projection_covers_state_attributes() -> None:
    assert classad_attrs.state_attr("app", 0) in PROJECTION
    assert classad_attrs.state_attr("init", 31) in PROJECTION
    assert "HoldReason" in PROJECTION and classad_attrs.POD_UID in PROJECTION


def test_output_validates_against_the_wire_model() -> None:
    from interlink_htcondor.core.models import PodStatus

    for status in (IDLE, RUNNING, REMOVED, COMPLETED, HELD):
        r = run(ad(status, InterlinkStateC0=st("running", start=5), ExitCode=0))
        wire = PodStatus.model_validate(r.status).wire()
        assert wire["UID"] == POD.uid and len(wire["containers"]) == 2


def test_readiness_and_startup_flags_are_reported_live() -> None:
    t0 = int(NOW) - 60
    r = run(
        ad(
            RUNNING,
            InterlinkStateC0=st("running", start=t0, is_started=True, ready=False),
            InterlinkStateC1=st("running", start=t0, is_started=False, ready=False),
        )
    )
    main, side = r.status["containers"]
    assert (main["started"], main["ready"]) == (True, False)  # readiness probe failing
    assert (side["started"], side["ready"]) == (False, False)  # startup probe not passed yet
    assert "running" in main["state"] and "running" in side["state"]


def test_five_word_states_of_older_wrappers_read_as_started_and_ready() -> None:
    r = run(ad(RUNNING, InterlinkStateC0=f"running 0 - {int(NOW) - 5} 0"))
    main = r.status["containers"][0]
    assert (main["started"], main["ready"], main["restartCount"]) == (True, True, 0)


def test_restarts_last_state_and_message_are_reported_live() -> None:
    t0 = int(NOW) - 60
    last = classad_attrs.LastState(137, "Error", t0, t0 + 30)
    r = run(
        ad(
            RUNNING,
            InterlinkStateC0=st("running", start=t0 + 31, restarts=2, last=last),
            InterlinkStateC1=st(
                "waiting",
                137,
                "CrashLoopBackOff",
                restarts=1,
                last=last,
                message="back-off 10s restarting failed container=side pod=web_ns(uid): "
                'Liveness probe failed: HTTP probe failed with statuscode: 500 "x" \\ y',
            ),
        )
    )
    main, side = r.status["containers"]
    assert main["restartCount"] == 2 and main["ready"] is True
    assert main["lastState"] == {
        "terminated": {
            "exitCode": 137,
            "reason": "Error",
            "startedAt": rfc3339(t0),
            "finishedAt": rfc3339(t0 + 30),
        }
    }
    assert side["restartCount"] == 1 and side["ready"] is False
    waiting = side["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"
    assert "Liveness probe failed: HTTP probe failed with statuscode: 500" in waiting["message"]
    assert "'x' / y" in waiting["message"]  # no quote or backslash in a ClassAd literal
    assert (
        "lastState" not in run(ad(RUNNING, InterlinkStateC0=st("running"))).status["containers"][0]
    )


def test_restarts_survive_the_end_of_the_job() -> None:
    last = classad_attrs.LastState(1, "Error", 10, 20)
    r = run(ad(REMOVED, InterlinkStateC0=st("running", start=21, restarts=3, last=last)))
    main = r.status["containers"][0]
    assert "terminated" in main["state"]
    assert main["restartCount"] == 3 and main["lastState"]["terminated"]["exitCode"] == 1


@pytest.mark.parametrize(
    "state",
    [
        ReportedState("waiting"),
        ReportedState("running", 0, "", 1700000000, 0, 0, True, False),
        ReportedState(
            "terminated",
            137,
            "Error",
            3,
            4,
            5,
            False,
            False,
            classad_attrs.LastState(0, "", 1, 2),
            "a b",
        ),
    ],
)
def test_state_encoding_round_trips(state: ReportedState) -> None:
    decoded = classad_attrs.decode_state(encode_state(state))
    expected_flags = (bool(state.is_started), bool(state.ready))
    assert decoded is not None
    assert (decoded.is_started, decoded.ready) == expected_flags
    assert decoded.last == state.last and decoded.message == state.message
    assert (decoded.state, decoded.exit_code, decoded.restarts) == (
        state.state,
        state.exit_code,
        state.restarts,
    )


@pytest.mark.parametrize(
    "value",
    [
        "running 0 - 1 2 3",
        "running 0 - 1 2 x - -",
        "running 0 - 1 2 0 Q -",
        "running 0 - 1 2 0 - 1:2",
    ],
)
def test_malformed_states_are_ignored(value: str) -> None:
    assert classad_attrs.decode_state(value) is None


def test_long_messages_are_cut_for_the_job_ad() -> None:
    encoded = encode_state(ReportedState("waiting", message="x" * 5000))
    decoded = classad_attrs.decode_state(encoded)
    assert decoded is not None and len(decoded.message) == classad_attrs.MAX_MESSAGE
    assert decoded.message.endswith("...")


def test_unmatchable_names_the_resource_no_slot_offers() -> None:
    from interlink_htcondor.core.pod_status import unmatchable

    largest = {"Cpus": 8, "Memory": 16384, "Disk": 10_000_000, "GPUs": 0}
    assert unmatchable({"RequestCpus": 1, "RequestMemory": 2048}, largest) is None
    why = unmatchable({"RequestCpus": 1, "RequestMemory": 204800}, largest)
    assert why is not None and "204800 MiB memory" in why and "16384 MiB" in why
    assert "GPUs" in (unmatchable({"RequestGPUs": 1}, largest) or "")
    assert unmatchable({"RequestMemory": 10**9}, {}) is None  # nothing known yet


# A Dask worker (like many servers) exits 0 on the SIGTERM that a hold or a condor_rm sends:
# its own "terminated 0" must not read as a normal completion.


def test_running_container_stopped_by_a_hold_is_held_not_completed() -> None:
    held_at = int(NOW) - 10
    a = ad(
        HELD,
        HoldReason="Job was held by the admin: quota",
        EnteredCurrentStatus=held_at,
        InterlinkStateI0=st("terminated", 0, "", 1, 2),  # ended long before the hold
        InterlinkStateC0=st("terminated", 0, "Completed", 3, held_at + 1),
        InterlinkStateC1=st("running", start=3),
    )
    r = run(a)
    assert not r.terminal
    assert states(r, "initContainers")[0]["terminated"]["reason"] == "Completed"
    for s in states(r):
        assert s["waiting"]["reason"] == "JobHeld"
        assert "quota" in s["waiting"]["message"]


def test_container_stopped_by_a_hold_fails_past_the_grace() -> None:
    held_at = int(NOW) - 400
    a = ad(
        HELD,
        HoldReason="quota",
        EnteredCurrentStatus=held_at,
        InterlinkStateC0=st("terminated", 0, "Completed", 3, held_at),
        InterlinkStateC1=st("terminated", 0, "Completed", 3, held_at + 2),
    )
    r = run(a)
    assert r.terminal and r.remove_reason is not None
    for s in states(r):
        t = s["terminated"]
        assert (t["reason"], t["exitCode"]) == ("JobHeld", 143)  # 0 after the hold's SIGTERM
        assert "quota" in t["message"]
        assert t["startedAt"] == rfc3339(3)


@pytest.mark.parametrize("from_history", [False, True])
def test_container_stopped_by_a_removal_is_removed_not_completed(from_history: bool) -> None:
    removed_at = int(NOW) - 10
    a = ad(
        REMOVED,
        LastJobStatus=RUNNING,
        RemoveReason="via condor_rm (by user alice)",
        EnteredCurrentStatus=removed_at,
        InterlinkStateI0=st("terminated", 0, "", 1, 2),
        InterlinkStateC0=st("terminated", 0, "Completed", 3, removed_at + 1),
        InterlinkStateC1=st("terminated", 143, "Error", 3, removed_at + 1),
        **({FROM_HISTORY: True} if from_history else {}),
    )
    r = run(a)
    assert states(r, "initContainers")[0]["terminated"]["reason"] == "Completed"
    main, side = (s["terminated"] for s in states(r))
    for t in (main, side):
        assert t["reason"] == "JobRemoved"
        assert "condor_rm (by user alice)" in t["message"]
    # The pod fails: exit 0 after SIGTERM becomes 143, as if the signal had killed it.
    assert main["exitCode"] == 143 and "exited with code 0" in main["message"]
    assert side["exitCode"] == 143
