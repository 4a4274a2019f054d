"""Builders for translation tests: pods and requests as the Kubernetes API serialises them."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from interlink_htcondor import client
from interlink_htcondor.core.jobspec import SPEC_FILE, JobSpec
from interlink_htcondor.core.models import CreateRequest, parse_create_body
from interlink_htcondor.core.plan import JobPlan
from interlink_htcondor.settings import Settings

Json = dict[str, Any]
UID = "3f1c2b9e-7a64-4d1e-9b0a-5c8e2f4d6a10"


def container(name: str = "main", image: str = "busybox:1.36", **fields: Any) -> Json:
    return {"name": name, "image": image, **fields}


def pod(
    *containers: Json,
    name: str = "demo",
    namespace: str = "team-a",
    uid: str = UID,
    init: list[Json] | None = None,
    volumes: list[Json] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> Json:
    """A pod shaped like ``kubectl get pod -o json`` (nulls where Go has nil slices)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-23T08:00:00Z",
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "containers": list(containers) or [container()],
            "initContainers": init,
            "volumes": volumes,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "nodeName": "vk-htcondor",
            "tolerations": [
                {
                    "key": "virtual-node.interlink/no-schedule",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                }
            ],
            **spec,
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }


def configmap(
    name: str, data: dict[str, str] | None = None, binary: dict[str, bytes] | None = None
) -> Json:
    out: Json = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    if binary is not None:
        out["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    return out


def secret(name: str, data: dict[str, bytes | str]) -> Json:
    enc = {
        k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
        for k, v in data.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": enc,
    }


def request(
    p: Json,
    *,
    configmaps: list[Json] = (),  # type: ignore[assignment]
    secrets: list[Json] = (),  # type: ignore[assignment]
    projected: list[Json] = (),  # type: ignore[assignment]
) -> CreateRequest:
    body = client.create_body(copy.deepcopy(p), configmaps, secrets, projected)
    # Through JSON, as it travels on the wire.
    return parse_create_body(json.loads(json.dumps(body)))


def settings(**sections: Any) -> Settings:
    return Settings(**sections)


def spec_of(plan: JobPlan) -> JobSpec:
    raw = next(f for f in plan.files if f.path == SPEC_FILE).content
    return JobSpec.model_validate_json(raw)


def spec_json(plan: JobPlan) -> Json:
    raw = next(f for f in plan.files if f.path == SPEC_FILE).content
    data: Json = json.loads(raw)
    return data


def files_of(plan: JobPlan) -> dict[str, tuple[bytes, int]]:
    return {f.path: (f.content, f.mode) for f in plan.files}
