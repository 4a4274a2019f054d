"""Why a ``VirtualNodeCluster`` worker will not arrive, from Kubernetes objects (pure).

Through the virtual node, the plugin's container states reach the worker pod's
``status.containerStatuses`` unchanged (interLink copies them), so the classification of
``podstate.observe`` applies to them as it does to ``PluginCluster``'s ``/status`` answers:
a held job (``JobHeld``), a pod no slot can hold (``Unschedulable``), an image that cannot
run (``ContainerCannotRun``) or a removed job (``JobRemoved``) end the worker with
HTCondor's reason. Warning Events about the pod (the virtual kubelet failing to create
it, ``FailedCreate``...) say why a pod has no container status at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from interlink_htcondor.dask.podstate import Observed, Phase, observe

Json = dict[str, Any]

# Warning Events about a worker pod that mean it will not run as it is. FailedScheduling
# is not one: the Kubernetes scheduler retries, e.g. until the virtual node is Ready.
FATAL_EVENT_REASONS = frozenset(
    {"FailedCreate", "ProviderCreateFailed", "FailedCreatePodSandBox", "ErrImagePull"}
)


NO_STATUS = "NoContainerStatus"


def observe_pod(pod: Mapping[str, Any], *, connected: bool) -> Observed:
    """The worker's phase from its Pod object, as ``observe`` does from ``/status``."""
    status = pod.get("status") or {}
    if status.get("phase") == "Failed" and not status.get("containerStatuses"):
        reason = str(status.get("reason") or "PodFailed")
        return Observed(Phase.FAILED, reason, str(status.get("message") or ""))
    entry = {
        "containers": status.get("containerStatuses") or [],
        "initContainers": status.get("initContainerStatuses") or [],
    }
    if not entry["containers"] and not entry["initContainers"] and not connected:
        return Observed(Phase.PENDING, NO_STATUS, "no container status yet")
    return observe(entry, connected=connected)


def fatal_event(events: Iterable[Mapping[str, Any]]) -> Observed | None:
    """The latest Warning Event that means the pod will not run, as a failure."""
    latest: Mapping[str, Any] | None = None
    for ev in events:
        if ev.get("type") == "Warning" and ev.get("reason") in FATAL_EVENT_REASONS:
            when = str(ev.get("lastTimestamp") or ev.get("eventTime") or "")
            if latest is None or when >= str(
                latest.get("lastTimestamp") or latest.get("eventTime") or ""
            ):
                latest = ev
    if latest is None:
        return None
    return Observed(Phase.FAILED, str(latest.get("reason")), str(latest.get("message") or ""))


def worker_state(
    pod: Mapping[str, Any], events: Iterable[Mapping[str, Any]], *, connected: bool
) -> Observed:
    """The pod's own state; for a pod without any container status yet (the plugin never
    took it), a Warning Event saying it never will."""
    observed = observe_pod(pod, connected=connected)
    if observed.reason == NO_STATUS:
        return fatal_event(events) or observed
    return observed


def worker_name(pod: Mapping[str, Any]) -> str:
    """The Dask worker name the operator gave the pod (``DASK_WORKER_NAME``), else the pod
    name."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == "DASK_WORKER_NAME" and env.get("value"):
                return str(env["value"])
    return str((pod.get("metadata") or {}).get("name", ""))
