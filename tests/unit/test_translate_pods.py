"""Whole pods as Kubernetes serialises them: a dask-kubernetes worker, the conformance cases."""

from __future__ import annotations

import json
from pathlib import Path

import htcondor2
import pytest
from _translate_support import (
    configmap,
    container,
    files_of,
    pod,
    request,
    secret,
    settings,
    spec_of,
)

from interlink_htcondor.core.jobspec import MountSpec, VolumeSpec
from interlink_htcondor.core.models import parse_create_body
from interlink_htcondor.core.translate import TranslationError, translate

# A worker pod of dask-kubernetes' operator as the API server returns it (trimmed of
# status conditions), inside the RetrievedPodData interLink builds around it.
DASK_CREATE = json.loads((Path(__file__).parent / "data" / "dask-worker-create.json").read_text())


def test_dask_kubernetes_worker_pod() -> None:
    plan = translate(parse_create_body(DASK_CREATE), settings(storage={"shared_dir": "/pods"}))
    spec = spec_of(plan)
    worker = spec.containers[0]
    assert worker.mode == "run"  # the image's entrypoint runs dask-worker
    assert worker.argv[:3] == ["dask-worker", "--name", "simple-default-worker-0f3a1c2b9e"]
    assert (
        dict(worker.env)["DASK_SCHEDULER_ADDRESS"]
        == "tcp://simple-scheduler.analysis.svc.cluster.local:8786"
    )
    assert worker.memory_limit_bytes == 2 * 1024**3
    assert worker.mounts == [
        MountSpec(
            volume="kube-api-access-9q7zt",
            mount_path="/var/run/secrets/kubernetes.io/serviceaccount",
            read_only=True,
        )
    ]
    files = files_of(plan)
    ca = files["volumes/kube-api-access-9q7zt/ca.crt"][0]
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----\nMIIC") and ca.endswith(
        b"-----END CERTIFICATE-----\n"
    )
    assert files["volumes/kube-api-access-9q7zt/token"][1] == 0o640
    assert plan.submit["request_cpus"] == "1" and plan.submit["request_memory"] == "2048"
    assert plan.submit["batch_name"] == "analysis/simple-default-worker-0f3a1c2b9e-7d9c8b6f5-x2x8k"
    assert spec.restart_policy == "Always"
    htcondor2.Submit(plan.submit)


def test_dask_worker_via_04_array_body() -> None:
    raw = json.loads(json.dumps(DASK_CREATE))
    raw["pod"]["metadata"]["annotations"] = None
    plan = translate(parse_create_body([raw]), settings())
    assert plan.containers == ("worker",)


# ------------------------------------------------------------- conformance-style pods


def test_hello_world() -> None:
    p = pod(container("hello", "busybox:1.36", command=["echo", "hello world"]))
    spec = spec_of(translate(request(p), settings()))
    assert spec.containers[0].argv == ["echo", "hello world"]
    assert spec.containers[0].image == "docker://busybox:1.36"


def test_python_with_env_vars() -> None:
    c = container(
        "py",
        "python:3.11",
        command=["python3", "-c", "import os; print(os.environ['GREETING'], os.environ['TARGET'])"],
        env=[{"name": "GREETING", "value": "Hello"}, {"name": "TARGET", "value": "interLink"}],
    )
    spec = spec_of(translate(request(pod(c)), settings()))
    assert spec.containers[0].env == [("GREETING", "Hello"), ("TARGET", "interLink")]


def test_shared_empty_dir_writer_and_read_only_reader() -> None:
    writer = container(
        "writer",
        command=["sh", "-c", "echo data > /shared/f"],
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    )
    reader = container(
        "reader",
        command=["sh", "-c", "sleep 2; cat /shared/f"],
        volumeMounts=[{"name": "shared", "mountPath": "/shared", "readOnly": True}],
    )
    spec = spec_of(
        translate(
            request(pod(writer, reader, volumes=[{"name": "shared", "emptyDir": {}}])), settings()
        )
    )
    assert spec.volumes == {"shared": VolumeSpec(kind="emptyDir")}
    assert [m.read_only for c in spec.containers for m in c.mounts] == [False, True]


def test_configmap_and_secret_volumes_and_env() -> None:
    c = container(
        "app",
        command=[
            "sh",
            "-c",
            "cat /cfg/greeting /sec/password; echo $FROM_CM $FROM_SECRET $PFX_LEVEL",
        ],
        env=[
            {
                "name": "FROM_CM",
                "valueFrom": {"configMapKeyRef": {"name": "test-cm", "key": "greeting"}},
            },
            {
                "name": "FROM_SECRET",
                "valueFrom": {"secretKeyRef": {"name": "test-secret", "key": "password"}},
            },
        ],
        envFrom=[{"prefix": "PFX_", "configMapRef": {"name": "test-cm"}}],
        volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"}],
    )
    p = pod(
        c,
        volumes=[
            {"name": "cfg", "configMap": {"name": "test-cm", "defaultMode": 420}},
            {"name": "sec", "secret": {"secretName": "test-secret", "defaultMode": 420}},
        ],
    )
    plan = translate(
        request(
            p,
            configmaps=[configmap("test-cm", {"greeting": "hi", "level": "3"})],
            secrets=[secret("test-secret", {"password": "s3cr3t"})],
        ),
        settings(),
    )
    spec = spec_of(plan)
    assert spec.containers[0].env == [
        ("PFX_greeting", "hi"),
        ("PFX_level", "3"),
        ("FROM_CM", "hi"),
        ("FROM_SECRET", "s3cr3t"),
    ]
    files = files_of(plan)
    assert files["volumes/sec/password"] == (b"s3cr3t", 0o640)
    assert files["volumes/cfg/greeting"] == (b"hi", 0o644)


def test_memory_limit_pod() -> None:
    c = container(
        "hog",
        "python:3.11",
        command=["python3", "-c", "x = bytearray(512 * 1024 * 1024)"],
        resources={"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}},
    )
    plan = translate(request(pod(c)), settings())
    assert spec_of(plan).containers[0].memory_limit_bytes == 128 * 1024 * 1024
    assert plan.submit["request_memory"] == "64"


def test_init_containers_in_order() -> None:
    inits = [
        container(
            f"init-{i}",
            command=["sh", "-c", f"echo {i} >> /work/order"],
            volumeMounts=[{"name": "w", "mountPath": "/work"}],
        )
        for i in range(3)
    ]
    main = container(
        "main", command=["cat", "/work/order"], volumeMounts=[{"name": "w", "mountPath": "/work"}]
    )
    plan = translate(
        request(pod(main, init=inits, volumes=[{"name": "w", "emptyDir": {}}])), settings()
    )
    spec = spec_of(plan)
    assert [c.name for c in spec.init_containers] == ["init-0", "init-1", "init-2"]
    assert plan.init_containers == ("init-0", "init-1", "init-2")
    assert plan.submit["+InterlinkInitContainers"] == '"init-0,init-1,init-2"'


def test_four_containers_with_network_and_empty_dir() -> None:
    cs = [
        container(
            "server",
            "python:3.11",
            command=["python3", "-m", "http.server", "8080"],
            ports=[{"containerPort": 8080}],
        ),
        container(
            "client",
            "busybox:1.36",
            command=["sh", "-c", "wget -qO- localhost:8080 > /data/page"],
            volumeMounts=[{"name": "d", "mountPath": "/data"}],
        ),
        container(
            "watcher",
            "busybox:1.36",
            command=["sh", "-c", "until [ -s /data/page ]; do sleep 1; done"],
            volumeMounts=[{"name": "d", "mountPath": "/data", "readOnly": True}],
        ),
        container("idle", "busybox:1.36", command=["sleep", "5"]),
    ]
    plan = translate(request(pod(*cs, volumes=[{"name": "d", "emptyDir": {}}])), settings())
    assert plan.containers == ("server", "client", "watcher", "idle")
    assert plan.submit["+InterlinkContainers"] == '"server,client,watcher,idle"'


def test_probes_are_accepted() -> None:
    c = container(
        readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 5},
        livenessProbe={"httpGet": {"path": "/", "port": 8080}},
        startupProbe={"tcpSocket": {"port": 8080}},
    )
    assert translate(request(pod(c)), settings()).containers == ("main",)


def test_image_entrypoint_without_command() -> None:
    spec = spec_of(translate(request(pod(container("nginx", "nginx:1.27"))), settings()))
    assert (spec.containers[0].mode, spec.containers[0].argv) == ("run", [])


@pytest.mark.parametrize("command", [["sh", "-c", "exit 42"], ["this-command-does-not-exist"]])
def test_failing_containers_still_translate(command: list[str]) -> None:
    spec = spec_of(translate(request(pod(container(command=command))), settings()))
    assert spec.containers[0].argv == command


def test_job_pod() -> None:
    p = pod(container("job", command=["sh", "-c", "exit 1"]), restartPolicy="Never")
    p["metadata"]["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "fail", "uid": "x", "controller": True}
    ]
    p["metadata"]["labels"] = {"batch.kubernetes.io/job-name": "fail", "job-name": "fail"}
    assert spec_of(translate(request(p), settings())).restart_policy == "Never"


def test_pre_stop_hook() -> None:
    c = container(
        command=["sleep", "3600"],
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "echo bye > /data/prestop"]}}},
        volumeMounts=[{"name": "d", "mountPath": "/data"}],
    )
    spec = spec_of(
        translate(
            request(pod(c, volumes=[{"name": "d", "hostPath": {"path": "/tmp/out"}}])),
            settings(storage={"host_path_allow": ["/tmp"]}),
        )
    )
    assert spec.containers[0].pre_stop is not None
    assert spec.containers[0].pre_stop.argv == ["sh", "-c", "echo bye > /data/prestop"]


def test_a_refused_pod_says_why() -> None:
    p = pod(
        container(volumeMounts=[{"name": "n", "mountPath": "/n"}]),
        volumes=[{"name": "n", "nfs": {"server": "nfs", "path": "/"}}],
    )
    with pytest.raises(TranslationError) as e:
        translate(request(p), settings())
    assert str(e.value).startswith("volume 'n': type 'nfs' is not supported")


def test_translate_is_deterministic() -> None:
    a = translate(request(pod(container(env=[{"name": "A", "value": "1"}]))), settings())
    b = translate(request(pod(container(env=[{"name": "A", "value": "1"}]))), settings())
    assert a == b
