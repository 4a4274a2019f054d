"""Probes and lifecycle hooks: pod fields -> job spec, and the pods refused at /create."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_support import UID, container, pod, request, settings, spec_of

from interlink_htcondor.core.jobspec import ContainerSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec
from interlink_htcondor.core.translate import TranslationError, translate

WEB_PORTS = [{"name": "http", "containerPort": 8080}, {"containerPort": 9000}]


def app(**fields: Any) -> ContainerSpec:
    """The translated app container with ``fields`` (probes, lifecycle, ports, env...)."""
    fields.setdefault("ports", WEB_PORTS)
    p = pod(container("web", command=["python3", "-m", "http.server"], **fields))
    return spec_of(translate(request(p), settings())).containers[0]


def refused(match: str, **fields: Any) -> None:
    with pytest.raises(TranslationError, match=match):
        app(**fields)


def test_http_probe_with_named_port_headers_and_defaults() -> None:
    probe = {
        "httpGet": {
            "path": "/healthz?full=1",
            "port": "http",
            "scheme": "HTTPS",
            "httpHeaders": [{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "a"}],
        }
    }
    spec = app(livenessProbe=probe).liveness_probe
    assert spec is not None
    assert spec.http_get == HttpGetSpec(
        scheme="https",
        host="127.0.0.1",
        port=8080,
        path="/healthz?full=1",
        headers=[("X-Probe", "yes"), ("Host", "a")],
    )
    # The API server's defaults for what the pod leaves unset.
    assert (spec.initial_delay_seconds, spec.period_seconds, spec.timeout_seconds) == (0, 10, 1)
    assert (spec.success_threshold, spec.failure_threshold) == (1, 3)
    assert spec.termination_grace_seconds is None


def test_zero_timings_mean_the_defaults_as_after_api_defaulting() -> None:
    probe = {
        "tcpSocket": {"port": 9000},
        "periodSeconds": 0,
        "timeoutSeconds": 0,
        "successThreshold": 0,
        "failureThreshold": 0,
    }
    spec = app(readinessProbe=probe).readiness_probe
    assert spec is not None
    assert (spec.period_seconds, spec.timeout_seconds) == (10, 1)
    assert (spec.success_threshold, spec.failure_threshold) == (1, 3)


def test_tcp_and_exec_probes_with_every_timing() -> None:
    c = app(
        startupProbe={
            "tcpSocket": {"port": "9000", "host": "localhost"},
            "periodSeconds": 1,
            "failureThreshold": 30,
            "terminationGracePeriodSeconds": 5,
        },
        readinessProbe={
            "exec": {"command": ["cat", "/tmp/ready"]},
            "initialDelaySeconds": 2,
            "periodSeconds": 3,
            "timeoutSeconds": 4,
            "successThreshold": 2,
            "failureThreshold": 5,
        },
    )
    assert c.startup_probe is not None and c.readiness_probe is not None
    assert c.startup_probe.tcp_socket == TcpSocketSpec(host="localhost", port=9000)
    assert c.startup_probe.termination_grace_seconds == 5
    r = c.readiness_probe
    assert r.argv == ["cat", "/tmp/ready"]
    assert (r.initial_delay_seconds, r.period_seconds, r.timeout_seconds) == (2, 3, 4)
    assert (r.success_threshold, r.failure_threshold) == (2, 5)
    assert c.liveness_probe is None


def test_exec_probe_expands_static_env_like_the_kubelet() -> None:
    env = [
        {"name": "FILE", "value": "/tmp/healthy"},
        {"name": "TOKEN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    probe = {"exec": {"command": ["cat", "$(FILE)", "$(TOKEN)", "$(NOPE)", "$$(FILE)"]}}
    c = app(env=env, livenessProbe=probe)
    assert c.liveness_probe is not None
    # valueFrom entries expand to "" (kubelet's EnvVarsToMap), unknown names stay.
    assert c.liveness_probe.argv == ["cat", "/tmp/healthy", "", "$(NOPE)", "$(FILE)"]


def test_hooks_exec_http_and_sleep() -> None:
    c = app(
        env=[{"name": "X", "value": "y"}],
        lifecycle={
            "postStart": {"exec": {"command": ["sh", "-c", "echo $(X) > /tmp/m"]}},
            "preStop": {"httpGet": {"path": "shutdown", "port": 8080}},
        },
    )
    assert c.post_start == HandlerSpec(argv=["sh", "-c", "echo $(X) > /tmp/m"])  # not expanded
    assert c.pre_stop is not None and c.pre_stop.http_get is not None
    assert (c.pre_stop.http_get.port, c.pre_stop.http_get.path) == (8080, "/shutdown")
    sleepy = app(
        lifecycle={"preStop": {"sleep": {"seconds": 30}}, "postStart": {"sleep": {"seconds": 0}}}
    )
    assert sleepy.pre_stop == HandlerSpec(sleep_seconds=30)
    assert sleepy.post_start == HandlerSpec(sleep_seconds=0)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (
            {"livenessProbe": {"grpc": {"port": 9000}}},
            "container 'web': livenessProbe: grpc probes are not supported",
        ),
        ({"readinessProbe": {}}, "readinessProbe: needs exactly one of exec, httpGet"),
        (
            {"startupProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}},
            r"needs exactly one .* \(got exec, tcpSocket\)",
        ),
        ({"livenessProbe": {"httpGet": {"port": "metrics"}}}, r"'metrics' is not the name.*'http'"),
        ({"livenessProbe": {"httpGet": {"port": 0}}}, "port 0 must be between 1 and 65535"),
        ({"livenessProbe": {"tcpSocket": {"port": 70000}}}, "must be between 1 and 65535"),
        ({"livenessProbe": {"tcpSocket": {"port": "Not_A_Name"}}}, "neither a number nor a port"),
        ({"livenessProbe": {"tcpSocket": {"port": 80, "host": "a b"}}}, "not a host name"),
        (
            {"livenessProbe": {"httpGet": {"port": 80, "scheme": "FTP"}}},
            "scheme 'FTP' must be HTTP or HTTPS",
        ),
        ({"livenessProbe": {"httpGet": {"port": 80, "path": "/a b"}}}, "without blanks"),
        (
            {"livenessProbe": {"httpGet": {"port": 80, "httpHeaders": [{"name": "a:b"}]}}},
            "not an HTTP token",
        ),
        (
            {
                "livenessProbe": {
                    "httpGet": {"port": 80, "httpHeaders": [{"name": "X", "value": "a\r\nB: c"}]}
                }
            },
            "must be one line",
        ),
        (
            {"livenessProbe": {"httpGet": {"port": 80, "httpHeaders": [{"name": "X"}] * 33}}},
            "at most 32 httpHeaders",
        ),
        ({"livenessProbe": {"exec": {"command": []}}}, "exec needs a command"),
        (
            {"livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}},
            "successThreshold must be 1",
        ),
        (
            {"startupProbe": {"exec": {"command": ["true"]}, "successThreshold": 3}},
            "successThreshold must be 1",
        ),
        (
            {"readinessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}},
            "must not be set for readiness probes",
        ),
        (
            {"livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 0}},
            "terminationGracePeriodSeconds must be positive",
        ),
        (
            {"livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": -1}},
            r"periodSeconds -1 must be at least 1 \(unset or 0: 10\)",
        ),
        (
            {"livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 10**9}},
            r"periodSeconds: 1000000000 s is more than the limit of 86400 s "
            r"\(limits.max_probe_seconds\)",
        ),
        (
            {"readinessProbe": {"exec": {"command": ["true"]}, "failureThreshold": 10**6}},
            "failureThreshold 1000000 must be at most 10000",
        ),
        (
            {"readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": -5}},
            "initialDelaySeconds -5 must be at least 0",
        ),
        ({"livenessProbe": {"exec": {"command": ["a\x00b"]}}}, "NUL"),
        ({"lifecycle": {"postStart": {"tcpSocket": {"port": 80}}}}, "tcpSocket is not a lifecycle"),
        ({"lifecycle": {"preStop": {"sleep": {"seconds": -1}}}}, "must be non-negative"),
        (
            {"lifecycle": {"postStart": {"httpGet": {"port": "nope"}}}},
            "lifecycle.postStart: port 'nope' is not the name",
        ),
    ],
)
def test_bad_probes_and_hooks_are_refused(fields: dict[str, Any], match: str) -> None:
    refused(match, **fields)


def test_probe_and_hook_bounds_are_the_sites_limits() -> None:
    """Timings, a probe's grace period and exec commands are bounded by the same
    ``limits.*`` settings as the rest of the pod, and the message names the setting."""
    exec_true: dict[str, Any] = {"exec": {"command": ["true"]}}
    probe = {**exec_true, "timeoutSeconds": 600}
    site = settings(limits={"max_probe_seconds": 300, "max_grace_seconds": 60})
    with pytest.raises(TranslationError, match=r"timeoutSeconds: 600 s .*limits.max_probe_seconds"):
        translate(request(pod(container("web", livenessProbe=probe))), site)
    probe = {**exec_true, "terminationGracePeriodSeconds": 61}
    with pytest.raises(
        TranslationError,
        match=r"livenessProbe: terminationGracePeriodSeconds: 61 s is more than the limit "
        r"of 60 s \(limits.max_grace_seconds\)",
    ):
        translate(request(pod(container("web", livenessProbe=probe))), site)
    probe = {**exec_true, "terminationGracePeriodSeconds": 60}
    spec = spec_of(translate(request(pod(container("web", livenessProbe=probe))), site))
    assert spec.containers[0].liveness_probe is not None
    assert spec.containers[0].liveness_probe.termination_grace_seconds == 60


def test_exec_commands_are_bounded_and_charged_to_the_container() -> None:
    # $(VAR) in a probe's command expands against the container's env: bounded as the
    # container's own argv is, and counted in its bytes.
    env = [{"name": "BIG", "value": "x" * 100_000}]
    probe = {"exec": {"command": ["sh", "-c", "$(BIG)$(BIG)"]}}
    with pytest.raises(TranslationError, match=r"exec.command\[2\].*limits.max_value_bytes"):
        translate(request(pod(container("web", env=env, readinessProbe=probe))), settings())
    probe = {"exec": {"command": ["sh", "-c", "$(BIG)"]}}
    hook = {"exec": {"command": ["echo", "y" * 100_000]}}
    c = container("web", env=env, readinessProbe=probe, lifecycle={"postStart": hook})
    site = settings(limits={"max_container_bytes": 250_000})
    with pytest.raises(TranslationError, match=r"limits.max_container_bytes\), reached at"):
        translate(request(pod(c)), site)
    many = {"exec": {"command": ["true"] * 11}}
    with pytest.raises(TranslationError, match=r"exec.command: 11 is more .*\(limits.max_args\)"):
        translate(
            request(pod(container("web", startupProbe=many))), settings(limits={"max_args": 10})
        )


def test_sleep_hook_is_bounded_by_the_pod_grace_period() -> None:
    p = pod(
        container("web", lifecycle={"preStop": {"sleep": {"seconds": 10}}}),
        terminationGracePeriodSeconds=5,
    )
    with pytest.raises(
        TranslationError, match=r"at most the pod's terminationGracePeriodSeconds \(5\)"
    ):
        translate(request(p), settings())
    del p["spec"]["terminationGracePeriodSeconds"]  # Kubernetes' default: 30 s
    assert spec_of(translate(request(p), settings())).containers[0].pre_stop == HandlerSpec(
        sleep_seconds=10
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"livenessProbe": {"exec": {"command": ["true"]}}},
        {"readinessProbe": {"tcpSocket": {"port": 80}}},
        {"startupProbe": {"exec": {"command": ["true"]}}},
        {"lifecycle": {"preStop": {"exec": {"command": ["true"]}}}},
    ],
)
def test_init_containers_may_have_no_probes_or_hooks(fields: dict[str, Any]) -> None:
    p = pod(container("web"), init=[container("setup", command=["true"], **fields)])
    with pytest.raises(
        TranslationError, match=r"init container 'setup': .* may not be set for init"
    ):
        translate(request(p), settings())


def test_wrong_types_are_invalid_pod_data() -> None:
    from pydantic import ValidationError

    for bad in ({"periodSeconds": "10", "exec": {"command": ["x"]}}, {"tcpSocket": {"port": True}}):
        with pytest.raises(ValidationError, match="livenessProbe"):
            request(pod(container("web", livenessProbe=bad)))


@pytest.mark.parametrize(
    "file",
    [
        "probes-ready.yaml",
        "liveness-exec.yaml",
        "liveness-http.yaml",
        "poststart.yaml",
        "poststart-fail.yaml",
        "prestop-http-sleep.yaml",
    ],
)
def test_the_integration_pods_translate(file: str) -> None:
    import yaml

    p = yaml.safe_load((Path(__file__).parent.parent / "pods" / file).read_text())
    p["metadata"]["uid"] = UID
    spec = spec_of(translate(request(p), settings(storage={"host_path_allow": ["/srv"]})))
    assert any(
        c.post_start or c.pre_stop or c.startup_probe or c.liveness_probe or c.readiness_probe
        for c in spec.containers
    )
