"""Pods through the whole chain over their life: ``kubectl logs`` options through the
virtual kubelet, deletes with and without grace, a namespace's deletion, faults surfacing as
pod and node status, and restarts of the plugin, interLink's API server and the virtual
kubelet one at a time.

The restart and plugin-stop tests act on the cluster the session uses (the default one, or
the private one ``INTERLINK_HTCONDOR_CLUSTER_DIR``/``..._PORT_OFFSET`` select) and leave it
as they found it: every component running, the node Ready.

What the virtual kubelet at the pinned interLink commit does, which the tests assert (and
``docs/cluster.md`` lists): it records no Event of its own (its event recorder is never
started), so a fault is seen in the pod's status and the node's conditions only; a pod
whose job is idle (the plugin's container state ``waiting``) is in phase ``Running``.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from kube_harness import ClusterJobs, Json, KubeCluster, load_manifest, node_condition

from interlink_htcondor.devpool import PoolInfo

pytestmark = pytest.mark.integration

TOLERATION = {
    "key": "virtual-node.interlink/no-schedule",
    "operator": "Exists",
    "effect": "NoSchedule",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")


def busybox_pod(name: str, script: str, **spec: Any) -> Json:
    """A one-container pod (``c``) running ``script`` with ``sh -c``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", script]}],
            "tolerations": [TOLERATION],
            **spec,
        },
    }


def sleeper(name: str, seconds: int = 600) -> Json:
    return busybox_pod(name, f"echo awake; sleep {seconds}; echo done")


def running(pod: Any) -> bool:
    statuses = pod.status.container_statuses or []
    return bool(statuses) and all(s.state.running is not None for s in statuses)


def terminal(pod: Any) -> bool:
    return bool(pod.status.phase in ("Succeeded", "Failed"))


def in_queue(jobs: ClusterJobs, uid: str) -> list[Any]:
    return jobs.query(f'InterlinkPodUID == "{uid}"')


# -- kubectl logs ------------------------------------------------------------------------------

TICKS = 40  # one a second: the running checks happen while it runs


@pytest.fixture(scope="module")
def log_pods(kube_cluster: KubeCluster) -> Iterator[tuple[str, dict[str, str]]]:
    """A namespace with ``ticker`` (two containers printing numbered lines, one a second,
    for ``TICKS`` seconds) and ``done`` (finished: 12 lines on stdout and stderr);
    (namespace, pod uids by name) once ``ticker`` runs and ``done`` has finished."""
    ns = kube_cluster.new_namespace("logs")
    ticker = busybox_pod(
        "ticker",
        f"for i in $(seq {TICKS}); do echo out-$i; sleep 1; done",
    )
    ticker["spec"]["containers"].append(
        {
            "name": "other",
            "image": "busybox:1.36",
            "command": ["sh", "-c", f"for i in $(seq {TICKS}); do echo other-$i; sleep 1; done"],
        }
    )
    done = load_manifest("logs.yaml")
    done["metadata"]["name"] = "done"
    uids = {
        m["metadata"]["name"]: kube_cluster.create_pod(m, ns).metadata.uid for m in (ticker, done)
    }
    kube_cluster.wait_pods(ns, {"ticker": running, "done": terminal}, timeout=600)
    yield ns, uids
    left = kube_cluster.delete_namespaces([ns])
    assert not left, f"namespace {ns} not deleted in time"


def _lines_at_least(cluster: KubeCluster, ns: str, n: int) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        lines = cluster.logs(ns, "ticker", "-c", "c").splitlines()
        if len(lines) >= n:
            return lines
        assert time.monotonic() < deadline, f"ticker logged {lines} in 60 s"
        time.sleep(0.5)


def test_kubectl_logs_options_of_a_running_container(
    kube_cluster: KubeCluster, log_pods: tuple[str, dict[str, str]]
) -> None:
    ns, _ = log_pods
    _lines_at_least(kube_cluster, ns, 6)
    pod = kube_cluster.read_pod(ns, "ticker")
    assert pod.status.container_statuses[0].state.running is not None, "ticker ended too soon"

    def logs(*args: str) -> str:
        return kube_cluster.logs(ns, "ticker", *args)

    # -c picks the container.
    assert logs("-c", "other").startswith("other-1\nother-2\n")
    assert "out-" not in logs("-c", "other")
    # --tail: the last N lines, which are consecutive lines of the whole log.
    tail = logs("-c", "c", "--tail=2").splitlines()
    assert len(tail) == 2 and all(re.fullmatch(r"out-\d+", t) for t in tail), tail
    first, second = (int(t.split("-")[1]) for t in tail)
    assert second == first + 1 and first >= 5, tail
    # --timestamps: RFC 3339 with nanoseconds before every line, in order.
    stamped = logs("-c", "c", "--timestamps").splitlines()
    assert stamped and all(TIMESTAMP.match(line) for line in stamped), stamped
    times = [line.split(" ", 1)[0] for line in stamped]
    assert times == sorted(times)
    assert [line.split(" ", 1)[1] for line in stamped[:3]] == ["out-1", "out-2", "out-3"]
    # --limit-bytes: the first N bytes.
    assert logs("-c", "c", "--limit-bytes=9") == "out-1\nout"
    # --since: only the recent lines, the tail of the whole log.
    recent = logs("-c", "c", "--since=3s").splitlines()
    whole = logs("-c", "c").splitlines()
    assert 1 <= len(recent) <= 6 and len(recent) < len(whole), (recent, whole)
    start = whole.index(recent[0])
    assert whole[start : start + len(recent)] == recent
    # --follow from a running container: new lines as they come, and kubectl returns when the
    # container ends (so the whole rest of the log).
    followed = kube_cluster.kubectl(
        "logs", "-n", ns, "ticker", "-c", "c", "--follow", "--tail=1", timeout=TICKS + 90
    )
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.decode().splitlines()
    numbers = [int(t.split("-")[1]) for t in lines]
    assert numbers == list(range(numbers[0], TICKS + 1)) and len(numbers) > 3, lines


def test_kubectl_logs_options_of_a_finished_container(
    kube_cluster: KubeCluster, log_pods: tuple[str, dict[str, str]]
) -> None:
    ns, _ = log_pods
    whole = [f"{s}-{i}" for i in range(1, 7) for s in ("line", "err")]

    def logs(*args: str) -> str:
        return kube_cluster.logs(ns, "done", "-c", "talk", *args)

    assert logs().splitlines() == whole
    assert logs("--tail=3").splitlines() == whole[-3:]
    assert logs("--limit-bytes=7") == "line-1\n"
    stamped = logs("--timestamps").splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == whole
    assert all(TIMESTAMP.match(line) for line in stamped), stamped
    # --since counts from now: nothing of a container that ended long enough ago; all of it
    # within the last hour.
    finished = kube_cluster.read_pod(ns, "done").status.container_statuses[0].state.terminated
    while (datetime.now(UTC) - finished.finished_at).total_seconds() < 3:
        time.sleep(0.5)
    assert logs("--since=2s") == ""
    assert logs("--since=1h").splitlines() == whole
    # --follow of a finished container returns at once with the whole log.
    start = time.monotonic()
    assert logs("--follow").splitlines() == whole
    assert time.monotonic() - start < 30


# -- deletes -----------------------------------------------------------------------------------


def test_kubectl_delete_with_and_without_grace_removes_the_jobs(
    kube_cluster: KubeCluster, kube_namespace: str, pool: PoolInfo
) -> None:
    ns = kube_namespace
    jobs = ClusterJobs(pool, kube_cluster.plugin_instance)
    uids = {
        m["metadata"]["name"]: kube_cluster.create_pod(m, ns).metadata.uid
        for m in (sleeper("graceful"), sleeper("forced"), busybox_pod("finished", "echo hi"))
    }
    kube_cluster.wait_pods(ns, {"graceful": running, "forced": running, "finished": terminal})
    for name, uid in uids.items():
        assert len(in_queue(jobs, uid)) == 1, name  # a finished pod's job stays until deleted

    def delete(name: str, *args: str) -> None:
        kube_cluster.kubectl_ok("delete", "pod", "-n", ns, name, *args, timeout=120)

    with ThreadPoolExecutor(3) as ex:
        list(
            ex.map(
                lambda a: delete(*a),
                [
                    ("graceful", "--wait=true"),
                    ("forced", "--grace-period=0", "--force"),
                    ("finished", "--wait=true"),
                ],
            )
        )
    for name in uids:
        kube_cluster.pod_gone(ns, name)
    for name, uid in uids.items():
        assert jobs.wait_gone(f'InterlinkPodUID == "{uid}"', timeout=90) == [], name
    by_pod = jobs.ids_by_pod(f'InterlinkPodNamespace == "{ns}"')
    assert {n: len(by_pod.get(uid, ())) for n, uid in uids.items()} == dict.fromkeys(uids, 1)


def test_deleting_a_namespace_removes_all_its_jobs(
    kube_cluster: KubeCluster, pool: PoolInfo
) -> None:
    ns = kube_cluster.new_namespace("gone")
    jobs = ClusterJobs(pool, kube_cluster.plugin_instance)
    for m in (sleeper("a"), sleeper("b"), busybox_pod("finished", "echo hi")):
        kube_cluster.create_pod(m, ns)
    kube_cluster.wait_pods(ns, {"a": running, "b": running, "finished": terminal})
    assert len(jobs.in_namespace(ns)) == 3
    assert kube_cluster.delete_namespaces([ns], timeout=180) == []
    assert jobs.wait_gone(f'InterlinkPodNamespace == "{ns}"', timeout=90) == []


# -- faults and restarts -----------------------------------------------------------------------

BAD_IMAGE = "registry.invalid/nothing/here:1.0"


@dataclass
class Lived:
    """The namespace of the fault and restart tests and its pods' uids by name."""

    ns: str
    uids: dict[str, str]


@pytest.fixture(scope="module")
def lived(kube_cluster: KubeCluster) -> Iterator[Lived]:
    """A namespace with pods in every state: ``long`` running, ``finisher`` running for
    two minutes then succeeding, ``hello`` succeeded, ``bad-image`` failed (an image the
    pool cannot pull), ``huge`` (64Gi, bound to the node by name as a controller may do,
    past the scheduler's capacity check) idle in the pool."""
    ns = kube_cluster.new_namespace("lived")
    bad = busybox_pod("bad-image", "true")
    bad["spec"]["containers"][0]["image"] = BAD_IMAGE
    huge = busybox_pod("huge", "true", nodeName=kube_cluster.node_name)
    huge["spec"]["containers"][0]["resources"] = {"requests": {"memory": "64Gi"}}
    manifests = [
        sleeper("long"),
        sleeper("finisher", 120),
        busybox_pod("hello", "echo hello"),
        bad,
        huge,
    ]
    uids = {m["metadata"]["name"]: kube_cluster.create_pod(m, ns).metadata.uid for m in manifests}
    kube_cluster.wait_pods(
        ns,
        {
            "long": running,
            "finisher": running,
            "hello": terminal,
            "bad-image": terminal,
            "huge": lambda p: (
                bool(p.status.container_statuses)
                and p.status.container_statuses[0].state.waiting is not None
                and p.status.container_statuses[0].state.waiting.reason == "Unschedulable"
            ),
        },
        timeout=600,
    )
    yield Lived(ns, uids)
    left = kube_cluster.delete_namespaces([ns])
    assert not left, f"namespace {ns} not deleted in time"


def test_an_image_the_pool_cannot_run_fails_the_pod_with_the_reason(
    kube_cluster: KubeCluster, lived: Lived
) -> None:
    pod = kube_cluster.read_pod(lived.ns, "bad-image")
    t = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed" and pod.status.reason == "Error: 128", pod.status
    assert t.exit_code == 128 and t.reason == "Error: 128", t
    assert f"docker://{BAD_IMAGE}" in t.message and "registry.invalid" in t.message, t
    # No Event but the scheduler's: the virtual kubelet records none (docs/cluster.md).
    assert [e.reason for e in kube_cluster.events(lived.ns, "bad-image")] == ["Scheduled"]


def test_a_request_no_slot_can_hold_waits_with_the_plugins_reason(
    kube_cluster: KubeCluster, lived: Lived, pool: PoolInfo
) -> None:
    pod = kube_cluster.read_pod(lived.ns, "huge")
    job_id = pod.metadata.annotations["JobID"]
    waiting = pod.status.container_statuses[0].state.waiting
    assert waiting.reason == "Unschedulable", waiting
    assert re.fullmatch(
        f"HTCondor job {re.escape(job_id)} cannot run: it requests 65536 MiB memory, more "
        r"than any slot of the pool offers \(at most \d+ MiB\)",
        waiting.message,
    ), waiting.message
    # A kubelet would say Pending; the virtual kubelet calls a pod with a job Running.
    assert pod.status.phase == "Running" and not pod.status.container_statuses[0].ready
    jobs = ClusterJobs(pool, kube_cluster.plugin_instance)
    assert [a["JobStatus"] for a in in_queue(jobs, lived.uids["huge"])] == [1]  # idle


def test_a_pod_the_plugin_refuses_stays_pending_its_reason_in_interlinks_log(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    # A hostPath the site does not allow: the plugin refuses the create with a message
    # naming the volume. interLink's API server logs it; the virtual kubelet at the pinned
    # commit drops it (no status, no Event): the pod stays Pending with no container status.
    ns = kube_namespace
    pod = busybox_pod("refused", "true")
    pod["spec"]["volumes"] = [{"name": "etc", "hostPath": {"path": "/etc"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "etc", "mountPath": "/host"}]
    kube_cluster.create_pod(pod, ns)
    log = kube_cluster.info.log_path("interlink")
    needle = f"pod {ns}/refused cannot run: volume 'etc': hostPath '/etc' is outside"
    deadline = time.monotonic() + 90
    while needle not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no refusal of {ns}/refused in {log}"
        time.sleep(1)
    got = kube_cluster.read_pod(ns, "refused")
    assert got.status.phase == "Pending" and not got.status.container_statuses, got.status
    assert "JobID" not in (got.metadata.annotations or {})
    assert [e.reason for e in kube_cluster.events(ns, "refused")] == ["Scheduled"]


def _snapshot(cluster: KubeCluster, ns: str, names: tuple[str, ...]) -> dict[str, Any]:
    pods = cluster.list_pods(ns)
    return {
        n: (
            pods[n].status.phase,
            [s.to_dict() for s in pods[n].status.container_statuses or []],
            pods[n].metadata.annotations.get("JobID"),
        )
        for n in names
    }


STEADY = ("long", "hello", "bad-image", "huge")


def test_restarting_each_component_keeps_every_pods_status_and_job(
    kube_cluster: KubeCluster, lived: Lived, pool: PoolInfo
) -> None:
    jobs = ClusterJobs(pool, kube_cluster.plugin_instance)
    before = _snapshot(kube_cluster, lived.ns, STEADY)
    for component in ("plugin", "interlink", "virtual-kubelet"):
        old = kube_cluster.info.pids[component]
        assert kube_cluster.restart(component).pids[component] != old
        kube_cluster.wait_node_ready()
        # Statuses are refreshed from the plugin every few seconds: wait for a few rounds.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert _snapshot(kube_cluster, lived.ns, STEADY) == before, component
            time.sleep(2)
    # Statuses still flow: the finisher, running through the restarts, succeeds.
    pod = kube_cluster.wait_pod(lived.ns, "finisher", terminal, timeout=600, what="its end")
    assert pod.status.phase == "Succeeded", pod.status
    assert kube_cluster.logs(lived.ns, "finisher") == "awake\ndone\n"
    # One job per pod, never a second one.
    by_pod = jobs.ids_by_pod(f'InterlinkPodNamespace == "{lived.ns}"')
    pods = kube_cluster.list_pods(lived.ns)
    for name, uid in lived.uids.items():
        assert by_pod.get(uid) == {pods[name].metadata.annotations["JobID"]}, name


def test_a_stopped_plugin_turns_the_node_not_ready_and_pods_keep_their_status(
    kube_cluster: KubeCluster, lived: Lived
) -> None:
    before = _snapshot(kube_cluster, lived.ns, STEADY)
    try:
        os.kill(kube_cluster.info.pids["plugin"], signal.SIGTERM)
        deadline = time.monotonic() + 120
        while True:
            node = kube_cluster.core.read_node(kube_cluster.node_name)
            link = node_condition(node, "InterlinkConnectivity")
            if link is not None and link.status == "False":
                break
            assert time.monotonic() < deadline, f"the node still says {link}"
            time.sleep(1)
        # interLink's API server answers the ping 503 while the plugin is away.
        assert link.reason == "InterlinkPingFailed" and "503" in link.message, link
        ready = node_condition(node, "Ready")
        assert ready.status == "False", ready
        assert _snapshot(kube_cluster, lived.ns, STEADY) == before
    finally:
        kube_cluster.restart("plugin")
        kube_cluster.wait_node_ready(timeout=120)
    node = kube_cluster.core.read_node(kube_cluster.node_name)
    assert node_condition(node, "InterlinkConnectivity").reason == "InterlinkPingSuccessful"
    assert _snapshot(kube_cluster, lived.ns, STEADY) == before
