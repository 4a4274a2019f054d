"""Lifecycle through the real plugin and pool: idempotent and concurrent creates, a plugin
restart mid-flight, preStop on delete, unknown/lost/held/removed/unschedulable pods, the
ping's capacity, and hostile input."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from plugin_harness import Json, Plugin, load_pod, run, state_of, terminal

from interlink_htcondor.client import PluginClient

pytestmark = pytest.mark.integration


def sleeper(plugin: Plugin, seconds: int = 20, name: str = "sleeper") -> Json:
    pod = load_pod("sleeper.yaml", name=f"{name}-{uuid.uuid4().hex[:6]}")
    pod["spec"]["containers"][0]["env"][0]["value"] = str(seconds)
    return pod


def test_ping_reports_the_pool_capacity(plugin: Plugin, schedd_jobs: Any) -> None:
    import htcondor2

    r = plugin.raw("GET", "/status", [])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    slots = htcondor2.Collector(plugin.pool.collector).query(
        htcondor2.AdType.Startd, projection=["Cpus", "Memory"]
    )
    cpus = sum(int(s["Cpus"]) for s in slots)
    mem = sum(int(s["Memory"]) for s in slots)
    assert body["resources"]["cpu"] == str(cpus)
    assert body["resources"]["memory"] == f"{mem}Mi"
    assert int(body["resources"]["pods"]) >= 1
    assert "taints" not in body  # the node's taints are left alone by default


def test_idempotent_create(plugin: Plugin, schedd_jobs: Any) -> None:
    pod = sleeper(plugin, 1)
    first = plugin.create(pod)
    second = plugin.create(pod)  # a retry after a timeout, say
    assert first == second
    body = plugin.create_body(pod)

    async def burst() -> list[Json]:
        async with PluginClient(plugin.url) as c:
            return list(await asyncio.gather(*(c.create(body["pod"]) for _ in range(8))))

    answers = run(burst())
    assert {a["PodJID"] for a in answers} == {first["PodJID"]}
    assert len(schedd_jobs(pod["metadata"]["uid"])) == 1
    plugin.wait_terminal([pod])


def test_concurrent_duplicate_creates_of_a_new_pod_give_one_job(
    plugin: Plugin, schedd_jobs: Any
) -> None:
    pod = sleeper(plugin, 1)
    body = plugin.create_body(pod)

    async def burst() -> list[Json]:
        async with PluginClient(plugin.url) as c:
            return list(await asyncio.gather(*(c.create(body["pod"]) for _ in range(10))))

    answers = run(burst())
    assert len({a["PodJID"] for a in answers}) == 1
    assert len(schedd_jobs(pod["metadata"]["uid"])) == 1


def test_burst_of_concurrent_creates(plugin: Plugin) -> None:
    pods = [sleeper(plugin, 1, name="burst") for _ in range(16)]

    async def burst() -> list[Json]:
        async with PluginClient(plugin.url) as c:
            return list(await asyncio.gather(*(c.create(p) for p in pods)))

    t0 = time.monotonic()
    answers = run(burst())
    elapsed = time.monotonic() - t0
    assert len({a["PodJID"] for a in answers}) == len(pods)
    assert [a["PodUID"] for a in answers] == [p["metadata"]["uid"] for p in pods]
    assert elapsed < 60
    for p, a in zip(pods, answers, strict=True):
        p["metadata"].setdefault("annotations", {})["JobID"] = a["PodJID"]
    finals = plugin.wait_terminal(pods, timeout=240)
    for p in pods:
        t = state_of(finals[p["metadata"]["uid"]], "sleep")["terminated"]
        assert t["exitCode"] == 0
        assert plugin.logs(p, "sleep") == "awake\ndone\n"


def test_restart_mid_flight(plugin: Plugin, schedd_jobs: Any) -> None:
    pod = sleeper(plugin, 12, name="restart")
    answer = plugin.create(pod)
    plugin.wait_for(pod, lambda e: "running" in state_of(e, "sleep"), timeout=120)
    plugin.restart()
    # Statuses continue from the schedd alone, a second create gives no second job.
    entry = plugin.status_of(pod)
    assert entry is not None and entry["JID"] == answer["PodJID"]
    assert "terminated" not in state_of(entry, "sleep")
    assert plugin.create(pod) == answer
    assert len(schedd_jobs(pod["metadata"]["uid"])) == 1
    final = plugin.wait_terminal([pod], timeout=120)[pod["metadata"]["uid"]]
    assert state_of(final, "sleep")["terminated"]["exitCode"] == 0
    assert plugin.logs(pod, "sleep") == "awake\ndone\n"


def test_prestop_runs_on_delete(plugin: Plugin, schedd_jobs: Any) -> None:
    pod = load_pod("prestop.yaml", name=f"prestop-{uuid.uuid4().hex[:6]}")
    out = plugin.host_dir / pod["metadata"]["uid"]
    out.mkdir(mode=0o755)
    import os

    os.chown(out, plugin.pool.job_uid, plugin.pool.job_gid)
    pod["spec"]["volumes"][0]["hostPath"]["path"] = str(out)
    plugin.create(pod)
    plugin.wait_for(pod, lambda e: "running" in state_of(e, "main"), timeout=120)
    deadline = time.monotonic() + 60
    while plugin.logs(pod, "main") != "started\n":  # the container's program runs
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.2)
    t0 = time.monotonic()
    r = plugin.delete(pod)
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 40
    assert (out / "marker").read_text() == "prestop-ran\n"
    uid = pod["metadata"]["uid"]
    assert schedd_jobs(uid) == []
    assert not any(p.name.endswith(uid) for p in plugin.pool.pods_dir.iterdir())
    assert plugin.delete(pod).status_code == 200  # idempotent


def test_unknown_pod_is_left_out(plugin: Plugin) -> None:
    pod = load_pod("sleeper.yaml", name="never-created")
    assert plugin.status([pod]) == []


def test_lost_pod_is_reported_terminated(plugin: Plugin) -> None:
    pod = load_pod("sleeper.yaml", name="lost")
    pod["metadata"]["annotations"] = {"JobID": "987654321.0"}
    entry = plugin.status_of(pod)
    assert entry is not None
    t = state_of(entry, "sleep")["terminated"]
    assert t["exitCode"] != 0 and t["reason"] == "JobLost"
    assert "987654321.0" in t["message"]


def test_many_pods_in_one_status_call(plugin: Plugin) -> None:
    known = sleeper(plugin, 1)
    plugin.create(known)
    unknown = load_pod("sleeper.yaml", name="unknown")
    garbage: Any = {"metadata": None}
    r = plugin.raw("GET", "/status", [known, unknown, garbage, 42])
    assert r.status_code == 200
    assert [e["UID"] for e in r.json()] == [known["metadata"]["uid"]]


def test_held_job_fails_after_grace_and_is_removed(plugin: Plugin, schedd_jobs: Any) -> None:
    import htcondor2

    pod = sleeper(plugin, 300, name="held")
    answer = plugin.create(pod)
    # (htcondor2 25.14 keeps a reason only when given as a (text, code) tuple.)
    schedd_jobs.act(htcondor2.JobAction.Hold, [answer["PodJID"]], ("held by the test", 1))
    entry = plugin.wait_for(
        pod,
        lambda e: state_of(e, "sleep").get("waiting", {}).get("reason") == "JobHeld",
        timeout=30,
    )
    w = state_of(entry, "sleep")["waiting"]
    assert w["reason"] == "JobHeld" and "held by the test" in w["message"]
    # policy.held_grace_seconds is 8 in the test plugin.
    entry = plugin.wait_for(pod, terminal, timeout=60)
    t = state_of(entry, "sleep")["terminated"]
    assert t["exitCode"] != 0 and "held by the test" in t["message"]
    deadline = time.monotonic() + 30
    while schedd_jobs(pod["metadata"]["uid"]) and time.monotonic() < deadline:
        time.sleep(1)
    assert schedd_jobs(pod["metadata"]["uid"]) == []
    # Once the job left the queue, the history still gives the same final answer.
    final = plugin.wait_for(pod, terminal, timeout=30)
    assert state_of(final, "sleep")["terminated"]["exitCode"] != 0


def test_job_removed_behind_the_plugins_back(plugin: Plugin, schedd_jobs: Any) -> None:
    import htcondor2

    pod = sleeper(plugin, 300, name="removed")
    answer = plugin.create(pod)
    plugin.wait_for(pod, lambda e: "running" in state_of(e, "sleep"), timeout=120)
    schedd_jobs.act(htcondor2.JobAction.Remove, [answer["PodJID"]], ("admin cleanup", 1))
    entry = plugin.wait_for(pod, terminal, timeout=60)
    t = state_of(entry, "sleep")["terminated"]
    assert t["exitCode"] == 143  # SIGTERM, as a kubelet stopping the container
    assert "admin cleanup" in t["message"]


def test_unschedulable_pod_waits_with_a_reason(plugin: Plugin, schedd_jobs: Any) -> None:
    pod = load_pod("unschedulable.yaml", name=f"big-{uuid.uuid4().hex[:6]}")
    plugin.create(pod)
    entry = plugin.wait_for(
        pod, lambda e: state_of(e, "big").get("waiting", {}).get("reason") == "Unschedulable", 30
    )
    w = state_of(entry, "big")["waiting"]
    assert "204800 MiB memory" in w["message"] and "more than any slot" in w["message"]
    assert plugin.delete(pod).status_code == 200
    assert schedd_jobs(pod["metadata"]["uid"]) == []


@pytest.mark.parametrize(
    "path,body,code",
    [
        ("/create", b'{"pod": ', 400),
        ("/create", b"[]", 422),
        ("/create", b'{"pod": {"metadata": {"name": "x"}}}', 422),
        ("/status", b"{}", 422),
        ("/getLogs", b"{}", 422),
        ("/delete", b"null", 422),
    ],
)
def test_malformed_input_gives_4xx(plugin: Plugin, path: str, body: bytes, code: int) -> None:
    method = "GET" if path in ("/status", "/getLogs") else "POST"
    r = plugin.raw(method, path, body)
    assert r.status_code == code, r.text
    assert r.text.strip()
    assert httpx.get(plugin.url + "/healthz").status_code == 200


def test_hostile_pod_gives_422_and_nothing_else_lost(plugin: Plugin) -> None:
    pod = sleeper(plugin, 1)
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "9" * 400}}
    r = plugin.raw("POST", "/create", plugin.create_body(pod))
    assert r.status_code == 422 and "memory" in r.text
    r = plugin.raw("POST", "/create", b"x" * (9 * 1024 * 1024))
    assert r.status_code == 413
    ok = sleeper(plugin, 1)
    assert plugin.create(ok)["PodUID"] == ok["metadata"]["uid"]


def test_logs_carry_the_session_and_metrics_count(plugin: Plugin) -> None:
    r = plugin.raw("GET", "/status", b"{", **{"InterLink-Http-Session": "sess-test-42"})
    assert r.status_code == 400
    # The access line is written once the answer has gone out: poll for it.
    deadline = time.monotonic() + 10
    while not any(line.get("session") == "sess-test-42" for line in plugin.log_lines()):
        assert time.monotonic() < deadline, "no log line carries the session"
        time.sleep(0.1)
    metrics = httpx.get(plugin.url + "/metrics").text
    assert 'interlink_htcondor_requests_total{code="200",endpoint="/create"}' in metrics
    assert 'interlink_htcondor_schedd_call_seconds_count{operation="query"}' in metrics
    assert 'interlink_htcondor_jobs{state="completed"}' in metrics
