"""Every endpoint of the plugin service, driven over HTTP through an in-memory gateway.

The app is the real one (``create_app``) with a ``FakeGateway`` in place of the schedd:
translation, the sandbox store (real files in a temporary directory), the snapshot, the
status mapping and the log reading all run as in production. The same paths against the
real pool are in ``tests/integration/test_plugin_*.py``.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _fake_gateway import FakeGateway, schedd_down
from fastapi.testclient import TestClient

from interlink_htcondor.core import classad_attrs, jobspec
from interlink_htcondor.core.classad_attrs import ReportedState, encode_state
from interlink_htcondor.core.itemdata import SubmitRefused
from interlink_htcondor.service import delete as delete_module
from interlink_htcondor.service.app import create_app
from interlink_htcondor.service.gateway import ScheddError
from interlink_htcondor.service.sandbox_store import STATUS_FILE_LIMIT
from interlink_htcondor.settings import Settings

Json = dict[str, Any]
T0 = 1_700_000_000


def pod(
    name: str = "hello", uid: str = "0d3f1f9e-5c7a-4f43-9a38-6f1c2b9e7a10", **spec: Any
) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
            "restartPolicy": "Never",
            **spec,
        },
    }


def body(p: Json) -> Json:
    names = [c["name"] for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]]
    return {"pod": p, "container": [{"name": n} for n in names]}


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true (background work of the app)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def make_settings(tmp_path: Path, **sections: Json) -> Settings:
    base: Json = {
        "storage": {"shared_dir": str(tmp_path / "pods")},
        # Every /status reads the fake's current queue (no waiting for a refresh).
        "schedd": {"status_refresh_seconds": 0.001},
        "policy": {"held_grace_seconds": 60},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return Settings(**base)


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(settings: Settings, gateway: FakeGateway) -> Iterator[TestClient]:
    with TestClient(create_app(settings, gateway=gateway)) as c:
        yield c
    assert gateway.closed  # the lifespan closes the gateway


def send(c: TestClient, method: str, path: str, payload: Any, **headers: str) -> Any:
    return c.request(
        method,
        path,
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


def create(c: TestClient, p: Json) -> Json:
    r = send(c, "POST", "/create", body(p))
    assert r.status_code == 200, r.text
    answer: Json = r.json()
    p["metadata"].setdefault("annotations", {})["JobID"] = answer["PodJID"]
    return answer


def status_of(c: TestClient, p: Json) -> Json | None:
    r = send(c, "GET", "/status", [p])
    assert r.status_code == 200, r.text
    entries: list[Json] = r.json()
    return entries[0] if entries else None


def sandbox_of(gateway: FakeGateway, p: Json) -> Path:
    ad = gateway.job_of(p["metadata"]["uid"]) or next(
        a for a in gateway.history.values() if a[classad_attrs.POD_UID] == p["metadata"]["uid"]
    )
    return Path(ad[classad_attrs.SANDBOX])


def lock_file(settings: Settings, uid: str) -> Path:
    return settings.storage.shared_dir / ".locks" / uid


# ----------------------------------------------------------------------------- create


def test_create_writes_the_sandbox_and_submits_once(
    client: TestClient, gateway: FakeGateway, settings: Settings
) -> None:
    p = pod()
    answer = create(client, p)
    assert answer == {"PodUID": p["metadata"]["uid"], "PodJID": "101.0"}
    sandbox = sandbox_of(gateway, p)
    assert sandbox.is_relative_to(settings.storage.shared_dir)
    spec = json.loads((sandbox / jobspec.SPEC_FILE).read_text())
    assert spec["containers"][0]["name"] == "main"
    assert (sandbox / jobspec.WRAPPER_FILE).is_file()
    assert lock_file(settings, p["metadata"]["uid"]).read_text() == "job 101.0"
    # Again: the snapshot knows the job, nothing is submitted twice.
    assert create(client, p) == answer
    assert len(gateway.ops("submit")) == 1


def test_a_restarted_plugin_answers_from_the_lock_file(
    settings: Settings, gateway: FakeGateway
) -> None:
    p = pod()
    with TestClient(create_app(settings, gateway=gateway)) as c:
        first = create(c, p)
    # A new process whose snapshot does not show the job (say, a schedd query that
    # missed it): the lock file still says which job the pod has.
    later = FakeGateway()
    with TestClient(create_app(settings, gateway=later)) as c:
        assert create(c, p) == first
    assert later.ops("submit") == []


def test_a_submit_cut_short_is_checked_against_the_schedd(
    settings: Settings, gateway: FakeGateway
) -> None:
    p = pod()
    uid = p["metadata"]["uid"]
    lock = lock_file(settings, uid)
    lock.parent.mkdir(parents=True)
    lock.write_text("submitting\n")  # a process died while submitting...
    # ...and the schedd did queue its job: that job is the pod's.
    jid = gateway.add_job({"ClusterId": 7, "ProcId": 0, "JobStatus": 1, classad_attrs.POD_UID: uid})
    gateway.fail["query_jobs"] = schedd_down("query")  # the snapshot cannot tell
    with TestClient(create_app(settings, gateway=gateway)) as c:
        assert create(c, p)["PodJID"] == jid == "7.0"
        assert gateway.ops("submit") == []
        assert lock.read_text() == "job 7.0"
    # Had the schedd not queued it, the pod is submitted.
    other = pod(name="other", uid="9b6e1d0c-0000-4000-8000-000000000001")
    lock_file(settings, other["metadata"]["uid"]).write_text("submitting\n")
    with TestClient(create_app(settings, gateway=gateway)) as c:
        assert create(c, other)["PodJID"] != "7.0"
    assert len(gateway.ops("submit")) == 1


def test_concurrent_creates_of_one_pod_give_one_job(
    client: TestClient, gateway: FakeGateway
) -> None:
    p = pod()
    answers: list[Json] = []

    def one() -> None:
        answers.append(send(client, "POST", "/create", body(p)).json())

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a["PodJID"] for a in answers}) == 1 and len(answers) == 8
    assert len(gateway.ops("submit")) == 1


def test_a_refused_submit_is_503_with_the_reason_and_can_be_retried(
    client: TestClient, gateway: FakeGateway, settings: Settings
) -> None:
    p = pod()
    gateway.next_submit_error = ScheddError("schedd submit failed: SECMAN:2010 refused")
    r = send(client, "POST", "/create", body(p))
    assert r.status_code == 503
    assert "cannot submit pod default/hello" in r.text and "SECMAN:2010" in r.text
    # Nothing under way, and nothing left: no sandbox (it may hold Secrets), no lock file.
    assert not lock_file(settings, p["metadata"]["uid"]).exists()
    assert list(settings.storage.shared_dir.glob("*/*")) == []
    assert create(client, p)["PodJID"] == "101.0"
    assert len(gateway.ops("submit")) == 2


def test_a_description_htcondor_refuses_is_a_422_and_leaves_nothing(
    client: TestClient, gateway: FakeGateway, settings: Settings
) -> None:
    p = pod()
    gateway.next_submit_error = SubmitRefused("Failed to create job ad: priority = x y")
    r = send(client, "POST", "/create", body(p))
    assert r.status_code == 422
    assert "pod default/hello cannot run" in r.text and "priority" in r.text
    # Refused for sure: its sandbox (it may hold Secrets) and lock file are gone at once.
    assert not lock_file(settings, p["metadata"]["uid"]).exists()
    assert list(settings.storage.shared_dir.glob("*/*")) == []


def test_a_submit_in_doubt_keeps_the_pod_locked_until_it_settles(
    client: TestClient, gateway: FakeGateway, settings: Settings
) -> None:
    p = pod()
    gateway.doubt_next_submit = True
    r = send(client, "POST", "/create", body(p))
    assert r.status_code == 503 and "may still happen" in r.text
    lock = lock_file(settings, p["metadata"]["uid"])
    assert lock.read_text() == "submitting\n"
    # A retry meanwhile waits for the first submit's outcome instead of submitting again.
    retry: list[Any] = []
    thread = threading.Thread(target=lambda: retry.append(send(client, "POST", "/create", body(p))))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and not retry
    jid = gateway.settle_doubt()
    thread.join(10)
    assert retry[0].status_code == 200 and retry[0].json()["PodJID"] == jid
    assert len(gateway.ops("submit")) == 1
    assert lock.read_text() == f"job {jid}"


def test_create_refuses_pods_the_plugin_cannot_run(
    client: TestClient, gateway: FakeGateway
) -> None:
    p = pod()
    p["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    r = send(client, "POST", "/create", body(p))
    assert r.status_code == 422 and "pod default/hello cannot run" in r.text
    r = send(client, "POST", "/create", {"pod": {"metadata": {"name": "x"}}})
    assert r.status_code == 422 and "invalid pod data" in r.text
    assert gateway.ops("submit") == []


def test_create_reports_a_sandbox_it_cannot_write(
    client: TestClient, gateway: FakeGateway, settings: Settings
) -> None:
    settings.storage.shared_dir.mkdir(parents=True)
    settings.storage.shared_dir.joinpath(".locks").mkdir()
    p = pod()
    # The pod's sandbox path is taken by a file: the write fails, nothing is submitted.
    from interlink_htcondor.core.translate import sandbox_dir

    meta = p["metadata"]
    target = sandbox_dir(settings, meta["namespace"], meta["name"], meta["uid"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("in the way")
    r = send(client, "POST", "/create", body(p))
    assert r.status_code == 500 and "cannot write the sandbox of pod default/hello" in r.text
    assert gateway.ops("submit") == []
    assert not lock_file(settings, meta["uid"]).exists()
    assert target.read_text() == "in the way"  # not the plugin's: left alone


# ----------------------------------------------------------------------------- status


def test_status_follows_the_job(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    uid = p["metadata"]["uid"]
    assert status_of(client, p) is None  # never created: left out
    create(client, p)
    entry = status_of(client, p)
    assert entry is not None and entry["JID"] == "101.0"
    assert entry["containers"][0]["state"]["waiting"]["reason"] == "Pending"
    gateway.run(uid, started=T0)
    gateway.update(uid, InterlinkStateC0=encode_state(ReportedState("running", 0, "", T0, 0)))
    entry = status_of(client, p)
    assert entry is not None
    assert entry["containers"][0]["state"] == {"running": {"startedAt": "2023-11-14T22:13:20Z"}}
    # It ends: the wrapper's status.json is final and carries the message.
    (sandbox_of(gateway, p) / jobspec.STATUS_FILE).write_text(
        json.dumps(
            {
                "containers": [
                    {
                        "name": "main",
                        "state": "terminated",
                        "exit_code": 3,
                        "reason": "Error",
                        "message": "it broke",
                        "started": T0,
                        "finished": T0 + 5,
                    }
                ]
            }
        )
    )
    gateway.complete(uid, exit_code=3)
    entry = status_of(client, p)
    assert entry is not None
    t = entry["containers"][0]["state"]["terminated"]
    assert (t["exitCode"], t["reason"], t["message"]) == (3, "Error", "it broke")
    # Once the job leaves the queue, the history answers (one batched lookup).
    gateway.to_history(uid)
    entry = status_of(client, p)
    assert entry is not None and entry["containers"][0]["state"]["terminated"]["exitCode"] == 3
    assert gateway.ops("find_jobs") == [("find_jobs", (uid,))]


def test_status_entries_are_reused_until_the_job_or_the_pod_changes(
    client: TestClient, gateway: FakeGateway
) -> None:
    p = pod()
    uid = p["metadata"]["uid"]
    create(client, p)
    first = send(client, "GET", "/status", [p]).content
    assert send(client, "GET", "/status", [p]).content == first
    # The pod as asked changes (another image): the entry follows it.
    other = json.loads(json.dumps(p))
    other["spec"]["containers"][0]["image"] = "busybox:1.37"
    entry = status_of(client, other)
    assert entry is not None and entry["containers"][0]["image"] == "busybox:1.37"
    # The job changes: so does the entry.
    gateway.run(uid, started=T0)
    gateway.update(uid, InterlinkStateC0=encode_state(ReportedState("running", 0, "", T0, 0)))
    entry = status_of(client, p)
    assert entry is not None and "running" in entry["containers"][0]["state"]
    # Many pods in one call: one entry each, in the order asked.
    q = pod(name="second", uid="1d5e8c52-7a36-4b8e-9f60-2b1c9d0e3a47")
    create(client, q)
    r = send(client, "GET", "/status", [q, p])
    assert [e["UID"] for e in r.json()] == [q["metadata"]["uid"], uid]
    assert r.headers["content-type"] == "application/json"


def test_an_oversized_status_file_is_ignored(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    create(client, p)
    uid = p["metadata"]["uid"]
    (sandbox_of(gateway, p) / jobspec.STATUS_FILE).write_bytes(b" " * (STATUS_FILE_LIMIT + 1))
    gateway.complete(uid, exit_code=0)
    entry = status_of(client, p)
    assert entry is not None
    t = entry["containers"][0]["state"]["terminated"]
    assert t["exitCode"] == 0 and "reported no state of its own" in t["message"]


def test_a_lost_job_and_a_failed_history_lookup(client: TestClient, gateway: FakeGateway) -> None:
    lost = pod(name="lost", uid="9b6e1d0c-0000-4000-8000-00000000000a")
    lost["metadata"]["annotations"] = {"JobID": "55.0"}
    entry = status_of(client, lost)
    assert entry is not None
    assert entry["containers"][0]["state"]["terminated"]["reason"] == "JobLost"
    # The history cannot be read: that pod is left out, the others are answered.
    live = pod()
    create(client, live)
    other = pod(name="gone", uid="9b6e1d0c-0000-4000-8000-00000000000b")
    other["metadata"]["annotations"] = {"JobID": "56.0"}
    gateway.fail["find_jobs"] = schedd_down("history")
    r = send(client, "GET", "/status", [live, other, "junk", {"metadata": None}])
    assert r.status_code == 200
    assert [e["name"] for e in r.json()] == ["hello"]


def test_a_job_held_past_its_grace_fails_the_pod_and_is_removed(
    client: TestClient, gateway: FakeGateway
) -> None:
    p = pod()
    create(client, p)
    uid = p["metadata"]["uid"]
    gateway.hold(uid, "cannot read the image", since=int(time.time()) - 10)
    entry = status_of(client, p)
    assert entry is not None
    waiting = entry["containers"][0]["state"]["waiting"]
    assert waiting["reason"] == "JobHeld" and "cannot read the image" in waiting["message"]
    assert gateway.ops("remove_job") == []
    gateway.linger.add("101.0")  # removed, the job stays in the queue a while
    gateway.hold(uid, "cannot read the image", since=int(time.time()) - 3600)
    entry = status_of(client, p)
    assert entry is not None
    t = entry["containers"][0]["state"]["terminated"]
    assert t["reason"] == "JobHeld" and "held for more than 60 s" in t["message"]
    removed = eventually(lambda: gateway.ops("remove_job"))
    assert removed[0][1:3] == ("101.0", "held for more than 60 s: cannot read the image")
    status_of(client, p)
    assert len(gateway.ops("remove_job")) == 1


def test_a_job_removed_behind_the_plugins_back(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    create(client, p)
    gateway.run(p["metadata"]["uid"])
    gateway.update(p["metadata"]["uid"], JobStatus=3, RemoveReason="by the admin")
    gateway.to_history(p["metadata"]["uid"])
    entry = status_of(client, p)
    assert entry is not None
    t = entry["containers"][0]["state"]["terminated"]
    assert t["reason"] == "JobRemoved" and "by the admin" in t["message"]


def test_an_unschedulable_pod_says_why(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    create(client, p)
    gateway.update(p["metadata"]["uid"], RequestCpus=64)  # the largest slot has 8
    # The very first status after a start says so too (a restarted plugin used to call
    # the job merely idle until a background read of the slot sizes came back).
    entry = status_of(client, p)
    assert entry is not None
    waiting = entry["containers"][0]["state"]["waiting"]
    assert waiting["reason"] == "Unschedulable", waiting
    assert "more than any slot of the pool offers (at most 8)" in waiting["message"]
    assert len(gateway.ops("capacity")) == 1
    status_of(client, p)
    assert len(gateway.ops("capacity")) == 1  # read once, then cached


def test_an_idle_pod_is_pending_when_the_slot_sizes_cannot_be_read(
    client: TestClient, gateway: FakeGateway
) -> None:
    gateway.fail["capacity"] = ScheddError("collector query failed: timed out")
    p = pod()
    create(client, p)
    gateway.update(p["metadata"]["uid"], RequestCpus=64)
    for _ in range(2):
        entry = status_of(client, p)
        assert entry is not None
        assert entry["containers"][0]["state"]["waiting"]["reason"] == "Pending"
    # Once the collector answers, the background refresh brings the diagnosis.
    del gateway.fail["capacity"]

    def unschedulable() -> bool:
        entry = status_of(client, p)
        return entry is not None and (
            entry["containers"][0]["state"]["waiting"]["reason"] == "Unschedulable"
        )

    eventually(unschedulable)


def test_status_when_the_schedd_is_down(client: TestClient, gateway: FakeGateway) -> None:
    gateway.fail["query_jobs"] = schedd_down("query")
    r = send(client, "GET", "/status", [pod()])
    assert r.status_code == 503 and "cannot query the schedd" in r.text
    r = send(client, "GET", "/status", {"not": "a list"})
    assert r.status_code == 422  # a body of the wrong shape


def test_metrics_count_jobs_by_state(client: TestClient, gateway: FakeGateway) -> None:
    create(client, pod())
    status_of(client, pod())
    text = client.get("/metrics").text
    assert 'interlink_htcondor_jobs{state="idle"} 1.0' in text
    assert 'interlink_htcondor_requests_total{code="200",endpoint="/create"} 1.0' in text


# ----------------------------------------------------------------------------- ping, health


def test_ping_reports_the_pools_capacity(client: TestClient, gateway: FakeGateway) -> None:
    r = send(client, "GET", "/status", [])
    assert r.status_code == 200
    resources = {"cpu": "8", "memory": "16384Mi", "pods": "8", "accelerators": []}
    assert r.json() == {"status": "ok", "resources": resources}  # no taints: the node keeps its
    send(client, "GET", "/status", [])
    assert len(gateway.ops("capacity")) == 1  # cached
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["schedd"].startswith("last schedd contact")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_ping_with_gpus_taints_and_a_pod_limit(tmp_path: Path) -> None:
    gateway = FakeGateway()
    gateway.capacity_value = gateway.capacity_value.__class__(8, 1024, 2, 1, {})
    settings = make_settings(
        tmp_path, policy={"max_pods": 40, "node_taints": [{"key": "site", "value": "grid"}]}
    )
    with TestClient(create_app(settings, gateway=gateway)) as c:
        answer = send(c, "GET", "/status", []).json()
    assert answer["resources"]["pods"] == "40"
    assert answer["resources"]["accelerators"] == [
        {"resourceType": "nvidia.com/gpu", "available": "2"}
    ]
    assert answer["taints"] == [{"key": "site", "value": "grid", "effect": "NoSchedule"}]


def test_ping_and_readiness_when_htcondor_fails(tmp_path: Path, gateway: FakeGateway) -> None:
    settings = make_settings(tmp_path, schedd={"unready_after_seconds": 0.5})
    gateway.fail["capacity"] = ScheddError("collector query failed: timed out")
    with TestClient(create_app(settings, gateway=gateway)) as c:
        r = send(c, "GET", "/status", [])
        assert r.status_code == 503 and r.json()["message"].startswith("HTCondor collector")
    gateway.fail["ping"] = schedd_down("ping")
    with TestClient(create_app(settings, gateway=gateway)) as c:
        r = send(c, "GET", "/status", [])
        assert r.status_code == 503
        assert r.json() == {
            "status": "error",
            "message": "HTCondor pool not ready: schedd ping failed: timed out",
        }
        # Ready while the last successful call is recent, unready once it is too old.
        r = eventually(lambda: (r := c.get("/readyz")).status_code == 503 and r)
        assert r.json()["status"] == "not ready"
        assert "no schedd call has succeeded for" in r.json()["schedd"]
        assert "schedd ping failed: timed out" in r.json()["schedd"]


# ----------------------------------------------------------------------------- logs


def cri(lines: list[tuple[int, str]]) -> str:
    return "".join(
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t))}.000000000Z stdout F {text}\n"
        for t, text in lines
    )


def logs(c: TestClient, p: Json, container: str = "main", **opts: Any) -> Any:
    m = p["metadata"]
    req = {
        "Namespace": m["namespace"],
        "PodUID": m["uid"],
        "PodName": m["name"],
        "ContainerName": container,
        "Opts": opts,
    }
    return send(c, "GET", "/getLogs", req)


def test_logs_with_kubectl_options(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    create(client, p)
    log = sandbox_of(gateway, p) / jobspec.LOG_DIR / "main.log"
    log.parent.mkdir()
    now = int(time.time())
    log.write_text(cri([(now - 100, "old"), (now - 5, "one"), (now - 4, "two")]))
    assert logs(client, p).text == "old\none\ntwo\n"
    assert logs(client, p, Tail=1).text == "two\n"
    assert logs(client, p, SinceSeconds=30).text == "one\ntwo\n"
    assert logs(client, p, Bytes=6).text == "old\non"
    stamped = logs(client, p, Tail=1, Timestamps=True).text
    assert stamped.endswith("Z two\n") and stamped.startswith(time.strftime("%Y-"))
    r = logs(client, p, Previous=True)
    assert r.status_code == 400 and "previous terminated container 'main'" in r.text
    # After a restart, the wrapper keeps the instance before it; Previous never follows.
    previous = log.with_name("main" + jobspec.PREVIOUS_LOG)
    previous.write_text(cri([(now - 200, "first life")]))
    assert logs(client, p, Previous=True, Follow=True).text == "first life\n"
    r = logs(client, p, Tail="3")
    assert r.status_code == 422 and "Tail must be an integer" in r.text
    # Follow a container that has ended: everything, then the end of the stream.
    gateway.complete(p["metadata"]["uid"])
    assert logs(client, p, Follow=True).text == "old\none\ntwo\n"


def test_logs_of_unknown_pods_and_containers(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    r = logs(client, p)
    assert r.status_code == 404 and "is not known to this plugin" in r.text
    create(client, p)
    r = logs(client, p, container="nope")
    assert r.status_code == 404 and "container 'nope' is not in pod default/hello" in r.text


def test_logs_when_the_schedd_is_down(settings: Settings, gateway: FakeGateway) -> None:
    gateway.fail["query_jobs"] = schedd_down("query")
    with TestClient(create_app(settings, gateway=gateway)) as c:
        r = logs(c, pod())
    assert r.status_code == 503 and "cannot query the schedd" in r.text


def test_logs_from_the_history_and_when_it_fails(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    create(client, p)
    log = sandbox_of(gateway, p) / jobspec.LOG_DIR / "main.log"
    log.parent.mkdir()
    log.write_text(cri([(T0, "kept")]))
    gateway.complete(p["metadata"]["uid"])
    gateway.to_history(p["metadata"]["uid"])
    assert logs(client, p).text == "kept\n"
    other = pod(name="other", uid="9b6e1d0c-0000-4000-8000-00000000000c")
    gateway.fail["find_jobs"] = schedd_down("history")
    r = logs(client, other)
    assert r.status_code == 503 and "schedd history" in r.text


def test_logs_of_a_job_run_by_htcondor_itself(client: TestClient, gateway: FakeGateway) -> None:
    # Container universe: HTCondor's own stdout and stderr of the job, no CRI format.
    p = pod()
    create(client, p)
    gateway.update(p["metadata"]["uid"], JobUniverse=14)
    sandbox = sandbox_of(gateway, p)
    (sandbox / "main.stdout").write_text("out line\n")
    (sandbox / "main.stderr").write_text("err line\n")
    assert logs(client, p, Timestamps=True).text == "out line\nerr line\n"


# ----------------------------------------------------------------------------- spool


def test_spool_mode_retrieves_the_output_of_finished_jobs(tmp_path: Path) -> None:
    gateway = FakeGateway(spool=True)
    settings = make_settings(tmp_path, storage={"mode": "spool"})

    def bring_back(ad: Json) -> None:  # what Schedd.retrieve does: the output comes back
        sandbox = Path(ad[classad_attrs.SANDBOX])
        (sandbox / jobspec.LOG_DIR).mkdir(exist_ok=True)
        (sandbox / jobspec.LOG_DIR / "main.log").write_text(cri([(T0, "from the spool")]))
        (sandbox / jobspec.STATUS_FILE).write_text(
            json.dumps({"containers": [{"name": "main", "state": "terminated", "exit_code": 0}]})
        )

    gateway.on_retrieve = bring_back
    p = pod()
    with TestClient(create_app(settings, gateway=gateway)) as c:
        create(c, p)
        gateway.run(p["metadata"]["uid"])
        r = logs(c, p)
        assert r.status_code == 200 and "storage.mode is 'spool'" in r.text
        assert gateway.ops("retrieve") == []
        gateway.complete(p["metadata"]["uid"])
        entry = status_of(c, p)
        assert entry is not None
        assert entry["containers"][0]["state"]["terminated"]["reason"] == "Completed"
        assert logs(c, p).text == "from the spool\n"
        assert gateway.ops("retrieve") == [("retrieve", "101.0")]  # once


def test_spool_retrieval_failures_are_tried_again(tmp_path: Path) -> None:
    gateway = FakeGateway(spool=True)
    settings = make_settings(tmp_path, storage={"mode": "spool"})
    p = pod()
    with TestClient(create_app(settings, gateway=gateway)) as c:
        create(c, p)
        gateway.complete(p["metadata"]["uid"])
        gateway.fail["retrieve"] = ScheddError("schedd retrieve failed: timed out")
        assert logs(c, p).status_code == 200  # what is there so far
        del gateway.fail["retrieve"]
        logs(c, p)
    assert len(gateway.ops("retrieve")) == 2


# ----------------------------------------------------------------------------- delete


def test_delete_removes_the_job_and_every_file(
    client: TestClient, gateway: FakeGateway, settings: Settings
) -> None:
    p = pod()
    create(client, p)
    sandbox = sandbox_of(gateway, p)
    r = send(client, "POST", "/delete", p)
    assert r.status_code == 200 and r.text == "pod default/hello deleted\n"
    assert gateway.ops("remove_pod")[0][1:] == (
        p["metadata"]["uid"],
        "pod deleted through interLink",
    )
    assert not sandbox.exists() and not lock_file(settings, p["metadata"]["uid"]).exists()
    assert status_of(client, p) is not None  # JobID set: the pod's job is now history
    # Deleting a pod the plugin never saw is fine too.
    r = send(
        client, "POST", "/delete", pod(name="never", uid="9b6e1d0c-0000-4000-8000-00000000000d")
    )
    assert r.status_code == 200


def test_a_job_outliving_its_grace_period_is_forced_out(
    client: TestClient, gateway: FakeGateway, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delete_module, "WAIT_MARGIN_SECONDS", 0.2)
    monkeypatch.setattr(delete_module, "FORCE_AFTER_SECONDS", 0.2)
    monkeypatch.setattr(delete_module, "POLL_SECONDS", 0.01)
    p = pod(terminationGracePeriodSeconds=0)
    create(client, p)
    gateway.run(p["metadata"]["uid"])
    gateway.linger.add("101.0")  # its starter does not stop it
    sandbox = sandbox_of(gateway, p)
    r = send(client, "POST", "/delete", p)
    assert r.status_code == 200 and r.text == "pod default/hello is being deleted\n"
    forced = eventually(lambda: [c for c in gateway.ops("remove_job") if c[3]])
    assert forced[0][1:] == ("101.0", "pod deleted; grace period over", True)
    lock = lock_file(settings, p["metadata"]["uid"])
    eventually(lambda: not sandbox.exists() and not lock.exists())


def test_a_job_that_completes_as_it_is_removed_leaves_the_queue_at_once(
    client: TestClient, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remove arrives as the job ends on its own: the job completes instead, and
    completed jobs stay in the queue (leave_in_queue) unless removed again."""
    monkeypatch.setattr(delete_module, "POLL_SECONDS", 0.01)
    p = pod()
    create(client, p)
    gateway.run(p["metadata"]["uid"])
    gateway.completes_first.add("101.0")
    sandbox = sandbox_of(gateway, p)
    r = send(client, "POST", "/delete", p)
    assert r.status_code == 200 and r.text == "pod default/hello deleted\n"
    again = gateway.ops("remove_job")
    assert [c[1:] for c in again] == [
        ("101.0", "pod deleted; its job had finished meanwhile", False)
    ]
    assert "101.0" not in gateway.queue and not sandbox.exists()


def test_delete_when_the_schedd_is_down(client: TestClient, gateway: FakeGateway) -> None:
    p = pod()
    create(client, p)
    gateway.fail["remove_pod"] = schedd_down("remove")
    r = send(client, "POST", "/delete", p)
    assert r.status_code == 503 and "cannot remove the job of pod default/hello" in r.text
    assert sandbox_of(gateway, p).exists()  # nothing deleted while the job may run


def test_delete_validation(client: TestClient) -> None:
    r = send(client, "POST", "/delete", {"metadata": {"name": "x", "namespace": "y"}})
    assert r.status_code == 422 and "metadata.uid" in r.text
    r = send(client, "POST", "/delete", {"metadata": {"name": 3, "uid": "u", "namespace": "y"}})
    assert r.status_code == 422 and "metadata.name" in r.text
    assert send(client, "POST", "/delete", [pod()]).status_code == 422


# ----------------------------------------------------------------------------- auth, errors


def test_the_whole_path_with_a_bearer_token(tmp_path: Path, gateway: FakeGateway) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, gateway=gateway, bearer_token=b"t0k3n")
    with TestClient(app) as c:
        p = pod()
        assert send(c, "POST", "/create", body(p)).status_code == 401
        assert gateway.ops("submit") == []
        auth = {"Authorization": "Bearer t0k3n"}
        assert send(c, "POST", "/create", body(p), **auth).status_code == 200
        assert send(c, "GET", "/status", [p], **auth).status_code == 200


def test_an_unexpected_error_is_a_500_naming_the_session(
    settings: Settings, gateway: FakeGateway
) -> None:
    gateway.fail["capacity"] = ZeroDivisionError("boom")  # a bug, not a schedd failure
    with TestClient(create_app(settings, gateway=gateway)) as c:
        r = send(c, "GET", "/status", [], **{"InterLink-Http-Session": "sess-77"})
        metrics = c.get("/metrics").text
    assert 'interlink_htcondor_requests_total{code="500",endpoint="/status"} 1.0' in metrics
    assert r.text == "internal error in the plugin (session sess-77); see its log\n"


def test_the_server_takes_what_it_started_with_out_of_the_collectors_reach(
    settings: Settings, gateway: FakeGateway
) -> None:
    gc.unfreeze()
    app = create_app(settings, gateway=gateway)
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(app) as c:
            frozen = gc.get_freeze_count()
            assert frozen > 10_000  # modules, the app, the settings
            assert c.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()
