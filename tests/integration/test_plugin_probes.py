"""Probes and lifecycle hooks through the real plugin, on the real pool with Apptainer.

The pods are interLink conformance-style ones (tests/pods): all are created at once (the
pool has several slots), then each test follows its own pod through /status, /getLogs and
/delete. Probe periods are 1 s; the pods that must change behaviour at a given moment wait
for files the test creates in a hostPath volume, so no test depends on timing.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from plugin_harness import Json, Plugin, free_port, load_pod, state_of

pytestmark = pytest.mark.integration


@dataclass
class Case:
    pod: Json
    files: Path | None = None  # the pod's hostPath directory, when it has one

    def container(self, entry: Json, name: str) -> Json:
        c: Json = next(c for c in entry["containers"] if c["name"] == name)
        return c


def _host_dir(plugin: Plugin, pod: Json) -> Path:
    """A directory the pod mounts with hostPath, writable by the job user."""
    path: Path = plugin.host_dir / pod["metadata"]["uid"]
    path.mkdir(mode=0o755)
    os.chown(path, plugin.pool.job_uid, plugin.pool.job_gid)
    pod["spec"]["volumes"][0]["hostPath"]["path"] = str(path)
    return path


def _on_free_port(pod: Json) -> None:
    port = free_port()
    for c in pod["spec"]["containers"]:
        if c.get("ports"):
            c["env"] = [{"name": "PORT", "value": str(port)}]
            c["ports"][0]["containerPort"] = port


PODS = {
    "ready": "probes-ready.yaml",
    "liveness-exec": "liveness-exec.yaml",
    "liveness-http": "liveness-http.yaml",
    "poststart": "poststart.yaml",
    "poststart-fail": "poststart-fail.yaml",
    "prestop": "prestop-http-sleep.yaml",
}
WITH_HOST_DIR = {"ready", "prestop"}


@pytest.fixture(scope="module")
def cases(plugin: Plugin) -> dict[str, Case]:
    out: dict[str, Case] = {}
    for key, file in PODS.items():
        pod = load_pod(file, name=f"{key}-{uuid.uuid4().hex[:6]}")
        _on_free_port(pod)
        files = _host_dir(plugin, pod) if key in WITH_HOST_DIR else None
        plugin.create(pod)
        out[key] = Case(pod, files)
    return out


def first(entry: Json) -> Json:
    c: Json = entry["containers"][0]
    return c


def _running(entry: Json, name: str) -> Json | None:
    c: Json = next(c for c in entry["containers"] if c["name"] == name)
    return c if "running" in c["state"] else None


def test_startup_probe_then_readiness_flips_live(plugin: Plugin, cases: dict[str, Case]) -> None:
    case = cases["ready"]
    assert case.files is not None

    def web(e: Json) -> Json:
        return case.container(e, "web")

    # Running, but not started: the server does not listen before "listen" exists.
    entry = plugin.wait_for(case.pod, lambda e: _running(e, "web") is not None, timeout=180)
    assert (web(entry)["started"], web(entry)["ready"]) == (False, False)
    (case.files / "listen").touch()
    entry = plugin.wait_for(case.pod, lambda e: web(e)["ready"] is True, timeout=60)
    assert web(entry)["started"] is True and "running" in web(entry)["state"]
    (case.files / "unready").touch()
    entry = plugin.wait_for(case.pod, lambda e: web(e)["ready"] is False, timeout=60)
    assert web(entry)["started"] is True and "running" in web(entry)["state"]
    assert web(entry)["restartCount"] == 0  # the tcpSocket liveness probe kept passing
    assert plugin.delete(case.pod).status_code == 200


def test_liveness_exec_failure_restarts_the_container(
    plugin: Plugin, cases: dict[str, Case]
) -> None:
    pod = cases["liveness-exec"].pod

    def restarted(e: Json) -> bool:
        return bool(_running(e, "liveness")) and first(e)["restartCount"] >= 1

    entry = plugin.wait_for(pod, restarted, timeout=180)
    c = first(entry)
    last = c["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (143, "Error"), c  # SIGTERM: sleep's end
    assert last["startedAt"] <= last["finishedAt"]
    # Each instance has its own log; the previous one is there for --previous.
    current = plugin.logs(pod, "liveness")
    n = int(current.split()[1])
    assert current == f"instance {n}\n" and n >= 2
    assert plugin.logs(pod, "liveness", Previous=True) == f"instance {n - 1}\n"
    # The next failure is backed off: the probe's failure is in the waiting message.
    entry = plugin.wait_for(pod, lambda e: "waiting" in state_of(e, "liveness"), timeout=60)
    waiting = state_of(entry, "liveness")["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"
    assert "Liveness probe failed: command exited with code 1" in waiting["message"], waiting
    assert "will be restarted" in waiting["message"]
    assert plugin.delete(pod).status_code == 200


def test_liveness_http_failure_with_never_terminates(
    plugin: Plugin, cases: dict[str, Case]
) -> None:
    pod = cases["liveness-http"].pod
    final = plugin.wait_terminal([pod], timeout=180)[pod["metadata"]["uid"]]
    c = first(final)
    t = c["state"]["terminated"]
    assert t["message"] == (
        "Liveness probe failed: HTTP probe failed with statuscode: 500; "
        "container web failed liveness probe"
    )
    assert (t["exitCode"], t["reason"], c["restartCount"]) == (143, "Error", 0)
    assert plugin.logs(pod, "web") == "serving\n"


def test_post_start_marker_is_read_by_the_container(plugin: Plugin, cases: dict[str, Case]) -> None:
    pod = cases["poststart"].pod
    final = plugin.wait_terminal([pod], timeout=180)[pod["metadata"]["uid"]]
    t = state_of(final, "main")["terminated"]
    assert (t["exitCode"], t["reason"]) == (0, "Completed"), t
    assert plugin.logs(pod, "main") == "hello from postStart\n"


def test_failed_post_start_kills_with_failed_post_start_hook(
    plugin: Plugin, cases: dict[str, Case]
) -> None:
    pod = cases["poststart-fail"].pod
    final = plugin.wait_terminal([pod], timeout=180)[pod["metadata"]["uid"]]
    t = state_of(final, "main")["terminated"]
    m = pod["metadata"]
    # SIGTERM ends it (143), or SIGKILL after the 2 s grace (137) when it came while
    # Apptainer was still starting the container and could not forward it.
    assert t["reason"] == "FailedPostStartHook" and t["exitCode"] in (143, 137), t
    assert t["message"] == (
        "Exec lifecycle hook ([sh -c echo hook failed on purpose; exit 3]) for Container "
        f'"main" in Pod "{m["name"]}_{m["namespace"]}({m["uid"]})" failed - error: command '
        'terminated with non-zero exit code: exit status 3, message: "hook failed on purpose\\n"'
    )
    # The hook's output is in its own log, not the container's (which may be empty: the hook
    # can fail before the container's first line).
    assert "hook failed on purpose" not in plugin.logs(pod, "main")


def test_pre_stop_http_and_sleep_hooks_on_delete(plugin: Plugin, cases: dict[str, Case]) -> None:
    case = cases["prestop"]
    assert case.files is not None

    def both_running(e: Json) -> bool:
        return all("running" in c["state"] for c in e["containers"])

    plugin.wait_for(case.pod, both_running, timeout=180)
    _wait_logged(plugin, case.pod, {"web": "serving\n", "sleeper": "sleeping\n"})
    deleted_at = time.time()
    r = plugin.delete(case.pod)
    assert r.status_code == 200, r.text
    web = (case.files / "web").read_text().splitlines()
    assert web == ["/prestop kube-lifecycle/interlink-htcondor", "TERM"]
    sleeper_term = float((case.files / "sleeper").read_text())
    assert sleeper_term - deleted_at >= 1.9  # SIGTERM came after the 2 s sleep hook


def _wait_logged(plugin: Plugin, pod: Json, expected: dict[str, Any], timeout: float = 60) -> None:
    """Until each container has logged its first line (its signal handler is then set)."""
    deadline = time.monotonic() + timeout
    while any(plugin.logs(pod, name) != text for name, text in expected.items()):
        assert time.monotonic() < deadline, "the containers did not start"
        time.sleep(0.3)
