"""Fixed facts of the development cluster: names and loopback ports.

The ports stay clear of the pool's collector (9618), of the usual Kubernetes ports (so a
kind or k3s cluster on the same machine does not clash) and of the NodePort range
(30000-32767).
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
VK_NAMESPACE = rbac.NAMESPACE
VK_SERVICE_ACCOUNT = rbac.SERVICE_ACCOUNT


def apiserver_url(ports: Ports = PORTS) -> str:
    return f"https://{HOST}:{ports.apiserver}"
