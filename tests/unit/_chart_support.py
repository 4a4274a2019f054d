"""The Helm chart's value sets and rendering, shared by the unit tests (``helm template``
and lint) and the integration tests (``helm install`` into the development cluster).

Helm is the real Helm 4 Go SDK bundled in the ``helm-python-sdk`` wheel (``libhelm_c``, bound
with ctypes): the same code as the ``helm`` command, without a ``helm`` binary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate.utils  # type: ignore[import-untyped]
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "interlink-htcondor"
KUBE_VERSION = "1.30.0"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas.
SCHEMA_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())
RELEASE, NAMESPACE = "site", "interlink"
FULLNAME = "site-interlink-htcondor"

SIDECAR = {
    "interlink": {"enabled": True, "tls": {"existingSecret": "il-tls", "clientCAKey": "ca.crt"}},
    "auth": {
        "method": "SCITOKENS",
        "existingSecret": "schedd-scitoken",
        "refresh": {
            "enabled": True,
            "image": "registry.example.org/token-refresh:1",
            "command": ["/usr/local/bin/refresh-token"],
        },
    },
    "config": {
        "schedd": {"collector": "cm.example.org:9618", "schedd_name": "ap1.example.org"},
        "containers": {
            "image_rules": [
                {"match": "ghcr.io/*", "target": "/cvmfs/unpacked.cern.ch/{repository}:{tag}"}
            ]
        },
        "storage": {
            "mode": "spool",
            "shared_dir": "/var/lib/interlink-htcondor/pods",
            "host_path_allow": ["/cvmfs"],
            "pvc_paths": {"data": "/eos/data"},
        },
        "policy": {"accounting_groups": {"cms": "group_cms", "*": "group_other"}},
        "resources": {"default_memory_mib": 2000},
    },
    "networkPolicy": {
        "enabled": True,
        "from": [{"podSelector": {"matchLabels": {"app": "htcondor-vk"}}}],
    },
}
TCP_METRICS = {
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "labels": {"release": "p"}}},
    "tls": {"existingSecret": "plugin-tls"},
    "bearerToken": {"existingSecret": "plugin-bearer", "key": "token"},
    "auth": {"method": "IDTOKENS", "existingSecret": "schedd-idtoken"},
    "service": {"port": 8443},
    "config": {
        "storage": {"mode": "shared", "shared_dir": "/shared/interlink"},
        "containers": {"mode": "container_universe"},
    },
    "storage": {"volume": {"persistentVolumeClaim": {"claimName": "grid-shared"}}},
}
VALUE_SETS: dict[str, dict[str, Any] | None] = {
    "default": None,
    "sidecar-socket": SIDECAR,
    "tcp-metrics": TCP_METRICS,
}
# Custom resources have no schema in kubernetes-validate: the ServiceMonitor is checked
# against the part of the prometheus-operator CRD the chart uses.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scheme": {"enum": ["http", "https"]},
                            "tlsConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "ca": {
                                        "type": "object",
                                        "required": ["secret"],
                                        "properties": {
                                            "secret": {
                                                "type": "object",
                                                "required": ["name", "key"],
                                                "properties": {
                                                    "name": {"type": "string", "minLength": 1},
                                                    "key": {"type": "string", "minLength": 1},
                                                },
                                            }
                                        },
                                    },
                                    "serverName": {"type": "string", "minLength": 1},
                                },
                            },
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["type", "credentials"],
                                "properties": {
                                    "type": {"const": "Bearer"},
                                    "credentials": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["name", "key"],
                                        "properties": {
                                            "name": {"type": "string", "minLength": 1},
                                            "key": {"type": "string", "minLength": 1},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def render(
    values: dict[str, Any] | None, name: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """The chart's manifests for ``values``, as ``helm template`` prints them."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=name, namespace=namespace)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(files.items()):
        if not path.endswith(".yaml"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {len(hits)}"
    return hits[0]


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    spec = find(docs, "Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def volumes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    spec = find(docs, "Deployment")["spec"]["template"]["spec"]
    return {v["name"]: v for v in spec["volumes"]}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pod specs of the Deployment and of any CronJob, in that order."""
    pods = [find(docs, "Deployment")["spec"]["template"]["spec"]]
    pods += [
        d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in docs if d["kind"] == "CronJob"
    ]
    return pods
