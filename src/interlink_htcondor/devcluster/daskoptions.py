"""How a ``VirtualNodeCluster`` runs on the development cluster.

With no kubelet, the only node that runs pods is the virtual node, so the Dask scheduler
runs there too: an HTCondor job, like the workers (see ``interlink_htcondor.dask.
scheduler``). A pod on the virtual node shares this machine's network and nothing forwards
a Service's NodePort to it (no kube-proxy), so the scheduler listens on its NodePorts
itself, on the node's address (127.0.0.1). The workers and the client then reach it at
``tcp://127.0.0.1:<nodePort>``, the address a NodePort Service has on this node, with no
port-forward (which the virtual kubelet does not serve).

A usable NodePort is one no Service of the cluster holds and no process here listens on.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterable
from typing import Any

from . import config
from .errors import ClusterError
from .state import ClusterInfo

NODE_PORTS = range(30000, 32768)  # kube-apiserver's default --service-node-port-range


def allocated(services: Iterable[Any]) -> set[int]:
    """NodePorts held by ``services`` (``V1Service`` objects)."""
    out: set[int] = set()
    for svc in services:
        for port in (svc.spec.ports if svc.spec is not None else None) or []:
            if port.node_port:
                out.add(int(port.node_port))
    return out


def bindable(port: int, host: str = config.HOST) -> bool:
    """Nothing listens on ``host:port`` now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick(
    taken: set[int], n: int, rng: random.Random, usable: Callable[[int], bool] = bindable
) -> list[int]:
    """``n`` distinct ports of the NodePort range, not in ``taken`` and ``usable``, in
    random order (so that concurrent test sessions rarely choose the same)."""
    free = [p for p in NODE_PORTS if p not in taken]
    rng.shuffle(free)
    out = []
    for p in free:
        if usable(p):
            out.append(p)
            if len(out) == n:
                return out
    raise ClusterError(f"fewer than {n} free NodePorts left in {NODE_PORTS}")


def free_node_ports(info: ClusterInfo, n: int = 2) -> list[int]:
    """``n`` NodePorts that no Service of the cluster holds and nothing here listens on."""
    from kubernetes import client

    with info.api_client() as api:
        services = client.CoreV1Api(api).list_service_for_all_namespaces().items
    return pick(allocated(services), n, random.Random())  # noqa: S311 (not a secret)


def virtual_node_cluster_options(info: ClusterInfo) -> dict[str, Any]:
    """Keyword arguments of ``VirtualNodeCluster`` for this cluster: the scheduler on the
    virtual node, on two free NodePorts (scheduler and dashboard) of the node's address."""
    comm, dashboard = free_node_ports(info, 2)
    return {
        "scheduler_on_virtual_node": True,
        "scheduler_service_type": "NodePort",
        "scheduler_node_port": comm,
        "dashboard_node_port": dashboard,
        "scheduler_address": f"tcp://{config.HOST}:{comm}",
    }
