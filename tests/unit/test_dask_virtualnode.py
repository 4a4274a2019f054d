"""VirtualNodeCluster's resources, validated against the operator's own CRDs, and its
pending-first scale-down, tested on objects the operator's own code generates."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from dask_kubernetes.operator.controller.controller import build_worker_deployment_spec

from interlink_htcondor.dask import crd
from interlink_htcondor.dask.template import ACCOUNTING_GROUP, WorkerTemplate
from interlink_htcondor.dask.virtualnode import (
    REACHABILITY_HELP,
    VirtualNodeCluster,
    make_virtual_node_cluster_spec,
    plan_scale_down,
)

Json = dict[str, Any]
ADDRESS = "tcp://k8s-node.example.org:30786"


def spec(**kw: Any) -> Json:
    template = WorkerTemplate(scheduler_address=ADDRESS, accounting_group="group_cms", memory="3Gi")
    return make_virtual_node_cluster_spec("zpeak", template, **kw)


def test_cluster_spec_validates_against_the_operator_crd() -> None:
    s = spec(n_workers=4, scheduler_node_port=30786)
    assert crd.validation_errors(s) == []
    assert s["kind"] == "DaskCluster" and s["spec"]["worker"]["replicas"] == 4
    ports = {p["name"]: p for p in s["spec"]["scheduler"]["service"]["ports"]}
    assert ports["tcp-comm"]["nodePort"] == 30786
    assert s["spec"]["scheduler"]["service"]["type"] == "NodePort"


def test_worker_part_is_the_template_aimed_at_the_virtual_node() -> None:
    worker = spec()["spec"]["worker"]
    pod = worker["spec"]
    assert pod["nodeSelector"] == {"virtual-node.interlink/type": "virtual-kubelet"}
    assert pod["tolerations"][0]["key"] == "virtual-node.interlink/no-schedule"
    (c,) = pod["containers"]
    assert c["args"][:4] == ["dask", "worker", "--name", "$(DASK_WORKER_NAME)"]
    assert {"name": "DASK_SCHEDULER_ADDRESS", "value": ADDRESS} in c["env"]
    assert c["resources"]["limits"]["memory"] == "3Gi"
    assert worker["metadata"]["annotations"][ACCOUNTING_GROUP] == "group_cms"


def test_crd_check_catches_wrong_types_and_fields_the_api_server_would_prune() -> None:
    s = spec()
    bad = copy.deepcopy(s)
    bad["spec"]["worker"]["replicas"] = "four"
    assert any("replicas" in e for e in crd.validation_errors(bad))
    pruned = copy.deepcopy(s)
    pruned["spec"]["worker"]["spec"]["containers"][0]["envv"] = []
    errors = crd.validation_errors(pruned)
    assert errors == ["spec.worker.spec.containers[0].envv: not in the DaskCluster schema"]
    with pytest.raises(crd.InvalidResource, match="envv"):
        crd.validate(pruned)


def test_crd_schemas_come_from_the_installed_operator() -> None:
    for kind in ("DaskCluster", "DaskWorkerGroup", "DaskJob", "DaskAutoscaler"):
        schema = crd.crd_schema(kind)
        assert schema["type"] == "object" and "spec" in schema["properties"]


def test_the_operator_own_spec_helper_output_is_checked_too() -> None:
    # make_cluster_spec writes env: null, which the CRD rejects; our builder drops it.
    from dask_kubernetes.operator import make_cluster_spec

    raw = make_cluster_spec("x", n_workers=1)
    assert any("env" in e for e in crd.validation_errors(raw))


def test_node_port_needs_a_node_port_service() -> None:
    with pytest.raises(ValueError, match="NodePort"):
        spec(scheduler_service_type="ClusterIP", scheduler_node_port=30786)


def test_cluster_refuses_to_start_without_a_reachable_scheduler_address() -> None:
    # Raised before any Kubernetes call: there is no API server here.
    with pytest.raises(ValueError) as e:
        VirtualNodeCluster(name="zpeak")
    assert str(e.value) == REACHABILITY_HELP
    for option in ("NodePort", "LoadBalancer", "TLS", "SNI", "pod VPN"):
        assert option in REACHABILITY_HELP


# -- pending-first scale-down -----------------------------------------------------------


def deployments(n: int) -> list[Json]:
    """Worker Deployments exactly as the operator's controller builds them."""
    s = spec(n_workers=n)
    out = []
    for i in range(n):
        d = build_worker_deployment_spec(
            worker_group_name="zpeak-default",
            namespace="physics",
            cluster_name="zpeak",
            uuid=f"{i:010x}",
            pod_spec=s["spec"]["worker"]["spec"],
            annotations=s["spec"]["worker"]["metadata"]["annotations"],
            labels={},
        )
        d["metadata"]["creationTimestamp"] = f"2026-11-23T10:00:{i:02d}Z"
        out.append(d)
    return out


def pod_of(deployment: Json, phase: str) -> Json:
    """The Pod the Deployment's ReplicaSet makes, with the phase the virtual kubelet
    reports (Pending while the HTCondor job is idle)."""
    template = deployment["spec"]["template"]
    return {
        "metadata": {"name": deployment["metadata"]["name"] + "-5d8f7-abcde"},
        "spec": copy.deepcopy(template["spec"]),
        "status": {"phase": phase},
    }


def test_generated_deployments_carry_the_worker_name_the_plan_relies_on() -> None:
    d = deployments(1)[0]
    env = {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DASK_WORKER_NAME"] == d["metadata"]["name"]
    assert env["DASK_SCHEDULER_ADDRESS"] == ADDRESS  # ours, not the in-cluster Service


def test_scale_down_cancels_pending_workers_not_connected_ones() -> None:
    deps = deployments(6)
    names = [d["metadata"]["name"] for d in deps]
    phases = ["Running", "Running", "Running", "Pending", "Pending", "Pending"]
    pods = [pod_of(d, p) for d, p in zip(deps, phases, strict=True)]
    connected = names[:3]
    plan = plan_scale_down(deps, pods, connected, 3)
    assert sorted(plan.cancel) == sorted(names[3:])
    assert plan.replicas == 3 and plan.retire == 0
    # What the operator then does: it counts the remaining Deployments against replicas.
    remaining = [d for d in deps if d["metadata"]["name"] not in plan.cancel]
    assert len(remaining) - plan.replicas == 0  # nothing left for it to retire


def test_scale_down_below_the_pending_count_cancels_newest_pending_first() -> None:
    deps = deployments(5)
    names = [d["metadata"]["name"] for d in deps]
    phases = ["Running", "Running", "Pending", "Pending", "Pending"]
    pods = [pod_of(d, p) for d, p in zip(deps, phases, strict=True)]
    plan = plan_scale_down(deps, pods, names[:2], 4)
    assert plan.cancel == [names[4]]


def test_scale_down_past_the_pending_ones_leaves_the_rest_to_graceful_retirement() -> None:
    deps = deployments(4)
    names = [d["metadata"]["name"] for d in deps]
    phases = ["Running", "Running", "Running", "Pending"]
    pods = [pod_of(d, p) for d, p in zip(deps, phases, strict=True)]
    plan = plan_scale_down(deps, pods, names[:3], 1)
    assert plan.cancel == [names[3]]
    assert plan.retire == 2  # the operator retires two connected workers through the scheduler


def test_failed_and_unscheduled_go_before_idle_and_starting() -> None:
    deps = deployments(5)
    names = [d["metadata"]["name"] for d in deps]
    # 0: connected; 1: running but not yet connected; 2: idle job; 3: failed; 4: no pod yet
    pods = [
        pod_of(deps[0], "Running"),
        pod_of(deps[1], "Running"),
        pod_of(deps[2], "Pending"),
        pod_of(deps[3], "Failed"),
    ]
    plan = plan_scale_down(deps, pods, [names[0]], 1)
    assert plan.cancel == [names[3], names[4], names[2], names[1]]
    assert plan.retire == 0


def test_scale_up_or_equal_cancels_nothing() -> None:
    deps = deployments(2)
    pods = [pod_of(d, "Pending") for d in deps]
    assert plan_scale_down(deps, pods, [], 2).cancel == []
    assert plan_scale_down(deps, pods, [], 5).cancel == []
    with pytest.raises(ValueError):
        plan_scale_down(deps, pods, [], -1)
