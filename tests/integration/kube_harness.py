"""Helpers of the tests that go through Kubernetes: the development cluster's API server,
interLink's virtual kubelet and API server, and the plugin in front of the personal pool.

``KubeCluster`` wraps the running cluster (``devcluster.ClusterInfo``) with a CoreV1 client,
kubectl, fresh namespaces (deleted when the session ends, which deletes their pods and so
their jobs), pods from ``tests/pods`` made ready for the API server, and waits with deadlines.
``ClusterJobs`` counts a pod's jobs of the cluster's plugin in the pool's schedd;
``private_cluster`` starts a cluster of a test's own (its own state directory and free
ports, the builds and the pool shared) and takes it down with every job it made.
"""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import yaml

from interlink_htcondor import devcluster
from interlink_htcondor.devcluster import ClusterInfo
from interlink_htcondor.devcluster import config as cconfig
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.local_plugin import force_remove, pool_schedd

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

    def create_objects(self, docs: list[Json], namespace: str) -> None:
        """Create ConfigMaps and Secrets (``load_objects``) in ``namespace``."""
        for d in docs:
            body = copy.deepcopy(d)
            body["metadata"]["namespace"] = namespace
            if d["kind"] == "ConfigMap":
                self.core.create_namespaced_config_map(namespace, cast(Any, body))
            elif d["kind"] == "Secret":
                self.core.create_namespaced_secret(namespace, cast(Any, body))
            else:
                raise ValueError(f"not a ConfigMap or Secret: {d['kind']}")

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

    def list_pods(self, namespace: str) -> dict[str, Any]:
        """The namespace's pods by name (one call)."""
        items: list[Any] = self.core.list_namespaced_pod(namespace).items
        return {p.metadata.name: p for p in items}

    def wait_pods(
        self,
        namespace: str,
        until: Mapping[str, Callable[[Any], bool]],
        timeout: float = 300,
    ) -> dict[str, Any]:
        """Poll the namespace (one list call a second) until ``until[name](pod)`` holds for
        every pod named; the pods then. AssertionError naming those that did not get there,
        with their states and the namespace's events."""
        deadline = time.monotonic() + timeout
        while True:
            pods = self.list_pods(namespace)
            waiting = [n for n, ok in until.items() if n not in pods or not ok(pods[n])]
            if not waiting:
                return pods
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        states = {n: (pods[n].status.to_dict() if n in pods else "absent") for n in sorted(waiting)}
        raise AssertionError(
            f"pods of {namespace} not there after {timeout} s: {waiting}\n{states}\n"
            f"events:\n{self.events_text(namespace)}"
        )

    def events(self, namespace: str, name: str | None = None) -> list[Any]:
        """Core/v1 Events of the namespace (of one object when ``name`` is given)."""
        selector = f"involvedObject.name={name}" if name else None
        return list(self.core.list_namespaced_event(namespace, field_selector=selector).items)

    def events_text(self, namespace: str) -> str:
        return self.kubectl("get", "events", "-n", namespace, "-o", "wide").stdout.decode()

    def logs(self, namespace: str, pod: str, *args: str, timeout: float = 60) -> str:
        """``kubectl logs`` of the pod (``-c NAME`` and other options in ``args``)."""
        return self.kubectl_ok("logs", "-n", namespace, pod, *args, timeout=timeout)

    def restart(self, component: str) -> ClusterInfo:
        """``devcluster.restart`` of one component of the selected cluster (the one
        ``devcluster.ensure_up()`` gave), keeping ``info`` (the pids) current for the tests
        that run after this one."""
        self.info = devcluster.restart(component, say=None)
        return self.info

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


def load_objects(file: str, namespace: str | None = None) -> list[Json]:
    """The ConfigMaps/Secrets of a ``tests/pods`` file, in ``namespace`` when given."""
    docs = [d for d in yaml.safe_load_all((PODS / file).read_text()) if d]
    if namespace is not None:
        for d in docs:
            d["metadata"]["namespace"] = namespace
    return docs


def phase_is(*phases: str) -> Callable[[Any], bool]:
    return lambda pod: pod.status.phase in phases


def job_constraint(cluster: KubeCluster, pod_uid: str) -> str:
    return f'InterlinkPodUID == "{pod_uid}" && InterlinkPlugin == "{cluster.plugin_instance}"'


def node_condition(node: Any, kind: str) -> Any:
    return next((c for c in node.status.conditions or [] if c.type == kind), None)


class ClusterJobs:
    """The jobs of one cluster's plugin in the pool's schedd (located again and retried once
    on failure: another session may restart the shared pool)."""

    PROJECTION = ("ClusterId", "ProcId", "JobStatus", "InterlinkPodUID", "InterlinkPodNamespace")

    def __init__(self, pool: PoolInfo, instance: str) -> None:
        self.pool = pool
        self.instance = instance

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        import htcondor2

        try:
            return fn(pool_schedd(self.pool))
        except htcondor2.HTCondorException:
            time.sleep(2)
            return fn(pool_schedd(self.pool))

    def constraint(self, extra: str = "") -> str:
        c = f'InterlinkPlugin == "{self.instance}"'
        return f"{c} && ({extra})" if extra else c

    def query(self, extra: str = "", history: bool = False) -> list[Any]:
        c = self.constraint(extra)
        proj = list(self.PROJECTION)
        found = list(self._call(lambda s: s.query(constraint=c, projection=proj)))
        if history:
            found += list(
                self._call(lambda s: s.history(constraint=c, projection=proj, match=10_000))
            )
        return found

    def of_pod(self, uid: str, history: bool = False) -> list[Any]:
        return self.query(f'InterlinkPodUID == "{uid}"', history=history)

    def ids_of_pod(self, uid: str) -> set[str]:
        """Distinct job ids of the pod, queue and history: one means never duplicated."""
        return {f"{a['ClusterId']}.{a['ProcId']}" for a in self.of_pod(uid, history=True)}

    def ids_by_pod(self, extra: str) -> dict[str, set[str]]:
        """Distinct job ids, queue and history, of every pod of the jobs matching ``extra``,
        by pod uid (one history scan, which takes seconds on a long-lived pool)."""
        found: dict[str, set[str]] = {}
        for a in self.query(extra, history=True):
            found.setdefault(a["InterlinkPodUID"], set()).add(f"{a['ClusterId']}.{a['ProcId']}")
        return found

    def in_namespace(self, namespace: str) -> list[Any]:
        """Jobs still in the queue for pods of ``namespace``."""
        return self.query(f'InterlinkPodNamespace == "{namespace}"')

    def wait_gone(self, extra: str, timeout: float = 120) -> list[Any]:
        """Poll until no job matching ``extra`` is left in the queue; what is left then."""
        deadline = time.monotonic() + timeout
        left = self.query(extra)
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = self.query(extra)
        return left

    def remove_all(self, reason: str) -> None:
        """Force out every job of this plugin instance (a test cluster's leftovers)."""
        c = self.constraint()
        self._call(lambda s: force_remove(s, c, reason, grace=5))


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port_offset(start: int = 5000, step: int = 100, tries: int = 50) -> int:
    """A port offset (from the default cluster's ports) whose ports are all valid and none
    is listening: a cluster of a test's own, beside whatever clusters already run here."""
    for i in range(tries):
        offset = start + i * step
        try:
            ports = cconfig.ports_for_offset(offset)
        except ValueError:
            continue
        if not any(listening(p) for p in ports.all().values()):
            return offset
    raise AssertionError(f"no free set of cluster ports from offset {start} on")


@contextlib.contextmanager
def private_cluster(root: Path, pool: PoolInfo) -> Iterator[KubeCluster]:
    """A cluster of the caller's own in ``root`` (free ports; the builds and the pool
    shared), for tests that stop or restart its components. Afterwards its namespaces are
    deleted (their pods' jobs with them), it is taken down, and any job its plugin left is
    removed."""
    paths = devcluster.ClusterPaths(root, bin_root=devcluster.builtin_paths().bin)
    ports = cconfig.ports_for_offset(free_port_offset())
    info = devcluster.ensure_up(paths=paths, ports=ports, say=None)
    cluster = KubeCluster(info)
    jobs = ClusterJobs(pool, info.plugin_instance)
    try:
        yield cluster
    finally:
        try:
            if devcluster.read_info(paths) is not None:
                cluster.delete_namespaces(timeout=120)
        finally:
            devcluster.down(paths=paths, say=None)
            jobs.remove_all("test cluster taken down")
