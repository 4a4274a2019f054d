"""The Helm chart, linted and rendered by real Helm (the helm-python-sdk wheel bundles Helm 4).

Every rendered manifest is validated against the Kubernetes schemas; the plugin config inside
the ConfigMap is loaded with the real settings model, which ties chart values to the code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from _chart_support import (
    CHART,
    FULLNAME,
    KUBE_VERSION,
    ROOT,
    SCHEMA_VERSIONS,
    SERVICE_MONITOR_SCHEMA,
    SIDECAR,
    TCP_METRICS,
    VALUE_SETS,
    containers,
    find,
    mounts,
    pod_specs,
    render,
    volumes,
)

from interlink_htcondor import settings


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(settings.ENV_PREFIX):
            monkeypatch.delenv(key)


def plugin_settings(docs: list[dict[str, Any]], tmp_path: Path) -> settings.Settings:
    text = find(docs, "ConfigMap", FULLNAME)["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return settings.load(path)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_is_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_manifest_is_schema_valid(values: dict[str, Any] | None) -> None:
    docs = render(values)
    assert {"ConfigMap", "Deployment", "Service", "ServiceAccount"} <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
            continue
        for version in SCHEMA_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    # What the schemas cannot say but the API server enforces: one source per volume.
    for pod in pod_specs(docs):
        for volume in pod.get("volumes", []):
            assert len(volume) == 2, f"volume {volume['name']} needs exactly one source"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_plugin_config_loads_with_the_settings_model(
    values: dict[str, Any] | None, tmp_path: Path
) -> None:
    docs = render(values)
    cfg = plugin_settings(docs, tmp_path)
    plugin = containers(docs)["plugin"]
    assert plugin["args"] == ["serve", "--config", "/etc/interlink-htcondor/config/config.yaml"]
    config_mount = mounts(plugin)["config"]
    assert config_mount["mountPath"] == "/etc/interlink-htcondor/config"
    assert volumes(docs)["config"]["configMap"]["name"] == FULLNAME
    # The sandbox volume sits where the plugin writes sandboxes.
    assert mounts(plugin)["storage"]["mountPath"] == str(cfg.storage.shared_dir)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_pods_run_non_root_with_a_read_only_root(values: dict[str, Any] | None) -> None:
    docs = render(values)
    pods = pod_specs(docs)
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
        for v in pod.get("volumes", []):
            if "secret" in v:
                assert v["secret"]["defaultMode"] == 0o440
    deployment_pod = pods[0]
    assert deployment_pod["automountServiceAccountToken"] is False


def test_default_serves_tcp_with_http_probes(tmp_path: Path) -> None:
    docs = render(None)
    cfg = plugin_settings(docs, tmp_path)
    assert cfg.server.socket is None
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 4000)
    plugin = containers(docs)["plugin"]
    assert plugin["ports"] == [{"name": "http", "containerPort": 4000, "protocol": "TCP"}]
    assert plugin["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "http",
        "scheme": "HTTP",
    }
    assert plugin["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = find(docs, "Service", FULLNAME)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        service["spec"]["selector"] == find(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "NetworkPolicy", "CronJob")]


def test_sidecar_socket_paths_agree(tmp_path: Path) -> None:
    docs = render(SIDECAR)
    cfg = plugin_settings(docs, tmp_path)
    il_config = yaml.safe_load(
        find(docs, "ConfigMap", f"{FULLNAME}-interlink")["data"]["InterLinkConfig.yaml"]
    )
    # One value gives both ends of the socket.
    assert cfg.server.socket == Path("/run/interlink-htcondor/plugin.sock")
    assert il_config["SidecarURL"] == f"unix://{cfg.server.socket}"
    assert il_config["InterlinkAddress"] == "https://0.0.0.0"
    assert il_config["InterlinkPort"] == "3000"
    assert il_config["TLS"] == {
        "Enabled": True,
        "CertFile": "/etc/interlink-tls/tls.crt",
        "KeyFile": "/etc/interlink-tls/tls.key",
        "CACertFile": "/etc/interlink-tls/ca.crt",
    }
    cs = containers(docs)
    plugin, interlink = cs["plugin"], cs["interlink"]
    socket_dir = str(cfg.server.socket.parent)
    assert mounts(plugin)["socket"]["mountPath"] == socket_dir
    assert mounts(interlink)["socket"]["mountPath"] == socket_dir
    assert "emptyDir" in volumes(docs)["socket"]
    assert "ports" not in plugin  # no network surface for the plugin at all
    env = {e["name"]: e["value"] for e in interlink["env"]}
    config_dir = mounts(interlink)["interlink-config"]["mountPath"]
    assert env["INTERLINKCONFIGPATH"] == f"{config_dir}/InterLinkConfig.yaml"
    assert mounts(interlink)["interlink-tls"]["mountPath"] == "/etc/interlink-tls"
    assert mounts(interlink)["interlink-data"]["mountPath"].rstrip("/") == "/var/lib/interlink"
    # Exec probes over the same socket.
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        command = plugin[probe]["exec"]["command"]
        assert command[:2] == ["interlink-htcondor", "healthcheck"]
        assert command[2:] == ["--socket", str(cfg.server.socket), path]
    port = interlink["ports"][0]
    assert port["containerPort"] == int(il_config["InterlinkPort"])
    service = find(docs, "Service", f"{FULLNAME}-interlink")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert not [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == FULLNAME]


def test_sidecar_scitoken_and_refresh(tmp_path: Path) -> None:
    docs = render(SIDECAR)
    cfg = plugin_settings(docs, tmp_path)
    assert cfg.schedd.auth_methods == "SCITOKENS"
    assert cfg.schedd.scitoken_file == Path("/etc/interlink-htcondor/tokens/token")
    assert cfg.schedd.collector == "cm.example.org:9618"
    assert cfg.storage.host_path_allow == ["/cvmfs"]
    assert cfg.policy.accounting_groups["*"] == "group_other"
    token_mount = mounts(containers(docs)["plugin"])["schedd-token"]
    # A subPath mount would never see the refreshed Secret.
    assert "subPath" not in token_mount and token_mount["readOnly"] is True
    assert token_mount["mountPath"] == str(cfg.schedd.scitoken_file.parent)
    assert volumes(docs)["schedd-token"]["secret"]["secretName"] == "schedd-scitoken"
    role = find(docs, "Role")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["schedd-scitoken"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    cron = find(docs, "CronJob")["spec"]
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == find(docs, "RoleBinding")["subjects"][0]["name"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TOKEN_SECRET_NAME"] == "schedd-scitoken"
    assert cron["concurrencyPolicy"] == "Forbid"
    policy = find(docs, "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 3000}]


def test_tcp_metrics_servicemonitor_tls_and_bearer(tmp_path: Path) -> None:
    docs = render(TCP_METRICS)
    cfg = plugin_settings(docs, tmp_path)
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 8443)
    assert cfg.server.tls_cert == Path("/etc/interlink-htcondor/tls/tls.crt")
    assert cfg.server.bearer_token_file == Path("/etc/interlink-htcondor/bearer/token")
    assert cfg.schedd.auth_methods == "IDTOKENS"
    assert cfg.schedd.token_dir == Path("/etc/interlink-htcondor/tokens")
    plugin = containers(docs)["plugin"]
    assert plugin["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert plugin["ports"][0]["containerPort"] == cfg.server.port
    for name, path in (
        ("tls", cfg.server.tls_cert),
        ("bearer-token", cfg.server.bearer_token_file),
    ):
        assert mounts(plugin)[name]["mountPath"] == str(Path(str(path)).parent)
    assert volumes(docs)["storage"] == {
        "name": "storage",
        "persistentVolumeClaim": {"claimName": "grid-shared"},
    }
    metrics_service = find(docs, "Service", f"{FULLNAME}-metrics")
    monitor = find(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    # Only the metrics Service carries the component label the monitor selects.
    main_service = find(docs, "Service", FULLNAME)
    assert not selector.items() <= main_service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == metrics_service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "plugin-tls", "key": "tls.crt"}
    assert endpoint["authorization"]["credentials"] == {"name": "plugin-bearer", "key": "token"}
    assert monitor["metadata"]["labels"]["release"] == "p"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_selectors_pick_the_plugin_pod_only(values: dict[str, Any] | None) -> None:
    """The Deployment, every Service and the NetworkPolicy select the plugin's pod and no
    other pod of the release: a token-refresh pod behind interLink's Service (published even
    when not ready) would receive the virtual kubelet's requests."""
    docs = render(values)
    deployment = find(docs, "Deployment")["spec"]
    plugin_labels = deployment["template"]["metadata"]["labels"]
    selectors = [deployment["selector"]["matchLabels"]]
    selectors += [
        d["spec"]["selector"] for d in docs if d["kind"] == "Service" and "selector" in d["spec"]
    ]
    selectors += [
        d["spec"]["podSelector"]["matchLabels"] for d in docs if d["kind"] == "NetworkPolicy"
    ]
    other_pods = [
        d["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] == "CronJob"
    ]
    for selector in selectors:
        assert selects(selector, plugin_labels), selector
        for labels in other_pods:
            assert not selects(selector, labels), (selector, labels)


def test_a_value_set_has_a_token_refresh_pod_to_tell_apart() -> None:
    # The value set with a CronJob: the test above must have a pod to tell apart.
    assert any(d["kind"] == "CronJob" for d in render(SIDECAR))


def test_config_change_rolls_the_pod() -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        pod = find(render(values), "Deployment")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    changed = {"config": {"policy": {"accounting_groups": {"*": "group_x"}}}}
    assert checksum(None) != checksum(changed)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"interlink": {"enabled": True}, "metrics": {"enabled": True}}, "metrics:"),
        ({"interlink": {"enabled": True}, "bearerToken": {"existingSecret": "b"}}, "bearerToken"),
        ({"config": {"server": {"port": 5000}}}, "config.server.port is set by the chart"),
        ({"auth": {"method": "IDTOKENS"}}, "auth.existingSecret is required"),
        (
            {
                "auth": {"method": "IDTOKENS", "existingSecret": "t"},
                "config": {"schedd": {"token_dir": "/x"}},
            },
            "config.schedd.token_dir is set by the chart",
        ),
        ({"networkPolicy": {"enabled": True}}, "networkPolicy.from"),
        ({"metrics": {"serviceMonitor": {"enabled": True}}}, "needs metrics.enabled"),
        ({"auth": {"method": "KERBEROS"}}, "auth/method"),
        ({"servce": {"port": 1}}, "servce"),
    ],
)
def test_inconsistent_values_fail_clearly(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message.replace(".", r"\.")):
        render(values)


def test_virtual_node_example_points_at_this_charts_interlink_service() -> None:
    """The upstream-chart example must reach the interLink Service this chart creates when
    installed as documented (release `interlink-htcondor` in namespace `interlink`)."""
    vk = yaml.safe_load((ROOT / "docs/examples/interlink-virtual-node-values.yaml").read_text())
    with helm.Chart.load(CHART) as chart:
        files = chart.render(
            {"interlink": {"enabled": True}}, name="interlink-htcondor", namespace="interlink"
        )
    docs = [d for n, t in files.items() if n.endswith(".yaml") for d in yaml.safe_load_all(t) if d]
    service = find(docs, "Service")
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    assert vk["interlink"]["address"] == f"http://{name}.interlink.svc.cluster.local"
    assert int(vk["interlink"]["port"]) == port
    assert vk["interlink"]["enabled"] is False and vk["plugin"]["enabled"] is False
    assert vk["nodeName"]
    resources = vk["virtualNode"]["resources"]
    assert {"CPUs", "memGiB", "pods"} <= resources.keys()
    for taint in vk["virtualNode"]["nodeTaints"]:
        assert taint["effect"] in ("NoSchedule", "PreferNoSchedule", "NoExecute")


def test_wlcg_example_through_the_chart_gives_the_same_settings(tmp_path: Path) -> None:
    example_path = ROOT / "docs" / "examples" / "site-wlcg.yaml"
    example = yaml.safe_load(example_path.read_text())
    config = {k: v for k, v in example.items() if k != "server"}
    config["schedd"] = {
        k: v for k, v in example["schedd"].items() if k not in ("auth_methods", "scitoken_file")
    }
    values = {
        "interlink": {"enabled": True, "socketPath": example["server"]["socket"]},
        "auth": {"method": "SCITOKENS", "existingSecret": "schedd-scitoken"},
        "config": config,
    }
    rendered = plugin_settings(render(values), tmp_path)
    direct = settings.load(example_path)
    assert rendered.model_dump(exclude={"server"}) == direct.model_dump(exclude={"server"})
    assert rendered.server.socket == direct.server.socket
