"""Wire models: what interLink sends is accepted, what is broken is named clearly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from _translate_support import pod
from pydantic import ValidationError

from interlink_htcondor.core import models
from interlink_htcondor.core.container_logs import LogOptions
from interlink_htcondor.core.models import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    CreateResponse,
    LogRequest,
    PingResources,
    PingResponse,
    PodRef,
    PodStatus,
    parse_create_body,
    validation_message,
)


def body(**extra: object) -> dict[str, object]:
    return {"pod": pod(), "container": [{"name": "main"}], **extra}


def test_single_object_and_04_array_are_the_same() -> None:
    one = parse_create_body(body())
    arr = parse_create_body([body()])
    assert one == arr
    assert one.pod.metadata.uid == arr.pod.metadata.uid


@pytest.mark.parametrize("raw", [[], [body(), body()]])
def test_array_must_hold_exactly_one(raw: list[object]) -> None:
    with pytest.raises(ValueError, match="one RetrievedPodData"):
        parse_create_body(raw)


def test_non_object_body() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        parse_create_body("pod")


def test_null_everywhere_go_sends_nil() -> None:
    raw = body(jobConfig=None, jobScript=None)
    raw["container"] = [
        {
            "name": "main",
            "configMaps": None,
            "projectedvolumemaps": None,
            "secrets": None,
            "emptyDirs": None,
        }
    ]
    p = raw["pod"]
    assert isinstance(p, dict)
    p["spec"]["containers"][0].update(
        {
            "command": None,
            "args": None,
            "env": None,
            "envFrom": None,
            "volumeMounts": None,
            "ports": None,
            "resources": None,
        }
    )
    p["spec"].update({"initContainers": None, "volumes": None, "nodeSelector": None})
    p["metadata"].update({"labels": None, "annotations": None})
    p["status"] = None
    req = parse_create_body(raw)
    c = req.pod.spec.containers[0]
    assert (c.command, c.args, c.env, c.env_from, c.volume_mounts) == ([], [], [], [], [])
    assert c.resources.requests == {} and c.resources.limits == {}
    assert req.pod.spec.init_containers == [] and req.pod.spec.volumes == []
    assert req.pod.metadata.labels == {} and req.pod.metadata.annotations == {}
    assert req.container[0].config_maps == [] and req.container[0].secrets == []
    assert req.pod.status.pod_ip == ""


def test_container_list_may_be_null() -> None:
    assert parse_create_body({"pod": pod(), "container": None}).container == []


def test_job_script_and_config_are_kept() -> None:
    req = parse_create_body(body(jobScript="#!/bin/sh\necho hi\n", jobConfig={"a": 1}))
    assert req.job_script == "#!/bin/sh\necho hi\n"
    assert req.job_config == {"a": 1}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("metadata", "uid"), "pod.metadata.uid: Field required"),
        (("metadata", "name"), "pod.metadata.name: Field required"),
        (("metadata", "namespace"), "pod.metadata.namespace: Field required"),
    ],
)
def test_identity_is_required_with_a_clear_message(path: tuple[str, str], expected: str) -> None:
    raw = body()
    p = raw["pod"]
    assert isinstance(p, dict)
    del p[path[0]][path[1]]
    with pytest.raises(ValidationError) as e:
        parse_create_body(raw)
    assert expected in validation_message(e.value)


def test_containers_need_name_and_image() -> None:
    raw = body()
    p = raw["pod"]
    assert isinstance(p, dict)
    p["spec"]["containers"] = [{"name": "x"}]
    with pytest.raises(ValidationError) as e:
        parse_create_body(raw)
    assert "pod.spec.containers.0.image: Field required" in validation_message(e.value)
    p["spec"]["containers"] = []
    with pytest.raises(ValidationError) as e:
        parse_create_body(raw)
    assert "pod.spec.containers" in validation_message(e.value)


def test_empty_uid_is_refused() -> None:
    raw = body()
    p = raw["pod"]
    assert isinstance(p, dict)
    p["metadata"]["uid"] = ""
    with pytest.raises(ValidationError, match="uid"):
        parse_create_body(raw)


def test_validation_message_is_capped() -> None:
    raw: dict[str, Any] = {"pod": {"metadata": {}, "spec": {"containers": [{}, {}, {}]}}}
    with pytest.raises(ValidationError) as e:
        parse_create_body(raw)
    msg = validation_message(e.value, limit=2)
    assert msg.count(";") == 2 and "more" in msg


def test_unknown_kubernetes_fields_are_accepted() -> None:
    raw = body()
    p = raw["pod"]
    assert isinstance(p, dict)
    p["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "x", "uid": "y"}]
    p["spec"]["affinity"] = {"nodeAffinity": {}}
    p["spec"]["containers"][0].update(
        {
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log",
            "securityContext": {"runAsNonRoot": True},
            "readinessProbe": {"exec": {"command": ["true"]}},
        }
    )
    req = parse_create_body(raw)
    assert req.pod.spec.containers[0].name == "main"


def test_quantities_may_be_numbers_in_manifests() -> None:
    raw = body()
    p = raw["pod"]
    assert isinstance(p, dict)
    p["spec"]["containers"][0]["resources"] = {"requests": {"cpu": 2, "memory": 1.5e9}}
    req = parse_create_body(raw)
    assert req.pod.spec.containers[0].resources.requests == {"cpu": "2", "memory": "1500000000.0"}


def test_camel_case_fields_and_aliases() -> None:
    raw = body()
    p = raw["pod"]
    assert isinstance(p, dict)
    p["spec"]["volumes"] = [
        {
            "name": "d",
            "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]},
        },
        {"name": "h", "hostPath": {"path": "/data", "type": "Directory"}},
        {"name": "c", "persistentVolumeClaim": {"claimName": "claim"}},
        {"name": "e", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    p["spec"]["activeDeadlineSeconds"] = 60
    p["status"] = {"podIP": "10.0.0.7", "hostIP": "192.0.2.1"}
    req = parse_create_body(raw)
    vols = req.pod.spec.volumes
    assert vols[0].downward_api is not None
    assert vols[0].downward_api.items[0].field_ref is not None
    assert vols[1].host_path is not None and vols[1].host_path.path == "/data"
    assert vols[2].persistent_volume_claim is not None
    assert vols[3].empty_dir is not None and vols[3].empty_dir.size_limit == "1Gi"
    assert req.pod.spec.active_deadline_seconds == 60
    assert (req.pod.status.pod_ip, req.pod.status.host_ip) == ("10.0.0.7", "192.0.2.1")


def test_unknown_volume_sources_are_kept_for_errors() -> None:
    raw = body()
    p = raw["pod"]
    assert isinstance(p, dict)
    p["spec"]["volumes"] = [{"name": "n", "nfs": {"server": "s", "path": "/"}}]
    assert parse_create_body(raw).pod.spec.volumes[0].unknown_fields() == ["nfs"]


def test_pod_ref_reads_identity_leniently() -> None:
    ref = PodRef.from_pod(
        {"metadata": {"name": "a", "namespace": "b", "uid": "c", "annotations": {"JobID": "1.0"}}}
    )
    assert (ref.name, ref.namespace, ref.uid, ref.job_id) == ("a", "b", "c", "1.0")
    assert ref.containers == () and ref.missing_identity() == []
    full = PodRef.from_pod(pod(init=[{"name": "i", "image": "x"}]))
    assert full.init_containers == ("i",) and full.images["i"] == "x"
    assert PodRef.from_pod({"metadata": {"name": "a", "namespace": "b"}}).missing_identity() == [
        "metadata.uid"
    ]
    # Values of the wrong type count as absent.
    odd = PodRef.from_pod({"metadata": {"name": 7, "namespace": "b", "uid": ["c"]}})
    assert odd.missing_identity() == ["metadata.name", "metadata.uid"]


def test_log_request_wire_format() -> None:
    raw = {
        "Namespace": "ns",
        "PodUID": "u",
        "PodName": "p",
        "ContainerName": "c",
        "Opts": {
            "Tail": 10,
            "Bytes": 2048,
            "Timestamps": True,
            "Follow": True,
            "Previous": False,
            "SinceSeconds": 0,
            "SinceTime": "2026-11-23T10:00:00+01:00",
        },
    }
    req = LogRequest.model_validate(raw)
    assert (req.namespace, req.pod_uid, req.pod_name, req.container_name) == ("ns", "u", "p", "c")
    opts = LogOptions.from_opts(req.opts)
    assert (opts.tail, opts.limit_bytes, opts.since_seconds) == (10, 2048, 0)
    assert opts.timestamps and opts.follow and not opts.previous
    assert opts.since_time_ns == int(datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp()) * 10**9


def test_log_request_go_zero_values() -> None:
    raw = {
        "Namespace": "ns",
        "PodUID": "u",
        "PodName": "p",
        "ContainerName": "c",
        "Opts": {"SinceTime": "0001-01-01T00:00:00Z", "Tail": None},
    }
    opts = LogOptions.from_opts(LogRequest.model_validate(raw).opts)
    assert opts.since_time_ns == 0 and opts.tail == 0
    null_opts = LogRequest.model_validate({**raw, "Opts": None}).opts
    assert LogOptions.from_opts(null_opts).limit_bytes == 0
    limit = LogRequest.model_validate({**raw, "Opts": {"LimitBytes": 7}}).opts
    assert LogOptions.from_opts(limit).limit_bytes == 7
    with pytest.raises(ValidationError, match="Opts"):
        LogRequest.model_validate({**raw, "Opts": [1]})
    with pytest.raises(ValidationError, match="ContainerName"):
        LogRequest.model_validate({k: v for k, v in raw.items() if k != "ContainerName"})


def test_container_status_wire_is_rfc3339_utc() -> None:
    cest = timezone(timedelta(hours=2))
    status = ContainerStatus(
        name="main",
        image="busybox:1.36",
        state=ContainerState(
            terminated=ContainerStateTerminated(
                exit_code=0,
                reason="Completed",
                started_at=datetime(2026, 7, 1, 12, 0, 0, 999999, tzinfo=cest),
                finished_at=datetime(2026, 7, 1, 10, 5, 0),  # naive: taken as UTC
            )
        ),
    )
    wire = status.wire()
    assert wire == {
        "name": "main",
        "state": {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "message": "",
                "startedAt": "2026-07-01T10:00:00Z",
                "finishedAt": "2026-07-01T10:05:00Z",
            }
        },
        "ready": False,
        "restartCount": 0,
        "image": "busybox:1.36",
        "imageID": "",
    }
    json.dumps(wire)


def test_container_state_is_exactly_one() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ContainerState()
    with pytest.raises(ValidationError, match="exactly one"):
        ContainerState(
            waiting=ContainerStateWaiting(reason="x"),
            running=ContainerStateRunning(started_at=datetime.now(UTC)),
        )
    running = ContainerState(
        running=ContainerStateRunning(started_at=datetime(2026, 1, 2, tzinfo=UTC))
    )
    assert running.wire() == {"running": {"startedAt": "2026-01-02T00:00:00Z"}}


def test_pod_status_keys_are_the_contracts() -> None:
    waiting = ContainerStatus(
        name="c", state=ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating"))
    )
    wire = PodStatus(
        name="p",
        uid="u",
        namespace="n",
        jid="12.0",
        containers=[waiting],
        init_containers=[waiting],
    ).wire()
    assert set(wire) == {"name", "UID", "namespace", "JID", "containers", "initContainers"}
    assert wire["containers"][0]["state"] == {
        "waiting": {"reason": "ContainerCreating", "message": ""}
    }


def test_create_response_and_ping() -> None:
    assert CreateResponse(pod_uid="u", pod_jid="3.0").model_dump() == {
        "PodUID": "u",
        "PodJID": "3.0",
    }
    ping = PingResponse(
        resources=PingResources(
            cpu="8",
            memory="16Gi",
            pods="100",
            accelerators=[models.Accelerator(resource_type="nvidia.com/gpu", available="2")],
        ),
        taints=[models.Taint(key="virtual-node.interlink/no-schedule", value="true")],
    ).wire()
    assert ping == {
        "status": "ok",
        "resources": {
            "cpu": "8",
            "memory": "16Gi",
            "pods": "100",
            "accelerators": [{"resourceType": "nvidia.com/gpu", "available": "2"}],
        },
        "taints": [
            {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}
        ],
    }


def test_rfc3339_helper() -> None:
    assert models.rfc3339(datetime(2026, 1, 1, 1, 2, 3, tzinfo=timezone(timedelta(hours=-5)))) == (
        "2026-01-01T06:02:03Z"
    )
