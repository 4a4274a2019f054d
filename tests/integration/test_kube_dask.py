"""Dask through the virtual node: the real dask-kubernetes operator (a process on this
machine, against the development cluster's API server, its CRDs from the package's own
chart) and ``VirtualNodeCluster`` scale workers onto interLink's virtual node, where the
cluster's plugin makes them HTCondor jobs of the personal pool; the Z-peak analysis runs on
them; scaling down removes the pending workers first; closing the cluster leaves no pod
and no job.

Where the scheduler runs: the development cluster has no kubelet, so its scheduler pod
cannot run in Kubernetes. It runs on the virtual node too (an HTCondor job), listening on
loopback at its pinned NodePort, where the workers and this client connect
(``devcluster.virtual_node_cluster_options``, ``scheduler_on_virtual_node``). In production
the scheduler runs in Kubernetes behind its NodePort Service (docs/physicist.md).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
from distributed import Client, get_task_stream
from distributed.versions import VersionMismatchWarning
from kube_harness import KubeCluster
from worker_probe import host_ancestors

from dimuon import analyze, dataset, generate
from interlink_htcondor import devcluster
from interlink_htcondor.dask import VirtualNodeCluster, WorkerTemplate
from interlink_htcondor.dask.template import REQUIREMENTS
from interlink_htcondor.devpool import PoolInfo

cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_WORKERS = 2
N_PENDING = 2
# No slot of the pool has this attribute: a worker asking for it waits for a slot, as one
# does in a full pool (the plugin cannot tell it will never match: the pod stays Pending).
NO_SLOT = 'TARGET.InterlinkKubeDaskTestSlot =?= "never"'
RUNNING, IDLE = 2, 1


@pytest.fixture(scope="module")
def data(pool: PoolInfo) -> dataset.Dataset:
    cfg = generate.Config(n_files=4, events_per_file=30_000, seed=7)
    return dataset.prepare(pool.shared_dir / "zpeak-test-data", cfg)


@pytest.fixture(scope="module")
def dask_operator(kube_cluster: KubeCluster) -> Iterator[devcluster.OperatorInfo]:
    """The cluster's Dask operator: the running one (``cluster up`` starts it), or one
    started here and stopped when the module ends."""
    paths = devcluster.ClusterPaths(kube_cluster.info.state_dir)
    running = devcluster.read_operator(paths)
    if running is not None:
        yield running
        return
    try:
        op = devcluster.ensure_operator(kube_cluster.info)
    except devcluster.ClusterError as e:
        pytest.fail(f"the Dask operator did not start: {e}", pytrace=False)
    try:
        yield op
    finally:
        devcluster.stop_operator(paths)


@pytest.fixture
def kubeconfig(kube_cluster: KubeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """dask-kubernetes (kr8s) finds the cluster through ``KUBECONFIG``."""
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))


def _wait(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    poll: float = 1.0,
    seen: Callable[[], str] | None = None,
) -> Any:
    """``check()``'s first truthy result; AssertionError naming ``what`` after ``timeout``,
    with ``seen()`` (what the last check saw) when given."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            last = f"; last seen: {seen()}" if seen is not None else ""
            raise AssertionError(f"{what}: not within {timeout:.0f} s{last}")
        time.sleep(poll)


def _pods(kube: KubeCluster, ns: str, selector: str) -> list[Any]:
    return list(kube.core.list_namespaced_pod(ns, label_selector=selector).items)


def _waiting(pod: Any) -> bool:
    """No container of ``pod`` runs or ran, as the plugin reports it. Not the phase: interLink's
    virtual kubelet turns a pod whose containers wait into phase Running at its first status
    poll (and marks them running itself until then, so this holds only after that poll)."""
    statuses = pod.status.container_statuses or []
    return all(s.state.running is None and s.state.terminated is None for s in statuses)


def _jobs(schedd: Any, constraint: str) -> dict[str, int]:
    """``{InterlinkPodName: JobStatus}`` of the queue's jobs matching ``constraint``."""
    ads = schedd.query(
        constraint=constraint, projection=["InterlinkPodName", "JobStatus", "ClusterId"]
    )
    return {str(ad["InterlinkPodName"]): int(ad["JobStatus"]) for ad in ads}


def test_virtual_node_cluster_runs_the_z_peak_on_htcondor_jobs_through_kubernetes(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    dask_operator: devcluster.OperatorInfo,
    kubeconfig: None,
    data: dataset.Dataset,
    schedd: Any,
) -> None:
    warnings.filterwarnings("ignore", category=VersionMismatchWarning)
    ns, kube, info = kube_namespace, kube_cluster, kube_cluster.info
    ours = f'InterlinkPlugin == "{info.plugin_instance}" && InterlinkPodNamespace == "{ns}"'
    name = f"zpeak-{uuid.uuid4().hex[:6]}"
    workers_sel = f"dask.org/cluster-name={name},dask.org/component=worker"
    template = WorkerTemplate(memory="1Gi", nthreads=1, apptainer_options=data.apptainer_bind)
    options = devcluster.virtual_node_cluster_options(info)
    assert options["scheduler_address"] == f"tcp://127.0.0.1:{options['scheduler_node_port']}"

    cluster = VirtualNodeCluster(
        name=name, namespace=ns, template=template, resource_timeout=60, quiet=True, **options
    )
    try:
        # -- up: the operator made the scheduler and two workers, all HTCondor jobs ---------
        assert cluster.scheduler_address == options["scheduler_address"]
        cluster.scale(N_WORKERS)
        cluster.wait_for_workers(N_WORKERS, timeout=240)
        # A worker joins the scheduler before the virtual kubelet's next status poll (every
        # 5 s) turns its pod Running: wait for that poll, no longer.
        deadline = time.monotonic() + 30
        pods = _pods(kube, ns, workers_sel)
        while {p.status.phase for p in pods} != {"Running"} and time.monotonic() < deadline:
            time.sleep(1)
            pods = _pods(kube, ns, workers_sel)
        assert len(pods) == N_WORKERS
        workers = {p.metadata.name: p for p in pods}
        assert {p.spec.node_name for p in pods} == {info.node_name}
        assert {p.status.phase for p in pods} == {"Running"}
        scheduler_sel = f"dask.org/cluster-name={name},dask.org/component=scheduler"
        scheduler_pods = _pods(kube, ns, scheduler_sel)
        assert [p.spec.node_name for p in scheduler_pods] == [info.node_name]
        # Each worker pod's env is literal (interLink's VK resolves no valueFrom/envFrom) and
        # points at the scheduler's loopback NodePort, not the in-cluster Service name.
        for p in pods:
            env = {e.name: e for e in p.spec.containers[0].env}
            assert all(e.value_from is None for e in env.values())
            assert env["DASK_SCHEDULER_ADDRESS"].value == options["scheduler_address"]
        worker_names = {_env(p, "DASK_WORKER_NAME") for p in pods}
        jobs = _jobs(schedd, ours)
        assert jobs == {**dict.fromkeys(workers, RUNNING), scheduler_pods[0].metadata.name: RUNNING}

        with Client(cluster) as client:  # type: ignore[no-untyped-call]
            connected = client.scheduler_info()["workers"]
            by_address = {addr: str(w["name"]) for addr, w in connected.items()}
            assert set(by_address.values()) == worker_names
            with get_task_stream(client) as stream:
                result = analyze.run(client, data.files, worker_path=data.worker_path)

            # -- the physics, computed on those workers only ----------------------------
            assert result.fit.valid
            assert abs(result.fit.mass - 91.2) < 0.5, result.fit.summary()
            assert result.events == 4 * 30_000
            assert len(result.partials) == 8
            assert all(p.worker["container"] for p in result.partials)  # inside Apptainer
            assert result.workers <= worker_names
            assert stream.data and {t["worker"] for t in stream.data} <= set(by_address)
            for worker in worker_names:  # an HTCondor starter runs each (seen from the host)
                chains = host_ancestors(worker)
                assert chains and all("condor_starter" in c for c in chains), chains

            # -- scale down removes the pending workers first ---------------------------
            # New workers ask for a slot the pool does not have: their jobs wait idle.
            group = f"{name}-default"
            patch = {"spec": {"worker": {"metadata": {"annotations": {REQUIREMENTS: NO_SLOT}}}}}
            kube.kubectl_ok(
                "patch", "daskworkergroup", group, "-n", ns, "--type=merge",
                "-p", json.dumps(patch),
            )  # fmt: skip
            cluster.scale(N_WORKERS + N_PENDING)

            last: dict[str, Any] = {}

            def pending() -> list[str]:
                new = [p for p in _pods(kube, ns, workers_sel) if p.metadata.name not in workers]
                queued = _jobs(schedd, ours)
                last.update(
                    pods={p.metadata.name: (p.status.phase, _waiting(p)) for p in new}, jobs=queued
                )
                idle = [p.metadata.name for p in new if queued.get(p.metadata.name) == IDLE]
                return idle if len(idle) == N_PENDING and all(map(_waiting, new)) else []

            what = f"{N_PENDING} pending worker pods with idle jobs"
            pending_pods = _wait(what, pending, 120, seen=lambda: str(last))
            cluster.scale(N_WORKERS)
            _wait(
                "the pending workers' pods and jobs gone",
                lambda: (
                    not (
                        {p.metadata.name for p in _pods(kube, ns, workers_sel)} & set(pending_pods)
                        or set(_jobs(schedd, ours)) & set(pending_pods)
                    )
                ),
                120,
            )
            # The connected workers were kept: the same pods, jobs and Dask workers.
            assert {p.metadata.name for p in _pods(kube, ns, workers_sel)} == set(workers)
            assert {k: v for k, v in _jobs(schedd, ours).items() if k in workers} == (
                dict.fromkeys(workers, RUNNING)
            )
            names = {str(w["name"]) for w in client.scheduler_info()["workers"].values()}
            assert names == worker_names
    finally:
        cluster.close()

    # -- closed: no DaskCluster, no pod, no job -------------------------------------------
    _wait(
        "no pod of the Dask cluster left",
        lambda: not _pods(kube, ns, f"dask.org/cluster-name={name}"),
        120,
    )
    _wait("no HTCondor job of the namespace left", lambda: not _jobs(schedd, ours), 120)
    left = kube.kubectl_ok("get", "daskclusters", "-n", ns, "-o", "name")
    assert left.strip() == ""


def _env(pod: Any, name: str) -> str:
    for e in pod.spec.containers[0].env:
        if e.name == name:
            return str(e.value)
    raise AssertionError(f"pod {pod.metadata.name} has no {name}")


def test_demo_chain_fits_the_z_peak_through_kubernetes_and_leaves_nothing(
    kube_cluster: KubeCluster, dask_operator: devcluster.OperatorInfo, tmp_path: Path
) -> None:
    """``interlink-htcondor demo --chain`` (``make demo-chain``): the documented command of
    the whole chain, on this session's cluster and operator."""
    out = tmp_path / "zpeak.png"
    argv = [sys.executable, "-m", "interlink_htcondor", "demo", "--chain", "--workers", "2"]
    # Its own waits are bounded (--timeout: the scheduler, then the workers; then 120 s for
    # the pods and jobs to go), so a failure still deletes what it made.
    argv += ["--files", "3", "--events", "20000", "--out", str(out), "--timeout", "150"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=580)
    except subprocess.TimeoutExpired as e:
        _delete_demo_cluster(kube_cluster, _text(e.stdout))
        raise
    text = proc.stdout
    if proc.returncode != 0:
        _delete_demo_cluster(kube_cluster, text)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"[operator] dask-kubernetes {dask_operator.versions['dask-kubernetes']}" in text
    assert f"pid {dask_operator.pid}" in text  # the running operator, not a second one
    pods = re.findall(rf"pod of \S+ on {kube_cluster.node_name}: HTCondor job (\d+\.\d+)", text)
    assert len(set(pods)) == 2, text
    assert re.search(rf"scheduler pod \S+ on {kube_cluster.node_name}: HTCondor job \d+\.\d+", text)
    # the analysis ran on those jobs, in the container (Dask may give all three partitions
    # to one worker: which ones is the scheduler's choice)
    ran = re.findall(r"partitions, HTCondor job (\d+\.\d+), Python 3\.11", text)
    assert ran and set(ran) <= set(pods), text
    assert "60,000 events" in text
    m = re.search(r"Z peak: m = ([0-9.]+) ± ([0-9.]+) GeV", text)
    assert m, text
    assert abs(float(m.group(1)) - 91.2) < 0.5
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert "DaskCluster deleted, no pod and no job left" in text


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _delete_demo_cluster(kube: KubeCluster, output: str) -> None:
    """A demo that failed or was stopped: delete the DaskCluster it names (while the
    operator, whose finalizer it carries, still runs), so that no pod or job is left."""
    m = re.search(r"DaskCluster (\S+)/(\S+):", output)
    if m:
        ns, name = m.groups()
        kube.kubectl("delete", "daskcluster", name, "-n", ns, "--ignore-not-found",
                     "--timeout=120s", timeout=150)  # fmt: skip
