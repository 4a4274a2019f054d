"""N pods through Kubernetes (API server, scheduler, interLink's virtual kubelet and API
server, the plugin) against the same N pods through the plugin alone, in one run.

Both phases run the same pods (busybox, ``echo; sleep 1``, one CPU each: the personal pool
runs 8 at a time) against the same pool, one after the other, each cleaning up after itself:

- ``plugin``: POST /create of every pod to a plugin of the run's own (TCP on loopback,
  16 at a time), then GET /status of all of them every 0.5 s;
- ``kube``: every pod created through the API server of the development cluster the
  environment selects (``cluster up``; ``INTERLINK_HTCONDOR_CLUSTER_DIR`` and
  ``..._PORT_OFFSET`` for a private one), 16 at a time, in a fresh namespace; the pods
  listed every 0.5 s.

The comparable end point is *succeeded*: the container terminated with exit code 0 (the
plugin's status; the pod's phase ``Succeeded`` in the API server). *Started* (``running``,
or ``terminated`` with a start time) is recorded too, but through the chain it is not the
pool's start: the virtual kubelet marks a container running itself right after its /create.
For the chain the run also records when the API server first showed each pod bound to the
node, with the plugin's job id (``JobID``, written by the virtual kubelet after its
/create), and in phase ``Running`` (which the virtual kubelet sets as soon as a job exists,
even while it waits). Usage: python benchmarks/bench_kube_chain.py [--pods 50]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from _plugin import Json, create_many, new_result, parser, pool, running, write_result
from interlink_htcondor import devcluster

TOLERATION = {
    "key": "virtual-node.interlink/no-schedule",
    "operator": "Exists",
    "effect": "NoSchedule",
}
POLL = 0.5


def bench_pod(i: int) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"chain-{i}", "labels": {"app": "bench-chain"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", "echo started; sleep 1"],
                    # 100m: the scheduler fits all of them on the node (8 CPUs); HTCondor
                    # still gives each a whole CPU, so the pool runs 8 at a time.
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
            "tolerations": [TOLERATION],
        },
    }


def finished(state: dict[str, Any] | None) -> bool:
    term = (state or {}).get("terminated")
    return bool(term and term.get("exitCode", term.get("exit_code")) == 0)


def started(state: dict[str, Any] | None) -> bool:
    if not state:
        return False
    if state.get("running"):
        return True
    term = state.get("terminated")
    return bool(term and (term.get("startedAt") or term.get("started_at")))


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 2),
        "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        "max_s": round(ordered[-1], 2),
    }


# -- the plugin alone --------------------------------------------------------------------------


def plugin_phase(n: int) -> Json:
    with running(pool()) as bench:
        pods = []
        for i in range(n):
            pod = bench_pod(i)
            pod["metadata"].update(namespace="bench-chain", uid=str(uuid.uuid4()))
            pods.append(pod)
        t0 = time.monotonic()
        latencies = asyncio.run(create_many(bench.url, pods, concurrency=16))
        created = time.monotonic() - t0
        seen: dict[str, dict[str, float]] = {"started": {}, "succeeded": {}}
        polls = 0
        with httpx.Client(timeout=60) as client:
            while len(seen["succeeded"]) < n:
                assert time.monotonic() - t0 < 900, f"only {len(seen['succeeded'])} succeeded"
                time.sleep(POLL)
                r = client.request("GET", bench.url + "/status", content=json.dumps(pods))
                r.raise_for_status()
                polls += 1
                now = time.monotonic() - t0
                for st in r.json():
                    state = st["containers"][0]["state"]
                    for key, hit in (("started", started(state)), ("succeeded", finished(state))):
                        if hit and st["UID"] not in seen[key]:
                            seen[key][st["UID"]] = now
        return {
            "all_created_s": round(created, 2),
            "create_call": stats(latencies),
            "started": stats(list(seen["started"].values())),
            "succeeded": stats(list(seen["succeeded"].values())),
            "all_succeeded_s": round(max(seen["succeeded"].values()), 2),
            "status_polls": polls,
        }


# -- through Kubernetes ------------------------------------------------------------------------


def kube_phase(n: int) -> Json:
    info = devcluster.read_info()
    if info is None:
        raise SystemExit("no development cluster runs: start it with interlink-htcondor cluster up")
    from kubernetes import client

    core: Any = client.CoreV1Api(info.api_client())  # untyped models: read as the API sends
    ns = f"bench-chain-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        deadline = time.monotonic() + 60
        while not core.list_namespaced_service_account(ns).items:
            assert time.monotonic() < deadline, "no default service account"
            time.sleep(0.2)
        pods = [bench_pod(i) for i in range(n)]
        t0 = time.monotonic()
        latencies: list[float] = []

        def create(pod: Json) -> None:
            t = time.monotonic()
            core.create_namespaced_pod(ns, pod)
            latencies.append(time.monotonic() - t)

        with ThreadPoolExecutor(16) as ex:
            list(ex.map(create, pods))
        created = time.monotonic() - t0
        keys = ("bound", "job", "running", "started", "succeeded")
        seen: dict[str, dict[str, float]] = {k: {} for k in keys}
        polls = 0
        while len(seen["succeeded"]) < n:
            assert time.monotonic() - t0 < 900, f"only {len(seen['succeeded'])} succeeded"
            time.sleep(POLL)
            items = core.list_namespaced_pod(ns).items
            polls += 1
            now = time.monotonic() - t0
            for p in items:
                name = p.metadata.name
                marks = {
                    "bound": bool(p.spec.node_name),
                    "job": "JobID" in (p.metadata.annotations or {}),
                    "running": p.status.phase == "Running",
                    "started": any(
                        started(s.state.to_dict()) for s in p.status.container_statuses or []
                    ),
                    "succeeded": p.status.phase == "Succeeded",
                }
                for key, hit in marks.items():
                    if hit and name not in seen[key]:
                        seen[key][name] = now
        return {
            "all_created_s": round(created, 2),
            "create_call": stats(latencies),
            "bound": stats(list(seen["bound"].values())),
            "job_id_written": stats(list(seen["job"].values())),
            "phase_running": stats(list(seen["running"].values())),
            "started": stats(list(seen["started"].values())),
            "succeeded": stats(list(seen["succeeded"].values())),
            "all_succeeded_s": round(max(seen["succeeded"].values()), 2),
            "list_polls": polls,
            "cluster": {
                "kubernetes": info.versions.get("kubernetes"),
                "interlink": info.versions.get("interlink"),
            },
        }
    finally:
        core.delete_namespace(ns)
        deadline = time.monotonic() + 300
        while any(n.metadata.name == ns for n in core.list_namespace().items):
            if time.monotonic() > deadline:
                print(f"namespace {ns} still terminating")
                break
            time.sleep(1)


def main() -> None:
    args = parser(__doc__, 50).parse_args()
    result = new_result("kube_chain", args)
    result["plugin"] = plugin_phase(args.pods)
    result["kube"] = kube_phase(args.pods)
    kube, plugin = result["kube"], result["plugin"]
    result["ratio_all_succeeded"] = round(kube["all_succeeded_s"] / plugin["all_succeeded_s"], 2)
    result["ratio_p50_succeeded"] = round(
        kube["succeeded"]["p50_s"] / plugin["succeeded"]["p50_s"], 2
    )
    write_result("kube_chain", result)


if __name__ == "__main__":
    main()
