"""The configuration files of interLink's API server and virtual kubelet (pure).

Field names are those of the pinned interLink commit (``pkg/interlink/config.go`` and
``pkg/virtualkubelet/config.go``).

The virtual kubelet at that commit takes the node's capacity from its own configuration
(``Resources``; 100 CPUs, 3000G and 10000 pods when unset) and always adds the taint
``virtual-node.interlink/no-schedule=true:NoSchedule``; it stores the body of the plugin's
ping in the node annotation ``interlink.virtual-kubelet.io/ping-response`` but reads no capacity
or taint from it. So ``cluster up`` asks the plugin's ping itself and writes what the pool
offers into ``Resources`` (and any extra taints the plugin asks for into ``NodeTaints``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

# interLink's own taint, added by the virtual kubelet whatever its configuration says.
INTERLINK_TAINT = {
    "key": "virtual-node.interlink/no-schedule",
    "value": "true",
    "effect": "NoSchedule",
}


@dataclass(frozen=True)
class NodeResources:
    """The virtual node's capacity, as the plugin's ping reports it."""

    cpu: str
    memory: str
    pods: str
    accelerators: tuple[tuple[str, int], ...] = ()  # (resource type, count)
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect) besides interLink's

    @classmethod
    def from_ping(cls, body: Any) -> NodeResources:
        """From the plugin's ping answer (``GET /status`` with ``[]``): a PingResponse object
        with ``resources`` (and maybe ``taints``). ValueError when it has no capacity."""
        if not isinstance(body, dict) or not isinstance(body.get("resources"), dict):
            raise ValueError(f"the plugin's ping reported no resources: {str(body)[:200]}")
        res = body["resources"]
        try:
            cpu, memory, pods = str(res["cpu"]), str(res["memory"]), str(res["pods"])
        except KeyError as e:
            raise ValueError(f"the plugin's ping lacks resources.{e.args[0]}") from None
        accels = tuple(
            (str(a["resourceType"]), int(a["available"]))
            for a in res.get("accelerators") or []
            if int(a.get("available") or 0) > 0
        )
        taints = tuple(
            (str(t["key"]), str(t.get("value", "")), str(t.get("effect", "NoSchedule")))
            for t in body.get("taints") or []
            if t.get("key") != INTERLINK_TAINT["key"]  # the virtual kubelet adds that one
        )
        return cls(cpu=cpu, memory=memory, pods=pods, accelerators=accels, taints=taints)


@dataclass(frozen=True)
class InterlinkConfig:
    """interLink's API server: a unix socket in front (the virtual kubelet's side), the
    plugin's unix socket behind.

    Over TCP, interLink's server closes connections idle for 30 s (its read timeout) while the
    virtual kubelet pings every 30 s on a kept-alive connection: about one ping in twenty
    then fails with EOF and the node turns NotReady for 30 s. Its unix-socket server has no
    such timeout."""

    socket: str
    plugin_socket: str
    data_dir: str
    verbose: bool = False  # debug level logs every status poll and node patch

    def document(self) -> dict[str, Any]:
        return {
            "InterlinkAddress": f"unix://{self.socket}",
            "InterlinkPort": "",
            "SidecarURL": f"unix://{self.plugin_socket}",
            "SidecarPort": "",
            "VerboseLogging": self.verbose,
            "ErrorsOnlyLogging": False,
            "DataRootFolder": self.data_dir.rstrip("/") + "/",
        }


@dataclass(frozen=True)
class VirtualKubeletConfig:
    """interLink's virtual kubelet: talks to the API server over its unix socket; pods get the
    Kubernetes API's loopback address (``KUBERNETES_SERVICE_HOST``) like in-cluster pods."""

    interlink_socket: str
    apiserver_port: int
    resources: NodeResources
    namespace: str
    service_account: str
    labels: dict[str, str] = field(default_factory=dict)
    verbose: bool = False  # debug level logs every status poll and node patch

    def document(self) -> dict[str, Any]:
        res = self.resources
        resources: dict[str, Any] = {"CPU": res.cpu, "Memory": res.memory, "Pods": res.pods}
        resources["Accelerators"] = [
            {"ResourceType": kind, "Model": "", "Available": n} for kind, n in res.accelerators
        ]
        return {
            "InterlinkURL": f"unix://{self.interlink_socket}",
            "InterlinkPort": "",
            "KubernetesApiAddr": "127.0.0.1",
            "KubernetesApiPort": str(self.apiserver_port),
            "VKTokenFile": "",
            "ServiceAccount": self.service_account,
            "Namespace": self.namespace,
            "VerboseLogging": self.verbose,
            "ErrorsOnlyLogging": False,
            # No TLS to interLink's API server (a unix socket); the kubelet API
            # serves a self-signed certificate, which kube-apiserver does not check here.
            "HTTP": {"Insecure": True},
            "KubeletHTTP": {"Insecure": True},
            "Resources": resources,
            "NodeLabels": [f"{k}={v}" for k, v in sorted(self.labels.items())],
            "NodeTaints": [{"Key": k, "Value": v, "Effect": e} for k, v, e in res.taints],
        }


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)
