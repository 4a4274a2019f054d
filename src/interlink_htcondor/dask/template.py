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
from interlink_htcondor.dask import config

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


def _site(key: str) -> Any:
    """A field default read from the site's ``dask.config`` when a template is made."""

    def read() -> Any:
        value = config.get(f"worker.{key}")
        if key == "image" and value is None:
            return DEFAULT_IMAGE
        # Copies: a template must not share mutable defaults with the config.
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, list):
            return tuple(value)
        return value

    return field(default_factory=read)


TEMPLATE_PARAMETERS = """
    image : str
        Container image of the worker. The site's image rules map it (the personal pool
        maps ``ghcr.io/dask/dask:*`` to a local image). Default: ``worker.image``, else
        ``ghcr.io/dask/dask:<the client's distributed version>``.
    nthreads : int
        Threads per worker (``--nthreads``); also the CPU request unless ``cpu`` is given.
    memory : str
        Kubernetes quantity (``"4Gi"``) for the memory request and limit. The job wrapper
        enforces the limit; the worker's ``--memory-limit`` follows it.
    cpu : str, optional
        CPU request and limit (``"2"``, ``"500m"``); default ``nthreads``.
    scheduler_address : str, optional
        ``DASK_SCHEDULER_ADDRESS`` of the workers: an address the grid slots can reach.
    death_timeout : int
        Seconds a worker keeps trying to reach a lost scheduler before it exits.
    listen_address, contact_address : str, optional
        The worker's ``--listen-address`` and ``--contact-address`` (slots behind NAT).
    nanny : bool
        Run the worker under a nanny (``--nanny``) or not (``--no-nanny``, the default:
        the pod's job wrapper enforces the memory limit and ``PluginCluster`` replaces a
        worker that ended, so a nanny would only double each worker's start-up).
    accounting_group : str, optional
        HTCondor accounting group (annotation ``htcondor.interlink.eu/accounting-group``).
    requirements : str, optional
        Extra HTCondor requirements, a ClassAd expression
        (``htcondor.interlink.eu/requirements``).
    apptainer_options : str, optional
        Extra Apptainer options (``htcondor.interlink.eu/apptainer-options``), where the
        site allows them.
    pod_vpn : bool
        Ask for interLink's pod VPN (``interlink.eu/pod-vpn: "true"``).
    node_name : str, optional
        Pin the pods to this virtual node (``kubernetes.io/hostname``); default any node
        labelled ``virtual-node.interlink/type: virtual-kubelet``.
    dask_config : mapping of str to str
        The workers' own Dask settings, by dotted key (``distributed.admin.tick.interval``),
        passed as ``DASK_*`` variables (an ``env`` entry of the same variable wins). The
        site default makes an idle worker cheap: an event-loop check every 1 s and a
        profile sample every 100 ms instead of distributed's 20 ms and 10 ms, which cost
        an idle worker about 5% of a core (1.3% with these).
    env : mapping of str to str
        Extra environment variables of the worker container.
    extra_args : sequence of str
        Extra arguments of ``dask worker``.
    annotations, labels : mapping of str to str
        Extra pod annotations and labels.
    worker_command : sequence of str
        The worker command (default ``dask worker``).
"""


@dataclass(frozen=True)
class WorkerTemplate:
    """What a Dask worker pod on the virtual node looks like.

    Every field not given comes from the site's defaults, the ``interlink-htcondor.worker``
    section of ``dask.config`` (see ``interlink_htcondor/dask/interlink-htcondor.yaml``).

    Parameters
    ----------{parameters}
    Examples
    --------
    >>> WorkerTemplate(memory="4Gi", accounting_group="group_cms.analysis").pod("w-0")
    """

    image: str = _site("image")
    nthreads: int = _site("nthreads")
    memory: str = _site("memory")
    cpu: str | None = _site("cpu")
    scheduler_address: str | None = None
    death_timeout: int = _site("death-timeout")
    listen_address: str | None = _site("listen-address")
    contact_address: str | None = _site("contact-address")
    nanny: bool = _site("nanny")
    accounting_group: str | None = _site("accounting-group")
    requirements: str | None = _site("requirements")
    apptainer_options: str | None = _site("apptainer-options")
    pod_vpn: bool = _site("pod-vpn")
    node_name: str | None = _site("node-name")
    dask_config: Mapping[str, str] = _site("dask-config")
    env: Mapping[str, str] = _site("env")
    extra_args: Sequence[str] = _site("extra-args")
    annotations: Mapping[str, str] = _site("annotations")
    labels: Mapping[str, str] = _site("labels")
    # distributed >= 2024 installs only the ``dask`` command (``dask worker``); the old
    # ``dask-worker`` script that dask-kubernetes still names is gone.
    worker_command: Sequence[str] = ("dask", "worker")

    def __post_init__(self) -> None:
        _check_types(self)
        for key in self.dask_config:
            dask_variable(key)  # a key that is no config key fails here, not in the job
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

    def environment(self) -> dict[str, str]:
        """The worker container's own variables: ``dask_config`` as ``DASK_*``, then
        ``env``."""
        return {**{dask_variable(k): v for k, v in self.dask_config.items()}, **self.env}

    def container(self, worker_name: str | None = None) -> Json:
        env = [{"name": k, "value": v} for k, v in self.environment().items()]
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


assert WorkerTemplate.__doc__ is not None
WorkerTemplate.__doc__ = WorkerTemplate.__doc__.format(parameters=TEMPLATE_PARAMETERS)

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "image": (str,),
    "nthreads": (int,),
    "memory": (str,),
    "cpu": (str, type(None)),
    "scheduler_address": (str, type(None)),
    "death_timeout": (int,),
    "listen_address": (str, type(None)),
    "contact_address": (str, type(None)),
    "nanny": (bool,),
    "accounting_group": (str, type(None)),
    "requirements": (str, type(None)),
    "apptainer_options": (str, type(None)),
    "pod_vpn": (bool,),
    "node_name": (str, type(None)),
    "dask_config": (Mapping,),
    "env": (Mapping,),
    "extra_args": (list, tuple),
    "annotations": (Mapping,),
    "labels": (Mapping,),
    "worker_command": (list, tuple),
}


def dask_variable(key: str) -> str:
    """The environment variable that sets the Dask config ``key`` in the worker
    (``distributed.admin.tick.interval`` -> ``DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL``)."""
    parts = key.split(".")
    if not key or not all(p and p.replace("-", "").replace("_", "").isalnum() for p in parts):
        raise ValueError(f"WorkerTemplate.dask_config: {key!r} is not a dotted Dask config key")
    return "DASK_" + "__".join(p.upper().replace("-", "_") for p in parts)


def _check_types(t: WorkerTemplate) -> None:
    """Refuse values of the wrong type, from code or from a site's config file, with the
    field's name (a YAML typo would otherwise surface as a failed job much later)."""
    for name, types in _FIELD_TYPES.items():
        value = getattr(t, name)
        bad = not isinstance(value, types) or (
            isinstance(value, bool) and bool not in types  # True is an int, not a count
        )
        if bad:
            want = " or ".join("None" if x is type(None) else x.__name__ for x in types)
            raise TypeError(f"WorkerTemplate.{name} must be {want}, not {value!r}")
    for name in ("dask_config", "env", "annotations", "labels"):
        for k, v in getattr(t, name).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"WorkerTemplate.{name} must map strings to strings: {k!r}: {v!r}")
    for name in ("extra_args", "worker_command"):
        if not all(isinstance(a, str) for a in getattr(t, name)):
            raise TypeError(f"WorkerTemplate.{name} must be a sequence of strings")
