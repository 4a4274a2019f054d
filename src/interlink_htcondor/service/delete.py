"""POST /delete: remove the pod's job and everything written for it.

The job is removed gracefully (SIGTERM: the wrapper runs preStop hooks within the pod's
grace period). A job that outlives the grace period is forced out in the background, and
the pod's files are deleted once its job has left the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interlink_htcondor.core.classad_attrs import job_id, same_pod
from interlink_htcondor.core.models import PodRef
from interlink_htcondor.core.pod_status import COMPLETED
from interlink_htcondor.service.errors import HTTPError
from interlink_htcondor.service.gateway import Gateway, ScheddError
from interlink_htcondor.service.state import PluginState

log = logging.getLogger("interlink_htcondor.server")

DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds
MAX_GRACE_SECONDS = 3600
# How long the answer waits for the job to leave the queue, beyond the grace period.
WAIT_MARGIN_SECONDS = 10
MAX_WAIT_SECONDS = 60
# In the background: how long the job may take to leave before it is forced out.
FORCE_AFTER_SECONDS = 300
POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 4.0


async def delete(state: PluginState, raw: Any) -> str:
    if not isinstance(raw, dict):
        raise HTTPError(422, "the /delete body must be a JSON pod object")
    ref = PodRef.from_pod(raw)
    missing = ref.missing_identity()
    if missing:
        raise HTTPError(422, f"invalid pod: {', '.join(missing)}: a non-empty string is required")
    pod = f"{ref.namespace}/{ref.name}"
    uid = ref.uid
    grace = _grace_seconds(raw)
    snap = state.snapshot.current
    ad = state.snapshot.lookup(snap, uid) if snap is not None else None
    log.info("delete", extra={"pod": pod, "uid": uid})
    if ad is not None and not same_pod(ad, ref.namespace, ref.name):
        return _not_this_pod(pod, uid)
    sandbox = state.store.sandbox_of(ref.namespace, ref.name, uid, ad)
    try:
        removed = await state.gateway.remove_pod(
            uid, "pod deleted through interLink", namespace=ref.namespace, name=ref.name
        )
        # Nothing of this pod was removed: the UID may be another pod's (the snapshot
        # may not show it yet), whose files must stay.
        if not removed and any(
            not same_pod(a, ref.namespace, ref.name) for a in await state.gateway.jobs_of(uid)
        ):
            return _not_this_pod(pod, uid)
    except ScheddError as e:
        raise HTTPError(503, f"cannot remove the job of pod {pod}: {e}") from None
    state.snapshot.note_deleted(uid)
    state.missing.forget(uid)
    gone = True
    if removed:
        try:
            wait = min(grace + WAIT_MARGIN_SECONDS, MAX_WAIT_SECONDS)
            gone = await wait_gone(state.gateway, uid, wait, ref=ref)
        except ScheddError:
            gone = False
    if gone:
        await state.store.remove(uid, sandbox)
        return f"pod {pod} deleted\n"
    state.spawn(_finish_delete(state, ref, sandbox), "finish delete")
    return f"pod {pod} is being deleted\n"


def _not_this_pod(pod: str, uid: str) -> str:
    """A delete naming a pod whose UID belongs to another pod's job: 200 (the pod named
    has no job, as for an already-gone pod) and nothing touched."""
    log.warning(
        "delete: the uid belongs to another pod; nothing deleted", extra={"pod": pod, "uid": uid}
    )
    return f"pod {pod} has no job here (uid {uid} belongs to another pod); nothing deleted\n"


async def _finish_delete(state: PluginState, ref: PodRef, sandbox: Path | None) -> None:
    """The job outlived the grace period: force it out, then clean up."""
    gateway = state.gateway
    uid = ref.uid
    if not await wait_gone(gateway, uid, FORCE_AFTER_SECONDS, ref=ref):
        for ad in await gateway.jobs_of(uid):
            if same_pod(ad, ref.namespace, ref.name):
                await gateway.remove_job(job_id(ad), "pod deleted; grace period over", force=True)
        await wait_gone(gateway, uid, MAX_WAIT_SECONDS, ref=ref)
    await state.store.remove(uid, sandbox)


async def wait_gone(
    gateway: Gateway,
    uid: str,
    timeout: float,
    poll: float = POLL_SECONDS,
    *,
    ref: PodRef | None = None,
) -> bool:
    """Wait until the pod has no job in the queue; False on timeout.

    With ``ref``: a job of that pod that completed while its removal was on its way (its
    containers ended on their own in the same moment) stays in the queue for
    ``policy.retention_seconds`` like any finished job; it is removed again, once."""
    deadline = time.monotonic() + timeout
    again: set[str] = set()
    while True:
        ads = await gateway.jobs_of(uid)
        if not ads:
            return True
        if ref is not None:
            for jid in _finished_meanwhile(ads, ref, again):
                again.add(jid)
                await gateway.remove_job(jid, "pod deleted; its job had finished meanwhile")
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll)
        # Many deletes at once must not flood the schedd with queries: back off.
        poll = min(poll * 2, MAX_POLL_SECONDS)


def _finished_meanwhile(ads: list[dict[str, Any]], ref: PodRef, done: set[str]) -> list[str]:
    return [
        job_id(ad)
        for ad in ads
        if ad.get("JobStatus") == COMPLETED
        and job_id(ad) not in done
        and same_pod(ad, ref.namespace, ref.name)
    ]


def _grace_seconds(pod: Mapping[str, Any]) -> int:
    spec = pod.get("spec")
    if isinstance(spec, dict):
        v = spec.get("terminationGracePeriodSeconds")
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_GRACE_SECONDS:
            return v
    return DEFAULT_GRACE_SECONDS
