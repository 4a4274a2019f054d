"""The pinned versions of the cluster's components, and where each comes from.

- Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl): built from the
  Go module ``k8s.io/kubernetes`` at ``KUBERNETES``; its staging modules come from their
  published ``k8s.io/<name>`` releases of the same minor and patch (``v0.34.4``).
- interLink (its API server and virtual kubelet): built from the Go module
  ``github.com/interlink-hq/interlink`` at the pseudo-version ``INTERLINK``: the Go module
  proxy serves no tagged release of it (its tags have no ``v``) and, of its 2025-2026 commits,
  this one.
- etcd: Debian sid's ``etcd-server`` package, whatever version the mirror serves (recorded in
  the cache directory's name).
"""

from __future__ import annotations

KUBERNETES = "v1.34.4"
KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

INTERLINK_MODULE = "github.com/interlink-hq/interlink"
INTERLINK = "v0.0.0-20250722085031-9ed14a4e89d5"
INTERLINK_COMMIT = "9ed14a4e89d5"
INTERLINK_COMMANDS = ("interlink", "virtual-kubelet")
# The virtual kubelet reports this as the node's kubeletVersion (upstream sets it at release).
INTERLINK_VERSION_SYMBOL = f"{INTERLINK_MODULE}/pkg/virtualkubelet.KubeletVersion"

ETCD_PACKAGE = "etcd-server"


def staging_version(kubernetes: str) -> str:
    """``v1.34.4`` -> ``v0.34.4``: the published release of the staging modules that goes with
    a Kubernetes release."""
    if not kubernetes.startswith("v1."):
        raise ValueError(f"not a Kubernetes v1 release: {kubernetes!r}")
    return "v0." + kubernetes[len("v1.") :]
