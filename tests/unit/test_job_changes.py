"""What changed between two schedd queries: full listings, change queries, duplicates."""

from __future__ import annotations

import pickle
import re
from typing import Any

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.job_changes import (
    CHECKED_LIMIT,
    LIVE_STATES,
    MAX_LISTING_PIECES,
    SINCE_SLACK_SECONDS,
    ChangeQueries,
    JobView,
    changes_constraint,
    index_by_uid,
    listing_pieces,
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


# ---------------------------------------------------------------------------------------
# ChangeQueries: which query when, on whose clock


class ScriptedSchedd:
    """Answers each query with the next ads of ``answers`` (copies, with ``ServerTime``
    as the schedd adds it), and moves the clocks by ``cost`` seconds per query."""

    def __init__(self, clocks: list[float], skew: int) -> None:
        self.clocks = clocks  # [monotonic, wall]
        self.skew = skew  # the schedd's clock minus ours
        self.answers: list[list[Ad]] = []
        self.constraints: list[str] = []
        self.cost = 0.5
        self.server_time = True

    def __call__(self, constraint: str) -> list[Ad]:
        self.constraints.append(constraint)
        self.clocks[0] += self.cost
        self.clocks[1] += self.cost
        now = int(self.clocks[1]) + self.skew
        extra = {"ServerTime": now} if self.server_time else {}
        return [{**ad, **extra} for ad in self.answers.pop(0)]


def queries(full_every: float = 30.0, skew: int = 100) -> tuple[ChangeQueries, ScriptedSchedd]:
    clocks = [1000.0, 1_700_000_000.0]
    schedd = ScriptedSchedd(clocks, skew)
    q = ChangeQueries(
        "Mine", full_every, schedd, lambda s: f'"{s}"',
        clock=lambda: clocks[0], wall=lambda: clocks[1],
    )  # fmt: skip
    return q, schedd


def test_the_first_query_lists_every_job_then_changes_follow_the_schedds_clock() -> None:
    q, schedd = queries()
    schedd.answers = [[job("a", 1)], [job("b", 2)]]
    first, kind = q.run((), ())
    assert kind == "query" and schedd.constraints[0] == "Mine"
    assert first.reset and "ServerTime" not in first.changed["a"]  # it differs every time
    schedd.clocks[1] += 1.0
    second, kind = q.run((), ())
    assert kind == "query_changes" and set(second.changed) == {"b"}
    # Since the first query's start on the schedd's clock (sent at 1,700,000,000.0 ours,
    # answered at 1,700,000,100 the schedd's, arriving at 1,700,000,000.5 ours: the
    # schedd is taken to be 99.5 s ahead), less the slack.
    since = 1_700_000_000 + 99 - SINCE_SLACK_SECONDS
    assert schedd.constraints[1] == changes_constraint("Mine", since)


def test_removed_pods_and_jobs_are_asked_about_by_uid() -> None:
    q, schedd = queries()
    schedd.answers = [[job("a", 1), job("b", 2)], [job("b", 2)], []]
    q.run((), ())
    changes, kind = q.run(["x"], ["1.0"])  # pod x, and the job of pod a
    assert kind == "query_changes"
    assert schedd.constraints[1].endswith('member(InterlinkPodUID, {"a", "x"}))')
    assert changes.removed == {"a"}  # asked about, not in the answer: it left
    # Too many to name: a full listing instead.
    many = [f"u{i}" for i in range(CHECKED_LIMIT + 1)]
    assert q.run(many, ())[1] == "query"


def test_full_listings_come_every_interval_or_twenty_times_their_cost() -> None:
    q, schedd = queries(full_every=30.0)
    schedd.answers = [[job("a", 1)] for _ in range(10)]
    assert q.run((), ())[1] == "query"
    schedd.clocks[0] += 29.0
    assert q.run((), ())[1] == "query_changes"
    schedd.clocks[0] += 1.0
    assert q.run((), ())[1] == "query"
    # A listing that took 4 s: the next one 80 s later, not 30.
    schedd.cost = 4.0
    schedd.clocks[0] += 31.0
    assert q.run((), ())[1] == "query"
    schedd.cost = 0.0
    schedd.clocks[0] += 60.0
    assert q.run((), ())[1] == "query_changes"
    schedd.clocks[0] += 20.0
    assert q.run((), ())[1] == "query"
    assert q.run((), (), full=True)[1] == "query"  # asked for


def test_a_successor_goes_on_from_its_predecessors_progress() -> None:
    q, schedd = queries(full_every=30.0)
    schedd.answers = [[job("a", 1), job("b", 2)], [job("b", 2, RUNNING)]]
    q.run((), ())
    since = schedd.constraints[0]
    # In another process (the progress crosses a pipe pickled), with the same clocks.
    clocks = schedd.clocks
    heir = ChangeQueries(
        "Mine", 30.0, schedd, lambda s: f'"{s}"', clock=lambda: clocks[0], wall=lambda: clocks[1]
    )
    heir.resume(pickle.loads(pickle.dumps(q.progress())))
    schedd.clocks[0] += 10.0
    changes, kind = heir.run((), ())
    # A change query since the predecessor's last one, not a new full listing...
    assert kind == "query_changes" and schedd.constraints[1] != since
    assert schedd.constraints[1] == changes_constraint("Mine", q._since - SINCE_SLACK_SECONDS)  # type: ignore[operator]
    # ...whose answer is a change against what the predecessor knew, not a reset.
    assert not changes.reset and set(changes.changed) == {"b"}
    assert changes.changed["b"]["JobStatus"] == RUNNING
    # The full listing stays due on the predecessor's schedule.
    schedd.answers = [[job("a", 1), job("b", 2, RUNNING)]]
    schedd.clocks[0] += 20.0
    assert heir.run((), ())[1] == "query"


def test_without_the_schedds_clock_every_query_is_a_full_listing() -> None:
    q, schedd = queries()
    schedd.server_time = False
    schedd.answers = [[job("a", 1)], [job("a", 1)]]
    assert q.run((), ())[1] == "query"
    assert q.run((), ())[1] == "query"


def test_listing_pieces_cover_every_cluster_id_once() -> None:
    assert listing_pieces("Mine", [], piece=2) == ["Mine"]
    assert listing_pieces("Mine", [5, 3], piece=2) == ["Mine"]  # small: one query
    pieces = listing_pieces("Mine", [9, 1, 4, 4, 7, 2, 8], piece=2)
    assert pieces == [
        "(Mine) && ClusterId < 4",
        "(Mine) && ClusterId >= 4 && ClusterId < 7",
        "(Mine) && ClusterId >= 7 && ClusterId < 9",
        "(Mine) && ClusterId >= 9",
    ]
    # Every id (known or not, below, between and above the known ones) in exactly one.
    for cid in range(0, 20):
        assert sum(in_piece(p, cid) for p in pieces) == 1
    # A big queue: never more than MAX_LISTING_PIECES scans of it, whatever the piece.
    many = listing_pieces("Mine", range(100_000), piece=2_000)
    assert len(many) == MAX_LISTING_PIECES
    assert sum(in_piece(p, 99_999) for p in many) == 1


def in_piece(constraint: str, cluster_id: int) -> bool:
    """Whether a job of ``cluster_id`` matches a piece (as the schedd would evaluate it)."""
    ok = True
    if m := re.search(r"ClusterId >= (\d+)", constraint):
        ok = ok and cluster_id >= int(m.group(1))
    if m := re.search(r"ClusterId < (\d+)", constraint):
        ok = ok and cluster_id < int(m.group(1))
    return ok


def test_a_large_full_listing_is_asked_in_pieces_and_misses_nothing() -> None:
    clocks = [1000.0, 1_700_000_000.0]
    queue = [job(f"p{i}", 100 + i // 2, proc=i % 2) for i in range(10)]  # 2 procs a cluster
    asked: list[str] = []

    def schedd(constraint: str) -> list[Ad]:
        asked.append(constraint)
        now = {"ServerTime": int(clocks[1])}
        return [{**ad, **now} for ad in queue if in_piece(constraint, ad["ClusterId"])]

    q = ChangeQueries(
        "Mine", 30.0, schedd, lambda s: f'"{s}"',
        clock=lambda: clocks[0], wall=lambda: clocks[1], listing_piece=4,
    )  # fmt: skip
    first, _ = q.run((), ())
    assert asked == ["Mine"] and len(first.changed) == 10  # nothing known yet: one query
    queue.append(job("late", 200))  # submitted since: above every known cluster
    del queue[3]  # p3 left the queue
    asked.clear()
    changes, kind = q.run((), (), full=True)
    assert kind == "query" and len(asked) == 3
    assert asked == listing_pieces("Mine", [100 + i // 2 for i in range(10)], piece=4)
    assert set(changes.changed) == {"late"} and changes.removed == frozenset({"p3"})
