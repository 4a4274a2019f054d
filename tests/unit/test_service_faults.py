"""The service when the schedd hangs or a request is not what it claims, through the
in-memory gateway (``FakeGateway.hang``: calls that do not return until ``resume()``, or
time out at the gateway's deadline as the real one does).

- a hung schedd: /healthz, /metrics and /readyz answer at once; /status serves the last
  snapshot with its age; the ping says the pool is down; /create answers 503 within the
  deadline; readiness turns 503 once the last contact is too old; all recover by
  themselves;
- a pod named by another pod's UID: /delete, /getLogs and /status never reach the
  other pod's job or files;
- a create that fails leaves no sandbox; no space left is a 507.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fake_gateway import FakeGateway
from fastapi.testclient import TestClient
from test_service_endpoints import (
    body,
    create,
    eventually,
    lock_file,
    make_settings,
    pod,
    sandbox_of,
    send,
    status_of,
)

from interlink_htcondor.core import classad_attrs
from interlink_htcondor.service import sandbox_store
from interlink_htcondor.service.app import create_app
from interlink_htcondor.settings import Settings

# The fake's calls hang this long before they time out: any answer that waited for a
# hung call would take at least this.
HANG = 8.0
# What "at once" means here (a busy 2-core machine): far below HANG.
AT_ONCE = 2.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        schedd={
            "status_refresh_seconds": 0.05,
            "status_wait_seconds": 0.2,
            "unready_after_seconds": 1.5,
        },
    )


@pytest.fixture
def gateway() -> FakeGateway:
    g = FakeGateway()
    g.hang_timeout = HANG
    return g


@pytest.fixture
def client(settings: Settings, gateway: FakeGateway) -> Iterator[TestClient]:
    with TestClient(create_app(settings, gateway=gateway)) as c:
        yield c
    gateway.resume()


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return time.monotonic() - t0, r


def test_a_hung_schedd_never_freezes_the_service_and_everything_recovers(
    client: TestClient, gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    p = pod()
    create(client, p)
    assert status_of(client, p) is not None
    assert send(client, "GET", "/status", []).status_code == 200  # capacity now cached
    gateway.hang("ping", "query_jobs", "jobs_of", "find_jobs", "capacity", "submit", "remove_pod")

    for path in ("/healthz", "/metrics", "/readyz"):
        took, r = timed(client.get, path)
        assert took < AT_ONCE and r.status_code == 200, (path, took, r.text)
    # /status: the last snapshot, with its age, without waiting for the hung query.
    took, r = timed(send, client, "GET", "/status", [p])
    assert took < AT_ONCE and r.status_code == 200
    assert [e["UID"] for e in r.json()] == [p["metadata"]["uid"]]
    assert float(r.headers["Snapshot-Age"]) >= 0

    # The ping: the pool is down within a second or so (long before any deadline), and
    # every answer is prompt.
    def pool_down() -> Any:
        took, r = timed(send, client, "GET", "/status", [])
        assert took < AT_ONCE
        return r.status_code == 503 and r

    hung_at = time.monotonic()
    r = eventually(pool_down, timeout=HANG)
    assert time.monotonic() - hung_at < HANG / 2
    assert r.json()["status"] == "error" and "pool not ready" in r.json()["message"]
    # A create waits for its submit's deadline at most, then says why.
    took, r = timed(
        send, client, "POST", "/create", body(pod("other", "9c0e9c6e-1b7d-4c1e-9d43-2f5a7c8e9b01"))
    )
    assert took < HANG + AT_ONCE and r.status_code == 503 and "timed out" in r.text, r.text

    # Readiness turns 503 once no call has succeeded for unready_after_seconds; the
    # answer itself is always prompt.
    def unready() -> Any:
        took, r = timed(client.get, "/readyz")
        assert took < AT_ONCE
        return r.status_code == 503 and r

    r = eventually(unready, timeout=HANG + 10)
    assert "no schedd call has succeeded for" in r.json()["schedd"]
    # Stale /status keeps being served, its age growing, and the log says so.
    with caplog.at_level(logging.WARNING, logger="interlink_htcondor.server"):
        age = float(send(client, "GET", "/status", [p]).headers["Snapshot-Age"])
    assert age > 1.0
    assert any("old job snapshot" in r.getMessage() for r in caplog.records)
    metrics = client.get("/metrics").text
    assert "interlink_htcondor_schedd_circuit_open 1.0" in metrics

    gateway.resume()
    eventually(lambda: client.get("/readyz").status_code == 200, timeout=10)
    eventually(lambda: send(client, "GET", "/status", []).status_code == 200, timeout=10)
    eventually(
        lambda: float(send(client, "GET", "/status", [p]).headers["Snapshot-Age"]) < 1.0,
        timeout=10,
    )
    assert create(client, pod("third", "5e1b2c1a-3c4d-4e5f-8a9b-0c1d2e3f4a5b"))["PodJID"]
    assert "interlink_htcondor_schedd_circuit_open 0.0" in client.get("/metrics").text


def test_status_without_any_snapshot_is_503_at_once(
    client: TestClient, gateway: FakeGateway
) -> None:
    gateway.hang("query_jobs")
    took, r = timed(send, client, "GET", "/status", [pod()])
    assert took < AT_ONCE and r.status_code == 503 and "job query" in r.text


def test_a_stale_snapshot_is_served_for_max_stale_seconds_only(
    tmp_path: Path, gateway: FakeGateway
) -> None:
    settings = make_settings(
        tmp_path,
        schedd={
            "status_refresh_seconds": 0.05,
            "status_wait_seconds": 0.1,
            "max_stale_seconds": 1.0,
        },
    )
    with TestClient(create_app(settings, gateway=gateway)) as c:
        p = pod()
        create(c, p)
        assert status_of(c, p) is not None
        gateway.hang("query_jobs")
        r = eventually(lambda: (r := send(c, "GET", "/status", [p])).status_code == 503 and r)
        assert "cannot query the schedd" in r.text
        gateway.resume()
        # 503 until the first refresh after the resume has landed, then the pod again.
        r = eventually(lambda: (r := send(c, "GET", "/status", [p])).status_code == 200 and r)
        assert r.json()[0]["UID"] == p["metadata"]["uid"]


# ----------------------------------------------------------------------------- identity


def test_a_pod_named_with_another_pods_uid_reaches_nothing_of_it(
    client: TestClient, gateway: FakeGateway, settings: Settings
) -> None:
    victim = pod("victim")
    create(client, victim)
    sandbox = sandbox_of(gateway, victim)
    uid = victim["metadata"]["uid"]
    for meta in ({"name": "attacker"}, {"namespace": "elsewhere"}):
        impostor = pod()
        impostor["metadata"] = {**victim["metadata"], **meta}
        # /delete: 200 as for an unknown pod, and nothing of the victim's touched.
        r = send(client, "POST", "/delete", impostor)
        assert r.status_code == 200 and "nothing deleted" in r.text, r.text
        assert gateway.job_of(uid) is not None and sandbox.is_dir()
        assert lock_file(settings, uid).is_file()
        # /getLogs: unknown; /status: left out.
        r = send(
            client,
            "GET",
            "/getLogs",
            {
                "Namespace": impostor["metadata"]["namespace"],
                "PodName": impostor["metadata"]["name"],
                "PodUID": uid,
                "ContainerName": "main",
            },
        )
        assert r.status_code == 404 and "not known" in r.text
        assert status_of(client, impostor) is None
    # The snapshot not knowing the job yet changes nothing: the schedd decides.
    client.app.state.plugin.snapshot.note_deleted(uid)  # type: ignore[attr-defined]
    impostor = {**victim, "metadata": {**victim["metadata"], "name": "attacker"}}
    r = send(client, "POST", "/delete", impostor)
    assert r.status_code == 200 and "nothing deleted" in r.text
    assert gateway.job_of(uid) is not None and sandbox.is_dir()
    # The pod itself is deleted as always.
    r = send(client, "POST", "/delete", victim)
    assert r.status_code == 200 and "deleted" in r.text and "nothing" not in r.text
    assert gateway.job_of(uid) is None and not sandbox.exists()


# ----------------------------------------------------------------------------- failed creates


def test_no_space_left_is_a_507_and_leaves_nothing(
    client: TestClient, gateway: FakeGateway, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = sandbox_store.write_sandbox

    def full_disk(plan: Any, sandbox: Path) -> None:
        sandbox.mkdir(parents=True)
        (sandbox / "half-written").write_text("secret")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sandbox_store, "write_sandbox", full_disk)
    p = pod()
    r = send(client, "POST", "/create", body(p))
    assert r.status_code == 507 and "no space left" in r.text and "default/hello" in r.text
    assert gateway.ops("submit") == []
    assert list(settings.storage.shared_dir.glob("*/*")) == []
    assert not lock_file(settings, p["metadata"]["uid"]).exists()
    # Space again: the same pod is created.
    monkeypatch.setattr(sandbox_store, "write_sandbox", real_write)
    assert create(client, p)["PodJID"]
    assert gateway.job_of(p["metadata"]["uid"])[classad_attrs.POD_NAME] == "hello"  # type: ignore[index]
