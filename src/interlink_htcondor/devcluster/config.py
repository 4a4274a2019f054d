"""Fixed facts of the development cluster: names and loopback ports.

The ports stay clear of the pool's collector (9618), of the usual Kubernetes ports (so a
kind or k3s cluster on the same machine does not clash) and of the NodePort range
(30000-32767). A private cluster (``selection``) moves them all by one offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import rbac

HOST = "127.0.0.1"
NODE_NAME = "htcondor-vk"
# `policy.instance` of the cluster's plugin: tags its jobs in the shared schedd.
PLUGIN_INSTANCE = "devcluster"
# Pods the node accepts (the plugin's `policy.max_pods`): a kubelet's default; HTCondor
# queues what the slots cannot run at once.
MAX_PODS = 110
SERVICE_CIDR = "10.96.0.0/24"


@dataclass(frozen=True)
class Ports:
    etcd_client: int = 12379
    etcd_peer: int = 12380
    apiserver: int = 16443
    controller_manager: int = 16257
    scheduler: int = 16259
    kubelet: int = 16250

    def all(self) -> dict[str, int]:
        return dict(vars(self))

    def shifted(self, offset: int) -> Ports:
        """Every port moved by ``offset`` (a second cluster on the same machine)."""
        return Ports(**{k: v + offset for k, v in self.all().items()})


PORTS = Ports()
# The personal pool's one port (HTCondor's shared port: collector and every daemon).
POOL_PORT = 9618
NODEPORT_RANGE = range(30000, 32768)
# Below the NodePort range and Linux's ephemeral ports (32768-60999).
USABLE_PORTS = range(1024, NODEPORT_RANGE.start)


def check_ports(ports: Ports) -> None:
    """ValueError unless the ports are distinct, unprivileged, below the NodePort range and
    clear of the pool's port."""
    values = list(ports.all().values())
    if len(set(values)) != len(values):
        raise ValueError(f"ports must be distinct: {ports.all()}")
    bad = {k: v for k, v in ports.all().items() if v not in USABLE_PORTS}
    if bad:
        raise ValueError(
            f"ports must lie in {USABLE_PORTS.start}-{USABLE_PORTS.stop - 1} (below the "
            f"NodePort range {NODEPORT_RANGE.start}-{NODEPORT_RANGE.stop - 1}): {bad}"
        )
    if POOL_PORT in values:
        raise ValueError(f"port {POOL_PORT} is the personal pool's")


def ports_for_offset(offset: int) -> Ports:
    """The default ports moved by ``offset``, checked (``check_ports``) and, for a non-zero
    offset, clear of the default cluster's (both run at once)."""
    ports = PORTS.shifted(offset)
    check_ports(ports)
    if offset:
        shared = sorted(set(ports.all().values()) & set(PORTS.all().values()))
        if shared:
            raise ValueError(f"ports {shared} are the default cluster's")
    return ports


VK_NAMESPACE = rbac.NAMESPACE
VK_SERVICE_ACCOUNT = rbac.SERVICE_ACCOUNT


def apiserver_url(ports: Ports = PORTS) -> str:
    return f"https://{HOST}:{ports.apiserver}"
