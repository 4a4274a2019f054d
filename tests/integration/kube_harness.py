"""Helpers of the tests that go through Kubernetes: the development cluster's API server,
interLink's virtual kubelet and API server, and the plugin in front of the personal pool.

``KubeCluster`` wraps the running cluster (``devcluster.ClusterInfo``) with a CoreV1 client,
kubectl, fresh namespaces (deleted when the session ends, which deletes their pods and so
their jobs), pods from ``tests/pods`` made ready for the API server, and waits with deadlines.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml

from interlink_htcondor.devcluster import ClusterInfo

PODS = Path(__file__).resolve().parent.parent / "pods"
Json = dict[str, Any]

# Written by the API server, never sent by a client.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


def load_manifest(file: str) -> Json:
    """A pod from ``tests/pods`` as a client would send it: no server-written metadata, no
    status, no ``nodeName`` (the scheduler places it), in no namespace yet."""
    path = PODS / file
    text = path.read_text()
    pod: Json = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    for key in (*SERVER_FIELDS, "namespace"):
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    pod.pop("status", None)
    pod["spec"].pop("nodeName", None)
    return pod


class KubeCluster:
    """The running development cluster, for tests."""

    def __init__(self, info: ClusterInfo) -> None:
        from kubernetes import client

        self.info = info
        self.api = info.api_client()
        self.core = client.CoreV1Api(self.api)
        self.namespaces: list[str] = []

    # -- facts -------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.info.kubeconfig

    @property
    def node_name(self) -> str:
        return self.info.node_name

    @property
    def plugin_socket(self) -> Path:
        return self.info.plugin_socket

    @property
    def plugin_instance(self) -> str:
        return self.info.plugin_instance

    # -- kubectl -----------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return self.info.kubectl(*args, input=input, timeout=timeout)

    def kubectl_ok(self, *args: str, input: bytes | None = None, timeout: float = 60) -> str:
        r = self.kubectl(*args, input=input, timeout=timeout)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr.decode(errors='replace')}"
        return r.stdout.decode(errors="replace")

    # -- namespaces and pods -----------------------------------------------------------------

    def new_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace whose ``default`` service account exists (pods are refused
        before the controller manager makes it)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.namespaces.append(name)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.core.read_namespaced_service_account("default", name)
                return name
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def delete_namespaces(self, names: list[str] | None = None, timeout: float = 180) -> list[str]:
        """Delete ``names`` (default: every namespace made here) and wait until they are gone
        (their pods deleted through the virtual kubelet, so their jobs removed); the names of
        those still there after ``timeout``."""
        from kubernetes.client.exceptions import ApiException

        names = list(self.namespaces if names is None else names)
        for ns in names:
            try:
                self.core.delete_namespace(ns)
            except ApiException as e:
                if e.status != 404:
                    raise
        deadline = time.monotonic() + timeout
        left = names
        while left and time.monotonic() < deadline:
            left = [ns for ns in left if self._exists(ns)]
            if left:
                time.sleep(1)
        self.namespaces = [ns for ns in self.namespaces if ns not in names or ns in left]
        return left

    def _exists(self, ns: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespace(ns)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def create_pod(self, manifest: Json, namespace: str) -> Any:
        """Create ``manifest`` (see ``load_manifest``) in ``namespace``; the V1Pod."""
        body = copy.deepcopy(manifest)
        body["metadata"]["namespace"] = namespace
        # The client serialises a plain dict as it is (camelCase), like kubectl would.
        return self.core.create_namespaced_pod(namespace, cast(Any, body))

    def read_pod(self, namespace: str, name: str) -> Any:
        return self.core.read_namespaced_pod(name, namespace)

    def wait_pod(
        self,
        namespace: str,
        name: str,
        until: Callable[[Any], bool],
        timeout: float = 240,
        what: str = "the condition",
    ) -> Any:
        """Poll the pod until ``until(pod)``; AssertionError with its last state otherwise."""
        deadline = time.monotonic() + timeout
        pod = None
        while True:
            pod = self.read_pod(namespace, name)
            if until(pod):
                return pod
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        events = self.kubectl("get", "events", "-n", namespace, "-o", "wide").stdout.decode()
        raise AssertionError(
            f"pod {namespace}/{name}: {what} not reached in {timeout} s; phase "
            f"{pod.status.phase}, status {pod.status.to_dict()}\nevents:\n{events}"
        )

    def wait_node_ready(self, timeout: float = 90) -> Any:
        """The node once its Ready condition is True. It turns False for up to 30 s when a
        ping of interLink fails (e.g. while a test restarts a component)."""
        deadline = time.monotonic() + timeout
        while True:
            node = self.core.read_node(self.node_name)
            conditions = node.status.conditions if node.status is not None else None
            ready = next((c for c in conditions or [] if c.type == "Ready"), None)
            if ready is not None and ready.status == "True":
                return node
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.node_name} not Ready after {timeout} s: {ready}")
            time.sleep(1)

    def pod_gone(self, namespace: str, name: str, timeout: float = 120) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.read_pod(namespace, name)
            except ApiException as e:
                if e.status == 404:
                    return
                raise
            time.sleep(0.5)
        raise AssertionError(f"pod {namespace}/{name} still exists after {timeout} s")


def phase_is(*phases: str) -> Callable[[Any], bool]:
    return lambda pod: pod.status.phase in phases


def job_constraint(cluster: KubeCluster, pod_uid: str) -> str:
    return f'InterlinkPodUID == "{pod_uid}" && InterlinkPlugin == "{cluster.plugin_instance}"'
