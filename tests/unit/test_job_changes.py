"""What changed between two schedd queries: full listings, change queries, duplicates."""

from __future__ import annotations

from typing import Any

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.job_changes import (
    LIVE_STATES,
    JobView,
    changes_constraint,
    index_by_uid,
)
from interlink_htcondor.core.pod_status import COMPLETED, HELD, IDLE, REMOVED, RUNNING

Ad = dict[str, Any]


def job(uid: str, cluster: int, status: int = IDLE, proc: int = 0, **attrs: Any) -> Ad:
    return {
        classad_attrs.POD_UID: uid,
        "ClusterId": cluster,
        "ProcId": proc,
        "JobStatus": status,
        **attrs,
    }


def test_the_first_answer_lists_every_pod_and_resets() -> None:
    view = JobView()
    ch = view.apply([job("a", 1), job("b", 2), {"ClusterId": 3, "ProcId": 0}], full=True)
    assert ch.reset and ch.full
    assert set(ch.changed) == {"a", "b"} and not ch.removed
    assert len(view) == 2  # an ad without a pod UID is not the plugin's business


def test_a_full_listing_reports_only_what_changed_and_what_left() -> None:
    view = JobView()
    view.apply([job("a", 1), job("b", 2), job("c", 3)], full=True)
    ch = view.apply([job("a", 1), job("b", 2, status=RUNNING)], full=True)
    assert not ch.reset
    assert set(ch.changed) == {"b"} and ch.changed["b"]["JobStatus"] == RUNNING
    assert ch.removed == frozenset({"c"})


def test_unchanged_ads_keep_their_identity() -> None:
    view = JobView()
    first = view.apply([job("a", 1)], full=True).changed["a"]
    assert not view.apply([job("a", 1)], full=True).changed
    ch = view.apply([job("a", 1, NumJobStarts=1)], full=True)
    assert ch.changed["a"] is not first and ch.changed["a"]["NumJobStarts"] == 1


def test_a_change_query_does_not_read_absence_as_departure_for_quiet_jobs() -> None:
    view = JobView()
    view.apply(
        [job("idle", 1), job("held", 2, status=HELD), job("done", 3, status=COMPLETED)], full=True
    )
    # A change query returns nothing for jobs whose status has not changed.
    ch = view.apply([], full=False)
    assert not ch.changed and not ch.removed
    assert len(view) == 3


def test_a_live_job_missing_from_a_change_query_has_left() -> None:
    view = JobView()
    view.apply([job("run", 1, status=RUNNING), job("idle", 2)], full=True)
    ch = view.apply([], full=False)  # change queries always return live jobs: it is gone
    assert ch.removed == frozenset({"run"}) and not ch.changed
    assert len(view) == 1


def test_a_checked_pod_missing_from_a_change_query_has_left() -> None:
    view = JobView()
    view.apply([job("idle", 1), job("other", 2)], full=True)
    ch = view.apply([], full=False, checked={"idle"})
    assert ch.removed == frozenset({"idle"})
    ch = view.apply([job("other", 2, status=REMOVED)], full=False, checked={"other"})
    assert ch.changed["other"]["JobStatus"] == REMOVED and not ch.removed


def test_the_oldest_live_job_stands_for_a_pod_with_two() -> None:
    view = JobView()
    ch = view.apply([job("a", 12), job("a", 10), job("a", 9, status=REMOVED)], full=True)
    assert ch.changed["a"]["ClusterId"] == 10
    # The standing job leaves: the next one stands, reported as a change, not a removal.
    ch = view.apply([job("a", 12), job("a", 9, status=REMOVED)], full=True)
    assert ch.changed["a"]["ClusterId"] == 12 and not ch.removed
    # A change to a job that does not stand for its pod changes nothing for the pod.
    ch = view.apply([job("a", 12), job("a", 9, status=REMOVED, RemoveReason="x")], full=True)
    assert not ch.changed and not ch.removed


def test_uids_of_jobs() -> None:
    view = JobView()
    view.apply([job("a", 1), job("b", 2, proc=3)], full=True)
    assert view.uids_of_jobs(["2.3", "9.9"]) == {"b"}


def test_changes_constraint_names_every_reason_to_return_a_job() -> None:
    c = changes_constraint('InterlinkPlugin == "p"', 1700, 'member(InterlinkPodUID, {"x"})')
    assert c.startswith('(InterlinkPlugin == "p") && (')
    assert "EnteredCurrentStatus >= 1700" in c
    assert "EnteredCurrentStatus =?= undefined" in c
    for s in LIVE_STATES:
        assert f"JobStatus == {s}" in c
    assert c.endswith('member(InterlinkPodUID, {"x"}))')
    assert "member" not in changes_constraint("true", 5)


def test_changes_constraint_is_a_classad_expression_that_selects_as_meant() -> None:
    import classad2

    c = changes_constraint('InterlinkPlugin == "p"', 1000, 'member(InterlinkPodUID, {"gone"})')
    expr = classad2.ExprTree(c)

    def matches(**attrs: Any) -> bool:
        ad = classad2.ClassAd({"InterlinkPlugin": "p", "InterlinkPodUID": "u", **attrs})
        return bool(expr.eval(ad))

    assert matches(JobStatus=IDLE, EnteredCurrentStatus=1000)  # changed at the edge
    assert not matches(JobStatus=IDLE, EnteredCurrentStatus=999)  # quiet
    assert matches(JobStatus=RUNNING, EnteredCurrentStatus=1)  # live: always
    assert matches(JobStatus=HELD)  # no EnteredCurrentStatus: always
    assert matches(JobStatus=IDLE, EnteredCurrentStatus=1, InterlinkPodUID="gone")
    other = classad2.ClassAd({"InterlinkPlugin": "q", "JobStatus": RUNNING})
    assert not bool(expr.eval(other))  # another plugin's job: never


def test_index_by_uid_agrees_with_the_view() -> None:
    ads = [job("a", 12), job("a", 10), job("a", 9, status=REMOVED), job("b", 11), {"x": 1}]
    idx = index_by_uid(ads)
    assert set(idx) == {"a", "b"} and idx["a"]["ClusterId"] == 10
    view = JobView()
    assert view.apply(ads, full=True).changed == idx
