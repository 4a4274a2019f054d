"""``interlink-htcondor render``: an admin sees exactly what a pod becomes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import htcondor2
import pytest
import yaml

from interlink_htcondor.cli import main

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: hello
  annotations:
    htcondor.interlink.eu/requirements: 'OpSys == "LINUX"'
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: busybox:1.36
      command: [sh, -c, 'echo "$GREETING" from $(POD)']
      env:
        - name: GREETING
          valueFrom: {configMapKeyRef: {name: settings, key: greeting}}
        - name: POD
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
      resources: {requests: {cpu: 500m, memory: 1.5Gi}}
      volumeMounts:
        - {name: creds, mountPath: /creds}
  volumes:
    - name: creds
      secret: {secretName: creds}
"""

CONFIGMAP_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
data: {x: "1"}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings}
    data: {greeting: "hi 'there'"}
"""

SECRET_YAML = """\
apiVersion: v1
kind: Secret
metadata: {name: creds}
data: {token: c2VjcmV0}
"""


@pytest.fixture
def manifests(tmp_path: Path) -> dict[str, Path]:
    files = {"pod": POD_YAML, "cm": CONFIGMAP_YAML, "secret": SECRET_YAML}
    out = {}
    for name, text in files.items():
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(text)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"shared_dir": "/srv/pods"},
                "containers": {
                    "image_rules": [{"match": "busybox:*", "target": "/images/busybox.sif"}]
                },
            }
        )
    )
    out["config"] = config
    return out


def render(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["render", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base_args(m: dict[str, Path]) -> list[str]:
    return [
        str(m["pod"]),
        "--config",
        str(m["config"]),
        "--configmap",
        str(m["cm"]),
        "--secret",
        str(m["secret"]),
        "--no-pool-defaults",
    ]


def test_render_prints_submit_spec_and_files(
    manifests: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = render(base_args(manifests), capsys)
    assert code == 0, err
    assert "# Submit description" in out and "# Job spec" in out and "# Sandbox files" in out
    assert re.search(r"^request_cpus += 1$", out, re.M)
    assert re.search(r"^request_memory += 1536$", out, re.M)
    assert "/images/busybox.sif" in out
    assert "0600" in out and "volumes/creds/token" in out


def test_render_only_submit_parses(
    manifests: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = render([*base_args(manifests), "--only", "submit"], capsys)
    assert code == 0
    assert out.rstrip().endswith("queue")
    sub = htcondor2.Submit(out)
    assert sub["request_memory"] == "1536"
    assert sub["initialdir"].startswith("/srv/pods/default_hello_")
    assert sub.expand("requirements") == '(OpSys == "LINUX")'


def test_render_only_spec_is_the_pod_json(
    manifests: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = render([*base_args(manifests), "--only", "spec"], capsys)
    assert code == 0
    spec = json.loads(out)
    main_c = spec["containers"][0]
    assert main_c["argv"] == ["sh", "-c", 'echo "$GREETING" from hello']
    assert dict(map(tuple, main_c["env"])) == {"GREETING": "hi 'there'", "POD": "hello"}
    assert spec["pod"]["namespace"] == "default"


def test_render_fills_a_stable_uid(
    manifests: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, first, _ = render([*base_args(manifests), "--only", "spec"], capsys)
    _, second, _ = render([*base_args(manifests), "--only", "spec"], capsys)
    assert json.loads(first)["pod"]["uid"] == json.loads(second)["pod"]["uid"]


def test_render_refused_pod_is_a_one_line_error(
    tmp_path: Path, manifests: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POD_YAML.replace("secret: {secretName: creds}", "nfs: {server: x, path: /}"))
    code, out, err = render([str(bad), "--no-pool-defaults"], capsys)
    assert code == 2 and out == ""
    assert "the plugin would refuse this pod: volume 'creds': type 'nfs' is not supported" in err


def test_render_missing_objects_and_bad_files(
    tmp_path: Path, manifests: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = render([str(manifests["pod"]), "--no-pool-defaults"], capsys)
    assert code == 2 and "volume 'creds': secret 'creds' is not in the request" in err
    missing = tmp_path / "nope.yaml"
    code, _, err = render([str(missing), "--no-pool-defaults"], capsys)
    assert code == 2 and "cannot read" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [unclosed")
    code, _, err = render([str(broken), "--no-pool-defaults"], capsys)
    assert code == 2 and "not valid YAML" in err
    nopod = tmp_path / "nopod.yaml"
    nopod.write_text("kind: ConfigMap\nmetadata: {name: x}\n")
    code, _, err = render([str(nopod), "--no-pool-defaults"], capsys)
    assert code == 2 and "exactly one Pod" in err
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a}]}\n")
    code, _, err = render([str(invalid), "--no-pool-defaults"], capsys)
    assert code == 2 and "pod.spec.containers.0.image: Field required" in err


def test_render_bad_config(
    tmp_path: Path, manifests: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad-config.yaml"
    config.write_text("storage: {nonsense: 1}\n")
    code, _, err = render(
        [str(manifests["pod"]), "--config", str(config), "--no-pool-defaults"], capsys
    )
    assert code == 2 and "invalid settings" in err and "nonsense" in err
