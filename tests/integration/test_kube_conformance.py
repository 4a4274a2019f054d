"""Every pod of ``tests/pods`` through the whole chain: created with the Kubernetes API,
placed by kube-scheduler, run by interLink's virtual kubelet and API server through the
plugin as HTCondor jobs; the phase, container statuses and logs read back from the API
server, compared with what a kubelet would report.

All the pods are created at once in one namespace (the pool runs several at a time), then
waited for together; each pod file is one row of ``ROWS`` and one test. The rows say what
this chain reports and, in ``kubelet``, how a kubelet's report differs (``docs/cluster.md``
has the same table). The same pods straight through the plugin are in
``test_plugin_conformance.py``.

What the virtual kubelet at the pinned interLink commit does to statuses (the rows assert
it): a terminated container's reason becomes ``Completed`` or ``Error: <exit code>`` (the
plugin's ``OOMKilled``, ``DeadlineExceeded``, ``ContainerCannotRun``... survive only in
exit codes and messages), every container of a failed pod gets the failing container's
reason, and the pod's own ``status.reason`` is set to the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kube_harness import PODS, ClusterJobs, Json, KubeCluster, load_manifest, load_objects
from volumes_pod import CONFIGMAPS, check_volumes_show

from interlink_htcondor.client import PluginClient
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.local_plugin import free_port

pytestmark = pytest.mark.integration

SECRETS = "volumes.secrets.yaml"
# Files of tests/pods that are not pods (objects the pods use, the plugin tests' input).
NOT_PODS = {CONFIGMAPS, SECRETS, "hello-world.projected.yaml"}
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Term:
    """A container's terminated state as the chain reports it. ``reason`` defaults to the
    virtual kubelet's rewrite of the exit code; ``message`` is a substring."""

    exit_code: int | tuple[int, ...]
    reason: str | tuple[str, ...] | None = None
    message: str | None = None

    def check(self, name: str, state: Any) -> None:
        t = state.terminated
        assert t is not None, f"{name}: not terminated: {state}"
        codes = self.exit_code if isinstance(self.exit_code, tuple) else (self.exit_code,)
        assert t.exit_code in codes, f"{name}: exit code {t.exit_code}, expected {codes}"
        reason = self.reason or ("Completed" if t.exit_code == 0 else f"Error: {t.exit_code}")
        reasons = reason if isinstance(reason, tuple) else (reason,)
        assert t.reason in reasons, f"{name}: reason {t.reason!r}, expected {reasons!r}"
        if self.message is not None:
            assert self.message in (t.message or ""), f"{name}: message {t.message!r}"


OK = Term(0)


@dataclass
class Outcome:
    """One row's pod as read back from the API server, its logs and its jobs."""

    pod: Any
    manifest: Json
    host_dir: Path
    logs: dict[str, str] = field(default_factory=dict)
    job_ids: set[str] = field(default_factory=set)

    def status_of(self, name: str) -> Any:
        for s in (self.pod.status.init_container_statuses or []) + (
            self.pod.status.container_statuses or []
        ):
            if s.name == name:
                return s
        raise AssertionError(f"no status for container {name}: {self.pod.status}")


LogCheck = Callable[[str, Outcome], None]


@dataclass(frozen=True)
class Row:
    """What one pod of ``tests/pods`` reaches through the chain.

    ``phase``/``reason`` are the pod's; ``containers``/``init`` each container's final
    state; ``logs`` each container's ``kubectl logs`` (exact text, or a check taking the
    text and the outcome); ``check`` anything else; ``job`` whether the pod reaches the
    plugin (one HTCondor job, the pod's ``JobID``) or never does (no job). ``settled``
    says when the pod is in the state to check (default: a terminal phase); ``adjust``
    changes the manifest before it is created (given a directory of the row's own that the
    site's hostPath policy allows, owned by the job user); ``kubelet`` is how a kubelet's
    report differs (empty when it does not)."""

    file: str
    phase: str
    reason: str | None = None
    containers: Mapping[str, Term] = field(default_factory=dict)
    init: Mapping[str, Term] = field(default_factory=dict)
    logs: Mapping[str, str | LogCheck] = field(default_factory=dict)
    check: Callable[[Outcome, KubeCluster], None] | None = None
    job: bool = True
    settled: Callable[[Any], bool] = lambda pod: pod.status.phase in TERMINAL
    adjust: Callable[[Json, Path], None] | None = None
    kubelet: str = ""


# -- checks of single rows ----------------------------------------------------------------------


def starts_with(prefix: str) -> LogCheck:
    def check(text: str, o: Outcome) -> None:
        assert text.startswith(prefix), text

    return check


def sorted_lines(*lines: str) -> LogCheck:
    """Stdout and stderr lines, in no defined relative order."""

    def check(text: str, o: Outcome) -> None:
        assert sorted(text.splitlines()) == sorted(lines), text

    return check


def contains(part: str, not_: str) -> LogCheck:
    def check(text: str, o: Outcome) -> None:
        assert part in text and not_ not in text, text

    return check


def _corpus_logs(text: str, o: Outcome) -> None:
    got = json.loads(text)
    container = o.manifest["spec"]["containers"][0]
    expected = {e["name"]: e["value"] for e in container["env"]}
    # Kubelet semantics: undefined references stay, $$ is an escaped $.
    expected["CORPUS_DOLLAR"] = "$HOME ${PATH} $1 $ $"
    escaped = got["env"].pop("CORPUS_ESCAPED_REF")
    del expected["CORPUS_ESCAPED_REF"]
    assert got["env"] == expected
    assert got["argv"] == container["args"]
    # The virtual kubelet expands env values itself and sends them in the order of a Go
    # map; the plugin then expands them again. A kubelet gives "$(CORPUS_TABS)"; here that
    # unless CORPUS_TABS came first in the virtual kubelet's order (docs/cluster.md).
    assert escaped in ("$(CORPUS_TABS)", expected["CORPUS_TABS"]), escaped


def _expansion_logs(text: str, o: Outcome) -> None:
    head = "hello-world|$(GREETING)|$(UNDEFINED_VAR)|$(GREETING|hello, world!|"
    assert text.startswith(head), text
    # ESCAPED: "$$(NAME)" is "$(NAME)" for a kubelet; expanded twice here when NAME came
    # first in the virtual kubelet's order (see _corpus_logs).
    assert text[len(head) :] in ("$(NAME)\n", "world\n"), text


def _volumes_logs(out: str, o: Outcome) -> None:
    check_volumes_show(out, "volumes")


def _init_order(o: Outcome, cluster: KubeCluster) -> None:
    first, second = o.status_of("first").state.terminated, o.status_of("second").state.terminated
    assert first.finished_at <= second.started_at


def _env_from_pending(o: Outcome, cluster: KubeCluster) -> None:
    # The virtual kubelet's ConfigMap/Secret informers never start at this commit, so it
    # cannot resolve valueFrom/envFrom: no status, no create call, no Event (its event
    # recorder is never started either); only its log says why. The plugin itself resolves
    # them when it gets them: test_plugin_conformance.py::
    # test_env_from_configmap_secret_and_field_refs.
    s = o.pod.status
    assert s.container_statuses is None and s.pod_ip is None, s
    assert "JobID" not in (o.pod.metadata.annotations or {})
    assert [e.reason for e in cluster.events(o.pod.metadata.namespace, "env-from")] == ["Scheduled"]
    log = cluster.info.log_path("virtual-kubelet").read_text(errors="replace")
    ns = o.pod.metadata.namespace
    assert f'failed to sync pod \\"{ns}/env-from\\" in the provider: configmap' in log


def _unschedulable(o: Outcome, cluster: KubeCluster) -> None:
    # kube-scheduler keeps it: the node's capacity is the pool's (16 GiB here).
    assert o.pod.spec.node_name is None
    cond = next(c for c in o.pod.status.conditions if c.type == "PodScheduled")
    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    events = cluster.events(o.pod.metadata.namespace, "unschedulable")
    assert any(
        e.reason == "FailedScheduling" and "Insufficient memory" in e.message for e in events
    ), events


def _scheduled_by_kube(pod: Any) -> bool:
    return any(
        c.type == "PodScheduled" and c.status == "False" for c in pod.status.conditions or []
    )


def _localhost_port(manifest: Json, host_dir: Path) -> None:
    # Pods share the machine's loopback: a port no other test uses.
    port = free_port()
    for c in manifest["spec"]["containers"]:
        c["env"] = [{"name": "PORT", "value": str(port)}]
        for p in c.get("ports") or []:
            p["containerPort"] = port


def _host_path(manifest: Json, host_dir: Path) -> None:
    """The pod's one hostPath volume at the row's directory (the file's /srv/... is outside
    what the site allows)."""
    manifest["spec"]["volumes"][0]["hostPath"]["path"] = str(host_dir)


def _port_and_host_path(manifest: Json, host_dir: Path) -> None:
    _localhost_port(manifest, host_dir)
    _host_path(manifest, host_dir)


def _listening_now(manifest: Json, host_dir: Path) -> None:
    # The server waits for "listen" before it binds: the startup probe passes at once.
    _port_and_host_path(manifest, host_dir)
    (host_dir / "listen").touch()


def _running(*names: str) -> Callable[[Any], bool]:
    def settled(pod: Any) -> bool:
        states = {s.name: s.state for s in pod.status.container_statuses or []}
        return all(n in states and states[n].running is not None for n in names)

    return settled


def _ready(pod: Any) -> bool:
    return any(s.ready for s in pod.status.container_statuses or [])


def _restarted(pod: Any) -> bool:
    return any(s.restart_count >= 1 for s in pod.status.container_statuses or [])


def _plugin_ready(cluster: KubeCluster, pod: Any) -> bool:
    """The ``ready`` the cluster's plugin reports for the pod's first container."""
    body = cluster.api.sanitize_for_serialization(pod)

    async def ask() -> Any:
        async with PluginClient(f"unix://{cluster.plugin_socket}") as plugin:
            return await plugin.status([body])

    (status,) = asyncio.run(ask())
    return bool(status["containers"][0].get("ready"))


def _readiness_is_the_virtual_kubelets(o: Outcome, cluster: KubeCluster) -> None:
    # The server now answers 503 on /ready: the plugin's readiness probe turns the container
    # unready, but the virtual kubelet at the pinned commit sets ready for every running
    # container whatever the plugin says, so the API server keeps showing it ready.
    ns, name = o.pod.metadata.namespace, o.pod.metadata.name
    web = o.status_of("web")
    assert web.ready and web.state.running is not None, web
    deadline = time.monotonic() + 60
    while not _plugin_ready(cluster, o.pod):
        assert time.monotonic() < deadline, "the plugin never reported the container ready"
        time.sleep(0.5)
    (o.host_dir / "unready").touch()
    while _plugin_ready(cluster, o.pod):
        assert time.monotonic() < deadline, "the plugin never reported the container unready"
        time.sleep(0.5)
    pod = cluster.read_pod(ns, name)
    assert pod.status.phase == "Running" and pod.status.container_statuses[0].ready


def _liveness_restarts(o: Outcome, cluster: KubeCluster) -> None:
    # restartPolicy Always: the failed liveness probe restarts the container in its job.
    s = o.status_of("liveness")
    assert s.restart_count >= 1, s
    if s.state.waiting is not None:
        assert s.state.waiting.reason == "CrashLoopBackOff", s
        assert "Liveness probe failed" in s.state.waiting.message, s
    else:
        assert s.state.running is not None, s
    ns, name = o.pod.metadata.namespace, o.pod.metadata.name
    text = cluster.logs(ns, name, "-c", "liveness")
    assert re.fullmatch(r"instance [2-9]\d*\n", text), text  # not the first instance


def _wait_logged(cluster: KubeCluster, o: Outcome, expected: dict[str, str]) -> None:
    """Until each container has logged its first line (its signal handler is then set)."""
    ns, name = o.pod.metadata.namespace, o.pod.metadata.name
    deadline = time.monotonic() + 60
    while any(cluster.logs(ns, name, "-c", c) != text for c, text in expected.items()):
        assert time.monotonic() < deadline, f"{name}: {expected} not logged in 60 s"
        time.sleep(0.5)


def _prestop_hooks_on_delete(o: Outcome, cluster: KubeCluster) -> None:
    # `kubectl delete` (grace 10 s): the httpGet hook reaches the server, the sleep hook
    # holds the other container's SIGTERM back 2 s; both write into the row's directory.
    ns, name = o.pod.metadata.namespace, o.pod.metadata.name
    _wait_logged(cluster, o, {"web": "serving\n", "sleeper": "sleeping\n"})
    deleted_at = time.time()
    cluster.kubectl_ok("delete", "pod", "-n", ns, name, "--wait=true", timeout=120)
    web = (o.host_dir / "web").read_text().splitlines()
    assert web == ["/prestop kube-lifecycle/interlink-htcondor", "TERM"], web
    assert float((o.host_dir / "sleeper").read_text()) - deleted_at >= 1.9


def _prestop_exec_on_delete(o: Outcome, cluster: KubeCluster) -> None:
    ns, name = o.pod.metadata.namespace, o.pod.metadata.name
    _wait_logged(cluster, o, {"main": "started\n"})
    cluster.kubectl_ok("delete", "pod", "-n", ns, name, "--wait=true", timeout=120)
    assert (o.host_dir / "marker").read_text() == "prestop-ran\n"


# -- the table ----------------------------------------------------------------------------------

ROWS: tuple[Row, ...] = (
    Row("hello-world.json", "Succeeded", "Completed", {"hello": OK}, logs={"hello": "hello world\n"}),  # noqa: E501
    Row("env-corpus.json", "Succeeded", "Completed", {"dump": OK}, logs={"dump": _corpus_logs},
        kubelet="CORPUS_ESCAPED_REF is always $(CORPUS_TABS)"),
    Row("var-expansion.yaml", "Succeeded", "Completed", {"expand": OK},
        logs={"expand": _expansion_logs}, kubelet="ESCAPED is always $(NAME)"),
    Row("default-entrypoint.yaml", "Succeeded", "Completed", {"py": OK},
        logs={"py": starts_with("entrypoint ran (3, ")}),
    Row("exit-42.yaml", "Failed", "Error: 42", {"fail": Term(42)},
        logs={"fail": sorted_lines("about to fail", "on stderr")},
        kubelet="container reason Error; no pod reason"),
    Row("command-not-found.yaml", "Failed", "Error: 127",
        {"missing": Term(127, message="/definitely/not/a/command: no such file or directory")},
        kubelet="containerd: exit 128, reason StartError, message from the runtime; no pod reason"),
    Row("init-order.yaml", "Succeeded", "Completed", {"main": OK}, {"first": OK, "second": OK},
        logs={"main": "app\nfirst\nsecond\n", "first": "", "second": ""}, check=_init_order),
    Row("init-fail-fast.yaml", "Failed", "Error: 1",
        {"main": Term(1, message="init container breaks failed (exit 3)")},
        # The virtual kubelet's known defect (docs/cluster.md): when its first status poll
        # of the pod already sees both init containers, it writes `never`'s exit code and
        # reason onto `breaks`, and `never` keeps the plugin's reason. The plugin's own
        # answer is exactly 3 (test_plugin_conformance.py).
        {"breaks": Term((3, 1)), "never": Term(1, ("Error: 1", "InitContainerFailed"),
                                               "init container breaks failed (exit 3)")},
        logs={"breaks": "init failing\n", "never": "", "main": ""},
        kubelet="`never` and `main` stay waiting (PodInitializing); init reason Error; no pod reason"),  # noqa: E501
    Row("shared-emptydir.yaml", "Succeeded", "Completed", {"writer": OK, "reader": OK},
        logs={"reader": "shared-data\nREADONLY\n"}),
    Row("volumes.yaml", "Succeeded", "Completed", {"show": OK}, logs={"show": _volumes_logs}),
    Row("env-from.yaml", "Pending", None, job=False, settled=lambda pod: True,
        check=_env_from_pending,
        kubelet="Succeeded: the kubelet resolves valueFrom and envFrom"),
    Row("oom.yaml", "Failed", "Error: 137",
        {"hog": Term(137, message="memory limit of 100663296 bytes exceeded")},
        logs={"hog": contains("allocated 16 MiB", not_="survived")},
        kubelet="container reason OOMKilled, no message; no pod reason"),
    Row("deadline.yaml", "Failed", "Error: 143",
        {"sleeper": Term(143, message="pod ran longer than activeDeadlineSeconds=4")},
        logs={"sleeper": "sleeping\n"},
        kubelet="pod reason DeadlineExceeded (its message: active longer than the deadline); "
        "container exit 137 or 143, reason Error"),
    Row("localhost.yaml", "Succeeded", "Completed", {"server": OK, "client": OK},
        logs={"client": "pong from the server container\n"}, adjust=_localhost_port),
    Row("logs.yaml", "Succeeded", "Completed", {"talk": OK},
        logs={"talk": "".join(f"line-{i}\nerr-{i}\n" for i in range(1, 7))}),
    Row("sleeper.yaml", "Succeeded", "Completed", {"sleep": OK}, logs={"sleep": "awake\ndone\n"}),
    Row("unschedulable.yaml", "Pending", None, job=False, settled=_scheduled_by_kube,
        check=_unschedulable),
    Row("prestop.yaml", "Running", "Running",
        settled=_running("main"), adjust=_host_path, check=_prestop_exec_on_delete),
    Row("poststart.yaml", "Succeeded", "Completed", {"main": OK},
        logs={"main": "hello from postStart\n"}),
    Row("poststart-fail.yaml", "Failed", "Error: 143",
        {"main": Term((143, 137), message='Exec lifecycle hook ([sh -c echo hook failed on '
                      'purpose; exit 3]) for Container "main" in Pod "poststart-fail_')},
        kubelet="container reason FailedPostStartHook (the VK rewrites it to Error: <code>)"),
    Row("liveness-http.yaml", "Failed", "Error: 143",
        {"web": Term((143, 137), message="Liveness probe failed: HTTP probe failed with "
                     "statuscode: 500; container web failed liveness probe")},
        logs={"web": "serving\n"}, adjust=_localhost_port,
        kubelet="container reason Error; no pod reason"),
    Row("liveness-exec.yaml", "Running", "Running", settled=_restarted,
        check=_liveness_restarts),
    Row("probes-ready.yaml", "Running", "Running", logs={"web": "listening\n"},
        settled=_ready, adjust=_listening_now, check=_readiness_is_the_virtual_kubelets,
        kubelet="ready turns false when the readiness probe fails"),
    Row("prestop-http-sleep.yaml", "Running", "Running",
        settled=_running("web", "sleeper"), adjust=_port_and_host_path,
        check=_prestop_hooks_on_delete),
)  # fmt: skip


ROW_BY_FILE = {r.file: r for r in ROWS}


# -- the batch ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(kube_cluster: KubeCluster, pool: PoolInfo) -> Iterator[dict[str, Outcome]]:
    """Every row's pod created at once in a fresh namespace, waited for together; then
    their logs and jobs."""
    ns = kube_cluster.new_namespace("conformance")
    host_root = pool.shared_dir / "hostpath" / f"kube-{ns}"
    try:
        kube_cluster.create_objects(load_objects(CONFIGMAPS) + load_objects(SECRETS), ns)
        manifests: dict[str, Json] = {}
        host_dirs: dict[str, Path] = {}
        for row in ROWS:
            manifest = load_manifest(row.file)
            host_dirs[row.file] = host_dir = host_root / manifest["metadata"]["name"]
            if row.adjust is not None:
                host_dir.mkdir(parents=True, mode=0o755)
                for d in (host_root, host_dir):
                    os.chown(d, pool.job_uid, pool.job_gid)
                row.adjust(manifest, host_dir)
            kube_cluster.create_pod(manifest, ns)
            manifests[row.file] = manifest
        name = {row.file: manifests[row.file]["metadata"]["name"] for row in ROWS}
        pods = kube_cluster.wait_pods(ns, {name[r.file]: r.settled for r in ROWS}, timeout=600)
        outcomes = {
            r.file: Outcome(pods[name[r.file]], manifests[r.file], host_dirs[r.file]) for r in ROWS
        }
        jobs = ClusterJobs(pool, kube_cluster.plugin_instance)
        calls = [(o, c) for r in ROWS for o in [outcomes[r.file]] for c in r.logs]
        with ThreadPoolExecutor(4) as ex:
            texts = ex.map(
                lambda oc: kube_cluster.logs(ns, oc[0].pod.metadata.name, "-c", oc[1]), calls
            )
            for (o, c), text in zip(calls, texts, strict=True):
                o.logs[c] = text
            by_pod = jobs.ids_by_pod(f'InterlinkPodNamespace == "{ns}"')
        for o in outcomes.values():
            o.job_ids = by_pod.get(o.pod.metadata.uid, set())
        yield outcomes
    finally:
        left = kube_cluster.delete_namespaces([ns])
        shutil.rmtree(host_root, ignore_errors=True)
        assert not left, f"namespace {ns} not deleted in time"


def test_every_pod_file_has_a_row() -> None:
    files = {p.name for p in PODS.iterdir() if p.suffix in (".yaml", ".json")}
    assert sorted(files - NOT_PODS) == sorted(ROW_BY_FILE)


@pytest.mark.parametrize("file", [r.file for r in ROWS])
def test_pod_through_kubernetes(
    file: str, batch: dict[str, Outcome], kube_cluster: KubeCluster
) -> None:
    row, o = ROW_BY_FILE[file], batch[file]
    pod = o.pod
    assert pod.status.phase == row.phase, pod.status
    assert pod.status.reason == row.reason, pod.status
    for name, term in row.init.items():
        term.check(name, o.status_of(name).state)
    for name, term in row.containers.items():
        term.check(name, o.status_of(name).state)
    if row.containers:
        # Every container of the pod is reported, each once, in the spec's order.
        names = [c["name"] for c in o.manifest["spec"]["containers"]]
        assert [s.name for s in pod.status.container_statuses] == names
        if pod.status.phase in TERMINAL:
            assert not any(s.ready for s in pod.status.container_statuses)
    for name, expected in row.logs.items():
        if isinstance(expected, str):
            assert o.logs[name] == expected, (name, o.logs[name])
        else:
            expected(o.logs[name], o)
    if row.job:
        # Exactly one HTCondor job of the cluster's plugin, the one the pod names.
        assert len(o.job_ids) == 1, o.job_ids
        assert pod.metadata.annotations["JobID"] in o.job_ids
        assert pod.spec.node_name == kube_cluster.node_name
    else:
        assert o.job_ids == set()
    if row.check is not None:
        row.check(o, kube_cluster)
