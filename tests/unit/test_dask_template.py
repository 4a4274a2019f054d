"""The shared worker-pod template: what every Dask worker pod looks like."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from interlink_htcondor.dask.template import (
    ACCOUNTING_GROUP,
    APPTAINER_OPTIONS,
    DEFAULT_IMAGE,
    POD_VPN_ANNOTATION,
    REQUIREMENTS,
    WorkerTemplate,
    dask_variable,
)


def test_default_image_is_dask_of_the_client_version() -> None:
    assert f"ghcr.io/dask/dask:{version('distributed')}" == DEFAULT_IMAGE
    assert WorkerTemplate().image == DEFAULT_IMAGE


def test_args_follow_dask_kubernetes_and_fit_remote_slots() -> None:
    t = WorkerTemplate(
        nthreads=2,
        memory="1536Mi",
        death_timeout=90,
        listen_address="tcp://0.0.0.0:9000",
        contact_address="tcp://slot.example.org:9000",
        extra_args=["--resources", "GPU=1"],
    )
    args = t.args()
    assert args[:4] == ["dask", "worker", "--name", "$(DASK_WORKER_NAME)"]
    opts = dict(zip(args[4::2], args[5::2], strict=False))
    assert opts["--nthreads"] == "2"
    assert opts["--memory-limit"] == str(1536 * 1024 * 1024)
    assert opts["--death-timeout"] == "90"
    assert args[args.index("--listen-address") + 1] == "tcp://0.0.0.0:9000"
    assert args[args.index("--contact-address") + 1] == "tcp://slot.example.org:9000"
    assert args[-2:] == ["--resources", "GPU=1"]


def test_no_listen_address_args_unless_given() -> None:
    args = WorkerTemplate().args()
    assert "--listen-address" not in args and "--contact-address" not in args


def test_contact_address_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="listen_address"):
        WorkerTemplate(contact_address="tcp://x:1")


@pytest.mark.parametrize("bad", [{"nthreads": 0}, {"death_timeout": 0}, {"memory": "0"}])
def test_invalid_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WorkerTemplate(**bad)  # type: ignore[arg-type]


def test_pod_is_a_kubernetes_serialised_pod_for_the_virtual_node() -> None:
    t = WorkerTemplate(
        memory="2Gi",
        nthreads=1,
        scheduler_address="tcp://10.0.0.1:8786",
        accounting_group="group_cms.analysis",
        requirements='OpSysAndVer == "AlmaLinux9"',
        apptainer_options="--bind /cvmfs",
        dask_config={},
        env={"OMP_NUM_THREADS": "1"},
    )
    pod = t.pod("dask-abc-0", namespace="physics", uid="u-1", labels={"a": "b"})
    json.dumps(pod)  # plain JSON
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "dask-abc-0" and meta["namespace"] == "physics"
    assert meta["uid"] == "u-1" and meta["labels"] == {"a": "b"}
    assert meta["annotations"] == {
        ACCOUNTING_GROUP: "group_cms.analysis",
        REQUIREMENTS: 'OpSysAndVer == "AlmaLinux9"',
        APPTAINER_OPTIONS: "--bind /cvmfs",
    }
    assert spec["restartPolicy"] == "Never"
    assert spec["tolerations"] == [
        {"key": "virtual-node.interlink/no-schedule", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert spec["nodeSelector"] == {"virtual-node.interlink/type": "virtual-kubelet"}
    (c,) = spec["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {
        "OMP_NUM_THREADS": "1",
        "DASK_WORKER_NAME": "dask-abc-0",
        "DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786",
    }
    assert c["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }


def test_node_selector_by_name_and_pod_vpn() -> None:
    t = WorkerTemplate(node_name="vk-htcondor", pod_vpn=True)
    spec = t.pod_spec()
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "vk-htcondor"}
    assert t.pod_annotations() == {POD_VPN_ANNOTATION: "true"}


def test_operator_spec_leaves_worker_name_and_in_cluster_address_to_the_operator() -> None:
    # The operator injects DASK_WORKER_NAME per Deployment and only sets the scheduler
    # address when the pod has none: the template must not pin either by accident.
    spec = WorkerTemplate().pod_spec()
    (c,) = spec["containers"]
    names = {e["name"] for e in c["env"]}
    assert "DASK_WORKER_NAME" not in names and "DASK_SCHEDULER_ADDRESS" not in names
    assert "restartPolicy" not in spec  # Deployments need the default (Always)


def test_the_workers_dask_settings_travel_as_dask_variables() -> None:
    # The site's defaults: a quiet idle worker.
    env = {e["name"]: e["value"] for e in WorkerTemplate().container("w")["env"]}
    assert env["DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL"] == "1s"
    assert env["DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL"] == "100ms"
    t = WorkerTemplate(
        dask_config={"distributed.worker.memory.spill": "0.9", "distributed.comm.retry.count": "3"},
        env={"DASK_DISTRIBUTED__COMM__RETRY__COUNT": "5"},  # env wins
    )
    env = {e["name"]: e["value"] for e in t.container("w")["env"]}
    assert env["DASK_DISTRIBUTED__WORKER__MEMORY__SPILL"] == "0.9"
    assert env["DASK_DISTRIBUTED__COMM__RETRY__COUNT"] == "5"
    assert "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL" not in env  # replaced, not merged
    assert dask_variable("distributed.scheduler.work-stealing") == (
        "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING"
    )


@pytest.mark.parametrize("key", ["", "distributed..tick", "a.b c", "x=1", "$(HOME)"])
def test_a_dask_setting_that_is_no_config_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="dask_config"):
        WorkerTemplate(dask_config={key: "1"})


def test_reserved_env_names_are_refused() -> None:
    with pytest.raises(ValueError, match="DASK_SCHEDULER_ADDRESS"):
        WorkerTemplate(env={"DASK_SCHEDULER_ADDRESS": "tcp://x:1"}).container()


def test_uids_are_unique_per_pod() -> None:
    t = WorkerTemplate()
    assert t.pod("a")["metadata"]["uid"] != t.pod("a")["metadata"]["uid"]
