"""The Kubernetes objects ``cluster up`` applies: the virtual kubelet's namespace, service
account, long-lived token Secret, and the ClusterRole it needs.

The role is what interLink's virtual kubelet does at the pinned commit: register and heartbeat
its node (nodes, nodes/status, leases), watch the pods bound to it and write their status,
read the ConfigMaps, Secrets and Services its pods use, ask for service-account tokens for
their projected volumes, and record Events. Its wstunnel feature (pods exposing ports: a
Deployment, Service and Ingress in ``<namespace>-wstunnel``) is covered too, since a pod with
ports triggers it.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "interlink"
SERVICE_ACCOUNT = "virtual-kubelet"
TOKEN_SECRET = "virtual-kubelet-token"  # noqa: S105 (a Secret's name)
CLUSTER_ROLE = "interlink-virtual-kubelet"

Obj = dict[str, Any]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Obj:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete"]

VK_RULES: list[Obj] = [
    _rule([""], ["nodes"], ["create", "get", "list", "watch", "update", "patch", "delete"]),
    _rule([""], ["nodes/status"], ["get", "update", "patch"]),
    _rule(["coordination.k8s.io"], ["leases"], [*READ, "create", "update", "patch"]),
    _rule([""], ["pods"], [*READ, "update", "patch", "delete"]),
    _rule([""], ["pods/status"], ["get", "update", "patch"]),
    _rule([""], ["configmaps", "secrets", "services", "namespaces"], READ),
    _rule([""], ["serviceaccounts"], ["get"]),
    _rule([""], ["serviceaccounts/token"], ["create"]),
    _rule([""], ["events"], ["create", "patch", "update"]),
    # wstunnel exposure of pods with ports (pinned commit's Network.EnableTunnel).
    _rule([""], ["namespaces"], ["create"]),
    _rule([""], ["services"], WRITE),
    _rule(["apps"], ["deployments"], [*READ, *WRITE]),
    _rule(["networking.k8s.io"], ["ingresses"], [*READ, *WRITE]),
]


def namespace(name: str = NAMESPACE) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service_account(name: str = SERVICE_ACCOUNT, ns: str = NAMESPACE) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns},
    }


def token_secret(
    name: str = TOKEN_SECRET, account: str = SERVICE_ACCOUNT, ns: str = NAMESPACE
) -> Obj:
    """A service-account token Secret: the controller manager fills in a token that does not
    expire, so the virtual kubelet's kubeconfig survives restarts of every component."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {"kubernetes.io/service-account.name": account},
        },
    }


def cluster_role(name: str = CLUSTER_ROLE) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": VK_RULES,
    }


def cluster_role_binding(
    name: str = CLUSTER_ROLE, account: str = SERVICE_ACCOUNT, ns: str = NAMESPACE
) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
    }


def objects() -> list[Obj]:
    """Everything, in the order it must be created."""
    return [namespace(), service_account(), token_secret(), cluster_role(), cluster_role_binding()]
