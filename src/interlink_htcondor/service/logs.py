"""GET /getLogs: a container's logs with kubectl's options, or followed until it ends.

The wrapper writes each container's output as a CRI log in the pod's sandbox; in the
container-universe and ``+SingularityImage`` modes HTCondor's own stdout and stderr of the
job stand in for it. In spool mode the logs reach the plugin with the job's output, once
the job has ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from pydantic import ValidationError
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from interlink_htcondor.core import classad_attrs, jobspec, models
from interlink_htcondor.core.container_logs import (
    LogOptionError,
    LogOptions,
    LogOptionTypeError,
    LogSource,
    follow_log,
    read_log,
)
from interlink_htcondor.core.models import PodRef
from interlink_htcondor.core.pod_status import COMPLETED, pod_status, runs_wrapper
from interlink_htcondor.service.errors import HTTPError
from interlink_htcondor.service.snapshot import SnapshotUnavailable
from interlink_htcondor.service.state import PluginState

log = logging.getLogger("interlink_htcondor.server")

SPOOL_RUNNING_NOTE = (
    "storage.mode is 'spool': the logs of a running container reach the plugin only when "
    "its job has ended and its output was retrieved; ask again then.\n"
)
TEXT = "text/plain; charset=utf-8"


async def get_logs(state: PluginState, raw: Any) -> Response:
    if not isinstance(raw, dict):
        raise HTTPError(422, "the /getLogs body must be a JSON object")
    try:
        req = models.LogRequest.model_validate(raw)
        opts = LogOptions.from_opts(req.opts)
    except ValidationError as e:
        raise HTTPError(422, f"invalid log request: {models.validation_message(e)}") from None
    except LogOptionTypeError as e:
        raise HTTPError(422, f"invalid log request: Opts: {e}") from None
    except LogOptionError as e:
        raise HTTPError(400, f"invalid log options: {e}") from None
    pod = f"{req.namespace}/{req.pod_name}"
    ad = await _find_job(state, req.pod_uid)
    if ad is None:
        raise HTTPError(404, f"pod {pod} (uid {req.pod_uid}) is not known to this plugin")
    names = _split(ad.get(classad_attrs.INIT_CONTAINERS)) + _split(ad.get(classad_attrs.CONTAINERS))
    if req.container_name not in names:
        raise HTTPError(404, f"container {req.container_name!r} is not in pod {pod}")
    sandbox = state.store.sandbox_of(req.namespace, req.pod_name, req.pod_uid, ad)
    if sandbox is None:
        raise HTTPError(404, f"pod {pod} has no sandbox")
    name = req.container_name
    if runs_wrapper(ad):
        log_file = "".join((name, jobspec.PREVIOUS_LOG if opts.previous else ".log"))
        source = LogSource((sandbox / jobspec.LOG_DIR / log_file,))
    else:
        source = LogSource((sandbox / f"{name}.stdout", sandbox / f"{name}.stderr"), cri=False)
    if state.gateway.spool:
        if ad.get("JobStatus") != COMPLETED:
            return PlainTextResponse(SPOOL_RUNNING_NOTE)
        await state.ensure_retrieved(ad)
    if opts.previous:
        # The instance before the container's last restart, kept by the job wrapper (as
        # the kubelet keeps it); it has ended, so there is nothing to follow.
        if not source.cri or not source.paths[0].exists():
            raise HTTPError(400, f"previous terminated container {name!r} in pod {pod} not found")
        opts = replace(opts, follow=False)
    if not opts.follow:
        data = await asyncio.get_running_loop().run_in_executor(None, read_log, source, opts)
        return Response(data, media_type=TEXT)

    async def is_done() -> bool:
        return await _container_done(state, req.pod_uid, name)

    return StreamingResponse(_guard_stream(follow_log(source, opts, is_done)), media_type=TEXT)


async def _find_job(state: PluginState, uid: str) -> dict[str, Any] | None:
    try:
        snap = await state.snapshot.get()
    except SnapshotUnavailable as e:
        raise HTTPError(503, str(e)) from None
    ad = state.snapshot.lookup(snap, uid)
    if ad is None:
        try:
            ad = (await state.missing.resolve([uid])).get(uid)
        except Exception as e:
            raise HTTPError(503, f"cannot look the pod up in the schedd history: {e}") from e
    return ad


async def _container_done(state: PluginState, uid: str, container: str) -> bool:
    try:
        snap = await state.snapshot.get()
    except SnapshotUnavailable:
        return False  # keep following; the schedd may come back
    ad = state.snapshot.lookup(snap, uid)
    if ad is None:
        return True  # the job left the queue: nothing more will be written
    ref = PodRef(uid=uid, name="", namespace="")
    grace = state.settings.policy.held_grace_seconds
    result = pod_status(ref, ad, now=time.time(), held_grace_seconds=grace)
    if result is None:
        return True
    for c in result.status["containers"] + result.status["initContainers"]:
        if c["name"] == container:
            return "terminated" in c["state"]
    return True


async def _guard_stream(gen: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failing follow ends the stream with a note rather than a broken connection."""
    try:
        async for chunk in gen:
            yield chunk
    except Exception as e:
        log.exception("log follow failed")
        yield f"\n[interlink-htcondor: log stream ended: {type(e).__name__}]\n".encode()


def _split(v: Any) -> list[str]:
    return [x for x in v.split(",") if x] if isinstance(v, str) else []
