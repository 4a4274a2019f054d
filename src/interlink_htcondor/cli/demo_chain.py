"""``interlink-htcondor demo --chain``: the demo through Kubernetes and interLink.

development cluster up (Kubernetes, interLink's API server and virtual kubelet, the plugin
in front of the personal pool) -> the dask-kubernetes operator -> a ``VirtualNodeCluster``
whose workers are pods on the virtual node, so HTCondor jobs -> the Z -> mu mu analysis on
them -> the fit and the plot -> the cluster closed: no pod, no job left.

The scheduler runs on the virtual node too (the development cluster has no kubelet for it),
listening on a loopback NodePort (``devcluster.virtual_node_cluster_options``).
"""

# distributed's Client is unannotated; dimuon (analysis/) is checked on its own.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from interlink_htcondor.cli import UsageError

NAMESPACE = "default"
GONE_TIMEOUT = 120.0


def run(args: argparse.Namespace, say: Callable[[str, str], None], analyse: Any) -> int:
    """The chain; ``analyse(client, data, jobs)`` runs the analysis, prints and plots (the
    plain demo's own step) and returns the fit's validity."""
    from distributed import Client

    from dimuon import dataset, generate
    from interlink_htcondor import devcluster, devpool
    from interlink_htcondor.dask import VirtualNodeCluster, WorkerStartError, WorkerTemplate
    from interlink_htcondor.dask.schedulerjob import SchedulerJobError

    t0 = time.monotonic()
    try:
        pool = devpool.ensure_up()
    except devpool.PoolError as e:
        raise UsageError(str(e)) from None
    try:
        info = devcluster.ensure_up(say=lambda m: say("cluster", m))
        op = devcluster.ensure_operator(info, say=lambda m: say("operator", m))
    except devcluster.ClusterError as e:
        raise UsageError(str(e)) from None
    say("cluster", f"API server {info.server}, virtual node {info.node_name} Ready")
    say(
        "operator",
        f"dask-kubernetes {op.versions['dask-kubernetes']} (kopf {op.versions['kopf']}), "
        f"pid {op.pid}",
    )
    os.environ["KUBECONFIG"] = str(info.kubeconfig)  # dask-kubernetes (kr8s) reads it

    data = dataset.prepare(
        pool.shared_dir / "zpeak-data" / f"{args.files}x{args.events}",
        generate.Config(n_files=args.files, events_per_file=args.events),
    )
    say("data", f"{len(data.files)} ROOT files, {data.events:,} events in {data.host_dir}")

    name = f"zpeak-demo-{uuid.uuid4().hex[:6]}"
    options = devcluster.virtual_node_cluster_options(info)
    template = WorkerTemplate(memory=args.memory, nthreads=1, apptainer_options=data.apptainer_bind)
    say("dask", f"DaskCluster {NAMESPACE}/{name}: scheduler at {options['scheduler_address']}")
    cluster: Any = None
    client: Any = None
    valid = False
    left: list[str] = []
    try:
        try:
            cluster = VirtualNodeCluster(
                name=name,
                namespace=NAMESPACE,
                template=template,
                quiet=True,
                scheduler_timeout=args.timeout,
                **options,
            )
        except SchedulerJobError as e:  # the DaskCluster is deleted again; see below
            raise UsageError(f"the scheduler did not start: {e}") from None
        say("dask", f"scaling to {args.workers} worker pods on the virtual node")
        cluster.scale(args.workers)
        try:
            cluster.wait_for_workers(args.workers, timeout=args.timeout)
        except (WorkerStartError, TimeoutError) as e:
            raise UsageError(f"workers did not arrive: {e}") from None
        for pod, job in _jobs(info, name, "scheduler").items():
            print(f"    scheduler pod {pod} on {info.node_name}: HTCondor job {job}")
        jobs = _jobs(info, name, "worker")
        for worker, job in sorted(jobs.items()):
            print(f"    pod of {worker} on {info.node_name}: HTCondor job {job}")
        client = Client(cluster)
        valid = analyse(client, data, jobs)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        left = _wait_gone(info, pool, name)
    if left:
        say("done", f"still there after {GONE_TIMEOUT:.0f} s: {', '.join(left)}")
        return 1
    say(
        "done",
        f"in {time.monotonic() - t0:.0f} s; DaskCluster deleted, no pod and no job left "
        "(the cluster keeps running: interlink-htcondor cluster down)",
    )
    return 0 if valid else 1


def _pods(info: Any, name: str) -> list[Any]:
    from kubernetes import client as k8s

    with info.api_client() as api:
        pods = k8s.CoreV1Api(api).list_namespaced_pod(
            NAMESPACE, label_selector=f"dask.org/cluster-name={name}"
        )
    return list(pods.items)


def _jobs(info: Any, name: str, component: str) -> dict[str, str]:
    """``{Dask worker name (or pod name): HTCondor job id}`` of the cluster's ``component``
    pods (the virtual kubelet writes the plugin's job id into the ``JobID`` annotation)."""
    out = {}
    for pod in _pods(info, name):
        if (pod.metadata.labels or {}).get("dask.org/component") != component:
            continue
        env = {e.name: e.value for e in pod.spec.containers[0].env or []}
        job = (pod.metadata.annotations or {}).get("JobID", "?")
        out[str(env.get("DASK_WORKER_NAME", pod.metadata.name))] = str(job)
    return out


def _wait_gone(info: Any, pool: Any, name: str) -> list[str]:
    """Wait until the cluster's pods are gone and the plugin removed their jobs; what is
    left after ``GONE_TIMEOUT`` (pods, and jobs by id)."""
    import htcondor2

    pool.apply_client_env()
    schedd = htcondor2.Schedd(
        htcondor2.Collector(pool.collector).locate(htcondor2.DaemonType.Schedd)
    )
    # ``name`` is ours: letters, digits and dashes only.
    constraint = (
        f'InterlinkPlugin == "{info.plugin_instance}" && InterlinkPodNamespace == '
        f'"{NAMESPACE}" && regexp("^{name}-", InterlinkPodName)'
    )

    def left() -> list[str]:
        pods = [f"pod {p.metadata.name}" for p in _pods(info, name)]
        ads = schedd.query(constraint=constraint, projection=["ClusterId", "ProcId"])
        return pods + [f"job {ad['ClusterId']}.{ad['ProcId']}" for ad in ads]

    deadline = time.monotonic() + GONE_TIMEOUT
    found = left()
    while found and time.monotonic() < deadline:
        time.sleep(1)
        found = left()
    return found
