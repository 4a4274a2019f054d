"""interLink's conformance cases through the real plugin, on the real pool.

All the batch pods are created at once (the pool has several slots), polled with one
/status call for all, and their final statuses and logs are then checked case by case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from plugin_harness import Json, Plugin, free_port, load_objects, load_pod, state_of
from volumes_pod import CONFIGMAPS, check_volumes_show

pytestmark = pytest.mark.integration


@dataclass
class Outcome:
    pod: Json
    answer: Json
    status: Json = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    def state(self, container: str) -> Json:
        return state_of(self.status, container)

    def terminated(self, container: str) -> Json:
        s = self.state(container)
        assert "terminated" in s, s
        t: Json = s["terminated"]
        return t


SECRETS = "volumes.secrets.yaml"

BATCH: dict[str, str] = {
    "hello": "hello-world.json",
    "corpus": "env-corpus.json",
    "expansion": "var-expansion.yaml",
    "entrypoint": "default-entrypoint.yaml",
    "exit42": "exit-42.yaml",
    "notfound": "command-not-found.yaml",
    "init-order": "init-order.yaml",
    "init-fail": "init-fail-fast.yaml",
    "emptydir": "shared-emptydir.yaml",
    "volumes": "volumes.yaml",
    "env-from": "env-from.yaml",
    "oom": "oom.yaml",
    "deadline": "deadline.yaml",
    "localhost": "localhost.yaml",
}


@pytest.fixture(scope="module")
def batch(plugin: Plugin) -> dict[str, Outcome]:
    configmaps = load_objects(CONFIGMAPS)
    secrets = load_objects(SECRETS)
    projected = load_objects("hello-world.projected.yaml")
    port = str(free_port())
    outcomes: dict[str, Outcome] = {}
    for key, file in BATCH.items():
        pod = load_pod(file, name=f"{key}-{plugin.instance}"[:63])
        if key == "localhost":
            for c in pod["spec"]["containers"]:
                c["env"] = [{"name": "PORT", "value": port}]
        answer = plugin.create(pod, configmaps=configmaps, secrets=secrets, projected=projected)
        outcomes[key] = Outcome(pod, answer)
    finals = plugin.wait_terminal([o.pod for o in outcomes.values()], timeout=300)
    for o in outcomes.values():
        o.status = finals[o.pod["metadata"]["uid"]]
        spec = o.pod["spec"]
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            o.logs[c["name"]] = plugin.logs(o.pod, c["name"])
    return outcomes


def test_create_answers_uid_and_job_id(batch: dict[str, Outcome]) -> None:
    jids = set()
    for o in batch.values():
        assert o.answer["PodUID"] == o.pod["metadata"]["uid"]
        cluster, proc = o.answer["PodJID"].split(".")
        assert int(cluster) > 0 and proc == "0"
        jids.add(o.answer["PodJID"])
    assert len(jids) == len(batch)


def test_status_identity_and_times(batch: dict[str, Outcome]) -> None:
    for o in batch.values():
        s = o.status
        m = o.pod["metadata"]
        assert (s["name"], s["namespace"], s["UID"], s["JID"]) == (
            m["name"],
            m["namespace"],
            m["uid"],
            o.answer["PodJID"],
        )
        assert [c["name"] for c in s["containers"]] == [
            c["name"] for c in o.pod["spec"]["containers"]
        ]
        for c in s["containers"]:
            t = c["state"]["terminated"]
            assert t["finishedAt"].endswith("Z")


def test_hello_world(batch: dict[str, Outcome]) -> None:
    o = batch["hello"]
    t = o.terminated("hello")
    assert t["exitCode"] == 0 and t["reason"] == "Completed"
    assert t["startedAt"] <= t["finishedAt"]
    assert o.logs["hello"] == "hello world\n"


def test_env_corpus_arrives_byte_for_byte(batch: dict[str, Outcome]) -> None:
    o = batch["corpus"]
    assert o.terminated("dump")["exitCode"] == 0, o.logs
    got = json.loads(o.logs["dump"])
    container = o.pod["spec"]["containers"][0]
    expected = {e["name"]: e["value"] for e in container["env"]}
    # Kubelet semantics: undefined references stay, $$ is an escaped $.
    expected["CORPUS_ESCAPED_REF"] = "$(CORPUS_TABS)"
    expected["CORPUS_DOLLAR"] = "$HOME ${PATH} $1 $ $"
    assert got["env"] == expected
    assert got["argv"] == container["args"]


def test_var_expansion(batch: dict[str, Outcome]) -> None:
    o = batch["expansion"]
    assert o.terminated("expand")["exitCode"] == 0
    assert (
        o.logs["expand"]
        == "hello-world|$(GREETING)|$(UNDEFINED_VAR)|$(GREETING|hello, world!|$(NAME)\n"
    )


def test_default_entrypoint(batch: dict[str, Outcome]) -> None:
    o = batch["entrypoint"]
    assert o.terminated("py")["exitCode"] == 0
    assert o.logs["py"].startswith("entrypoint ran (3, ")


def test_exit_code_42(batch: dict[str, Outcome]) -> None:
    o = batch["exit42"]
    t = o.terminated("fail")
    assert t["exitCode"] == 42 and t["reason"] == "Error"
    # The container's own stdout and stderr, both (their relative order is not defined).
    assert sorted(o.logs["fail"].splitlines()) == ["about to fail", "on stderr"]


def test_command_not_found(batch: dict[str, Outcome]) -> None:
    t = batch["notfound"].terminated("missing")
    assert t["exitCode"] != 0
    assert t["exitCode"] in (127, 128), t


def test_init_containers_run_in_order(batch: dict[str, Outcome]) -> None:
    o = batch["init-order"]
    first, second = o.terminated("first"), o.terminated("second")
    assert first["exitCode"] == 0 and second["exitCode"] == 0
    assert first["finishedAt"] <= second["startedAt"]
    assert o.terminated("main")["exitCode"] == 0
    assert o.logs["main"] == "app\nfirst\nsecond\n"


def test_init_failure_is_fail_fast(batch: dict[str, Outcome]) -> None:
    o = batch["init-fail"]
    assert o.terminated("breaks")["exitCode"] == 3
    assert o.logs["breaks"] == "init failing\n"
    for name in ("never", "main"):
        t = o.terminated(name)
        assert t["exitCode"] != 0
        assert o.logs[name] == ""


def test_shared_emptydir_with_read_only_reader(batch: dict[str, Outcome]) -> None:
    o = batch["emptydir"]
    assert o.terminated("writer")["exitCode"] == 0
    assert o.terminated("reader")["exitCode"] == 0
    assert o.logs["reader"] == "shared-data\nREADONLY\n"


def test_configmap_secret_projected_volumes(batch: dict[str, Outcome]) -> None:
    o = batch["volumes"]
    assert o.terminated("show")["exitCode"] == 0, o.logs
    check_volumes_show(o.logs["show"], o.pod["metadata"]["name"])


def test_env_from_configmap_secret_and_field_refs(batch: dict[str, Outcome]) -> None:
    o = batch["env-from"]
    assert o.terminated("show")["exitCode"] == 0, o.logs
    got = json.loads(o.logs["show"])
    m = o.pod["metadata"]
    assert got == {
        "API_TOKEN": "token-value",
        "CFG_LEVEL": "debug",
        "CFG_REGION": "eu-west",
        "FROM_CM": "hello from a configMap",
        "FROM_SECRET": "s3cr3t-p@ss\n",
        "PLAIN": "plain-value",
        "POD_NAME": m["name"],
        "POD_NAMESPACE": m["namespace"],
        "POD_UID": m["uid"],
    }


def test_memory_limit_gives_oomkilled(batch: dict[str, Outcome]) -> None:
    o = batch["oom"]
    t = o.terminated("hog")
    assert t["reason"] == "OOMKilled", t
    assert t["exitCode"] == 137
    assert "survived" not in o.logs["hog"]
    assert "allocated 16 MiB" in o.logs["hog"]


def test_deadline_gives_deadline_exceeded(batch: dict[str, Outcome]) -> None:
    o = batch["deadline"]
    t = o.terminated("sleeper")
    assert t["reason"] == "DeadlineExceeded", t
    assert t["exitCode"] != 0
    assert o.logs["sleeper"] == "sleeping\n"


def test_two_containers_over_localhost(batch: dict[str, Outcome]) -> None:
    o = batch["localhost"]
    assert o.terminated("server")["exitCode"] == 0, o.logs
    assert o.terminated("client")["exitCode"] == 0, o.logs
    assert o.logs["client"] == "pong from the server container\n"
    assert o.logs["server"].startswith("listening\n")


def test_terminal_status_is_stable(plugin: Plugin, batch: dict[str, Outcome]) -> None:
    # interLink caches terminal states: asking again must give the same answer.
    pods = [o.pod for o in batch.values()]
    again = {e["UID"]: e for e in plugin.status(pods)}
    for o in batch.values():
        assert again[o.pod["metadata"]["uid"]]["containers"] == o.status["containers"]


def test_single_pod_calls_match_the_batch_call(plugin: Plugin, batch: dict[str, Outcome]) -> None:
    for o in list(batch.values())[:4]:
        entry = plugin.status_of(o.pod)
        assert entry is not None and entry["containers"] == o.status["containers"]


def test_delete_cleans_up_and_is_idempotent(
    plugin: Plugin, batch: dict[str, Outcome], schedd_jobs: Any
) -> None:
    o = batch["hello"]
    uid = o.pod["metadata"]["uid"]
    sandboxes = [p for p in plugin.pool.pods_dir.iterdir() if p.name.endswith(uid)]
    assert len(sandboxes) == 1
    r = plugin.delete(o.pod)
    assert r.status_code == 200, r.text
    assert not sandboxes[0].exists()
    assert schedd_jobs(uid) == []
    assert plugin.delete(o.pod).status_code == 200
