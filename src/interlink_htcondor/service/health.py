"""Health: liveness and readiness for Kubernetes probes, interLink's ping, and metrics.

None of them waits on the schedd for long (its calls run in worker processes, with
deadlines):

- ``/healthz``: the process serves (no schedd call).
- ``/readyz``: a schedd call succeeded within ``schedd.unready_after_seconds`` (a probe is
  started when the last contact is a little old; the answer waits for it at most
  ``READY_WAIT_SECONDS``).
- ``GET /status`` with ``[]``: interLink's ping, answered with what the pool's slots offer,
  which the virtual node advertises as its capacity; "the pool is down" (503) at once
  while schedd calls fail or time out, or when a probe gets no answer within
  ``PING_WAIT_SECONDS``.
- ``/metrics``: Prometheus, from memory only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from interlink_htcondor.core import models
from interlink_htcondor.service.gateway import Capacity, ScheddError
from interlink_htcondor.service.state import PluginState

CAPACITY_CACHE_SECONDS = 10.0
# Slot sizes this old are not reported any more (the ping says the collector is down).
CAPACITY_MAX_AGE_SECONDS = 600.0
READY_WAIT_SECONDS = 0.5
PING_WAIT_SECONDS = 1.0


def healthz() -> tuple[int, dict[str, Any]]:
    return 200, {"status": "ok"}


async def readyz(state: PluginState) -> tuple[int, dict[str, Any]]:
    ok, why = await state.ready(READY_WAIT_SECONDS)
    return (200 if ok else 503), {"status": "ok" if ok else "not ready", "schedd": why}


async def ping(state: PluginState) -> tuple[int, dict[str, Any]]:
    """interLink's ping: 200 with the node's resources, or 503 with why not."""
    ok, why = await state.pool_up(PING_WAIT_SECONDS)
    if not ok:
        return 503, {"status": "error", "message": f"HTCondor pool not ready: {why}"}
    try:
        cap = await _capacity(state)
    except ScheddError as e:
        return 503, {"status": "error", "message": f"HTCondor collector: {e}"}
    policy = state.settings.policy
    resources = models.PingResources(
        cpu=str(cap.cpus),
        memory=f"{cap.memory_mib}Mi",
        pods=str(policy.max_pods or max(cap.cpus, 1)),
        accelerators=(
            [models.Accelerator(resource_type="nvidia.com/gpu", available=str(cap.gpus))]
            if cap.gpus
            else []
        ),
    )
    body = models.PingResponse(status="ok", resources=resources).wire()
    if policy.node_taints is None:
        body.pop("taints", None)  # leave the node's taints alone
    else:
        body["taints"] = [t.model_dump() for t in policy.node_taints]
    return 200, body


def metrics(state: PluginState) -> bytes:
    state.metrics.set_contact(state.gateway.contact())
    return state.metrics.render()


async def _capacity(state: PluginState) -> Capacity:
    """The pool's slot sizes: cached, refreshed in the background when a little old; only
    when none is known (or a very old one) does the ping wait, at most
    ``PING_WAIT_SECONDS``."""
    cached = state.capacity_cache
    age = None if cached is None else time.monotonic() - cached.at
    if cached is not None and age is not None and age < CAPACITY_MAX_AGE_SECONDS:
        if age >= CAPACITY_CACHE_SECONDS and not state.capacity_refreshing:
            state.capacity_refreshing = True
            state.spawn(_refresh_in_background(state), "refresh capacity")
        return cached.value
    refresh = asyncio.ensure_future(state.refresh_capacity())
    refresh.add_done_callback(_retrieve)  # it may end after the ping has answered
    try:
        return await asyncio.wait_for(asyncio.shield(refresh), PING_WAIT_SECONDS)
    except TimeoutError:
        raise ScheddError(
            f"the collector has not answered within {PING_WAIT_SECONDS:g} s"
        ) from None


async def _refresh_in_background(state: PluginState) -> None:
    try:
        await state.refresh_capacity()
    finally:
        state.capacity_refreshing = False


def _retrieve(fut: asyncio.Future[Capacity]) -> None:
    if not fut.cancelled():
        fut.exception()
