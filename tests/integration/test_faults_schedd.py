"""Faults of the real schedd, through the real plugin: hung (SIGSTOP) and down
(``condor_off -schedd``). Every answer is prompt and says why; nothing is lost or
duplicated; everything recovers by itself once the schedd is back.

The plugin runs with short deadlines (``faults.FAST``), so a few seconds of fault prove
promptness; the pool is shared, so each fault lasts a few seconds only.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from faults import FAST, jobs_of, poll, schedd_off, schedd_stopped, timed
from plugin_harness import Plugin, load_pod, started

from interlink_htcondor.devpool import PoolInfo

# At once, on a busy 2-core machine.
PROMPT = 1.5
# The plugin's own deadline for a schedd call (faults.FAST), plus slack.
DEADLINE = 3.0 + 2.0


def idle_pod(name: str) -> dict[str, Any]:
    """A pod whose job never matches a slot: it stays queued, costing the pool nothing."""
    return load_pod("unschedulable.yaml", name=f"{name}-{uuid.uuid4().hex[:6]}")


def assert_prompt_health(plugin: Plugin) -> None:
    for path in ("/healthz", "/metrics"):
        took, r = timed("GET", plugin.url + path)
        assert took < PROMPT and r.status_code == 200, (path, took)
    took, r = timed("GET", plugin.url + "/readyz")
    assert took < PROMPT, ("/readyz", took)


def ping(plugin: Plugin) -> httpx.Response:
    took, r = timed("GET", plugin.url + "/status", json=[])
    assert took < PROMPT + 1.0, ("ping", took)
    return r


def status(plugin: Plugin, pod: dict[str, Any]) -> httpx.Response:
    took, r = timed("GET", plugin.url + "/status", json=[pod])
    assert took < PROMPT, ("/status", took)
    return r


def assert_recovers(plugin: Plugin, pod: dict[str, Any]) -> None:
    poll(lambda: timed("GET", plugin.url + "/readyz")[1].status_code == 200, 30, "ready again")
    poll(lambda: ping(plugin).status_code == 200, 30, "the ping says ok again")
    poll(lambda: float(status(plugin, pod).headers["Snapshot-Age"]) < 2.0, 30, "a fresh snapshot")


def test_a_hung_schedd(pool: PoolInfo, tmp_path: Path) -> None:
    with started(pool, tmp_path, **FAST) as plugin:
        before, during = idle_pod("before"), idle_pod("during")
        answer = plugin.create(before)
        assert plugin.status_of(before) is not None
        with schedd_stopped(pool):
            assert_prompt_health(plugin)
            # /status: the last snapshot, with its age.
            r = status(plugin, before)
            assert r.status_code == 200 and r.json()[0]["JID"] == answer["PodJID"]
            assert "Snapshot-Age" in r.headers
            # The ping: the pool is down, within seconds.
            r = poll(lambda: (r := ping(plugin)).status_code == 503 and r, 5, "ping down")
            assert r.json()["status"] == "error" and "pool not ready" in r.json()["message"]
            # A create: 503 within its deadline, saying why (the submit may still happen).
            took, r = timed("POST", plugin.url + "/create", json=plugin.create_body(during))
            assert took < DEADLINE and r.status_code == 503, (took, r.text)
            assert "schedd" in r.text and ("timed out" in r.text or "not tried" in r.text)
            # Readiness: unready once the last contact is older than 3 s.
            r = poll(
                lambda: (r := timed("GET", plugin.url + "/readyz")[1]).status_code == 503 and r,
                8,
                "unready",
            )
            assert "no schedd call has succeeded for" in r.json()["schedd"]
            assert_prompt_health(plugin)
            r = status(plugin, before)
            assert r.status_code == 200 and float(r.headers["Snapshot-Age"]) >= 3.0
        assert_recovers(plugin, before)
        # Nothing lost or duplicated: the create that got a 503 is replayed (interLink
        # would mark the pod failed; an admin's tool retries) and each pod has one job.
        replay = plugin.create(during)
        assert plugin.create(before) == answer
        for pod, jid in ((before, answer["PodJID"]), (during, replay["PodJID"])):
            (job,) = jobs_of(pool, plugin.instance, pod["metadata"]["uid"])
            assert f"{job['ClusterId']}.{job['ProcId']}" == jid


def test_a_stopped_schedd(pool: PoolInfo, tmp_path: Path) -> None:
    with started(pool, tmp_path, **FAST) as plugin:
        before, during = idle_pod("before"), idle_pod("during")
        answer = plugin.create(before)
        with schedd_off(pool):
            assert_prompt_health(plugin)
            took, r = timed("POST", plugin.url + "/create", json=plugin.create_body(during))
            assert took < DEADLINE and r.status_code == 503, (took, r.text)
            assert "cannot submit pod" in r.text and "schedd" in r.text
            r = poll(lambda: (r := ping(plugin)).status_code == 503 and r, 10, "ping down")
            assert "pool not ready" in r.json()["message"]
            poll(lambda: timed("GET", plugin.url + "/readyz")[1].status_code == 503, 10, "unready")
            r = status(plugin, before)
            assert r.status_code == 200 and r.json()[0]["JID"] == answer["PodJID"]
            assert_prompt_health(plugin)
        started_again = time.monotonic()
        assert_recovers(plugin, before)
        replay = plugin.create(during)
        assert time.monotonic() - started_again < 60
        for pod, jid in ((before, answer["PodJID"]), (during, replay["PodJID"])):
            (job,) = jobs_of(pool, plugin.instance, pod["metadata"]["uid"])
            assert f"{job['ClusterId']}.{job['ProcId']}" == jid
