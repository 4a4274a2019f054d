"""The scheduler part of a VirtualNodeCluster: in Kubernetes (production) or on the virtual
node (the development cluster), checked against the operator's own CRD and the worker
Deployments the operator's own code builds from it; and how a scheduler job's pod tells
that it failed."""

from __future__ import annotations

from typing import Any

import pytest
from dask_kubernetes.operator.controller.controller import build_worker_deployment_spec

from interlink_htcondor.dask import crd
from interlink_htcondor.dask.scheduler import listen_address, scheduler_spec
from interlink_htcondor.dask.schedulerjob import dashboard_node_port, pod_failure, pod_waiting
from interlink_htcondor.dask.template import APPTAINER_OPTIONS, WorkerTemplate
from interlink_htcondor.dask.virtualnode import client_address, make_virtual_node_cluster_spec

Json = dict[str, Any]
LOOPBACK = "tcp://127.0.0.1:30947"


def template(address: str | None = LOOPBACK) -> WorkerTemplate:
    return WorkerTemplate(
        scheduler_address=address, memory="1Gi", apptainer_options="--bind /d:/data:ro"
    )


def on_node(**kw: Any) -> Json:
    args: dict[str, Any] = {
        "scheduler_node_port": 30947,
        "dashboard_node_port": 31218,
        "scheduler_on_virtual_node": True,
    }
    return make_virtual_node_cluster_spec("zp", template(), **(args | kw))


def test_production_scheduler_runs_the_dask_command_behind_its_node_port() -> None:
    s = scheduler_spec("zp", image="img", node_port=30786)
    (c,) = s["spec"]["containers"]
    assert c["args"][:2] == ["dask", "scheduler"]
    assert "env" not in c and "resources" not in c  # no explicit nulls for the API server
    ports = {p["name"]: p for p in s["service"]["ports"]}
    assert ports["tcp-comm"]["nodePort"] == 30786 and "nodePort" not in ports["http-dashboard"]
    assert "nodeSelector" not in s["spec"] and "tolerations" not in s["spec"]


@pytest.mark.parametrize("port", [80, 40000, "30786", True])
def test_a_node_port_outside_the_range_is_refused(port: Any) -> None:
    with pytest.raises(ValueError, match="NodePort must be a port in 30000-32767"):
        scheduler_spec("zp", image="img", node_port=port)


def test_a_pinned_port_needs_a_node_port_service() -> None:
    with pytest.raises(ValueError, match="NodePort or LoadBalancer"):
        scheduler_spec("zp", image="img", service_type="ClusterIP", dashboard_node_port=31000)


def test_scheduler_on_the_virtual_node_listens_on_the_workers_address() -> None:
    s = on_node()
    assert crd.validation_errors(s) == []
    sched = s["spec"]["scheduler"]
    pod = sched["spec"]
    (c,) = pod["containers"]
    assert c["args"] == [
        "dask", "scheduler", "--host", "127.0.0.1", "--port", "30947",
        "--dashboard-address", "127.0.0.1:31218",
    ]  # fmt: skip
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "tcp-comm": 30947,
        "http-dashboard": 31218,
    }
    # Every way a client derives the address lands on the same port.
    assert {(p["port"], p["nodePort"]) for p in sched["service"]["ports"]} == {
        (30947, 30947),
        (31218, 31218),
    }
    # Placed like the workers, an HTCondor job with the workers' annotations and memory.
    worker = s["spec"]["worker"]["spec"]
    assert pod["nodeSelector"] == worker["nodeSelector"]
    assert pod["tolerations"] == worker["tolerations"]
    assert sched["metadata"]["annotations"][APPTAINER_OPTIONS] == "--bind /d:/data:ro"
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_scheduler_on_the_virtual_node_needs_its_ports_pinned_to_the_address() -> None:
    with pytest.raises(ValueError, match="scheduler_node_port=30947"):
        on_node(scheduler_node_port=30948)
    with pytest.raises(ValueError, match="dashboard_node_port"):
        on_node(dashboard_node_port=None)
    with pytest.raises(ValueError, match="needs a NodePort Service"):
        make_virtual_node_cluster_spec(
            "zp", template(), scheduler_on_virtual_node=True, scheduler_service_type="ClusterIP"
        )


@pytest.mark.parametrize(
    "address", [None, "tls://127.0.0.1:30947", "tcp://127.0.0.1", "tcp://:30947", "tcp://h:x"]
)
def test_listen_address_needs_a_tcp_host_and_port(address: str | None) -> None:
    with pytest.raises(ValueError, match="tcp://<host>:<port>"):
        listen_address(address)
    assert listen_address("tcp://127.0.0.1:30947") == ("127.0.0.1", 30947)


def test_worker_deployments_the_operator_builds_carry_only_literal_env() -> None:
    """interLink's virtual kubelet (at the pinned commit) never resolves ``valueFrom`` or
    ``envFrom``: a pod with them stays Pending. The operator adds only literal values, and
    the template's scheduler address wins over the operator's in-cluster Service name."""
    s = on_node()
    worker = s["spec"]["worker"]
    dep = build_worker_deployment_spec(
        worker_group_name="zp-default",
        namespace="ns",
        cluster_name="zp",
        uuid="abc",
        pod_spec=worker["spec"],
        annotations=worker["metadata"]["annotations"],
        labels={},
    )
    pods = [dep["spec"]["template"]["spec"], s["spec"]["scheduler"]["spec"]]
    for pod in pods:
        for c in pod["containers"]:
            assert "envFrom" not in c
            assert all(set(e) == {"name", "value"} for e in c.get("env") or [])
    env = {e["name"]: e["value"] for e in pods[0]["containers"][0]["env"]}
    assert env == {
        **WorkerTemplate().environment(),
        "DASK_SCHEDULER_ADDRESS": LOOPBACK,
        "DASK_WORKER_NAME": "zp-default-worker-abc",
    }


def test_the_client_connects_where_the_workers_do() -> None:
    assert client_address(template()) == LOOPBACK
    assert client_address(template("tls://dask.example.org:443")) is None
    assert client_address(WorkerTemplate(pod_vpn=True)) is None
    assert dashboard_node_port(on_node()) == 31218
    assert dashboard_node_port(make_virtual_node_cluster_spec("zp", template())) is None


def pod(phase: str, **status: Any) -> Json:
    return {"metadata": {"name": "zp-scheduler"}, "status": {"phase": phase, **status}}


def test_a_pending_or_running_scheduler_pod_may_still_serve() -> None:
    assert pod_failure(pod("Pending")) is None
    assert pod_failure(pod("Running", containerStatuses=[{"state": {"running": {}}}])) is None
    gone = pod("Failed")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_failure(gone) is None  # a previous cluster's pod on its way out


def test_a_failed_scheduler_pod_says_why() -> None:
    exited = {"terminated": {"reason": "Error", "exitCode": 1, "message": "bad address "}}
    why = pod_failure(
        pod(
            "Failed",
            message="HTCondor job 12.0 was removed",
            containerStatuses=[{"name": "scheduler", "state": exited}],
        )
    )
    assert why == (
        "scheduler pod zp-scheduler is Failed: HTCondor job 12.0 was removed; "
        "container scheduler Error (exit code 1): bad address"
    )
    # An exited container ends the wait even while the pod's phase lags behind.
    lagging = pod("Running", containerStatuses=[{"name": "scheduler", "state": exited}])
    assert pod_failure(lagging) == (
        "scheduler pod zp-scheduler is Running; container scheduler Error (exit code 1): "
        "bad address"
    )


def test_a_waiting_scheduler_pod_says_what_it_waits_for() -> None:
    idle = {"waiting": {"reason": "Pending", "message": "HTCondor job 7.0 is idle"}}
    assert pod_waiting(pod("Pending", containerStatuses=[{"state": idle}])) == (
        "HTCondor job 7.0 is idle"
    )
    assert pod_waiting(pod("Pending")) is None
    assert pod_waiting(pod("Running", containerStatuses=[{"state": {"running": {}}}])) is None
