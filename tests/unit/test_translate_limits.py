"""Bounds on every amplification of request data, and absurd values refused with the limit.

Each case is a pod the plugin once turned into far more than it was sent (24 GB from a
2 KB request), or a value it passed on to HTCondor as it was (a job held at once).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from _translate_support import configmap, container, pod, request, secret, settings, spec_of

from interlink_htcondor import client
from interlink_htcondor.core.models import parse_create_body
from interlink_htcondor.core.translate import TranslationError, translate
from interlink_htcondor.core.translate import context as context_module
from interlink_htcondor.core.translate.envvars import expand
from interlink_htcondor.settings import LimitSettings

PODS = Path(__file__).resolve().parent.parent / "pods"
DASK_CREATE = Path(__file__).parent / "data" / "dask-worker-create.json"


def doubling_env(levels: int) -> list[dict[str, str]]:
    """Each value refers to the previous one twice: 2**levels times the first value."""
    env = [{"name": "V0", "value": "x" * 40}]
    env += [{"name": f"V{i}", "value": f"$(V{i - 1})$(V{i - 1})"} for i in range(1, levels + 1)]
    return env


def test_doubling_expansion_is_refused_at_the_bound() -> None:
    # 14 levels gave a 33 MB pod.json and a 200.
    with pytest.raises(TranslationError) as e:
        translate(request(pod(container(env=doubling_env(14)))), settings())
    msg = str(e.value)
    assert "container 'main': env 'V12'" in msg
    assert "131072 bytes" in msg and "limits.max_value_bytes" in msg


def test_doubling_expansion_39_levels_stays_small() -> None:
    """The 24 GB case, in a child process capped at 1 GiB of heap: it must be refused
    promptly, never grow (without the bound the child dies of MemoryError)."""
    body = client.create_body(pod(container(env=doubling_env(39))), (), (), ())
    code = textwrap.dedent(
        """
        import json, resource, sys, time
        from interlink_htcondor.core.models import parse_create_body
        from interlink_htcondor.settings import Settings
        from interlink_htcondor.core.translate import TranslationError, translate
        req = parse_create_body(json.loads(sys.stdin.read()))
        resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))
        t0 = time.process_time()
        try:
            translate(req, Settings())
        except TranslationError as e:
            print(json.dumps({"error": str(e), "cpu": time.process_time() - t0}))
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert "limits.max_value_bytes" in out["error"]
    assert out["cpu"] < 1.0  # measured: a few milliseconds


def test_expansion_is_linear_in_its_input() -> None:
    # Every "$(" without a ")" used to rescan the rest of the text.
    text = "$(" * 60_000
    assert expand(text, {}, limit=1 << 20) == text
    assert expand("$(A)" * 30_000, {"A": ""}, limit=1 << 20) == ""


def test_expansion_stops_at_the_limit() -> None:
    with pytest.raises(TranslationError, match="after \\$\\(VAR\\) expansion"):
        expand("$(A)" * 10, {"A": "y" * 200}, limit=1000)
    with pytest.raises(TranslationError, match="more than this site's limit of 1000"):
        expand("z" * 1001, {}, limit=1000)
    assert expand("$(A)" * 5, {"A": "y" * 200}, limit=1000) == "y" * 1000


def test_args_expansion_is_bounded() -> None:
    c = container(
        env=[{"name": "BIG", "value": "b" * 100_000}],
        command=["echo", "$(BIG)$(BIG)"],
    )
    with pytest.raises(TranslationError, match=r"command\+args\[1\].*limits.max_value_bytes"):
        translate(request(pod(c)), settings())


def test_container_bytes_are_bounded() -> None:
    # Many values each under the per-value bound add up past the per-container one.
    c = container(
        env=[{"name": "BIG", "value": "b" * 100_000}],
        args=["$(BIG)"] * 11,
    )
    with pytest.raises(TranslationError) as e:
        translate(request(pod(c)), settings())
    assert "container 'main'" in str(e.value) and "limits.max_container_bytes" in str(e.value)


def test_env_count_includes_envfrom_keys() -> None:
    cm = configmap("many", {f"K{i}": "v" for i in range(600)})
    c = container(envFrom=[{"configMapRef": {"name": "many"}}] * 2)
    with pytest.raises(TranslationError, match="1200 is more than this site's limit of 1024"):
        translate(request(pod(c), configmaps=[cm]), settings())
    ok = container(envFrom=[{"configMapRef": {"name": "many"}}])
    env = spec_of(translate(request(pod(ok), configmaps=[cm]), settings())).containers[0].env
    assert len(env) == 600


def test_env_value_from_a_configmap_is_bounded() -> None:
    cm = configmap("big", {"K": "v" * 200_000})
    c = container(
        env=[{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "big", "key": "K"}}}]
    )
    with pytest.raises(TranslationError, match="env 'K': 200000 bytes, more than"):
        translate(request(pod(c), configmaps=[cm]), settings())


def test_each_secret_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every secretKeyRef and every volume used to decode the whole Secret again.
    calls = []
    real = context_module.secret_items

    def counting(s: Any, where: str) -> Any:
        calls.append(s.metadata.name)
        return real(s, where)

    monkeypatch.setattr(context_module, "secret_items", counting)
    s = secret("s", {f"k{i}": "v" for i in range(50)})
    env = [
        {"name": f"E{i}", "valueFrom": {"secretKeyRef": {"name": "s", "key": f"k{i}"}}}
        for i in range(50)
    ]
    volumes = [{"name": f"v{i}", "secret": {"secretName": "s"}} for i in range(5)]
    translate(request(pod(container(env=env), volumes=volumes), secrets=[s]), settings())
    assert calls == ["s"]


def test_items_cannot_multiply_one_key() -> None:
    cm = configmap("one", {"big": "x" * 700_000})
    items = [{"key": "big", "path": f"copy{i}"} for i in range(60)]
    volumes = [{"name": "v", "configMap": {"name": "one", "items": items}}]
    with pytest.raises(TranslationError) as e:
        translate(request(pod(volumes=volumes), configmaps=[cm]), settings())
    assert "volume 'v'" in str(e.value) and "limits.max_sandbox_bytes" in str(e.value)


def test_volume_files_are_counted_across_volumes() -> None:
    cm = configmap("keys", {f"k{i}": "" for i in range(1000)})
    volumes = [{"name": f"v{i}", "configMap": {"name": "keys"}} for i in range(5)]
    with pytest.raises(TranslationError, match="more than this site's limit of 4096 files"):
        translate(request(pod(volumes=volumes), configmaps=[cm]), settings())


def test_projected_sources_are_charged() -> None:
    s = secret("s", {"k": b"\0" * 600_000})
    sources = [{"secret": {"name": "s"}}] * 60
    volumes = [{"name": f"p{i}", "projected": {"sources": [sources[i]]}} for i in range(60)]
    with pytest.raises(TranslationError, match=r"limits\.max_sandbox_bytes"):
        translate(request(pod(volumes=volumes), secrets=[s]), settings())


def test_downward_api_files_of_large_annotations_are_charged() -> None:
    annotations = {"note": "n" * 200_000}
    items = [
        {"path": f"a{i}", "fieldRef": {"fieldPath": "metadata.annotations"}} for i in range(200)
    ]
    volumes = [{"name": "d", "downwardAPI": {"items": items}}]
    with pytest.raises(TranslationError, match=r"limits\.max_sandbox_bytes"):
        translate(request(pod(volumes=volumes, annotations=annotations)), settings())


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: pod(*[container(f"c{i}") for i in range(65)]), "limits.max_containers"),
        (
            lambda: pod(
                *[container(f"c{i}") for i in range(30)],
                init=[container(f"i{i}") for i in range(40)],
            ),
            "limits.max_containers",
        ),
        (lambda: pod(container(args=["a"] * 1025)), "limits.max_args"),
        (lambda: pod(container(env=[{"name": "A", "value": "1"}] * 1025)), "limits.max_env_vars"),
        (
            lambda: pod(volumes=[{"name": f"v{i}", "emptyDir": {}} for i in range(257)]),
            "limits.max_volumes",
        ),
        (
            lambda: pod(
                container(volumeMounts=[{"name": "e", "mountPath": f"/m{i}"} for i in range(257)]),
                volumes=[{"name": "e", "emptyDir": {}}],
            ),
            "limits.max_mounts",
        ),
        (lambda: pod(annotations={"a": "x" * 300_000}), "limits.max_metadata_bytes"),
        (lambda: pod(labels={"l": "x" * 300_000}), "limits.max_metadata_bytes"),
        (
            lambda: pod(container(lifecycle={"preStop": {"exec": {"command": ["x"] * 1025}}})),
            "limits.max_args",
        ),
        (
            lambda: pod(
                container(
                    env=[{"name": "A", "value": "a" * 100_000}],
                    volumeMounts=[{"name": "e", "mountPath": "/m", "subPathExpr": "$(A)$(A)"}],
                ),
                volumes=[{"name": "e", "emptyDir": {}}],
            ),
            "subPathExpr: longer than",
        ),
    ],
)
def test_counts_and_sizes_are_bounded(build: Any, match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        translate(request(build()), settings())


def test_limits_are_site_settings() -> None:
    p = pod(container(env=doubling_env(14)))
    roomy = settings(limits={"max_value_bytes": 1 << 20, "max_container_bytes": 4 << 20})
    env = dict(spec_of(translate(request(p), roomy)).containers[0].env)
    assert len(env["V14"]) == 40 * 2**14
    tight = settings(limits={"max_containers": 1})
    with pytest.raises(TranslationError, match="2 is more than this site's limit of 1"):
        translate(request(pod(container("a"), container("b"))), tight)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {"activeDeadlineSeconds": 10**20},
            "activeDeadlineSeconds: 100000000000000000000 s is more than the limit of 2147483647 s",
        ),
        ({"activeDeadlineSeconds": 2**31}, "more than the limit of 2147483647 s"),
        ({"terminationGracePeriodSeconds": 10**20}, "limits.max_grace_seconds"),
        ({"terminationGracePeriodSeconds": 3601}, "3601 s is more than the limit of 3600 s"),
    ],
)
def test_absurd_durations_are_refused_with_the_limit(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        translate(request(pod(**spec)), settings())


@pytest.mark.parametrize("wall", ["100000000000000000000", "99999999999h", "1e20"])
def test_absurd_wall_time_annotation(wall: str) -> None:
    p = pod(annotations={"htcondor.interlink.eu/wall-time": wall})
    with pytest.raises(TranslationError, match="wall-time"):
        translate(request(p), settings())


@pytest.mark.parametrize("quantity", ["1e30", "1e999999", "100000000000000000000Ei"])
def test_absurd_quantities(quantity: str) -> None:
    p = pod(container(resources={"requests": {"memory": quantity}}))
    with pytest.raises(TranslationError, match=r"container 'main': resources.requests\[memory\]"):
        translate(request(p), settings())


def test_a_large_but_valid_request_is_not_absurd() -> None:
    # 64Gi fits no slot of the test pool, but it is a real request: the pool reports it.
    p = pod(container(resources={"requests": {"memory": "64Gi"}}))
    assert translate(request(p), settings()).submit["request_memory"] == str(64 * 1024)


def _conformance_requests() -> list[tuple[str, Any]]:
    objects: dict[str, list[Any]] = {"configmaps": [], "secrets": [], "projected": []}
    for name, kind in (
        ("volumes.configmaps.yaml", "configmaps"),
        ("volumes.secrets.yaml", "secrets"),
        ("hello-world.projected.yaml", "projected"),
    ):
        objects[kind] = [d for d in yaml.safe_load_all((PODS / name).read_text()) if d]
    out = [("dask-worker", parse_create_body(json.loads(DASK_CREATE.read_text())))]
    for path in sorted(PODS.iterdir()):
        if path.name.startswith(("volumes.", "hello-world.projected")):
            continue
        text = path.read_text()
        p = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        p["metadata"].setdefault("namespace", "default")
        p["metadata"].setdefault("uid", "3f1c2b9e-7a64-4d1e-9b0a-5c8e2f4d6a10")
        body = client.create_body(
            p, objects["configmaps"], objects["secrets"], objects["projected"]
        )
        out.append((path.name, parse_create_body(json.loads(json.dumps(body)))))
    return out


@pytest.mark.parametrize(("name", "req"), _conformance_requests())
def test_realistic_pods_stay_far_below_the_limits(name: str, req: Any) -> None:
    # Every limit divided by 16 still takes the Dask worker and interLink's conformance pods.
    defaults = LimitSettings()
    tight = {k: max(v // 16, 1) for k, v in defaults.model_dump().items()}
    tight["max_value_bytes"] = max(tight["max_value_bytes"], 1024)
    tight["max_sandbox_bytes"] = max(tight["max_sandbox_bytes"], 1 << 20)
    tight["max_expression_bytes"] = max(tight["max_expression_bytes"], 256)
    storage = {"shared_dir": "/pods", "host_path_allow": ["/"]}
    translate(req, settings(storage=storage, limits=tight))
