"""Environment, $(VAR) expansion and the downward API, byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _translate_support import (
    configmap,
    container,
    pod,
    request,
    secret,
    settings,
    spec_json,
    spec_of,
)
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from interlink_htcondor.core.translate import TranslationError, translate
from interlink_htcondor.core.translate.envvars import expand

ENV = {"VAR_A": "a", "VAR_B": "b", "EMPTY": "", "SPACED NAME": "s", "DOLLAR": "$"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(VAR_A)", "a"),
        ("___$(VAR_A)___", "___a___"),
        ("$(VAR_A)$(VAR_B)", "ab"),
        ("$(VAR_A)-$(VAR_B)-$(VAR_A)", "a-b-a"),
        ("$(EMPTY)", ""),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("x$(UNDEFINED)y$(VAR_A)", "x$(UNDEFINED)ya"),
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$(VAR_A)", "$a"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("$$", "$"),
        ("$", "$"),
        ("a$", "a$"),
        ("$x", "$x"),
        ("$VAR_A", "$VAR_A"),
        ("${VAR_A}", "${VAR_A}"),
        ("$(VAR_A", "$(VAR_A"),
        ("$(", "$("),
        ("$()", "$()"),
        ("$(SPACED NAME)", "s"),
        ("$(DOLLAR)(VAR_A)", "$(VAR_A)"),  # values are not expanded again
        ("$é$(VAR_A)", "$éa"),
        ("no refs at all", "no refs at all"),
        ("$(VAR_A)$", "a$"),
        ("$($(VAR_A))", "$($(VAR_A))"),
    ],
)
def test_kubelet_expansion_rules(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


@given(st.text())
def test_escaped_text_expands_to_itself(s: str) -> None:
    assert expand(s.replace("$", "$$"), ENV) == s


@given(st.text(alphabet=st.characters(blacklist_characters="$")))
def test_text_without_dollar_is_untouched(s: str) -> None:
    assert expand(s, ENV) == s


def env_of(p: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    env = spec_json(translate(request(p, **kw), settings()))["containers"][0]["env"]
    return [(name, value) for name, value in env]


def test_env_refers_to_earlier_entries_only() -> None:
    c = container(
        env=[
            {"name": "LATER_REF", "value": "$(B)"},
            {"name": "B", "value": "bee"},
            {"name": "C", "value": "$(B)-$(LATER_REF)-$(NOPE)"},
        ]
    )
    assert env_of(pod(c)) == [("LATER_REF", "$(B)"), ("B", "bee"), ("C", "bee-$(B)-$(NOPE)")]


def test_redefinition_replaces_and_moves() -> None:
    c = container(
        env=[
            {"name": "A", "value": "1"},
            {"name": "B", "value": "2"},
            {"name": "A", "value": "$(A)3"},
        ]
    )
    assert env_of(pod(c)) == [("B", "2"), ("A", "13")]


def test_command_and_args_expand_against_final_env() -> None:
    c = container(
        command=["sh", "-c", "echo $(GREETING) $$(GREETING) $(MISSING)"],
        args=["$(GREETING)", "$(TARGET)"],
        env=[
            {"name": "GREETING", "value": "hello"},
            {"name": "TARGET", "value": "$(GREETING) world"},
        ],
    )
    spec = spec_of(translate(request(pod(c)), settings()))
    assert spec.containers[0].mode == "exec"
    assert spec.containers[0].argv == [
        "sh",
        "-c",
        "echo hello $(GREETING) $(MISSING)",
        "hello",
        "hello world",
    ]


def test_dask_worker_args() -> None:
    """dask-kubernetes worker: no command, args expanded (image entrypoint runs them)."""
    c = container(
        "worker",
        "ghcr.io/dask/dask:2025.1.0",
        args=[
            "dask-worker",
            "--name",
            "$(DASK_WORKER_NAME)",
            "--dashboard",
            "--dashboard-address",
            "8788",
        ],
        env=[
            {"name": "DASK_WORKER_NAME", "value": "simple-default-worker-0f3a1c2b9e"},
            {
                "name": "DASK_SCHEDULER_ADDRESS",
                "value": "tcp://simple-scheduler.team-a.svc.cluster.local:8786",
            },
        ],
        ports=[{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
    )
    spec = spec_of(translate(request(pod(c)), settings()))
    w = spec.containers[0]
    assert w.mode == "run"
    assert w.argv == [
        "dask-worker",
        "--name",
        "simple-default-worker-0f3a1c2b9e",
        "--dashboard",
        "--dashboard-address",
        "8788",
    ]


def test_env_from_configmap_and_secret_with_prefix() -> None:
    c = container(
        envFrom=[
            {"configMapRef": {"name": "cfg"}},
            {"prefix": "S_", "secretRef": {"name": "creds"}},
            {"configMapRef": {"name": "absent", "optional": True}},
        ],
        env=[{"name": "COMBINED", "value": "$(MODE)/$(S_user)"}],
    )
    env = env_of(
        pod(c),
        configmaps=[configmap("cfg", {"MODE": "fast", "LEVEL": "3"})],
        secrets=[secret("creds", {"user": "alice", "password": "p@ss word\n"})],
    )
    assert env == [
        ("LEVEL", "3"),
        ("MODE", "fast"),
        ("S_password", "p@ss word\n"),
        ("S_user", "alice"),
        ("COMBINED", "fast/alice"),
    ]


def test_env_from_missing_source_is_an_error() -> None:
    c = container(envFrom=[{"secretRef": {"name": "creds"}}])
    with pytest.raises(
        TranslationError, match="envFrom\\[0\\]: secret 'creds' is not in the request"
    ):
        env_of(pod(c))


def test_env_from_values_are_not_expanded() -> None:
    c = container(envFrom=[{"configMapRef": {"name": "cfg"}}])
    assert env_of(pod(c), configmaps=[configmap("cfg", {"X": "$(HOME)$$"})]) == [("X", "$(HOME)$$")]


def test_value_from_configmap_and_secret() -> None:
    c = container(
        env=[
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "nokey", "optional": True}},
            },
            {
                "name": "OPT2",
                "valueFrom": {"configMapKeyRef": {"name": "nocm", "key": "x", "optional": True}},
            },
            {"name": "USE", "value": "[$(FROM_SECRET)]"},
        ]
    )
    env = env_of(
        pod(c),
        configmaps=[configmap("cfg", {"k": "$(NOT_EXPANDED)"})],
        secrets=[secret("s", {"token": "tök€n\r\n"})],
    )
    assert env == [
        ("FROM_CM", "$(NOT_EXPANDED)"),
        ("FROM_SECRET", "tök€n\r\n"),
        ("USE", "[tök€n\r\n]"),
    ]


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        (
            {"configMapKeyRef": {"name": "cfg", "key": "missing"}},
            "configMap 'cfg' has no key 'missing'",
        ),
        (
            {"configMapKeyRef": {"name": "nocm", "key": "k"}},
            "configMap 'nocm' is not in the request",
        ),
        ({"secretKeyRef": {"name": "nos", "key": "k"}}, "secret 'nos' is not in the request"),
        ({"secretKeyRef": {"name": "bin", "key": "k"}}, "not UTF-8 text"),
        ({"secretKeyRef": {"name": "bad", "key": "k"}}, "not valid base64"),
    ],
)
def test_value_from_errors(ref: dict[str, Any], match: str) -> None:
    c = container("app", env=[{"name": "V", "valueFrom": ref}])
    bad = secret("bad", {})
    bad["data"] = {"k": "***not base64***"}
    with pytest.raises(TranslationError, match=match) as e:
        env_of(
            pod(c),
            configmaps=[configmap("cfg", {"k": "v"})],
            secrets=[secret("bin", {"k": b"\xff\xfe"}), bad],
        )
    assert "container 'app': env 'V'" in str(e.value)


def test_value_resolved_by_the_virtual_kubelet_is_used() -> None:
    c = container(
        env=[
            {
                "name": "V",
                "value": "resolved",
                "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}},
            }
        ]
    )
    assert env_of(pod(c)) == [("V", "resolved")]


def test_field_refs() -> None:
    fields = {
        "NAME": "metadata.name",
        "NS": "metadata.namespace",
        "UID": "metadata.uid",
        "APP": "metadata.labels['app.kubernetes.io/name']",
        "NOLABEL": "metadata.labels['nope']",
        "NOTE": "metadata.annotations['note']",
        "IP": "status.podIP",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
    }
    c = container(
        env=[
            {"name": k, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": v}}}
            for k, v in fields.items()
        ]
    )
    p = pod(
        c,
        labels={"app.kubernetes.io/name": "demo-app"},
        annotations={"note": 'a "quoted" note'},
        serviceAccountName="runner",
    )
    p["status"]["podIP"] = "10.244.1.7"
    assert dict(env_of(p)) == {
        "NAME": "demo",
        "NS": "team-a",
        "UID": "3f1c2b9e-7a64-4d1e-9b0a-5c8e2f4d6a10",
        "APP": "demo-app",
        "NOLABEL": "",
        "NOTE": 'a "quoted" note',
        "IP": "10.244.1.7",
        "NODE": "vk-htcondor",
        "SA": "runner",
    }


def test_pod_ip_from_interlink_annotation() -> None:
    c = container(env=[{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}])
    assert env_of(pod(c, annotations={"interlink.eu/pod-ip": "172.16.0.9"})) == [
        ("IP", "172.16.0.9")
    ]


def test_unsupported_field_ref() -> None:
    c = container(env=[{"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}])
    with pytest.raises(TranslationError, match=r"fieldRef 'metadata\.labels' is not supported"):
        env_of(pod(c))


def test_resource_field_refs() -> None:
    c = container(
        "app",
        resources={"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        env=[
            {
                "name": "REQ_CPU_M",
                "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}},
            },
            {"name": "REQ_CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            {
                "name": "LIM_MEM_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "LIM_CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "OTHER",
                "valueFrom": {
                    "resourceFieldRef": {"containerName": "side", "resource": "requests.memory"}
                },
            },
        ],
    )
    side = container("side", resources={"limits": {"memory": "1Ki"}})
    assert dict(env_of(pod(c, side))) == {
        "REQ_CPU_M": "250",
        "REQ_CPU": "1",  # rounded up, as the kubelet does
        "LIM_MEM_MI": "128",
        "LIM_CPU": "1",  # no limit: the job's whole request_cpus
        "OTHER": "1024",
    }


def test_resource_field_ref_errors() -> None:
    c = container(
        env=[{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]
    )
    with pytest.raises(TranslationError, match=r"'limits\.gpu' is not supported"):
        env_of(pod(c))
    c = container(
        env=[
            {
                "name": "X",
                "valueFrom": {
                    "resourceFieldRef": {"containerName": "nope", "resource": "limits.cpu"}
                },
            }
        ]
    )
    with pytest.raises(TranslationError, match="unknown container 'nope'"):
        env_of(pod(c))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("A_B", True),
        ("my.var-1", False),  # Apptainer cannot carry it: refused, not dropped
        ("A=B", False),
        ("", False),
        ("TAB\tX", False),
        ("é", False),
    ],
)
def test_env_names(name: str, ok: bool) -> None:
    c = container(env=[{"name": name, "value": "v"}])
    if ok:
        assert env_of(pod(c)) == [(name, "v")]
    else:
        with pytest.raises((TranslationError, ValueError)):
            env_of(pod(c))


def test_nul_cannot_reach_a_process() -> None:
    with pytest.raises(TranslationError, match="NUL"):
        env_of(pod(container(env=[{"name": "X", "value": "a\x00b"}])))
    with pytest.raises(TranslationError, match="NUL"):
        translate(request(pod(container(command=["echo", "a\x00"]))), settings())


def test_lone_surrogates_are_refused() -> None:
    raw = request(pod(container(env=[{"name": "X", "value": "ok"}])))
    raw.pod.spec.containers[0].env[0].value = "\ud800"
    with pytest.raises(TranslationError, match="not valid Unicode"):
        translate(raw, settings())


# Values that break naive job generators: each must arrive byte for byte.
HOSTILE = [
    "",
    " ",
    "   ",
    "\t",
    "plain",
    "two words",
    "'single'",
    '"double"',
    "it's",
    'say "hi"',
    "`id`",
    "$(id)",  # undefined reference: kept as written
    "$HOME",
    "${HOME}",
    "$",
    "a$",
    "; rm -rf / #",
    "&& echo pwned",
    "| cat /etc/passwd",
    "> /tmp/x",
    "*",
    "~",
    "!!",
    "\\",
    "\\n",
    "back\\slash\\",
    "line1\nline2",
    "crlf\r\nend",
    "\n",
    "\r",
    "trailing newline\n",
    "tab\tinside",
    '{"json": ["a", 1, true, null], "nested": {"q": "\\"x\\""}}',
    "[1, 2, 3]",
    "key=value=more",
    "ünïcödé 日本語 😀 עברית",
    "\u202eRTL override",
    "\u00a0nbsp",
    "zero\u200bwidth",
    "%s %d %n",
    "{0} {name}",
    "$(DOLLAR)",
    "#!/bin/sh",
    "-n",
    "--help",
    "'\"'\"'",
    "\x1b[31mred\x1b[0m",
    "\x7f",
    "x" * 10000,
]


def test_hostile_values_survive_byte_for_byte() -> None:
    names = [f"V{i}" for i in range(len(HOSTILE))]
    env = [{"name": n, "value": v} for n, v in zip(names, HOSTILE, strict=True)]
    cm = configmap("cm", {n: v for n, v in zip(names, HOSTILE, strict=True)})
    sec = secret("sec", {n: v for n, v in zip(names, HOSTILE, strict=True)})
    c = container(
        command=["/bin/echo", *HOSTILE],
        args=list(HOSTILE),
        env=[
            *env,
            *(
                {"name": f"C{i}", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": n}}}
                for i, n in enumerate(names)
            ),
            *(
                {"name": f"S{i}", "valueFrom": {"secretKeyRef": {"name": "sec", "key": n}}}
                for i, n in enumerate(names)
            ),
        ],
    )
    plan = translate(request(pod(c), configmaps=[cm], secrets=[sec]), settings())
    data = json.loads(next(f for f in plan.files if f.path == "pod.json").content)
    got = dict(tuple(e) for e in data["containers"][0]["env"])
    for i, v in enumerate(HOSTILE):
        assert got[f"V{i}"] == v
        assert got[f"C{i}"] == v
        assert got[f"S{i}"] == v
    assert data["containers"][0]["argv"] == ["/bin/echo", *HOSTILE, *HOSTILE]


printable = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


@hsettings(max_examples=200, deadline=None)
@given(st.lists(printable, min_size=1, max_size=5))
def test_any_value_roundtrips_through_the_spec(values: list[str]) -> None:
    names = [f"K{i}" for i in range(len(values))]
    c = container(
        args=[v.replace("$", "$$") for v in values],
        env=[
            *(
                {"name": n, "value": v.replace("$", "$$")}
                for n, v in zip(names, values, strict=True)
            ),
            {"name": "FROMSECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k0"}}},
        ],
    )
    p = pod(c)
    plan = translate(request(p, secrets=[secret("s", {"k0": values[0]})]), settings())
    data = spec_json(plan)
    env = dict(tuple(e) for e in data["containers"][0]["env"])
    assert [env[n] for n in names] == values
    assert env["FROMSECRET"] == values[0]
    assert data["containers"][0]["argv"] == values
