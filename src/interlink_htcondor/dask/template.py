"""The one worker-pod template shared by ``VirtualNodeCluster`` and ``PluginCluster``.

It produces core/v1 objects exactly as Kubernetes serialises them (camelCase keys,
quantities as strings), so the same pod reaches the plugin whether the dask-kubernetes
operator created it through the virtual node or ``PluginCluster`` sent it directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from interlink_htcondor import ANNOTATION_PREFIX
from interlink_htcondor.core.translate.resources import parse_quantity

Json = dict[str, Any]

VIRTUAL_NODE_TAINT = "virtual-node.interlink/no-schedule"
VIRTUAL_NODE_LABEL = "virtual-node.interlink/type"
VIRTUAL_NODE_LABEL_VALUE = "virtual-kubelet"
POD_VPN_ANNOTATION = "interlink.eu/pod-vpn"
ACCOUNTING_GROUP = ANNOTATION_PREFIX + "accounting-group"
REQUIREMENTS = ANNOTATION_PREFIX + "requirements"
APPTAINER_OPTIONS = ANNOTATION_PREFIX + "apptainer-options"
WORKER_CONTAINER = "worker"
DEFAULT_IMAGE = f"ghcr.io/dask/dask:{version('distributed')}"


@dataclass(frozen=True)
class WorkerTemplate:
    """What a Dask worker pod on the virtual node looks like.

    ``scheduler_address`` must be reachable from the grid slots (see docs/physicist.md);
    ``None`` leaves it to whoever creates the pod (the operator injects its in-cluster
    Service address, which only works with interLink's pod VPN).
    """

    image: str = DEFAULT_IMAGE
    nthreads: int = 1
    memory: str = "2Gi"
    cpu: str | None = None
    scheduler_address: str | None = None
    death_timeout: int = 120
    listen_address: str | None = None
    contact_address: str | None = None
    nanny: bool = True
    accounting_group: str | None = None
    requirements: str | None = None
    apptainer_options: str | None = None
    pod_vpn: bool = False
    node_name: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    extra_args: Sequence[str] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # distributed >= 2024 installs only the ``dask`` command (``dask worker``); the old
    # ``dask-worker`` script that dask-kubernetes still names is gone.
    worker_command: Sequence[str] = ("dask", "worker")

    def __post_init__(self) -> None:
        if self.nthreads < 1:
            raise ValueError("nthreads must be at least 1")
        if self.death_timeout < 1:
            raise ValueError("death_timeout must be a positive number of seconds")
        if self.contact_address and not self.listen_address:
            # dask-worker refuses --contact-address alone; say so before a job is wasted.
            raise ValueError("contact_address needs listen_address too")
        if self.memory_bytes <= 0:
            raise ValueError(f"memory must be a positive quantity, not {self.memory!r}")

    def with_options(self, **changes: Any) -> WorkerTemplate:
        return replace(self, **changes)

    @property
    def memory_bytes(self) -> int:
        return int(parse_quantity(self.memory))

    def args(self) -> list[str]:
        """Worker argv; ``$(DASK_WORKER_NAME)`` is expanded by the kubelet or plugin."""
        args = [*self.worker_command, "--name", "$(DASK_WORKER_NAME)"]
        args += ["--nthreads", str(self.nthreads)]
        # The job wrapper kills at the pod limit; dask's own spill/pause/terminate
        # thresholds (fractions of this value) act before that.
        args += ["--memory-limit", str(self.memory_bytes)]
        args += ["--death-timeout", str(self.death_timeout)]
        args.append("--nanny" if self.nanny else "--no-nanny")
        if self.listen_address:
            args += ["--listen-address", self.listen_address]
        if self.contact_address:
            args += ["--contact-address", self.contact_address]
        args += list(self.extra_args)
        return args

    def container(self, worker_name: str | None = None) -> Json:
        env = [{"name": k, "value": v} for k, v in self.env.items()]
        reserved = {"DASK_WORKER_NAME", "DASK_SCHEDULER_ADDRESS"}
        clash = reserved & set(self.env)
        if clash:
            raise ValueError(f"set {sorted(clash)} through the template's fields, not env")
        if worker_name is not None:
            env.append({"name": "DASK_WORKER_NAME", "value": worker_name})
        if self.scheduler_address:
            env.append({"name": "DASK_SCHEDULER_ADDRESS", "value": self.scheduler_address})
        quantity = {"cpu": self.cpu or str(self.nthreads), "memory": self.memory}
        return {
            "name": WORKER_CONTAINER,
            "image": self.image,
            "args": self.args(),
            "env": env,
            "resources": {"requests": dict(quantity), "limits": dict(quantity)},
        }

    def pod_annotations(self) -> dict[str, str]:
        out = dict(self.annotations)
        if self.accounting_group:
            out[ACCOUNTING_GROUP] = self.accounting_group
        if self.requirements:
            out[REQUIREMENTS] = self.requirements
        if self.apptainer_options:
            out[APPTAINER_OPTIONS] = self.apptainer_options
        if self.pod_vpn:
            out[POD_VPN_ANNOTATION] = "true"
        return out

    def node_selector(self) -> dict[str, str]:
        if self.node_name:
            return {"kubernetes.io/hostname": self.node_name}
        return {VIRTUAL_NODE_LABEL: VIRTUAL_NODE_LABEL_VALUE}

    def pod_spec(self, worker_name: str | None = None) -> Json:
        """A core/v1 PodSpec aimed at the virtual node (no restartPolicy: the operator's
        Deployments need the default)."""
        return {
            "containers": [self.container(worker_name)],
            "nodeSelector": self.node_selector(),
            "tolerations": [
                {"key": VIRTUAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
            ],
        }

    def pod(
        self,
        name: str,
        *,
        namespace: str = "default",
        uid: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Json:
        """A complete core/v1 Pod for one worker whose Dask name is the pod name."""
        spec = self.pod_spec(worker_name=name)
        spec["restartPolicy"] = "Never"  # a dead worker is replaced by the cluster manager
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid or str(uuid.uuid4()),
                "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "labels": {**self.labels, **(labels or {})},
                "annotations": self.pod_annotations(),
            },
            "spec": spec,
            "status": {"phase": "Pending"},
        }
