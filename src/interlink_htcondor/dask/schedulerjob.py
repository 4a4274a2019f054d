"""Starting a ``VirtualNodeCluster`` whose scheduler is an HTCondor job on the virtual node.

``KubeCluster`` waits until the scheduler pod is Running with the ``Ready`` *and*
``ContainersReady`` conditions (kr8s's ``Pod.ready()``). A kubelet writes both; interLink's
virtual kubelet (at the version the development cluster pins) writes ``Ready`` alone, so
that wait never ends for a pod on the virtual node. Here "ready" means what the client
needs: the scheduler answers at its address. Meanwhile the scheduler pod is watched, and a
pod that fails (the job's container exited, the plugin refused it) ends the wait at once
with its reason, where ``KubeCluster`` would keep waiting.

Only this placement takes this path; a scheduler in Kubernetes starts through
dask-kubernetes' own code.
"""

# distributed's rpc carries no annotations.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any
from urllib.parse import urlsplit

from distributed.core import rpc
from kr8s.asyncio.objects import Pod, object_from_spec

from interlink_htcondor.dask.scheduler import DASHBOARD_PORT

Json = dict[str, Any]
POLL = 0.5
CONNECT_TIMEOUT = 5.0


class SchedulerJobError(RuntimeError):
    """The scheduler's pod on the virtual node failed before the scheduler answered."""


def dashboard_node_port(spec: Json) -> int | None:
    """The dashboard's NodePort in a ``DaskCluster`` resource, if pinned."""
    for port in spec["spec"]["scheduler"]["service"]["ports"]:
        if port.get("name") == DASHBOARD_PORT and port.get("nodePort"):
            return int(port["nodePort"])
    return None


def pod_failure(pod: Json) -> str | None:
    """Why a scheduler pod will never serve (a terminal phase, an exited container), or
    None while it may still come up."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None  # on its way out (a previous cluster of the same name): not ours
    status = pod.get("status") or {}
    phase = status.get("phase")
    exited = []
    for c in status.get("containerStatuses") or []:
        term = (c.get("state") or {}).get("terminated")
        if term:
            what = term.get("reason") or "terminated"
            code = term.get("exitCode")
            msg = (term.get("message") or "").strip()
            exited.append(
                f"container {c.get('name')} {what}"
                + (f" (exit code {code})" if code is not None else "")
                + (f": {msg}" if msg else "")
            )
    if phase not in ("Failed", "Succeeded") and not exited:
        return None
    name = (pod.get("metadata") or {}).get("name", "?")
    why = status.get("message") or status.get("reason") or ""
    parts = [f"scheduler pod {name} is {phase}" + (f": {why}" if why else ""), *exited]
    return "; ".join(parts)


async def _answers(address: str) -> bool:
    parts = urlsplit(address)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        async with rpc(address, timeout=CONNECT_TIMEOUT) as comm:
            await asyncio.wait_for(comm.identity(), CONNECT_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    return True


def pod_waiting(pod: Json) -> str | None:
    """What a scheduler pod waits for (its containers' waiting messages: an idle job's
    reason), or None."""
    found = []
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting:
            found.append(str(waiting.get("message") or waiting.get("reason") or "waiting"))
    return "; ".join(found) or None


async def _scheduler_pods(name: str, namespace: str) -> list[Json]:
    selector = f"dask.org/cluster-name={name},dask.org/component=scheduler"
    return [
        pod if isinstance(pod, dict) else pod.raw
        async for pod in Pod.list(label_selector=selector, namespace=namespace)
    ]


async def wait_for_scheduler_job(
    name: str, namespace: str, address: str, timeout: float | None = None
) -> None:
    """Until the scheduler answers at ``address``; ``SchedulerJobError`` as soon as its
    pod fails, or after ``timeout`` seconds (None: no limit while the job waits for a
    slot, like ``KubeCluster``'s wait for a pending scheduler pod)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pods = await _scheduler_pods(name, namespace)
        for pod in pods:
            why = pod_failure(pod)
            if why is not None:
                raise SchedulerJobError(why)
        if await _answers(address):
            return
        if deadline is not None and time.monotonic() > deadline:
            waits = [w for w in map(pod_waiting, pods) if w]
            raise SchedulerJobError(
                f"the scheduler did not answer at {address} within {timeout:.0f} s"
                + (f": {'; '.join(waits)}" if waits else "")
            )
        await asyncio.sleep(POLL)


async def _wait_for_operator(obj: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await obj.refresh()
        if (obj.raw.get("status") or {}).get("phase"):
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(
        f"DaskCluster {obj.name} not actioned after {timeout} s: is the Dask operator running?"
    )


async def attach(cluster: Any) -> None:
    """Wait for the scheduler job and connect ``cluster`` (a ``VirtualNodeCluster``) to it:
    what ``KubeCluster`` sets once its scheduler is up."""
    address = await cluster._get_scheduler_address()
    timeout = getattr(cluster, "scheduler_timeout", None)
    await wait_for_scheduler_job(cluster.name, cluster.namespace, address, timeout)
    cluster.scheduler_comm = rpc(address)
    port = dashboard_node_port(cluster._custom_cluster_spec)
    cluster.forwarded_dashboard_port = str(port) if port else None


async def create(cluster: Any) -> None:
    """Create the ``DaskCluster`` resource of ``cluster`` and attach to its scheduler job;
    on failure the resource is deleted again (as ``KubeCluster`` does)."""
    if cluster.shutdown_on_close is None:
        cluster.shutdown_on_close = True
    spec = copy.deepcopy(cluster._custom_cluster_spec)
    spec["metadata"]["namespace"] = cluster.namespace
    obj = await object_from_spec(spec)
    await obj.create()
    try:
        await _wait_for_operator(obj, float(cluster._resource_timeout))
        await attach(cluster)
    except BaseException:
        await cluster._close()
        raise


async def connect(cluster: Any) -> None:
    """Attach ``cluster`` to an existing ``DaskCluster`` with the same name."""
    if cluster.shutdown_on_close is None:
        cluster.shutdown_on_close = False
    await attach(cluster)
