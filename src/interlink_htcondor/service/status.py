"""GET /status: the status of each pod asked, from the shared job snapshot.

The virtual kubelet asks about one pod per call, many times a second: every call is
answered from one snapshot of the plugin's jobs (``service.snapshot``), never one schedd
query per call. Pods gone from the queue are looked up in the history in batches. One pod
that cannot be mapped is left out; it never fails the others. A pod is matched by its
namespace and name as well as its UID: a pod naming another pod's UID is unknown here. A
pod whose job has not changed since it was last asked about gets the same serialised
entry again (``service.answer_cache``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core

from interlink_htcondor.core.classad_attrs import ReportedState, job_id, same_pod
from interlink_htcondor.core.models import PodRef
from interlink_htcondor.core.pod_status import (
    COMPLETED,
    FROM_HISTORY,
    IDLE,
    StatusResult,
    pod_status,
    runs_wrapper,
    unmatchable,
)
from interlink_htcondor.core.status_file import parse_status_file
from interlink_htcondor.service.answer_cache import STEADY_STATES, cacheable, pod_key
from interlink_htcondor.service.errors import HTTPError
from interlink_htcondor.service.request_body import parse_json
from interlink_htcondor.service.snapshot import SnapshotUnavailable
from interlink_htcondor.service.state import CACHE_LIMIT, PluginState

log = logging.getLogger("interlink_htcondor.server")

# How old the slot sizes used to call an idle job unschedulable may be (refreshed in
# the background: a /status call waits for the collector only for the first read after a
# start, so that a restarted plugin never calls an unschedulable job merely idle).
DIAGNOSIS_CAPACITY_SECONDS = 60.0


def read_pods(state: PluginState, body: bytes) -> Sequence[PodRef] | None:
    """The pods a /status body asks about (those with a UID); None for interLink's ping
    (``[]``). A body seen before is not parsed again (``BodyCache``)."""
    key = state.status_bodies.key(body)
    known = state.status_bodies.get(key)
    if known is not None:
        return known
    raw = parse_json(body)
    if raw == []:
        return None
    if not isinstance(raw, list):
        raise HTTPError(422, "the /status body must be a JSON list of pods")
    pods = [PodRef.from_pod(p) for p in raw if isinstance(p, dict)]
    pods = [p for p in pods if p.uid]
    state.status_bodies.put(key, pods)
    return pods


async def status(state: PluginState, pods: Sequence[PodRef]) -> bytes:
    """The JSON list of one status entry per pod known to the plugin (or lost by it)."""
    try:
        snap = await state.snapshot.get()
    except SnapshotUnavailable as e:
        raise HTTPError(503, str(e)) from None
    ads: dict[str, dict[str, Any] | None] = {
        p.uid: state.snapshot.lookup(snap, p.uid) for p in pods
    }
    missing = [p.uid for p in pods if ads[p.uid] is None and p.job_id]
    if missing:
        try:
            ads.update(await state.missing.resolve(missing))
        except Exception as e:
            # Leave those pods out rather than fail the others (or call them lost).
            log.warning("history lookup failed", extra={"error": str(e)})
            left_out = set(missing)
            pods = [p for p in pods if p.uid not in left_out]
    state.answers.limit = state.status_bodies.limit = max(CACHE_LIMIT, 2 * len(snap.jobs))
    now = time.time()
    entries: list[bytes] = []
    for pod in pods:
        ad = ads.get(pod.uid)
        if ad is not None and not same_pod(ad, pod.namespace, pod.name):
            continue  # the UID is another pod's: this pod is unknown here
        try:
            entry = await _entry_of(state, pod, ad, now)
        except Exception:
            log.exception("status mapping failed", extra={"uid": pod.uid})
            continue
        if entry is not None:
            entries.append(entry)
    return b"[" + b",".join(entries) + b"]"


async def _entry_of(
    state: PluginState, pod: PodRef, ad: dict[str, Any] | None, now: float
) -> bytes | None:
    """The pod's serialised entry: from the answer cache while its job is unchanged."""
    diagnosis = None
    if ad is not None and ad.get("JobStatus") == IDLE:
        await _first_capacity(state)
        diagnosis = _diagnose(state, ad)
    steady = ad is not None and ad.get("JobStatus") in STEADY_STATES
    if steady:
        assert ad is not None
        key = pod_key(pod)
        hit = state.answers.get(pod.uid, ad, key, diagnosis)
        if hit is not None:
            return hit
    result = await _status_of(state, pod, ad, now, diagnosis)
    if result is None:
        return None
    data = pydantic_core.to_json(result.status)
    if steady and ad is not None and cacheable(ad, result):
        state.answers.put(pod.uid, ad, key, diagnosis, data)
    return data


async def _status_of(
    state: PluginState,
    pod: PodRef,
    ad: dict[str, Any] | None,
    now: float,
    diagnosis: str | None = None,
) -> StatusResult | None:
    reports = None
    if ad is not None and (ad.get("JobStatus") == COMPLETED or ad.get(FROM_HISTORY)):
        # The job is over: its status.json is final (read once, cached).
        reports = await _final_reports(state, pod, ad)
    grace = state.settings.policy.held_grace_seconds
    result = pod_status(
        pod, ad, now=now, held_grace_seconds=grace, file_states=reports, diagnosis=diagnosis
    )
    if (
        result is not None
        and result.terminal
        and reports is None
        and ad is not None
        and not state.gateway.spool
        and runs_wrapper(ad)
    ):
        # About to answer a terminal state that interLink will cache for good: take it
        # from status.json, which also carries the messages the chirped states cannot.
        sandbox = state.store.sandbox_of(pod.namespace, pod.name, pod.uid, ad)
        if sandbox is not None:
            live = parse_status_file(await state.store.read_status_file(sandbox))
            result = pod_status(pod, ad, now=now, held_grace_seconds=grace, file_states=live)
    if result is not None and result.remove_reason and ad is not None:
        _remove_held(state, result.status["JID"], result.remove_reason)
    return result


def _remove_held(state: PluginState, jid: str, reason: str) -> None:
    """A job held past its grace period fails its pod; take it out of the queue (once)."""
    if jid in state.removing:
        return
    if len(state.removing) > CACHE_LIMIT:
        state.removing.clear()  # at worst a job is removed twice
    state.removing.add(jid)
    log.warning("removing held job", extra={"job": jid, "reason": reason})
    state.spawn(state.gateway.remove_job(jid, reason), "remove held job")


async def _first_capacity(state: PluginState) -> None:
    """Wait for the first read of the slot sizes after a start (one read, shared by every
    call). If it fails, calls go on without a diagnosis; the background refresh of
    ``_diagnose`` tries again."""
    if state.capacity_cache is not None:
        return
    if state.first_capacity is None:
        state.first_capacity = asyncio.ensure_future(state.refresh_capacity())
    try:
        await asyncio.shield(state.first_capacity)
    except Exception as e:
        if not state.first_capacity_logged:
            state.first_capacity_logged = True
            log.warning("slot sizes unknown", extra={"error": str(e)})


def _diagnose(state: PluginState, ad: Mapping[str, Any]) -> str | None:
    """Why an idle job can never match, from the last known slot sizes (never waits: a
    stale or missing capacity is refreshed in the background)."""
    cached = state.capacity_cache
    stale = cached is None or time.monotonic() - cached.at >= DIAGNOSIS_CAPACITY_SECONDS
    if stale and not state.capacity_refreshing:
        state.capacity_refreshing = True
        state.spawn(_refresh_capacity(state), "refresh capacity")
    if cached is None:
        return None
    return unmatchable(ad, cached.value.largest)


async def _refresh_capacity(state: PluginState) -> None:
    try:
        await state.refresh_capacity()
    finally:
        state.capacity_refreshing = False


async def _final_reports(
    state: PluginState, pod: PodRef, ad: Mapping[str, Any]
) -> dict[str, ReportedState] | None:
    """Final container reports from the job's status.json (chirp may have missed some)."""
    jid = job_id(ad)
    cached = state.final_reports.get(jid)
    if cached is not None:
        return cached
    sandbox = state.store.sandbox_of(pod.namespace, pod.name, pod.uid, ad)
    if sandbox is None:
        return None
    if state.gateway.spool:
        await state.ensure_retrieved(ad)
    reports = parse_status_file(await state.store.read_status_file(sandbox))
    if len(state.final_reports) > CACHE_LIMIT:
        state.final_reports.clear()
    state.final_reports[jid] = reports
    return reports
