"""``submit``, ``status`` and ``logs`` against the plugin app served by uvicorn on a unix
socket, with an in-memory gateway (``FakeGateway``) in place of the schedd; and a followed
log stream over a real connection."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from _fake_gateway import FakeGateway

from interlink_htcondor.cli import main
from interlink_htcondor.core import classad_attrs, jobspec
from interlink_htcondor.core.classad_attrs import ReportedState, encode_state
from interlink_htcondor.service.app import create_app
from interlink_htcondor.settings import Settings

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata: {name: hello, uid: 5b0e9c8e-1111-4a2b-9c3d-000000000001}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: busybox:1.36
      command: [sh, -c, 'echo "$(GREETING)"']
      env:
        - name: GREETING
          valueFrom: {configMapKeyRef: {name: settings, key: greeting}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hi}
"""
UID = "5b0e9c8e-1111-4a2b-9c3d-000000000001"
T0 = 1_700_000_000


class Served:
    def __init__(self, url: str, gateway: FakeGateway, socket: str) -> None:
        self.url = url
        self.gateway = gateway
        self.socket = socket


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    sock = str(tmp_path / "plugin.sock")
    settings = Settings(
        storage={"shared_dir": str(tmp_path / "pods")},
        schedd={"status_refresh_seconds": 0.001},
    )
    gateway = FakeGateway()
    app = create_app(settings, gateway=gateway)
    server = uvicorn.Server(uvicorn.Config(app, uds=sock, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(f"unix://{sock}", gateway, sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_log(gateway: FakeGateway, lines: list[str]) -> Path:
    ad = gateway.job_of(UID)
    assert ad is not None
    log = Path(ad[classad_attrs.SANDBOX]) / jobspec.LOG_DIR / "main.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("a") as f:
        for i, text in enumerate(lines):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + i))
            f.write(f"{stamp}.000000000Z stdout F {text}\n")
    return log


def test_submit_status_and_logs(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD_YAML)
    code, out, _ = cli(capsys, "submit", str(manifest), "--url", served.url)
    assert code == 0
    assert out.splitlines()[0] == f"pod default/hello uid {UID} job 101.0"
    assert "--job-id 101.0" in out
    # The ConfigMap in the manifest went along: the translation expanded $(GREETING).
    ((plan, _, _),) = served.gateway.submitted
    spec = json.loads(next(f.content for f in plan.files if f.path == jobspec.SPEC_FILE))
    assert spec["containers"][0]["argv"] == ["sh", "-c", 'echo "hi"']

    code, out, _ = cli(capsys, "status", str(manifest), "--url", served.url)
    assert code == 0
    assert out.splitlines()[0] == f"pod default/hello uid {UID} job 101.0"
    assert "main       app   waiting" in out and "Pending" in out

    served.gateway.run(UID, started=T0)
    served.gateway.update(UID, InterlinkStateC0=encode_state(ReportedState("running", 0, "", T0)))
    code, out, _ = cli(capsys, "status", "--uid", UID, "--name", "hello", "--url", served.url)
    assert "running" in out and "since 2023-11-14T22:13:20Z" in out

    write_log(served.gateway, ["one", "two", "three"])
    code, out, _ = cli(capsys, "logs", str(manifest), "--url", served.url, "--tail", "2")
    assert (code, out) == (0, "two\nthree\n")
    code, out, _ = cli(
        capsys, "logs", str(manifest), "--url", served.url, "-c", "main", "--timestamps",
        "--limit-bytes", "35",
    )  # fmt: skip
    assert out == "2023-11-14T22:13:20.000000000Z one\n"[:35]

    served.gateway.complete(UID, exit_code=0)
    code, out, _ = cli(capsys, "status", str(manifest), "--url", served.url, "--wait", "30")
    assert code == 0 and "terminated" in out and "exit 0 Completed" in out
    code, out, _ = cli(capsys, "status", str(manifest), "--url", served.url, "--json")
    entry: dict[str, Any] = json.loads(out)
    assert entry["containers"][0]["state"]["terminated"]["exitCode"] == 0
    code, out, _ = cli(capsys, "logs", str(manifest), "--url", served.url, "-f")
    assert out == "one\ntwo\nthree\n"  # ended: the stream closes after the last line


def test_cli_errors_are_one_line(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD_YAML)
    code, _, err = cli(capsys, "status", str(manifest), "--url", served.url)
    assert code == 1 and "is not known to the plugin" in err
    code, _, err = cli(capsys, "logs", str(manifest), "--url", served.url)
    assert code == 2 and "is not known" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(POD_YAML.replace("image: busybox:1.36", "image: ''"))
    code, _, err = cli(capsys, "submit", str(bad), "--url", served.url)
    assert code == 2 and err.startswith("interlink-htcondor submit: error: the plugin answered 422")
    code, _, err = cli(capsys, "status", "--url", served.url)
    assert code == 2 and "give the pod's manifest" in err
    nowhere = f"unix://{tmp_path / 'nothing.sock'}"
    code, _, err = cli(capsys, "status", "--uid", UID, "--name", "hello", "--url", nowhere)
    assert code == 2 and "cannot reach the plugin" in err


def test_follow_streams_lines_as_they_are_written(served: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD_YAML)
    assert main(["submit", str(manifest), "--url", served.url]) == 0
    served.gateway.run(UID)
    log = write_log(served.gateway, ["first"])
    request = {
        "Namespace": "default",
        "PodUID": UID,
        "PodName": "hello",
        "ContainerName": "main",
        "Opts": {"Follow": True},
    }
    got = b""
    transport = httpx.HTTPTransport(uds=served.socket)
    with (
        httpx.Client(transport=transport, base_url="http://plugin", timeout=60) as client,
        client.stream("GET", "/getLogs", json=request) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            got += chunk
            if got == b"first\n":  # the container writes on, then ends
                with log.open("a") as f:
                    f.write("2023-11-14T22:13:30.000000000Z stdout F second\n")
                served.gateway.complete(UID)
    assert got == b"first\nsecond\n"
