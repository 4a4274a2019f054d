"""Kubeconfig files: the admin's, the controller manager's, the scheduler's (client
certificates) and the virtual kubelet's (its service account's token). Everything is embedded,
so a kubeconfig can be copied on its own; files holding a key or token are mode 0600."""

from __future__ import annotations

import base64
from typing import Any

import yaml

CLUSTER_NAME = "interlink-htcondor-dev"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user and one (current) context.

    The user authenticates with a client certificate and key, or with a bearer ``token``
    (exactly one of the two)."""
    has_cert = client_cert_pem is not None or client_key_pem is not None
    if has_cert == (token is not None):
        raise ValueError("a kubeconfig user needs a client certificate and key, or a token")
    if has_cert and (client_cert_pem is None or client_key_pem is None):
        raise ValueError("a client certificate needs its key")
    credentials: dict[str, str]
    if token is not None:
        credentials = {"token": token}
    else:
        assert client_cert_pem is not None and client_key_pem is not None
        credentials = {
            "client-certificate-data": _b64(client_cert_pem),
            "client-key-data": _b64(client_key_pem),
        }
    context: dict[str, str] = {"cluster": CLUSTER_NAME, "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": f"{user}@{CLUSTER_NAME}", "context": context}],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
