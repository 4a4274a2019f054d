"""Spool mode (a remote schedd): input spooled with the job, output retrieved at the end.

A second plugin runs with ``storage.mode: spool`` against the same pool.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from plugin_harness import Plugin, load_pod, started, state_of

from interlink_htcondor.devpool import PoolInfo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spool_plugin(pool: PoolInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    workdir = tmp_path_factory.mktemp("spool")
    with started(pool, workdir, INTERLINK_HTCONDOR_STORAGE__MODE="spool") as p:
        yield p


def test_spooled_pod_status_and_logs(spool_plugin: Plugin) -> None:
    fail = load_pod("exit-42.yaml", name=f"spool-fail-{uuid.uuid4().hex[:6]}")
    sleeper = load_pod("sleeper.yaml", name=f"spool-sleep-{uuid.uuid4().hex[:6]}")
    sleeper["spec"]["containers"][0]["env"][0]["value"] = "6"
    spool_plugin.create(fail)
    spool_plugin.create(sleeper)
    spool_plugin.wait_for(sleeper, lambda e: "running" in state_of(e, "sleep"), timeout=120)
    # While the job runs, the logs are still with the job: the answer says so.
    assert "spool" in spool_plugin.logs(sleeper, "sleep")
    finals = spool_plugin.wait_terminal([fail, sleeper])
    t = state_of(finals[fail["metadata"]["uid"]], "fail")["terminated"]
    assert t["exitCode"] == 42
    assert sorted(spool_plugin.logs(fail, "fail").splitlines()) == ["about to fail", "on stderr"]
    assert spool_plugin.logs(sleeper, "sleep") == "awake\ndone\n"
    assert spool_plugin.logs(sleeper, "sleep", Tail=1) == "done\n"
    r = spool_plugin.delete(fail)
    assert r.status_code == 200
    uid = fail["metadata"]["uid"]
    assert not any(p.name.endswith(uid) for p in spool_plugin.pool.pods_dir.iterdir())


def test_spooled_pod_with_volumes(spool_plugin: Plugin) -> None:
    from plugin_harness import load_objects

    pod = load_pod("volumes.yaml", name=f"spool-vol-{uuid.uuid4().hex[:6]}")
    spool_plugin.create(
        pod,
        configmaps=load_objects("volumes.configmaps.yaml"),
        secrets=load_objects("volumes.secrets.yaml"),
    )
    final: Any = spool_plugin.wait_terminal([pod])[pod["metadata"]["uid"]]
    assert state_of(final, "show")["terminated"]["exitCode"] == 0
    out = spool_plugin.logs(pod, "show")
    assert "--- pw\ns3cr3t-p@ss\n" in out and "mode 400 /etc/secret/password" in out
