"""Health: liveness and readiness for Kubernetes probes, interLink's ping, and metrics.

- ``/healthz``: the process serves (no schedd call).
- ``/readyz``: the schedd answers (cached a few seconds).
- ``GET /status`` with ``[]``: interLink's ping, answered with what the pool's slots offer,
  which the virtual node advertises as its capacity.
- ``/metrics``: Prometheus.
"""

from __future__ import annotations

import time
from typing import Any

from interlink_htcondor.core import models
from interlink_htcondor.service.gateway import ScheddError
from interlink_htcondor.service.state import PluginState

CAPACITY_CACHE_SECONDS = 10.0


def healthz() -> tuple[int, dict[str, Any]]:
    return 200, {"status": "ok"}


async def readyz(state: PluginState) -> tuple[int, dict[str, Any]]:
    ok, why = await state.ready()
    return (200 if ok else 503), {"status": "ok" if ok else "not ready", "schedd": why}


async def ping(state: PluginState) -> tuple[int, dict[str, Any]]:
    """interLink's ping: 200 with the node's resources, or 503 with why not."""
    ok, why = await state.ready()
    if not ok:
        return 503, {"status": "error", "message": f"HTCondor pool not ready: {why}"}
    cached = state.capacity_cache
    if cached is None or time.monotonic() - cached.at >= CAPACITY_CACHE_SECONDS:
        try:
            cap = await state.refresh_capacity()
        except ScheddError as e:
            return 503, {"status": "error", "message": f"HTCondor collector: {e}"}
    else:
        cap = cached.value
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
    return state.metrics.render()
