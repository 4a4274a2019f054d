"""The Helm chart installed with real Helm into the development cluster's API server.

Helm is Helm 4's own Go SDK, bundled in the ``helm-python-sdk`` wheel as ``libhelm_c`` (the
wheel has no ``helm`` binary; ``Config.install``/``status``/``upgrade``/``uninstall`` run the
same ``action`` code as ``helm install``...). Each value set of the chart is installed in a
fresh namespace labelled ``pod-security.kubernetes.io/enforce=restricted`` (warn and audit
too), after the objects an admin creates first (the Secrets and the PVC the values name).

**The chart's pods never start here.** The cluster has no kubelet: its only node is interLink's
virtual node, tainted ``virtual-node.interlink/no-schedule`` so that only pods tolerating it
land there (and become HTCondor jobs). The install therefore uses Helm 4's ``hookOnly`` wait
strategy, its default and what ``--wait=false`` means there (the chart has no hooks), and the
chart's pods are checked to be *created* (admitted by the API server, Pod Security Admission
``restricted`` included) and then left Pending by the scheduler. What a kubelet would do with
them is checked statically instead: the probe commands answer against a real plugin (the
cluster's own, on its socket), the mounted config loads with the settings model, every
ConfigMap, Secret, PVC and ServiceAccount a pod references exists, the files the configs name
are keys of the Secrets mounted there, and interLink's config uses only keys its pinned source
knows.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fcntl
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from _chart_support import CHART, ROOT, SERVICE_MONITOR_SCHEMA, VALUE_SETS, render
from kube_harness import KubeCluster

from interlink_htcondor import devcluster, settings

Json = dict[str, Any]
RELEASE = "site"
FULLNAME = f"{RELEASE}-interlink-htcondor"
PSA_LEVELS = ("enforce", "warn", "audit")
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"
TEST_MARK = {"interlink-htcondor.test/stand-in": "true"}
CRD_LOCK = Path("/tmp/interlink-htcondor-servicemonitor-crd.lock")

# What an admin creates before installing, for the values that name it: name -> (type, keys).
ADMIN_SECRETS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "default": {},
    "sidecar-socket": {
        "il-tls": ("kubernetes.io/tls", ("tls.crt", "tls.key", "ca.crt")),
        "schedd-scitoken": ("Opaque", ("token",)),
    },
    "tcp-metrics": {
        "plugin-tls": ("kubernetes.io/tls", ("tls.crt", "tls.key")),
        "plugin-bearer": ("Opaque", ("token",)),
        "schedd-idtoken": ("Opaque", ("plugin",)),
    },
}
ADMIN_PVCS = {"default": (), "sidecar-socket": (), "tcp-metrics": ("grid-shared",)}

# The changed value of `helm upgrade`: a config change, which must roll the pod.
UPGRADE_CONFIG = {"policy": {"accounting_groups": {"*": "group_upgraded"}}}


# -- kubectl -----------------------------------------------------------------------------------


def get_json(cluster: KubeCluster, *args: str) -> Json:
    out: Json = json.loads(cluster.kubectl_ok("get", *args, "-o", "json"))
    return out


def apply(
    cluster: KubeCluster, ns: str, docs: list[Json], *extra: str
) -> subprocess.CompletedProcess[bytes]:
    body = yaml.safe_dump_all(docs).encode()
    return cluster.kubectl("apply", "-n", ns, *extra, "-f", "-", input=body)


def namespace_objects(cluster: KubeCluster, ns: str) -> set[tuple[str, str]]:
    """(kind, name) of every object of every listable namespaced type in ``ns``, less Events
    (the record of what happened, which outlives the objects)."""
    types = cluster.kubectl_ok(
        "api-resources", "--namespaced", "--verbs=list", "-o", "name"
    ).split()
    types = [t for t in types if t not in ("events", "events.events.k8s.io")]
    items = get_json(cluster, ",".join(types), "-n", ns)["items"]
    return {(i["kind"], i["metadata"]["name"]) for i in items}


def restricted_namespace(cluster: KubeCluster) -> str:
    ns = cluster.new_namespace("chart")
    set_psa(cluster, ns, "restricted")
    return ns


def set_psa(cluster: KubeCluster, ns: str, level: str) -> None:
    labels = [f"pod-security.kubernetes.io/{mode}={level}" for mode in PSA_LEVELS]
    cluster.kubectl_ok("label", "namespace", ns, "--overwrite", *labels)


def pod_dry_run(cluster: KubeCluster, ns: str, spec: Json) -> subprocess.CompletedProcess[bytes]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dry"}, "spec": spec}
    return cluster.kubectl(
        "create", "--dry-run=server", "-n", ns, "-f", "-", input=json.dumps(pod).encode()
    )


def assert_psa_enforced(cluster: KubeCluster, ns: str) -> None:
    """Control: this API server does enforce the namespace's level (a pod with no security
    context is refused), so the pods admitted below were admitted under ``restricted``."""
    r = pod_dry_run(cluster, ns, {"containers": [{"name": "c", "image": "busybox"}]})
    assert r.returncode != 0 and b'violates PodSecurity "restricted' in r.stderr, r.stderr


# -- admin objects -----------------------------------------------------------------------------


def create_admin_objects(cluster: KubeCluster, ns: str, value_set: str) -> None:
    docs: list[Json] = []
    for name, (kind, keys) in ADMIN_SECRETS[value_set].items():
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": kind,
                "metadata": {"name": name},
                # Nothing reads them here: the API server checks the keys of a TLS Secret.
                "stringData": {k: f"placeholder {k} of {name}" for k in keys},
            }
        )
    for name in ADMIN_PVCS[value_set]:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
    if docs:
        r = apply(cluster, ns, docs)
        assert r.returncode == 0, r.stderr.decode()


# -- the ServiceMonitor's CRD ------------------------------------------------------------------


def structural(schema: Json) -> Json:
    """``SERVICE_MONITOR_SCHEMA`` (JSON schema) as a CRD's structural OpenAPI schema: no
    ``const`` (an ``enum`` of one), a ``type`` everywhere, no ``additionalProperties: false``
    (a CRD prunes unknown fields instead; the test compares what the API server stored)."""
    out: Json = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "additionalProperties" and value is False:
            continue
        elif key == "properties":
            out[key] = {name: structural(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = structural(value)
        else:
            out[key] = value
    out.setdefault("type", "string")
    return out


def service_monitor_crd() -> Json:
    """A stand-in for prometheus-operator's ServiceMonitor CRD (its own manifest is not in any
    registry reachable here): group, version, kind and scope as upstream, and a schema of
    the fields the chart sets, with the types and constraints the unit test checks."""
    spec = structural(SERVICE_MONITOR_SCHEMA["properties"]["spec"])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": SERVICE_MONITOR_CRD, "labels": TEST_MARK},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": "ServiceMonitor",
                "listKind": "ServiceMonitorList",
                "plural": "servicemonitors",
                "singular": "servicemonitor",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {"spec": spec},
                        }
                    },
                }
            ],
        },
    }


def crd_exists(cluster: KubeCluster) -> Json | None:
    r = cluster.kubectl("get", "crd", SERVICE_MONITOR_CRD, "-o", "json")
    if r.returncode != 0:
        assert b"NotFound" in r.stderr, r.stderr
        return None
    out: Json = json.loads(r.stdout)
    return out


def delete_stand_in_crd(cluster: KubeCluster) -> None:
    found = crd_exists(cluster)
    if found is None:
        return
    labels = found["metadata"].get("labels") or {}
    assert TEST_MARK.items() <= labels.items(), (
        f"{SERVICE_MONITOR_CRD} exists and is not this test's stand-in: leaving it alone"
    )
    cluster.kubectl_ok("delete", "crd", SERVICE_MONITOR_CRD, "--wait=true", timeout=120)


@contextlib.contextmanager
def crd_lock(timeout: float = 300) -> Iterator[None]:
    """The CRD is cluster-wide: one test session at a time on this machine handles it."""
    with CRD_LOCK.open("a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{CRD_LOCK} held for {timeout} s"
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def stand_in_crd(cluster: KubeCluster) -> Iterator[None]:
    """The stand-in CRD, Established, for the block; deleted afterwards."""
    r = apply(cluster, "default", [service_monitor_crd()], "--server-side")
    assert r.returncode == 0, r.stderr.decode()
    try:
        cluster.kubectl_ok(
            "wait", "--for=condition=Established", f"crd/{SERVICE_MONITOR_CRD}", "--timeout=60s"
        )
        # Discovery (Helm's REST mapper) sees a new type shortly after it is Established.
        deadline = time.monotonic() + 60
        while "servicemonitors" not in cluster.kubectl_ok(
            "api-resources", "--api-group=monitoring.coreos.com", "-o", "name"
        ):
            assert time.monotonic() < deadline, "ServiceMonitor never appeared in discovery"
            time.sleep(0.5)
        yield
    finally:
        delete_stand_in_crd(cluster)


# -- pods --------------------------------------------------------------------------------------


def wait_pods(
    cluster: KubeCluster, ns: str, selector: str, pending_for: str, timeout: float = 90
) -> list[Json]:
    """Pods matching ``selector`` once each has been looked at by the scheduler; fails with
    the namespace's events (a refusal by admission shows as FailedCreate there)."""
    deadline = time.monotonic() + timeout
    while True:
        pods = get_json(cluster, "pods", "-n", ns, "-l", selector)["items"]
        if pods and all(scheduled_condition(p) is not None for p in pods):
            return list(pods)
        if time.monotonic() > deadline:
            events = cluster.kubectl_ok("get", "events", "-n", ns)
            raise AssertionError(f"no pod of {pending_for} admitted and seen:\n{events}")
        time.sleep(0.5)


def scheduled_condition(pod: Json) -> Json | None:
    for c in pod.get("status", {}).get("conditions") or []:
        if c["type"] == "PodScheduled":
            return dict(c)
    return None


def assert_unscheduled(pod: Json) -> None:
    """No kubelet here: the pod is admitted but stays Pending, kept off interLink's node."""
    assert "nodeName" not in pod["spec"], pod["spec"].get("nodeName")
    assert pod["status"]["phase"] == "Pending"
    cond = scheduled_condition(pod)
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "Unschedulable"
    # interLink's taint, or first an unbound PersistentVolumeClaim (no provisioner here).
    assert "untolerated taint" in cond["message"] or "PersistentVolumeClaims" in cond["message"]


def has_api_token(pod: Json) -> bool:
    """Whether the ServiceAccount admission plugin gave the pod an API token volume."""
    return any(v["name"].startswith("kube-api-access-") for v in pod["spec"].get("volumes", []))


def label_selector(match_labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def assert_selectors_pick_only(cluster: KubeCluster, ns: str, plugin_pod: str) -> None:
    """Every Service and NetworkPolicy of the release selects the plugin's pod and no other
    pod in the namespace (the token-refresh Job's pod exists by now when enabled)."""
    selectors = [
        s["spec"]["selector"]
        for s in get_json(cluster, "services", "-n", ns)["items"]
        if s["spec"].get("selector")
    ]
    selectors += [
        p["spec"]["podSelector"]["matchLabels"]
        for p in get_json(cluster, "networkpolicies", "-n", ns)["items"]
    ]
    assert selectors
    for match_labels in selectors:
        pods = get_json(cluster, "pods", "-n", ns, "-l", label_selector(match_labels))["items"]
        assert [p["metadata"]["name"] for p in pods] == [plugin_pod], match_labels


# -- references and files ----------------------------------------------------------------------


def referenced(pod_spec: Json) -> set[tuple[str, str]]:
    """(type, name) of every object a pod spec refers to."""
    refs = {("serviceaccount", pod_spec.get("serviceAccountName", "default"))}
    for v in pod_spec.get("volumes", []):
        if "configMap" in v:
            refs.add(("configmap", v["configMap"]["name"]))
        if "secret" in v:
            refs.add(("secret", v["secret"]["secretName"]))
        if "persistentVolumeClaim" in v:
            refs.add(("persistentvolumeclaim", v["persistentVolumeClaim"]["claimName"]))
        for src in v.get("projected", {}).get("sources", []):
            if "configMap" in src:
                refs.add(("configmap", src["configMap"]["name"]))
            if "secret" in src:
                refs.add(("secret", src["secret"]["name"]))
    for ps in pod_spec.get("imagePullSecrets", []):
        refs.add(("secret", ps["name"]))
    for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                refs.add(("configmap", ef["configMapRef"]["name"]))
            if "secretRef" in ef:
                refs.add(("secret", ef["secretRef"]["name"]))
        for e in c.get("env", []):
            source = e.get("valueFrom", {})
            if "configMapKeyRef" in source:
                refs.add(("configmap", source["configMapKeyRef"]["name"]))
            if "secretKeyRef" in source:
                refs.add(("secret", source["secretKeyRef"]["name"]))
    return refs


def assert_references_exist(cluster: KubeCluster, ns: str, pod_spec: Json, what: str) -> None:
    for kind, name in sorted(referenced(pod_spec)):
        r = cluster.kubectl("get", "-n", ns, kind, name, "-o", "name")
        assert r.returncode == 0, f"{what} refers to {kind} {name}, absent: {r.stderr.decode()}"


def mounted_key(cluster: KubeCluster, ns: str, pod_spec: Json, container: str, path: Path) -> str:
    """The key of the ConfigMap or Secret that ``container`` sees at file ``path``; fails if
    ``path`` is under no such mount or the object has no such key."""
    c = next(c for c in pod_spec["containers"] if c["name"] == container)
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    for m in c.get("volumeMounts", []):
        mount = Path(m["mountPath"])
        if mount not in path.parents or "subPath" in m:
            continue
        volume = volumes[m["name"]]
        if "secret" in volume:
            obj = get_json(cluster, "secret", "-n", ns, volume["secret"]["secretName"])
        elif "configMap" in volume:
            obj = get_json(cluster, "configmap", "-n", ns, volume["configMap"]["name"])
        else:
            continue
        key = str(path.relative_to(mount))
        assert key in (obj.get("data") or {}), f"{path}: no key {key} in {obj['metadata']['name']}"
        return key
    raise AssertionError(f"{path} is under no ConfigMap or Secret mount of {container}")


def assert_plugin_files_are_mounted(
    cluster: KubeCluster, ns: str, pod_spec: Json, cfg: settings.Settings
) -> None:
    for path in (cfg.schedd.scitoken_file, cfg.server.tls_cert, cfg.server.tls_key):
        if path is not None:
            mounted_key(cluster, ns, pod_spec, "plugin", Path(path))
    if cfg.server.bearer_token_file is not None:
        mounted_key(cluster, ns, pod_spec, "plugin", Path(cfg.server.bearer_token_file))
    if cfg.schedd.token_dir is not None:
        # IDTOKENS: the Secret is the directory; every key one token file.
        plugin = next(c for c in pod_spec["containers"] if c["name"] == "plugin")
        mount = {m["mountPath"]: m for m in plugin["volumeMounts"]}[str(cfg.schedd.token_dir)]
        volume = {v["name"]: v for v in pod_spec["volumes"]}[mount["name"]]
        secret = get_json(cluster, "secret", "-n", ns, volume["secret"]["secretName"])
        assert secret.get("data"), "the IDTOKENS Secret holds no token"
    plugin = next(c for c in pod_spec["containers"] if c["name"] == "plugin")
    assert str(cfg.storage.shared_dir) in {m["mountPath"] for m in plugin["volumeMounts"]}


def interlink_config_keys(cluster: KubeCluster) -> set[str]:
    """The YAML keys of interLink's API server config at the cluster's pinned commit, read
    from the source ``cluster up`` built it from."""
    version = cluster.info.versions["interlink"]
    # A private cluster shares the default one's builds: the source is where they were made.
    roots = (devcluster.ClusterPaths(cluster.info.state_dir), devcluster.builtin_paths())
    sources = [r.build / f"interlink-{version}" for r in roots]
    found = [s / "pkg" / "interlink" / "config.go" for s in sources]
    found = [f for f in found if f.is_file()]
    assert found, f"interLink's source is in none of {sources} (cluster up builds it)"
    return set(re.findall(r'yaml:"([A-Za-z_]+)', found[0].read_text()))


# -- probes ------------------------------------------------------------------------------------


def healthcheck(cluster: KubeCluster, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` (a probe's command, ``interlink-htcondor healthcheck ...``) run by this
    checkout's CLI, the image's entrypoint, against the cluster's running plugin."""
    assert argv[:2] == ["interlink-htcondor", "healthcheck"], argv
    args = list(argv[2:])
    if "--socket" in args:
        args[args.index("--socket") + 1] = str(cluster.plugin_socket)
    else:
        args = ["--socket", str(cluster.plugin_socket), *args]
    return subprocess.run(
        [sys.executable, "-m", "interlink_htcondor", "healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def image_entrypoint() -> list[str]:
    line = next(
        ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.startswith("ENTRYPOINT")
    )
    entry: list[str] = json.loads(line.removeprefix("ENTRYPOINT"))
    return entry


def assert_probes_answer(cluster: KubeCluster, pod_spec: Json) -> None:
    """Each probe of each container, as far as it can run without the pod: the plugin's
    exec probes (and its httpGet paths, sent over the same kind of listener) answer 0 from a
    real plugin; tcpSocket and httpGet ports name a port of their container."""
    for c in pod_spec["containers"]:
        port_names = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind in ("livenessProbe", "readinessProbe"):
            probe = c[kind]
            if "exec" in probe:
                r = healthcheck(cluster, probe["exec"]["command"])
                assert r.returncode == 0, f"{c['name']} {kind}: {r.stdout}{r.stderr}"
            elif "httpGet" in probe:
                assert probe["httpGet"]["port"] in port_names, probe
                argv = ["interlink-htcondor", "healthcheck", probe["httpGet"]["path"]]
                r = healthcheck(cluster, argv)
                assert r.returncode == 0, f"{c['name']} {kind}: {r.stdout}{r.stderr}"
            else:
                assert probe["tcpSocket"]["port"] in port_names, probe


# -- RBAC --------------------------------------------------------------------------------------


def rules_of(cluster: KubeCluster, ns: str, account: str) -> list[Json]:
    """What ``kubectl auth can-i --list --as=<account> -n <ns>`` prints, as data: the
    account's SelfSubjectRulesReview, resource and non-resource rules, sorted."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": ns},
    }
    out = cluster.kubectl_ok(
        "create",
        f"--as=system:serviceaccount:{ns}:{account}",
        # Client-side validation would list CRDs, which the account may not.
        "--validate=false",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(review).encode(),
    )
    status = json.loads(out)["status"]
    assert not status.get("incomplete"), status
    rules = [{"kind": "resource"} | r for r in status.get("resourceRules", [])]
    rules += [{"kind": "nonResource"} | r for r in status.get("nonResourceRules", [])]
    return sorted(rules, key=lambda r: json.dumps(r, sort_keys=True))


def can_i(cluster: KubeCluster, ns: str, account: str, *args: str) -> bool:
    r = cluster.kubectl(
        "auth", "can-i", f"--as=system:serviceaccount:{ns}:{account}", "-n", ns, *args
    )
    answer = r.stdout.decode().strip()
    assert answer in ("yes", "no"), f"can-i {args}: {answer} {r.stderr.decode()}"
    return answer == "yes"


# Never needed by the plugin or interLink's API server (neither has a Kubernetes client; only
# the virtual kubelet, which is not part of this chart, has).
NOT_NEEDED = [("get", "pods"), ("list", "secrets"), ("*", "*")]


def assert_rbac(cluster: KubeCluster, ns: str, value_set: str, values: Json | None) -> None:
    baseline = rules_of(cluster, ns, "default")  # what every service account may do
    # The chart's own ServiceAccount: exactly the baseline, no Role, no binding.
    assert rules_of(cluster, ns, FULLNAME) == baseline
    for verb, resource in NOT_NEEDED:
        assert not can_i(cluster, ns, FULLNAME, verb, resource), (verb, resource)
        assert not can_i(cluster, ns, FULLNAME, verb, resource, "--all-namespaces")
    refresh = (values or {}).get("auth", {}).get("refresh", {})
    if not refresh.get("enabled"):
        assert b"token-refresh" not in cluster.kubectl_ok("get", "sa", "-n", ns).encode()
        return
    account = f"{FULLNAME}-token-refresh"
    secret = values["auth"]["existingSecret"] if values else ""
    extra = [r for r in rules_of(cluster, ns, account) if r not in baseline]
    assert extra == [
        {
            "kind": "resource",
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret],
            "verbs": ["get", "update", "patch"],
        }
    ]
    for verb in ("get", "update", "patch"):
        assert can_i(cluster, ns, account, verb, f"secret/{secret}")
    other = next(s for s in ADMIN_SECRETS[value_set] if s != secret)
    for args in (
        ("get", f"secret/{other}"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "secrets"),
        ("delete", f"secret/{secret}"),
        ("get", "secrets", "--all-namespaces"),
        ("get", "pods"),
        ("*", "*"),
    ):
        assert not can_i(cluster, ns, account, *args), args


def assert_documented_refresh_works(cluster: KubeCluster, ns: str, secret: str, key: str) -> None:
    """docs/admin.md's refresh command, as the CronJob's ServiceAccount (impersonated), with
    exactly the Role the chart gives it: the Secret gets the new token."""
    account = f"system:serviceaccount:{ns}:{FULLNAME}-token-refresh"
    token = f"refreshed-{uuid.uuid4().hex}"
    manifest = cluster.kubectl_ok(
        "-n", ns, "create", "secret", "generic", secret,
        f"--from-literal={key}={token}", "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    cluster.kubectl_ok(f"--as={account}", "-n", ns, "apply", "-f", "-", input=manifest.encode())
    stored = get_json(cluster, "secret", "-n", ns, secret)["data"][key]
    assert base64.b64decode(stored).decode() == token


# -- the test ----------------------------------------------------------------------------------


@contextlib.contextmanager
def helm_config(cluster: KubeCluster, ns: str) -> Iterator[helm.Config]:
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=ns) as cfg:
        yield cfg


def names(docs: list[Json]) -> list[tuple[str, str]]:
    return [(d["kind"], d["metadata"]["name"]) for d in docs]


def merged(values: Json | None, change: Json) -> Json:
    out = copy.deepcopy(values or {})
    node = out.setdefault("config", {})
    for key, sub in change.items():
        node.setdefault(key, {}).update(copy.deepcopy(sub))
    return out


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_install_upgrade_uninstall_under_restricted(
    kube_cluster: KubeCluster, value_set: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dry run, install, status, the objects and pods in the API, RBAC, upgrade, uninstall."""
    for key in [k for k in os.environ if k.startswith(settings.ENV_PREFIX)]:
        monkeypatch.delenv(key)  # the config is loaded as the pod would, without overrides
    values = VALUE_SETS[value_set]
    cluster = kube_cluster
    metrics = bool(values and values.get("metrics", {}).get("serviceMonitor", {}).get("enabled"))
    ns = restricted_namespace(cluster)
    try:
        with contextlib.ExitStack() as stack:
            if metrics:
                stack.enter_context(crd_lock())
                check_servicemonitor_without_crd(cluster, ns, values)
                stack.enter_context(stand_in_crd(cluster))
            lifecycle(cluster, ns, value_set, values, tmp_path)
    finally:
        left = cluster.delete_namespaces([ns])
        assert not left, left


def check_servicemonitor_without_crd(cluster: KubeCluster, ns: str, values: Json | None) -> None:
    """Without prometheus-operator's CRD, Helm refuses the whole install before creating
    anything, naming the missing kind; nothing is left in the namespace."""
    delete_stand_in_crd(cluster)
    before = namespace_objects(cluster, ns)
    with helm_config(cluster, ns) as cfg:
        with pytest.raises(helm.HelmError) as failure:
            cfg.install(CHART, RELEASE, values, wait="hookOnly", timeout=120)
        assert cfg.list(all_states=True) == []
    message = str(failure.value)
    assert 'no matches for kind "ServiceMonitor" in version "monitoring.coreos.com/v1"' in message
    assert namespace_objects(cluster, ns) == before


def lifecycle(
    cluster: KubeCluster, ns: str, value_set: str, values: Json | None, tmp_path: Path
) -> None:
    assert_psa_enforced(cluster, ns)
    create_admin_objects(cluster, ns, value_set)
    before = namespace_objects(cluster, ns)
    docs = render(values, RELEASE, ns)

    # The rendered manifests (helm template) through the API server's validation and
    # admission, without persisting; strict field validation, PSA warnings for the pod
    # templates of the Deployment and the CronJob.
    r = apply(cluster, ns, docs, "--dry-run=server", "--validate=strict")
    assert r.returncode == 0, r.stderr.decode()
    assert b"Warning" not in r.stderr, r.stderr.decode()

    with helm_config(cluster, ns) as cfg:
        release = cfg.install(CHART, RELEASE, values, wait="hookOnly", timeout=120)
        assert release["status"] == "deployed" and release["revision"] == 1
        status = cfg.status(RELEASE)
        assert (status["status"], status["revision"], status["namespace"]) == ("deployed", 1, ns)
        manifest = [d for d in yaml.safe_load_all(status["manifest"]) if d]
        assert sorted(names(manifest)) == sorted(names(docs))  # what helm template printed

        # Every object of the chart is in the API as rendered (nothing pruned by a schema).
        for doc in docs:
            live = get_json(cluster, "-n", ns, doc["kind"], doc["metadata"]["name"])
            for field in ("data", "rules", "roleRef", "subjects"):
                assert live.get(field) == doc.get(field), (doc["kind"], field)
            if doc["kind"] == "ServiceMonitor":
                assert live["spec"] == doc["spec"], "fields pruned by the CRD's schema"

        # The Deployment's pod: admitted under restricted, then left Pending.
        deployment = get_json(cluster, "deployment", "-n", ns, FULLNAME)
        template = deployment["spec"]["template"]["spec"]
        selector = label_selector(deployment["spec"]["selector"]["matchLabels"])
        pods = wait_pods(cluster, ns, selector, "the Deployment")
        assert len(pods) == 1
        pod = pods[0]
        assert_unscheduled(pod)
        assert not has_api_token(pod), "the plugin's pod got an API token it never uses"
        assert pod["spec"]["serviceAccountName"] == FULLNAME
        assert_references_exist(cluster, ns, template, "the Deployment")

        # The mounted config, as stored in the API, is a config the plugin loads; the files
        # it names are keys of the Secrets mounted there.
        stored = get_json(cluster, "configmap", "-n", ns, FULLNAME)["data"]["config.yaml"]
        (tmp_path / "config.yaml").write_text(stored)
        cfg_model = settings.load(tmp_path / "config.yaml")
        plugin = next(c for c in template["containers"] if c["name"] == "plugin")
        assert plugin["command"] == image_entrypoint()
        config_path = Path(plugin["args"][plugin["args"].index("--config") + 1])
        assert mounted_key(cluster, ns, template, "plugin", config_path) == "config.yaml"
        assert_plugin_files_are_mounted(cluster, ns, template, cfg_model)
        if values and values.get("interlink", {}).get("enabled"):
            check_interlink_container(cluster, ns, template, cfg_model)
        assert_probes_answer(cluster, template)

        assert_rbac(cluster, ns, value_set, values)
        if values and values.get("auth", {}).get("refresh", {}).get("enabled"):
            check_token_refresh(cluster, ns, values)
        assert_selectors_pick_only(cluster, ns, pod["metadata"]["name"])

        # helm upgrade with a changed config: a new revision, the new ConfigMap, a rolled pod.
        changed = merged(values, UPGRADE_CONFIG)
        upgraded = cfg.upgrade(CHART, RELEASE, changed, wait="hookOnly", timeout=120)
        assert upgraded["status"] == "deployed" and upgraded["revision"] == 2
        assert [h["revision"] for h in cfg.history(RELEASE)] == [1, 2]
        stored = get_json(cluster, "configmap", "-n", ns, FULLNAME)["data"]["config.yaml"]
        assert yaml.safe_load(stored)["policy"]["accounting_groups"]["*"] == "group_upgraded"
        new_template = get_json(cluster, "deployment", "-n", ns, FULLNAME)["spec"]["template"]
        old_sum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert new_template["metadata"]["annotations"]["checksum/config"] != old_sum
        old_hash = pod["metadata"]["labels"]["pod-template-hash"]
        rolled = wait_until_rolled(cluster, ns, selector, old_hash)
        assert_unscheduled(rolled)

        # helm uninstall: nothing of the release is left, only what the admin made.
        cfg.uninstall(RELEASE)
        assert cfg.list(all_states=True) == []
    wait_objects(cluster, ns, before)


def wait_until_rolled(
    cluster: KubeCluster, ns: str, selector: str, old_hash: str, timeout: float = 90
) -> Json:
    """The one pod of the new ReplicaSet once the old one's is gone (Recreate)."""
    deadline = time.monotonic() + timeout
    while True:
        pods = wait_pods(cluster, ns, selector, "the upgraded Deployment")
        hashes = [p["metadata"]["labels"]["pod-template-hash"] for p in pods]
        if len(pods) == 1 and hashes != [old_hash]:
            return pods[0]
        assert time.monotonic() < deadline, f"pods not rolled: {hashes}"
        time.sleep(0.5)


def wait_objects(
    cluster: KubeCluster, ns: str, expected: set[tuple[str, str]], timeout: float = 90
) -> None:
    """The garbage collector removes ReplicaSets, pods and Jobs after their owners."""
    deadline = time.monotonic() + timeout
    while (left := namespace_objects(cluster, ns)) != expected:
        assert time.monotonic() < deadline, f"left behind: {sorted(left - expected)}"
        time.sleep(0.5)


def check_interlink_container(
    cluster: KubeCluster, ns: str, template: Json, cfg_model: settings.Settings
) -> None:
    """interLink's config is found where its env says, uses only keys its source knows, and
    points at the plugin's socket, in a directory mounted in both containers."""
    interlink = next(c for c in template["containers"] if c["name"] == "interlink")
    env = {e["name"]: e.get("value") for e in interlink["env"]}
    config_path = Path(env["INTERLINKCONFIGPATH"])
    key = mounted_key(cluster, ns, template, "interlink", config_path)
    cm_name = next(
        v["configMap"]["name"]
        for v in template["volumes"]
        if "configMap" in v and v["name"] == "interlink-config"
    )
    il_config = yaml.safe_load(get_json(cluster, "configmap", "-n", ns, cm_name)["data"][key])
    known = interlink_config_keys(cluster)
    used = set(il_config) | set(il_config.get("TLS", {}))
    assert used <= known, f"keys interLink does not know: {sorted(used - known)}"
    assert il_config["SidecarURL"] == f"unix://{cfg_model.server.socket}"
    socket_dir = str(Path(str(cfg_model.server.socket)).parent)
    for c in template["containers"]:
        assert socket_dir in {m["mountPath"] for m in c["volumeMounts"]}, c["name"]
    for field in ("CertFile", "KeyFile", "CACertFile"):
        if field in il_config.get("TLS", {}):
            mounted_key(cluster, ns, template, "interlink", Path(il_config["TLS"][field]))
    # interLink's API server also opens a CRI socket under /tmp: it must be writable.
    assert "/tmp" in {m["mountPath"] for m in interlink["volumeMounts"]}


def check_token_refresh(cluster: KubeCluster, ns: str, values: Json) -> None:
    """The CronJob's pod, made now from its template (`kubectl create job --from`), is
    admitted under restricted with the API token it needs; the documented refresh command
    works with the Role the chart gives it."""
    cron = f"{FULLNAME}-token-refresh"
    template = get_json(cluster, "cronjob", "-n", ns, cron)["spec"]["jobTemplate"]["spec"]
    assert_references_exist(cluster, ns, template["template"]["spec"], "the CronJob")
    cluster.kubectl_ok("create", "job", "-n", ns, "refresh-now", f"--from=cronjob/{cron}")
    pods = wait_pods(cluster, ns, "job-name=refresh-now", "the token-refresh Job")
    assert len(pods) == 1
    assert_unscheduled(pods[0])
    assert has_api_token(pods[0]), "the refresh pod needs its API token"
    assert pods[0]["spec"]["serviceAccountName"] == cron
    with helm.Chart.load(CHART) as chart:
        auth = chart.merge_values(values)["auth"]
    assert_documented_refresh_works(cluster, ns, auth["existingSecret"], auth["scitokenKey"])


# -- what restricted refuses: storage volumes --------------------------------------------------


STORAGE_VOLUMES: dict[str, tuple[Json, str]] = {
    # storage.volume -> the lowest Pod Security level that admits the plugin's pod with it
    "pvc": ({"persistentVolumeClaim": {"claimName": "grid-shared"}}, "restricted"),
    "nfs": ({"nfs": {"server": "nfs.example.org", "path": "/grid"}}, "baseline"),
    "hostPath": ({"hostPath": {"path": "/shared/interlink", "type": "Directory"}}, "privileged"),
}


def test_storage_volume_sets_the_pod_security_level(kube_cluster: KubeCluster) -> None:
    """The shared-mode storage volume decides the lowest Pod Security level the namespace
    can have: the chart's pod for each ``storage.volume``, dry-run at each level."""
    levels = ["restricted", "baseline", "privileged"]
    ns = kube_cluster.new_namespace("chart")
    try:
        for name, (volume, lowest) in STORAGE_VOLUMES.items():
            values = {
                "config": {"storage": {"mode": "shared", "shared_dir": "/shared/interlink"}},
                "storage": {"volume": volume},
            }
            docs = render(values, RELEASE, ns)
            spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
            spec = {k: v for k, v in spec.items() if k != "serviceAccountName"}
            for level in levels:
                set_psa(kube_cluster, ns, level)
                r = pod_dry_run(kube_cluster, ns, spec)
                admitted = levels.index(level) >= levels.index(lowest)
                assert (r.returncode == 0) == admitted, f"{name} at {level}: {r.stderr.decode()}"
    finally:
        assert not kube_cluster.delete_namespaces([ns])
