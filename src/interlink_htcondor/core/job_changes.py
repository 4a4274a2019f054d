"""Which of the plugin's jobs changed between two schedd queries (pure: no I/O).

Listing every job of the plugin every second costs the schedd and the plugin time in
proportion to the queue: about 60 µs a job on each side, 3 s a query at 50,000 jobs. Most
jobs do not change from one second to the next, so the job snapshot is kept up to date
with *change queries* instead: a constraint the schedd evaluates on its side, which
returns only

- the jobs that entered their status since the previous query (``EnteredCurrentStatus``:
  the schedd sets it on every status change, and at submit);
- the jobs in a state whose ad changes without a status change (``LIVE_STATES``: running,
  transferring output and suspended jobs, into which the job wrapper chirps container
  states; removed jobs still in the queue while their starter stops them);
- the jobs of pods this process has just removed, to learn that they left.

A job can still leave the queue unseen (an idle job removed by someone else leaves at
once): a full listing every so often finds it. ``JobView`` applies either kind of answer
to what it knew and tells what changed for each pod (``JobChanges``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.classad_attrs import job_id
from interlink_htcondor.core.pod_status import REMOVED, RUNNING, SUSPENDED, TRANSFERRING_OUTPUT

Ad = dict[str, Any]

# States in which a job's ad changes without its status changing.
LIVE_STATES = (RUNNING, REMOVED, TRANSFERRING_OUTPUT, SUSPENDED)
# EnteredCurrentStatus holds whole seconds of the schedd's clock, which may differ from
# ours: a change query reaches this far before the previous query.
SINCE_SLACK_SECONDS = 5
# A full listing comes at least every ``full_refresh_seconds`` and at most once per this
# many times its own duration (a 3 s listing: once a minute).
FULL_LISTING_COST_FACTOR = 20
# At most this many pod UIDs asked about in one change query (more: a full listing).
CHECKED_LIMIT = 200
# A full listing asks for about this many known jobs per query: the bindings hand a whole
# answer over at once, as ClassAds twice the size of the converted ads (10,000 jobs: 24
# MiB at once in one query, a fifth of that in pieces).
LISTING_PIECE = 2_000
# ...in at most this many queries (each one a scan of the schedd's whole queue): a bigger
# queue gets bigger pieces.
MAX_LISTING_PIECES = 8


@dataclass(frozen=True)
class JobChanges:
    """What one refresh learnt, by pod UID: the ad now standing for each pod that changed
    (new, or any attribute different), and the pods whose job left the queue.

    ``reset``: ``changed`` holds every job of the plugin and replaces all that was known
    (the first answer of a source, or one that lost track). ``full``: the answer came
    from a full listing rather than a change query.
    """

    changed: Mapping[str, Ad] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    full: bool = True
    reset: bool = False


def pod_uid(ad: Mapping[str, Any]) -> str | None:
    uid = ad.get(classad_attrs.POD_UID)
    return uid if isinstance(uid, str) and uid else None


def rank(ad: Mapping[str, Any]) -> tuple[int, int, int]:
    """Which of a pod's jobs stands for it (lowest first): should two exist (a race
    between two plugin processes), the oldest live one (lowest ClusterId)."""
    removed = 1 if ad.get("JobStatus") == REMOVED else 0
    cluster = ad.get("ClusterId")
    proc = ad.get("ProcId")
    return (
        removed,
        cluster if isinstance(cluster, int) else 1 << 62,
        proc if isinstance(proc, int) else 0,
    )


def index_by_uid(ads: Iterable[Ad]) -> dict[str, Ad]:
    """One job per pod (``rank``); ads without a pod UID are left out."""
    out: dict[str, Ad] = {}
    for ad in ads:
        uid = pod_uid(ad)
        if uid is None:
            continue
        cur = out.get(uid)
        if cur is None or rank(ad) < rank(cur):
            out[uid] = ad
    return out


def changes_constraint(mine: str, since: int, also: str = "") -> str:
    """The change query's constraint: this plugin's jobs (``mine``) that entered their
    status at or after ``since`` (the schedd's clock), are in a live state, or match
    ``also`` (the jobs of pods just removed)."""
    live = " || ".join(f"JobStatus == {s}" for s in LIVE_STATES)
    parts = [f"EnteredCurrentStatus >= {int(since)}", "EnteredCurrentStatus =?= undefined", live]
    if also:
        parts.append(also)
    return f"({mine}) && ({' || '.join(parts)})"


def listing_pieces(mine: str, cluster_ids: Iterable[int], piece: int = LISTING_PIECE) -> list[str]:
    """Constraints that together list every job of ``mine``, each about ``piece`` of the
    jobs known (``cluster_ids``; more when that would take over ``MAX_LISTING_PIECES``
    queries), by ranges of ``ClusterId``: a job's never changes, so every job is in
    exactly one piece, and one unknown yet in the piece of its range (the last one is
    open-ended)."""
    ids = sorted(cluster_ids)
    piece = max(piece, -(-len(ids) // MAX_LISTING_PIECES))
    bounds = sorted({ids[i] for i in range(piece, len(ids), piece)})
    if not bounds:
        return [mine]
    out = [f"({mine}) && ClusterId < {bounds[0]}"]
    out += [f"({mine}) && ClusterId >= {lo} && ClusterId < {hi}" for lo, hi in pairwise(bounds)]
    out.append(f"({mine}) && ClusterId >= {bounds[-1]}")
    return out


class JobView:
    """The plugin's jobs as the queries saw them (by job id), and the job standing for
    each pod. ``apply`` takes one query's answer and returns what changed per pod."""

    def __init__(self) -> None:
        self._jobs: dict[str, Ad] = {}
        self._by_uid: dict[str, set[str]] = {}
        self._live: set[str] = set()  # job ids in LIVE_STATES
        self._standing: dict[str, Ad] = {}  # pod uid -> the ad last reported for it
        self._fresh = True

    def __len__(self) -> int:
        return len(self._jobs)

    def cluster_ids(self) -> list[int]:
        """The ``ClusterId`` of every job known."""
        return [c for ad in self._jobs.values() if isinstance(c := ad.get("ClusterId"), int)]

    def uids_of_jobs(self, jids: Iterable[str]) -> set[str]:
        """The pods of these jobs (those known)."""
        out = set()
        for jid in jids:
            ad = self._jobs.get(jid)
            uid = pod_uid(ad) if ad is not None else None
            if uid is not None:
                out.add(uid)
        return out

    def apply(self, ads: Iterable[Ad], *, full: bool, checked: Collection[str] = ()) -> JobChanges:
        """Take one answer: a full listing (``full``: every job of the plugin), or a
        change query's (``changes_constraint``) for which ``checked`` were the pod UIDs
        asked about explicitly. Jobs missing from it left the queue when the listing
        was full, or when they were live or checked (a change query returns those)."""
        seen: dict[str, Ad] = {}
        for ad in ads:
            if pod_uid(ad) is not None:
                seen[job_id(ad)] = ad
        if full:
            candidates: Iterable[str] = self._jobs
        else:
            candidates = set(self._live)
            for uid in checked:
                candidates |= self._by_uid.get(uid, set())
        departed = [jid for jid in candidates if jid not in seen]
        touched: set[str] = set()
        for jid in departed:
            touched.add(self._drop(jid))
        for jid, ad in seen.items():
            if self._jobs.get(jid) != ad:
                touched.add(self._put(jid, ad))
        return self._report(touched, full)

    def _put(self, jid: str, ad: Ad) -> str:
        uid = pod_uid(ad)
        assert uid is not None
        old = self._jobs.get(jid)
        if old is not None and pod_uid(old) != uid:  # a job id reused: not the same job
            self._drop(jid)
        self._jobs[jid] = ad
        self._by_uid.setdefault(uid, set()).add(jid)
        if ad.get("JobStatus") in LIVE_STATES:
            self._live.add(jid)
        else:
            self._live.discard(jid)
        return uid

    def _drop(self, jid: str) -> str:
        ad = self._jobs.pop(jid)
        uid = pod_uid(ad)
        assert uid is not None
        jids = self._by_uid.get(uid)
        if jids is not None:
            jids.discard(jid)
            if not jids:
                del self._by_uid[uid]
        self._live.discard(jid)
        return uid

    def _report(self, touched: set[str], full: bool) -> JobChanges:
        changed: dict[str, Ad] = {}
        removed: set[str] = set()
        for uid in touched:
            jids = self._by_uid.get(uid)
            if not jids:
                if self._standing.pop(uid, None) is not None:
                    removed.add(uid)
                continue
            best = min((self._jobs[j] for j in jids), key=rank)
            if self._standing.get(uid) is not best:
                self._standing[uid] = best
                changed[uid] = best
        reset, self._fresh = self._fresh, False
        if reset:
            return JobChanges(dict(self._standing), frozenset(), full=full, reset=True)
        return JobChanges(changed, frozenset(removed), full=full)


Query = Callable[[str], list[Ad]]  # a constraint -> the matching ads (blocking)


@dataclass(frozen=True)
class Progress:
    """What a ``ChangeQueries`` knows, apart from how it queries (``progress``)."""

    view: JobView
    last_full: float
    full_cost: float
    offset: float | None
    since: int | None


class ChangeQueries:
    """Which query keeps the view up to date, and what it changed (the schedd behind
    ``query``; the clocks injected).

    ``run`` refreshes the view: a full listing of the plugin's jobs (``mine``; in pieces
    of about ``LISTING_PIECE`` known jobs, one query each, ``listing_pieces``) when the last
    one is ``full_refresh_seconds`` old (or ``FULL_LISTING_COST_FACTOR`` times its own
    duration, whichever is longer), when the schedd's clock is not known yet (no answer
    held a ``ServerTime``), or when asked; otherwise a change query (``changes_constraint``)
    since the previous query, on the schedd's clock. ``quote`` makes a ClassAd string
    literal (the bindings').
    """

    def __init__(
        self,
        mine: str,
        full_refresh_seconds: float,
        query: Query,
        quote: Callable[[str], str],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        listing_piece: int = LISTING_PIECE,
    ) -> None:
        self.mine = mine
        self._piece = listing_piece
        self.view = JobView()
        self._full_every = full_refresh_seconds
        self._query = query
        self._quote = quote
        self._clock = clock
        self._wall = wall
        self._last_full = float("-inf")
        self._full_cost = 0.0
        self._offset: float | None = None  # the schedd's clock minus ours
        self._since: int | None = None  # schedd time of the previous query's start

    def progress(self) -> Progress:
        """Everything it learnt, for a successor in another process (``resume``)."""
        return Progress(self.view, self._last_full, self._full_cost, self._offset, self._since)

    def resume(self, progress: Progress) -> None:
        """Go on from a predecessor's ``progress``: its next answer is a change, not a
        reset. The monotonic clock is the machine's, shared by every process."""
        self.view = progress.view
        self._last_full, self._full_cost = progress.last_full, progress.full_cost
        self._offset, self._since = progress.offset, progress.since

    def run(
        self, uids: Collection[str], jids: Collection[str], *, full: bool = False
    ) -> tuple[JobChanges, str]:
        """One query, with ``uids`` and ``jids`` the pods and jobs removed since the
        previous one (the change query checks whether they left); what changed, and which
        kind of query it was ("query" for a full listing, "query_changes")."""
        checked = set(uids) | self.view.uids_of_jobs(jids)
        now = self._clock()
        full = (
            full
            or self._since is None
            or len(checked) > CHECKED_LIMIT
            or now - self._last_full
            >= max(self._full_every, FULL_LISTING_COST_FACTOR * self._full_cost)
        )
        if full:
            pieces = listing_pieces(self.mine, self.view.cluster_ids(), self._piece)
        else:
            assert self._since is not None
            also = ""
            if checked:
                members = ", ".join(self._quote(u) for u in sorted(checked))
                also = f"member({classad_attrs.POD_UID}, {{{members}}})"
            pieces = [changes_constraint(self.mine, self._since - SINCE_SLACK_SECONDS, also)]
        started = self._wall()
        ads: list[Ad] = []
        for constraint in pieces:
            ads += self._query(constraint)
        ended = self._wall()
        if full:
            self._last_full, self._full_cost = now, self._clock() - now
        for ad in ads:
            server_time = ad.pop("ServerTime", None)  # differs in every answer
            if isinstance(server_time, int):
                # Conservative: the answer was made before it arrived.
                self._offset = server_time - ended
        if self._offset is not None:
            self._since = int(started + self._offset)
        changes = self.view.apply(ads, full=full, checked=checked)
        return changes, "query" if full else "query_changes"
