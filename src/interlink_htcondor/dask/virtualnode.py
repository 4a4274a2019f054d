"""``VirtualNodeCluster``: the dask-kubernetes operator, with workers on the interLink node.

The scheduler runs as an ordinary pod in the Kubernetes cluster; worker pods are built
from the shared ``WorkerTemplate`` and land on the virtual node, i.e. become HTCondor
jobs. Two things differ from a plain ``KubeCluster``:

* The workers must reach the scheduler from a grid slot, so the cluster refuses to start
  without a reachable ``DASK_SCHEDULER_ADDRESS`` (or interLink's pod VPN). See
  ``docs/physicist.md`` for the options.
* Scale-down cancels pending workers first. The operator only retires workers the
  scheduler knows, so an idle HTCondor job (a Pending pod) would outlive running workers.
  ``VirtualNodeCluster`` deletes the Deployments of unconnected workers itself before it
  lowers the replica count, leaving the operator nothing (or only the rest) to retire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kr8s
import kr8s.asyncio
from dask_kubernetes.operator import KubeCluster, make_cluster_spec
from kr8s.asyncio.objects import Deployment, Pod

from interlink_htcondor.dask import config, crd, schedulerjob
from interlink_htcondor.dask.kubepods import worker_name, worker_state
from interlink_htcondor.dask.plugincluster import WorkerFailure, WorkerStartError
from interlink_htcondor.dask.scheduler import on_virtual_node, scheduler_spec
from interlink_htcondor.dask.template import WorkerTemplate

Json = dict[str, Any]

SCHEDULER_PORT = 8786
REACHABILITY_HELP = (
    "worker pods on the virtual node run on grid slots, outside the Kubernetes network: "
    "give scheduler_address= an address they can reach (a NodePort or LoadBalancer "
    "Service, e.g. tcp://<node>:<nodePort>, or a TLS ingress with SNI, "
    "tls://<host>:443), or set pod_vpn=True to use interLink's pod VPN"
)


def make_virtual_node_cluster_spec(
    name: str,
    template: WorkerTemplate,
    *,
    n_workers: int = 0,
    scheduler_image: str | None = None,
    scheduler_service_type: str = "NodePort",
    scheduler_node_port: int | None = None,
    scheduler_resources: Mapping[str, Mapping[str, str]] | None = None,
    idle_timeout: int = 0,
    dashboard_node_port: int | None = None,
    scheduler_on_virtual_node: bool = False,
) -> Json:
    """A ``DaskCluster`` resource whose workers are ``template`` pods on the virtual node.

    The scheduler part comes from the operator's own helpers (``interlink_htcondor.dask.
    scheduler``); ``scheduler_node_port`` (and ``dashboard_node_port``) pin the scheduler
    Service's NodePorts so that the workers' address can be known before the Service
    exists. ``scheduler_on_virtual_node`` makes the scheduler an HTCondor job too,
    listening on the template's ``scheduler_address`` (the development cluster's layout).
    """
    if n_workers < 0:
        raise ValueError("n_workers must be >= 0")
    base = make_cluster_spec(
        name=name,
        image=scheduler_image or template.image,
        n_workers=n_workers,
        scheduler_service_type=scheduler_service_type,
        idle_timeout=idle_timeout,
    )
    base["spec"]["scheduler"] = scheduler_spec(
        name,
        image=scheduler_image or template.image,
        service_type=scheduler_service_type,
        node_port=scheduler_node_port,
        dashboard_node_port=dashboard_node_port,
        resources=scheduler_resources,
    )
    if scheduler_on_virtual_node:
        on_virtual_node(base["spec"]["scheduler"], template, resources=scheduler_resources)
    worker: Json = {"replicas": n_workers, "spec": template.pod_spec()}
    meta = {"annotations": template.pod_annotations(), "labels": dict(template.labels)}
    meta = {k: v for k, v in meta.items() if v}
    if meta:
        worker["metadata"] = meta
    base["spec"]["worker"] = worker
    return crd.validate(base)


# -- pending-first scale-down (pure; tested on objects the operator itself generates) --


@dataclass(frozen=True)
class ScaleDownPlan:
    """``cancel``: Deployments to delete before lowering replicas to ``replicas``;
    ``retire``: how many connected workers the operator will still retire gracefully."""

    cancel: list[str]
    replicas: int
    retire: int


def _worker_name(pod: Json) -> str | None:
    for container in pod.get("spec", {}).get("containers", []):
        for env in container.get("env") or []:
            if env.get("name") == "DASK_WORKER_NAME":
                return str(env.get("value"))
    return None


def _cancel_rank(phase: str | None) -> int:
    # Dead first, then never-scheduled, then idle jobs, then started-but-unconnected.
    return {"Failed": 0, "Unknown": 0, "Succeeded": 0, None: 1, "Pending": 2}.get(phase, 3)


def plan_scale_down(
    deployments: Iterable[Json], pods: Iterable[Json], connected: Iterable[str], n: int
) -> ScaleDownPlan:
    """Which worker Deployments to cancel so that scaling to ``n`` removes unconnected
    workers (pending HTCondor jobs) before the operator retires any connected one."""
    if n < 0:
        raise ValueError("n must be >= 0")
    deps = list(deployments)
    current = len(deps)
    connected_names = set(connected)
    phase_of: dict[str, str | None] = {}
    for pod in pods:
        name = _worker_name(pod)
        if name is not None:
            phase_of[name] = pod.get("status", {}).get("phase")
    candidates = [d for d in deps if d["metadata"]["name"] not in connected_names]
    # newest first inside each rank: the last requested is the least likely to start soon
    candidates.sort(key=lambda d: d["metadata"].get("creationTimestamp") or "", reverse=True)
    candidates.sort(key=lambda d: _cancel_rank(phase_of.get(d["metadata"]["name"])))
    excess = max(current - n, 0)
    cancel = [d["metadata"]["name"] for d in candidates[:excess]]
    return ScaleDownPlan(cancel=cancel, replicas=n, retire=excess - len(cancel))


VIRTUAL_NODE_CLUSTER_PARAMETERS = """
    name : str
        Name of the ``DaskCluster`` resource (and prefix of its pods and Services).
    template : WorkerTemplate, optional
        The worker pod; default ``WorkerTemplate()`` (the site's ``worker`` defaults).
    n_workers : int
        Workers to start with.
    scheduler_address : str, optional
        The scheduler's address as the grid slots reach it (``tcp://<node>:<nodePort>``,
        ``tls://<host>:443``). Required unless ``pod_vpn``. Default:
        ``virtual-node-cluster.scheduler-address``.
    pod_vpn : bool
        Use interLink's pod VPN instead of a reachable address.
    scheduler_service_type : str, optional
        Type of the scheduler's Service (``NodePort``, ``LoadBalancer``, ``ClusterIP``).
    scheduler_node_port : int, optional
        Pin the scheduler Service's NodePort, so its address is known in advance.
    dashboard_node_port : int, optional
        Pin the NodePort of the scheduler's dashboard.
    scheduler_on_virtual_node : bool
        Run the scheduler on the virtual node too, as an HTCondor job listening on
        ``scheduler_address`` (whose port must be ``scheduler_node_port``; give
        ``dashboard_node_port`` too). The layout of the development cluster, which has no
        node to run it otherwise; in production the scheduler runs in Kubernetes.
    scheduler_timeout : float, optional
        With ``scheduler_on_virtual_node``: give up (and delete the ``DaskCluster``) when
        the scheduler job does not answer within this many seconds, with what its pod waits
        for; default no limit, as ``KubeCluster`` waits for a pending scheduler pod.
    scheduler_image : str, optional
        Image of the scheduler pod; default the worker image.
    idle_timeout : int, optional
        Seconds of idleness after which the operator deletes the cluster (0: never).
    **kwargs
        Passed to ``dask_kubernetes.operator.KubeCluster`` (``namespace``,
        ``shutdown_on_close``, ``resource_timeout``, ...).
"""


class VirtualNodeCluster(KubeCluster):  # type: ignore[misc]
    """A dask-kubernetes operator cluster whose workers run as HTCondor jobs.

    The scheduler is a pod in Kubernetes behind a Service; worker pods land on the
    interLink virtual node. Options not given come from the site's ``dask.config`` section
    ``interlink-htcondor`` (``virtual-node-cluster.*`` and ``worker.*``).

    Parameters
    ----------{parameters}
    Examples
    --------
    >>> cluster = VirtualNodeCluster(
    ...     name="zpeak", scheduler_address="tcp://k8s-node.example.org:30786",
    ...     scheduler_node_port=30786, template=WorkerTemplate(memory="4Gi"))
    >>> cluster.scale(16)
    """

    def __init__(
        self,
        *,
        name: str,
        template: WorkerTemplate | None = None,
        n_workers: int = 0,
        scheduler_address: str | None = None,
        pod_vpn: bool = False,
        scheduler_service_type: str | None = None,
        scheduler_node_port: int | None = None,
        scheduler_image: str | None = None,
        idle_timeout: int | None = None,
        dashboard_node_port: int | None = None,
        scheduler_on_virtual_node: bool | None = None,
        scheduler_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        vc = "virtual-node-cluster."
        template = template or WorkerTemplate()
        scheduler_address = config.pick(scheduler_address, vc + "scheduler-address")
        if scheduler_address:
            template = template.with_options(scheduler_address=scheduler_address)
        if pod_vpn:
            template = template.with_options(pod_vpn=True)
        if not template.scheduler_address and not template.pod_vpn:
            raise ValueError(REACHABILITY_HELP)
        self.template = template
        self.scheduler_on_virtual_node = bool(
            config.pick(scheduler_on_virtual_node, vc + "scheduler-on-virtual-node")
        )
        self.scheduler_timeout = scheduler_timeout
        self.failures: list[WorkerFailure] = []
        spec = make_virtual_node_cluster_spec(
            name,
            template,
            n_workers=n_workers,
            scheduler_image=config.pick(scheduler_image, vc + "scheduler-image"),
            scheduler_service_type=config.pick(
                scheduler_service_type, vc + "scheduler-service-type"
            ),
            scheduler_node_port=config.pick(scheduler_node_port, vc + "scheduler-node-port"),
            idle_timeout=int(config.pick(idle_timeout, vc + "idle-timeout")),
            dashboard_node_port=config.pick(dashboard_node_port, vc + "dashboard-node-port"),
            scheduler_on_virtual_node=self.scheduler_on_virtual_node,
        )
        super().__init__(custom_cluster_spec=spec, **kwargs)

    async def _create_cluster(self) -> None:
        if self.scheduler_on_virtual_node:  # see schedulerjob: a virtual node's readiness
            await schedulerjob.create(self)
        else:
            await super()._create_cluster()

    async def _connect_cluster(self) -> None:
        if self.scheduler_on_virtual_node:
            await schedulerjob.connect(self)
        else:
            await super()._connect_cluster()

    async def _get_scheduler_address(self) -> str:
        # dask-kubernetes derives the client's address from the Service: a NodePort's
        # first node, which may be the virtual node (no kube-proxy there), or a
        # port-forward, which a virtual node cannot serve. The address given for the
        # workers is reachable from outside the cluster by construction: use it.
        return client_address(self.template) or str(await super()._get_scheduler_address())

    # -- failures at once (pod status and Events; see kubepods) ----------------------------

    async def worker_failures(self, worker_group: str = "default") -> list[WorkerFailure]:
        """Workers of ``worker_group`` that will not arrive, with HTCondor's reason from
        the pod's container statuses (held, never matching, image missing, removed, exited)
        or a Warning Event; each is also kept in ``self.failures`` (once)."""
        info = await self.scheduler_comm.identity()
        connected = {str(w.get("name")) for w in info.get("workers", {}).values()}
        found = []
        async for pod in Pod.list(**self._worker_group(worker_group)):
            raw = _raw(pod)
            name = worker_name(raw)
            events = [
                e.raw
                async for e in kr8s.asyncio.get(
                    "events",
                    namespace=self.namespace,
                    field_selector=f"involvedObject.name={raw['metadata']['name']}",
                )
            ]
            observed = worker_state(raw, events, connected=name in connected)
            if observed.phase.ends_worker:
                job = str((raw["metadata"].get("annotations") or {}).get("JobID", ""))
                found.append(WorkerFailure(name, job, observed.describe(), time.time()))
        known = {(f.name, f.job_id) for f in self.failures}
        self.failures += [f for f in found if (f.name, f.job_id) not in known]
        return found

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> Any:
        """Block until ``n_workers`` are connected. Raises ``WorkerStartError`` as soon as
        failed workers (see ``worker_failures``) make ``n_workers`` unreachable, instead of
        waiting for ``timeout``."""
        return self.sync(self._wait_for_workers_or_failures, n_workers, timeout)

    async def _wait_for_workers_or_failures(self, n: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.scheduler_comm.identity()
            running = len(info.get("workers", {}))
            if running >= n:
                return
            requested = len([d async for d in Deployment.list(**self._worker_group("default"))])
            failures = await self.worker_failures()
            if failures and requested - len(failures) < n:
                raise WorkerStartError(
                    f"{n} workers were requested but {len(failures)} cannot arrive "
                    f"({running} connected); call scale() again to replace them",
                    failures,
                )
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"only {running} of {n} workers connected in time")
            await asyncio.sleep(2)

    def _worker_group(self, worker_group: str) -> dict[str, Any]:
        """kr8s list arguments selecting a worker group's Deployments or Pods: the operator
        labels them so (kr8s public API, rather than dask-kubernetes' private
        DaskWorkerGroup object)."""
        selector = ",".join(
            [
                f"dask.org/cluster-name={self.name}",
                "dask.org/component=worker",
                f"dask.org/workergroup-name={self.name}-{worker_group}",
            ]
        )
        return {"label_selector": selector, "namespace": self.namespace}

    async def _scale(self, n: int, worker_group: str = "default") -> None:
        where = self._worker_group(worker_group)
        deployments = [_raw(d) async for d in Deployment.list(**where)]
        if n < len(deployments):
            pods = [_raw(p) async for p in Pod.list(**where)]
            info = await self.scheduler_comm.identity()
            connected = [str(w.get("name")) for w in info.get("workers", {}).values()]
            plan = plan_scale_down(deployments, pods, connected, n)
            await self._cancel(plan.cancel)
        await super()._scale(n, worker_group)

    async def _cancel(self, names: list[str], timeout: float = 60.0) -> None:
        """Delete worker Deployments and wait until they are gone, so the operator's
        replica reconciliation no longer counts them."""
        objs = [await Deployment(n, namespace=self.namespace) for n in names]
        for obj in objs:
            with contextlib.suppress(kr8s.NotFoundError):
                await obj.delete()
        deadline = time.monotonic() + timeout
        for obj in objs:
            while await obj.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker Deployment {obj.name} was not deleted")
                await asyncio.sleep(0.5)


def client_address(template: WorkerTemplate) -> str | None:
    """Where the client connects to the scheduler: the workers' ``tcp://`` address, or
    None to let dask-kubernetes find it from the Service (the pod VPN's in-cluster name;
    a ``tls://`` address needs the client's TLS settings, which KubeCluster does not
    take)."""
    address = template.scheduler_address
    return address if address and address.startswith("tcp://") else None


def _raw(obj: Any) -> dict[str, Any]:
    """The object's JSON (kr8s lists yield objects, or plain dicts when asked to)."""
    raw = obj if isinstance(obj, dict) else obj.raw
    assert isinstance(raw, dict)
    return raw


assert VirtualNodeCluster.__doc__ is not None
VirtualNodeCluster.__doc__ = VirtualNodeCluster.__doc__.format(
    parameters=VIRTUAL_NODE_CLUSTER_PARAMETERS
)
