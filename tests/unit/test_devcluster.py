"""Pure parts of the development cluster: the generated Kubernetes build module, the PKI,
kubeconfigs, the virtual kubelet's RBAC and the interLink configuration files. Nothing is
built or started here."""

from __future__ import annotations

import base64
import ipaddress
import stat
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from interlink_htcondor.cli import COMMANDS, main
from interlink_htcondor.core import models
from interlink_htcondor.devcluster import (
    build,
    cluster,
    components,
    configs,
    gomod,
    kubeconfig,
    pki,
    rbac,
    selection,
)
from interlink_htcondor.devcluster import config as cconfig
from interlink_htcondor.devcluster.errors import ClusterError
from interlink_htcondor.devcluster.state import ClusterPaths
from interlink_htcondor.devcluster.versions import staging_version

# The shape of k8s.io/kubernetes' go.mod (made up, with the directives that matter).
UPSTREAM_MOD = """\
// This is a generated file. Do not edit directly.

module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/spf13/cobra v1.9.1
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
\tk8s.io/kubectl v0.0.0
)

require github.com/google/cel-go v0.26.0 // indirect

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go // comment
\tk8s.io/kubectl => ./staging/src/k8s.io/kubectl
)

replace github.com/example/forked v1.2.3 => github.com/example/fork v1.2.4
"""


# -- the build module ---------------------------------------------------------------------------


def test_staging_version_follows_the_release() -> None:
    assert staging_version("v1.34.4") == "v0.34.4"
    assert staging_version("v1.37.2") == "v0.37.2"
    with pytest.raises(ValueError):
        staging_version("v2.0.0")


def test_build_go_mod_points_staging_modules_at_published_releases() -> None:
    text = gomod.build_go_mod(UPSTREAM_MOD, "v1.34.4")
    mod = gomod.parse(text)
    assert mod.module == gomod.BUILD_MODULE
    assert mod.go == "1.24.0"
    assert mod.godebug == ("default=go1.24",)
    assert "require k8s.io/kubernetes v1.34.4" in text
    replaced = {r.old: (r.new, r.new_version) for r in mod.replaces}
    assert replaced["k8s.io/api"] == ("k8s.io/api", "v0.34.4")
    assert replaced["k8s.io/client-go"] == ("k8s.io/client-go", "v0.34.4")
    assert replaced["k8s.io/kubectl"] == ("k8s.io/kubectl", "v0.34.4")
    # A replacement by another module is kept as it is, version included.
    fork = next(r for r in mod.replaces if r.old == "github.com/example/forked")
    assert (fork.old_version, fork.new, fork.new_version) == (
        "v1.2.3",
        "github.com/example/fork",
        "v1.2.4",
    )
    assert "./staging" not in text


def test_build_go_mod_refuses_what_no_module_can_serve() -> None:
    with pytest.raises(ValueError, match="points into upstream's tree"):
        gomod.build_go_mod(UPSTREAM_MOD + "replace foo.io/bar => ../bar\n", "v1.34.4")
    with pytest.raises(ValueError, match="expected the go"):
        gomod.build_go_mod(
            UPSTREAM_MOD.replace("module k8s.io/kubernetes", "module x.io/y"), "v1.34.4"
        )
    mismatched = UPSTREAM_MOD.replace(
        "k8s.io/api => ./staging/src/k8s.io/api", "k8s.io/api => ./staging/src/k8s.io/apimachinery"
    )
    with pytest.raises(ValueError, match="does not name module"):
        gomod.build_go_mod(mismatched, "v1.34.4")


def test_tools_go_imports_each_command_under_a_build_tag() -> None:
    text = gomod.tools_go(["k8s.io/kubernetes/cmd/kubectl", "k8s.io/kubernetes/cmd/kube-apiserver"])
    assert text.startswith("//go:build tools\n")
    assert '\t_ "k8s.io/kubernetes/cmd/kubectl"\n' in text
    assert '\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n' in text


def test_version_stamp_is_kubernetes_own() -> None:
    flags = build.kubernetes_version_ldflags("v1.34.4", "abc")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert flags[f"{pkg}.gitVersion"] == "v1.34.4"
        assert flags[f"{pkg}.gitMajor"] == "1"
        assert flags[f"{pkg}.gitMinor"] == "34"
        assert flags[f"{pkg}.gitCommit"] == "abc"


# -- PKI ----------------------------------------------------------------------------------------


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(a) for a in ext.get_values_for_type(x509.IPAddress)
    }


def test_issued_certificates_verify_against_their_ca_only() -> None:
    ca, other = pki.new_ca(), pki.new_ca("another")
    spec = next(s for s in pki.LEAVES if s.name == "apiserver")
    leaf = pki.issue(ca, spec)
    assert pki.verifies(leaf.cert, ca.cert)
    assert not pki.verifies(leaf.cert, other.cert)
    forged = pki.issue(pki.CertKey(other.cert, ca.key), spec)  # right name, wrong key
    assert not pki.verifies(forged.cert, other.cert)


def test_serving_certificates_name_loopback_only() -> None:
    ca = pki.new_ca()
    for spec in pki.LEAVES:
        if not spec.server:
            continue
        dns, ips = _sans(pki.issue(ca, spec).cert)
        assert "localhost" in dns and "127.0.0.1" in ips
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            assert addr.is_loopback or addr in ipaddress.ip_network(cconfig.SERVICE_CIDR)
        assert all(n == "localhost" or n.startswith("kubernetes") for n in dns)
    dns, ips = _sans(pki.issue(ca, next(s for s in pki.LEAVES if s.name == "apiserver")).cert)
    assert "kubernetes.default.svc" in dns and pki.KUBERNETES_SERVICE_IP in ips


def test_client_certificates_carry_identity_and_usage() -> None:
    ca = pki.new_ca()
    by_name = {s.name: s for s in pki.LEAVES}
    admin = pki.issue(ca, by_name["admin"]).cert
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert ExtendedKeyUsageOID.SERVER_AUTH not in eku
    sched = pki.issue(ca, by_name["scheduler"]).cert
    cn = sched.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "system:kube-scheduler"
    with pytest.raises(ValueError):
        pki.issue(ca, pki.LeafSpec("x", "x"))


def test_pki_files_are_made_once_private_and_renewed_near_expiry(tmp_path: Path) -> None:
    files = pki.PkiFiles(tmp_path / "pki")
    written = pki.ensure(files)
    assert set(written) == {"ca", "sa", *(s.name for s in pki.LEAVES)}
    assert pki.ensure(files) == []  # idempotent
    assert stat.S_IMODE(files.dir.stat().st_mode) == 0o700
    for spec in pki.LEAVES:
        assert stat.S_IMODE(files.key(spec.name).stat().st_mode) == 0o600
    assert stat.S_IMODE(files.sa_key.stat().st_mode) == 0o600
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    for spec in pki.LEAVES:
        leaf = x509.load_pem_x509_certificate(files.cert(spec.name).read_bytes())
        assert pki.verifies(leaf, ca_cert)
    # A certificate close to its end is reissued; the others are kept.
    ca = pki.load(files, "ca")
    assert ca is not None and ca.cert == ca_cert
    short = pki.issue(ca, pki.LEAVES[0], days=10)
    files.cert(pki.LEAVES[0].name).write_bytes(short.cert_pem)
    files.key(pki.LEAVES[0].name).write_bytes(short.key_pem)
    assert pki.ensure(files) == [pki.LEAVES[0].name]


# -- kubeconfig ---------------------------------------------------------------------------------


def test_kubeconfig_with_client_certificate_embeds_everything() -> None:
    doc = kubeconfig.render(
        server="https://127.0.0.1:16443",
        ca_pem=b"CA",
        user="admin",
        client_cert_pem=b"CERT",
        client_key_pem=b"KEY",
    )
    parsed = yaml.safe_load(kubeconfig.dump(doc))
    cluster = parsed["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:16443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    user = parsed["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    ctx = next(c for c in parsed["contexts"] if c["name"] == parsed["current-context"])
    assert ctx["context"]["user"] == parsed["users"][0]["name"]


def test_kubeconfig_with_token_and_namespace() -> None:
    doc = kubeconfig.render(
        server="https://127.0.0.1:1", ca_pem=b"CA", user="vk", token="t0k", namespace="interlink"
    )
    assert doc["users"][0]["user"] == {"token": "t0k"}
    assert doc["contexts"][0]["context"]["namespace"] == "interlink"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"token": "t", "client_cert_pem": b"c", "client_key_pem": b"k"},
        {"client_cert_pem": b"c"},
    ],
)
def test_kubeconfig_needs_exactly_one_credential(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        kubeconfig.render(server="https://x", ca_pem=b"CA", user="u", **kwargs)  # type: ignore[arg-type]


# -- RBAC ---------------------------------------------------------------------------------------


def _allows(role: dict[str, object], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
        for r in role["rules"]  # type: ignore[attr-defined]
    )


def test_virtual_kubelet_role_covers_what_it_does() -> None:
    role = rbac.cluster_role()
    needed = [
        ("", "nodes", "create"),
        ("", "nodes", "get"),
        ("", "nodes/status", "patch"),
        ("coordination.k8s.io", "leases", "update"),
        ("coordination.k8s.io", "leases", "create"),
        ("", "pods", "watch"),
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("", "pods/status", "update"),
        ("", "pods/status", "patch"),
        ("", "configmaps", "get"),
        ("", "secrets", "get"),
        ("", "services", "list"),
        ("", "namespaces", "list"),
        ("", "serviceaccounts/token", "create"),
        ("", "events", "create"),
    ]
    for group, resource, verb in needed:
        assert _allows(role, group, resource, verb), (group, resource, verb)
    assert not _allows(role, "", "secrets", "create")
    assert not _allows(role, "rbac.authorization.k8s.io", "clusterroles", "create")


def test_rbac_objects_bind_the_role_to_the_service_account_in_order() -> None:
    objs = rbac.objects()
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Namespace", "ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding"]
    ns, sa, secret, role, binding = objs
    assert sa["metadata"]["namespace"] == ns["metadata"]["name"] == rbac.NAMESPACE
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert (
        secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
        == (sa["metadata"]["name"])
    )
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": rbac.NAMESPACE}
    ]


# -- interLink's configuration ------------------------------------------------------------------


def _ping(**kw: object) -> dict[str, object]:
    resources = models.PingResources(cpu="8", memory="16384Mi", pods="110", **kw)
    wire: dict[str, object] = models.PingResponse(status="ok", resources=resources).wire()
    return wire


def test_node_resources_come_from_the_plugins_ping() -> None:
    res = configs.NodeResources.from_ping(_ping())
    assert (res.cpu, res.memory, res.pods) == ("8", "16384Mi", "110")
    assert res.accelerators == () and res.taints == ()
    body = _ping(accelerators=[models.Accelerator(resource_type="nvidia.com/gpu", available="2")])
    body["taints"] = [
        {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"},
        {"key": "site", "value": "grid", "effect": "PreferNoSchedule"},
    ]
    res = configs.NodeResources.from_ping(body)
    assert res.accelerators == (("nvidia.com/gpu", 2),)
    # interLink's own taint is added by the virtual kubelet: listing it again would duplicate it.
    assert res.taints == (("site", "grid", "PreferNoSchedule"),)


@pytest.mark.parametrize("body", [[], {"status": "ok"}, {"resources": {"cpu": "1"}}, "ok"])
def test_a_ping_without_capacity_is_an_error(body: object) -> None:
    with pytest.raises(ValueError):
        configs.NodeResources.from_ping(body)


def test_virtual_kubelet_config_carries_the_pool_capacity() -> None:
    res = configs.NodeResources("8", "16384Mi", "110", taints=(("site", "grid", "NoSchedule"),))
    doc = configs.VirtualKubeletConfig(
        interlink_socket="/r/interlink.sock",
        apiserver_port=16443,
        resources=res,
        namespace="interlink",
        service_account="virtual-kubelet",
    ).document()
    assert doc["Resources"]["CPU"] == "8"
    assert doc["Resources"]["Memory"] == "16384Mi"
    assert doc["Resources"]["Pods"] == "110"
    assert doc["NodeTaints"] == [{"Key": "site", "Value": "grid", "Effect": "NoSchedule"}]
    assert doc["InterlinkURL"] == "unix:///r/interlink.sock"
    assert doc["KubernetesApiAddr"] == "127.0.0.1" and doc["KubernetesApiPort"] == "16443"
    assert yaml.safe_load(configs.dump(doc)) == doc


def test_interlink_config_listens_and_calls_on_unix_sockets() -> None:
    doc = configs.InterlinkConfig(
        socket="/r/interlink.sock", plugin_socket="/s/plugin.sock", data_dir="/d"
    ).document()
    assert doc["InterlinkAddress"] == "unix:///r/interlink.sock"
    assert doc["SidecarURL"] == "unix:///s/plugin.sock"
    assert doc["DataRootFolder"] == "/d/"


# -- components, CLI ----------------------------------------------------------------------------


def test_ports_are_distinct_and_clear_of_the_pool_and_nodeports() -> None:
    ports = list(cconfig.PORTS.all().values())
    assert len(set(ports)) == len(ports)
    assert 9618 not in ports
    assert not any(30000 <= p <= 32767 for p in ports)


def test_without_selection_the_default_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERLINK_HTCONDOR_POOL_DIR", str(tmp_path))
    paths, ports = selection.selected({})
    assert paths == ClusterPaths(tmp_path / "cluster")
    assert ports == cconfig.PORTS
    # The default cluster's directory named explicitly is still the default cluster.
    env = {selection.CLUSTER_DIR_ENV: str(tmp_path / "cluster")}
    assert selection.selected(env) == (paths, cconfig.PORTS)
    assert cluster.plugin_instance(paths) == "devcluster"


def test_a_private_cluster_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERLINK_HTCONDOR_POOL_DIR", str(tmp_path))
    monkeypatch.setenv(selection.CLUSTER_DIR_ENV, "/srv/mine")
    monkeypatch.setenv(selection.PORT_OFFSET_ENV, " 4000 ")
    paths = selection.default_paths()
    # Its own state; the default cluster's builds.
    assert paths.root == Path("/srv/mine")
    assert paths.bin == tmp_path / "cluster" / "bin"
    assert paths.bin_dir("etcd", "1") == tmp_path / "cluster" / "bin" / "etcd-1"
    assert paths.pki == Path("/srv/mine/pki")
    ports = selection.default_ports()
    assert ports.all() == {k: v + 4000 for k, v in cconfig.PORTS.all().items()}
    assert ports.apiserver == 20443
    # Its plugin's jobs are told apart from the default cluster's in the shared schedd.
    instance = cluster.plugin_instance(paths)
    assert instance.startswith("devcluster-") and instance != "devcluster"


def _selection(directory: str | None, offset: str | None) -> dict[str, str]:
    env = {selection.CLUSTER_DIR_ENV: directory, selection.PORT_OFFSET_ENV: offset}
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (_selection("/srv/mine", None), "needs ports of its own"),
        (_selection(None, "1000"), "set INTERLINK_HTCONDOR_CLUSTER_DIR"),
        (_selection("rel/dir", "1000"), "absolute path"),
        (_selection("/srv/m", "+1k"), "an integer"),
        # Into the NodePort range, below 1024, onto the pool's port, onto the default's.
        (_selection("/srv/m", "14000"), "NodePort"),
        (_selection("/srv/m", "-12000"), "1024-29999"),
        (_selection("/srv/m", "-2761"), "pool's"),
        (_selection("/srv/m", "64064"), "NodePort"),
        (_selection("/srv/m", "4064"), "default cluster's"),
    ],
)
def test_a_wrong_selection_says_what_to_set(env: dict[str, str], says: str) -> None:
    with pytest.raises(ClusterError, match=says):
        selection.selected(env)


def test_the_cluster_command_follows_the_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTERLINK_HTCONDOR_POOL_DIR", str(tmp_path))
    monkeypatch.setenv(selection.CLUSTER_DIR_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv(selection.PORT_OFFSET_ENV, "4000")
    assert main(["cluster", "logs", "plugin"]) == 2
    assert f"no log yet at {tmp_path / 'mine' / 'logs' / 'plugin.log'}" in capsys.readouterr().err
    monkeypatch.delenv(selection.PORT_OFFSET_ENV)
    assert main(["cluster", "env"]) == 2
    assert "needs ports of its own" in capsys.readouterr().err


def test_components_by_name_and_alias() -> None:
    assert components.named("vk").name == "virtual-kubelet"
    assert components.named("apiserver").name == "kube-apiserver"
    assert components.named("plugin").name == "plugin"
    with pytest.raises(KeyError):
        components.named("kubelet")


def test_cluster_command_reports_a_stopped_cluster_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTERLINK_HTCONDOR_POOL_DIR", str(tmp_path))
    assert "cluster" in COMMANDS
    assert main(["cluster", "env"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interlink-htcondor cluster: error: the cluster is not running")
    assert err.count("\n") == 1


# -- processes ----------------------------------------------------------------------------------


def test_detached_process_lifecycle(tmp_path: Path) -> None:
    """A component process: its own session, not our child, recognised by its marker, stopped
    by SIGTERM; a process the matcher does not accept is left alone."""
    import os

    from interlink_htcondor.devcluster import processes

    launch = processes.Launch(
        name="sleeper",
        argv=["sleep", "300"],
        env={"PATH": "/usr/bin:/bin", "MARK": str(tmp_path)},
        log=tmp_path / "logs" / "sleeper.log",
        pid_file=tmp_path / "run" / "sleeper.pid",
    )
    pid = processes.start(launch)
    try:
        assert processes.read_pid(launch.pid_file) == pid
        assert processes.alive(pid)
        assert processes.cmdline(pid) == ["sleep", "300"]
        assert (processes.environ(pid) or {}).get("MARK") == str(tmp_path)
        assert os.getsid(pid) == pid  # a session of its own
        assert pid not in _children()

        def ours(p: int) -> bool:
            return (processes.environ(p) or {}).get("MARK") == str(tmp_path)

        assert processes.find(ours) == [pid]
        assert processes.stop(pid, lambda p: False) is False  # not ours: untouched
        assert processes.alive(pid)
        assert processes.stop(pid, ours, grace=5) is False  # ended by SIGTERM
        assert not processes.alive(pid)
        assert processes.find(ours) == []
        assert "start sleeper: sleep 300" in launch.log.read_text()
    finally:
        if processes.alive(pid):
            os.kill(pid, 9)


def _children() -> set[int]:
    import os

    me = str(os.getpid())
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                out.add(int(p.name))
    return out


def test_a_restarted_virtual_kubelet_counts_only_its_own_status_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interlink_htcondor.devcluster import cluster as ccluster

    monkeypatch.setattr(ccluster, "VK_STATUS_LOOP_WAIT", 0.2)
    log = tmp_path / "virtual-kubelet.log"
    log.write_bytes(b'time="t0" level=info msg=statusLoop\n')  # the previous process's
    offset = log.stat().st_size
    log.write_bytes(log.read_bytes() + b'time="t1" level=info msg="started workers"\n')
    far = time.monotonic() + 60
    assert not ccluster._vk_status_loop_started(log, offset, far)
    with log.open("ab") as f:
        f.write(b'time="t2" level=info msg=statusLoop\n')
    assert ccluster._vk_status_loop_started(log, offset, far)
    assert not ccluster._vk_status_loop_started(tmp_path / "missing.log", 0, far)
