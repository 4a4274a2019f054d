"""POST /create: a pod becomes one HTCondor job, once.

The same pod UID never gives two jobs. An answer from the shared snapshot comes first (a
repeated create costs no schedd call); otherwise the pod's lock file decides, held across
the submit: it records the job id once submitted, and a submit cut short (the file still
says "submitting") is checked against the schedd before anything is submitted again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interlink_htcondor.core import models
from interlink_htcondor.core.classad_attrs import job_id
from interlink_htcondor.core.itemdata import SubmitRefused, check_commands
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.core.pod_status import REMOVED
from interlink_htcondor.core.translate import TranslationError, sandbox_dir, translate
from interlink_htcondor.service.errors import HTTPError
from interlink_htcondor.service.gateway import Ad, ScheddError, SubmitInDoubt, Submitted
from interlink_htcondor.service.sandbox_store import PodClaim
from interlink_htcondor.service.snapshot import SnapshotUnavailable
from interlink_htcondor.service.state import PluginState

log = logging.getLogger("interlink_htcondor.server")


async def create(state: PluginState, raw: Any) -> dict[str, str]:
    """``{"PodUID", "PodJID"}`` of the pod's job, submitted now or before."""
    try:
        req = models.parse_create_body(raw)
    except ValidationError as e:
        raise HTTPError(422, f"invalid pod data: {models.validation_message(e)}") from None
    except ValueError as e:
        raise HTTPError(422, f"invalid pod data: {e}") from None
    meta = req.pod.metadata
    uid = meta.uid
    pod = f"{meta.namespace}/{meta.name}"
    log.info("create", extra={"pod": pod, "uid": uid})
    try:
        snap = await state.snapshot.get()  # shared, at most ~1 s old
    except SnapshotUnavailable:
        snap = None
    if snap is not None:
        known = state.snapshot.lookup(snap, uid)
        if known is not None and known.get("JobStatus") != REMOVED:
            jid = job_id(known)
            log.info("create: pod already has a job", extra={"uid": uid, "job": jid})
            return _answer(uid, jid)
    try:
        plan = await asyncio.get_running_loop().run_in_executor(
            None, translate, req, state.settings
        )
        sandbox = sandbox_dir(state.settings, meta.namespace, meta.name, uid)
        # Every value the pod set must travel intact in a batched submit's row: checked
        # before anything is written for the pod (the gateway checks the whole row again).
        check_commands(plan.submit)
    except (TranslationError, SubmitRefused) as e:
        raise HTTPError(422, f"pod {pod} cannot run: {e}") from None
    try:
        submitted = await submit_once(state, plan, sandbox)
    except SubmitRefused as e:
        raise HTTPError(422, f"pod {pod} cannot run: {e}") from None
    except ScheddError as e:
        raise HTTPError(503, f"cannot submit pod {pod}: {e}") from None
    except OSError as e:
        raise HTTPError(500, f"cannot write the sandbox of pod {pod}: {e.strerror}") from None
    if submitted.created:
        state.snapshot.note_submitted(uid, submitted.ad)
        state.missing.forget(uid)
    log.info(
        "create: submitted" if submitted.created else "create: pod already has a job",
        extra={"uid": uid, "job": submitted.job_id},
    )
    return _answer(uid, submitted.job_id)


def _answer(uid: str, jid: str) -> dict[str, str]:
    return models.CreateResponse(pod_uid=uid, pod_jid=jid).model_dump(by_alias=True)


async def submit_once(state: PluginState, plan: JobPlan, sandbox: Path) -> Submitted:
    """Write the pod's sandbox and submit its job, unless the pod already has one."""
    uid = plan.pod_uid
    claim = await state.store.claim(uid)
    handed_off = False
    try:
        if claim.job_id is not None:
            return Submitted(claim.job_id, False, {})
        if claim.cut_short:
            # Only the schedd knows whether that submit happened.
            ads = await state.gateway.jobs_of(uid)
            if ads:
                existing = oldest_live(ads)
                await claim.record(existing.job_id)
                return existing
        try:
            await claim.mark_submitting(state.store, plan, sandbox)
        except BaseException:
            await asyncio.shield(claim.record(""))  # nothing was submitted
            raise
        try:
            submitted = await state.gateway.submit(plan, sandbox)
        except SubmitInDoubt as e:
            # The schedd may still queue it: the pod stays locked until the call ends.
            state.spawn(_settle(claim, e.outcome), "settle a submit in doubt")
            handed_off = True
            raise
        except (ScheddError, SubmitRefused):
            await claim.record("")  # nothing was submitted
            raise
        # Anything else (a cancelled call...) leaves "submitting": the schedd decides.
        await claim.record(submitted.job_id)
        return submitted
    finally:
        if not handed_off:
            claim.release()


async def _settle(claim: PodClaim, outcome: Awaitable[Submitted]) -> None:
    try:
        submitted = await outcome
        await claim.record(submitted.job_id)
    except ScheddError:
        pass  # still "submitting": the next create asks the schedd
    finally:
        claim.release()


def oldest_live(ads: list[Ad]) -> Submitted:
    """The job that stands for a pod among several (a race of two plugin processes): the
    oldest that was not removed."""
    live = [a for a in ads if a.get("JobStatus") != REMOVED] or ads
    best = min(live, key=lambda a: (_num(a.get("ClusterId")), _num(a.get("ProcId"))))
    return Submitted(job_id(best), False, best)


def _num(v: Any) -> int:
    return int(v) if isinstance(v, int | float) else 0
