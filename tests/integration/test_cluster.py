"""The development cluster end to end: Kubernetes' API server and scheduler, interLink's
virtual kubelet and API server, the plugin, the personal pool. Pods go through the Kubernetes
API only; their jobs are looked up in the pool's schedd."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kube_harness import KubeCluster, job_constraint, load_manifest, phase_is

from interlink_htcondor import devcluster
from interlink_htcondor.core.translate.resources import parse_quantity
from interlink_htcondor.devcluster import config as cconfig
from interlink_htcondor.devcluster import probes, processes
from interlink_htcondor.devcluster.components import MARKER_ENV
from interlink_htcondor.devpool import PoolInfo

INTERLINK_TAINT = ("virtual-node.interlink/no-schedule", "true", "NoSchedule")


def cluster_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlink_htcondor", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def jobs(schedd: Any, cluster: KubeCluster, uid: str, history: bool = False) -> list[Any]:
    c = job_constraint(cluster, uid)
    found = list(schedd.query(constraint=c, projection=["ClusterId", "ProcId", "JobStatus"]))
    if history:
        found += list(schedd.history(constraint=c, projection=["ClusterId", "ProcId"], match=10))
    return found


def test_node_is_ready_with_the_pool_capacity_and_interlinks_taint(
    kube_cluster: KubeCluster, pool: PoolInfo
) -> None:
    node = kube_cluster.wait_node_ready()
    # The controller manager lifts its not-ready taints shortly after the node is Ready.
    deadline = time.monotonic() + 30
    while [t for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/")]:
        assert time.monotonic() < deadline, node.spec.taints
        time.sleep(1)
        node = kube_cluster.wait_node_ready()
    taints = [(t.key, t.value, t.effect) for t in node.spec.taints or []]
    assert taints == [INTERLINK_TAINT]
    cap = node.status.capacity
    # What the pool really offers (its collector), as the plugin's ping reports it.
    assert parse_quantity(cap["cpu"]) == pool.slots
    assert parse_quantity(cap["memory"]) == pool.slots * pool.slot_memory_mib * 2**20
    assert parse_quantity(cap["pods"]) == cconfig.MAX_PODS
    ping = probes.plugin_ping(kube_cluster.plugin_socket)["resources"]
    assert parse_quantity(cap["cpu"]) == parse_quantity(ping["cpu"])
    assert parse_quantity(cap["memory"]) == parse_quantity(ping["memory"])
    assert parse_quantity(cap["pods"]) == parse_quantity(ping["pods"])
    assert node.status.allocatable == cap
    assert node.metadata.labels["virtual-node.interlink/type"] == "virtual-kubelet"
    assert node.status.node_info.kubelet_version == devcluster.versions.INTERLINK
    # interLink's API server answered the virtual kubelet's ping through the plugin.
    connectivity = next(c for c in node.status.conditions if c.type == "InterlinkConnectivity")
    assert connectivity.status == "True", connectivity


def test_hello_world_pod_succeeds_through_kubernetes_as_a_job(
    kube_cluster: KubeCluster, kube_namespace: str, schedd: Any
) -> None:
    manifest = load_manifest("hello-world.json")
    created = kube_cluster.create_pod(manifest, kube_namespace)
    uid = created.metadata.uid
    pod = kube_cluster.wait_pod(
        kube_namespace, "hello-world", phase_is("Succeeded", "Failed"), what="a final phase"
    )
    assert pod.status.phase == "Succeeded", pod.status
    assert pod.spec.node_name == kube_cluster.node_name  # placed by the scheduler
    [status] = pod.status.container_statuses
    assert status.name == "hello"
    assert status.state.terminated is not None, status
    assert status.state.terminated.exit_code == 0
    # One HTCondor job of the cluster's plugin, and its id is the pod's JobID annotation.
    found = jobs(schedd, kube_cluster, uid, history=True)
    ids = {f"{ad['ClusterId']}.{ad['ProcId']}" for ad in found}
    assert len(ids) == 1, found
    assert pod.metadata.annotations.get("JobID") in ids | {str(found[0]["ClusterId"])}
    logs = kube_cluster.kubectl_ok("logs", "-n", kube_namespace, "hello-world", "-c", "hello")
    assert logs.strip() == "hello world"


def container_running(pod: Any) -> bool:
    """Running as the plugin reports it. Right after the create, the virtual kubelet marks
    the containers running itself, with the phase still Pending, until its first status poll."""
    statuses = pod.status.container_statuses or []
    return (
        pod.status.phase == "Running" and bool(statuses) and statuses[0].state.running is not None
    )


def test_kubectl_delete_pod_removes_its_job(
    kube_cluster: KubeCluster, kube_namespace: str, schedd: Any
) -> None:
    manifest = load_manifest("sleeper.yaml")
    manifest["spec"]["containers"][0]["env"] = [{"name": "SECONDS_TO_SLEEP", "value": "600"}]
    manifest["spec"]["nodeSelector"] = {"kubernetes.io/hostname": kube_cluster.node_name}
    uid = kube_cluster.create_pod(manifest, kube_namespace).metadata.uid
    kube_cluster.wait_pod(kube_namespace, "sleeper", container_running, what="a running container")
    assert [ad["JobStatus"] for ad in jobs(schedd, kube_cluster, uid)] == [2]  # running
    kube_cluster.kubectl_ok(
        "delete", "pod", "-n", kube_namespace, "sleeper", "--wait=true", timeout=120
    )
    kube_cluster.pod_gone(kube_namespace, "sleeper")
    deadline = time.monotonic() + 60
    while jobs(schedd, kube_cluster, uid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs(schedd, kube_cluster, uid) == []


def test_cluster_up_again_returns_at_once_with_the_same_processes(
    kube_cluster: KubeCluster,
) -> None:
    before = dict(kube_cluster.info.pids)
    start = time.monotonic()
    r = cluster_cli("up", "--quiet")
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    # Starting anything would take 30 s at least (the virtual kubelet's first ping).
    assert elapsed < 20, f"a second cluster up took {elapsed:.1f} s"
    info = devcluster.read_info()
    assert info is not None and info.pids == before
    root = str(info.state_dir)
    assert sorted(_components(root)) == sorted(before.values()), (
        "one process per component, no other"
    )
    env = cluster_cli("env")
    assert f"export KUBECONFIG={info.kubeconfig}" in env.stdout


def test_restart_one_component_keeps_the_others(kube_cluster: KubeCluster) -> None:
    before = devcluster.read_info()
    assert before is not None
    after = devcluster.restart("interlink", say=None)
    assert after.pids["interlink"] != before.pids["interlink"]
    assert {k: v for k, v in after.pids.items() if k != "interlink"} == {
        k: v for k, v in before.pids.items() if k != "interlink"
    }
    assert devcluster.read_info() == after
    assert set(devcluster.health(after).values()) == {None}  # every probe passes
    kube_cluster.wait_node_ready()


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def _components(root: str) -> list[int]:
    """The processes started for the cluster at ``root``: those that carry its marker,
    without their own children (the plugin's schedd worker processes inherit it)."""
    marked = {p for p in processes.pids() if (processes.environ(p) or {}).get(MARKER_ENV) == root}
    return [p for p in marked if _parent(p) not in marked]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_cluster_down_leaves_no_process_and_warm_up(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """A second cluster beside the shared one (own state directory and ports, the same
    builds): up, down (no process, no listener), warm up again, down. The shared cluster
    is not touched."""
    shared = devcluster.read_info()
    assert shared is not None
    shared_before = dict(shared.pids)  # (other tests may have restarted a component)
    paths = devcluster.ClusterPaths(tmp_path / "cluster", bin_root=devcluster.default_paths().bin)
    ports = cconfig.PORTS.shifted(1000)
    assert not [p for p in ports.all().values() if _listening(p)]
    root = str(paths.root)

    def ours() -> list[int]:
        return _components(root)

    try:
        info = devcluster.ensure_up(paths=paths, ports=ports, say=None)
        assert sorted(ours()) == sorted(info.pids.values())
        start = time.monotonic()
        assert devcluster.down(paths=paths, say=None) is True
        print(f"\ncluster down: {time.monotonic() - start:.1f} s")
        assert ours() == []
        assert not [p for p in ports.all().values() if _listening(p)]
        assert not paths.plugin_socket.exists()
        assert devcluster.read_info(paths) is None
        start = time.monotonic()
        info = devcluster.ensure_up(paths=paths, ports=ports, say=None)
        warm = time.monotonic() - start
        # Timings are reported, not asserted (the machine is shared); a warm up builds nothing.
        # The virtual kubelet pings interLink first 30 s after it starts (fixed at the pinned
        # commit), and its node is Ready only then: that is most of a warm up.
        print(f"\nwarm cluster up: {warm:.1f} s; timings {info.timings}")
        assert not [k for k in info.timings if k.startswith("build")], info.timings
        assert sorted(ours()) == sorted(info.pids.values())
    finally:
        devcluster.down(paths=paths, say=None)
    assert ours() == []
    shared = devcluster.read_info()
    assert shared is not None and shared.pids == shared_before
