"""Hostile and benign pods created at the same moment, through the real plugin and schedd.

The plugin gathers the creates that arrive within a few milliseconds into one submit,
one itemdata row per pod. A hostile pod must get its own 422 and every benign pod of the
same moment must be submitted with its own values: before, a requirements annotation
holding ``\\x1f`` shifted the columns of the whole batch and six benign pods got a 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from plugin_harness import Json, Plugin, run, started, state_of

from interlink_htcondor import devpool
from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.itemdata import SubmitRefused
from interlink_htcondor.core.translate import sandbox_dir, translate
from interlink_htcondor.devpool import PoolInfo
from interlink_htcondor.local_plugin import force_remove, pool_schedd
from interlink_htcondor.service.gateway import ScheddGateway, Submitted
from interlink_htcondor.service.sandbox_store import write_sandbox
from interlink_htcondor.settings import Settings, load

pytestmark = pytest.mark.integration

REQ = "htcondor.interlink.eu/requirements"


def pod(name: str, annotations: dict[str, str] | None = None, sleep: str = "1") -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "hostile-tests",
            "uid": str(uuid.uuid4()),
            "annotations": annotations or {},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", f"echo {name}; sleep {sleep}"],
                }
            ],
        },
    }


async def create_all(url: str, pods: list[Json]) -> list[httpx.Response]:
    """Every create sent at once, so that the plugin's batcher gathers them."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        return list(
            await asyncio.gather(*(c.post("/create", json=Plugin.create_body(p)) for p in pods))
        )


HOSTILE_REQUIREMENTS = [
    "true ]\x1fexecutable = /bin/evil",
    "true\x1f",
    "true ] junk",
    "true\nexecutable = /bin/evil",
    "(" * 100_000 + "true" + ")" * 100_000,
    "x" + ".y" * 50_000,
]


def test_hostile_pods_fail_alone_in_a_batch(plugin: Plugin, schedd: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    benign = [pod(f"benign-{tag}-{i}", {REQ: f"Memory >= {i}"}) for i in range(6)]
    hostile = [pod(f"hostile-{tag}-{i}", {REQ: r}) for i, r in enumerate(HOSTILE_REQUIREMENTS)]
    mixed = [*benign[:1], *hostile[:3], *benign[1:4], *hostile[3:], *benign[4:]]
    responses = run(create_all(plugin.url, mixed))
    answers = {p["metadata"]["uid"]: r for p, r in zip(mixed, responses, strict=True)}
    for p in hostile:
        r = answers[p["metadata"]["uid"]]
        assert r.status_code == 422, r.text
        assert r.text.startswith(f"pod hostile-tests/{p['metadata']['name']} cannot run: ")
        assert "requirements" in r.text
    for p in benign:
        r = answers[p["metadata"]["uid"]]
        assert r.status_code == 200, r.text
        p["metadata"]["annotations"]["JobID"] = r.json()["PodJID"]

    # Each benign job carries its own pod's values, and nothing of the hostile ones.
    uids = [p["metadata"]["uid"] for p in benign + hostile]
    members = ", ".join(f'"{u}"' for u in uids)
    ads = schedd.query(
        constraint=f"member({classad_attrs.POD_UID}, {{{members}}})",
        projection=[classad_attrs.POD_UID, classad_attrs.POD_NAME, "Requirements", "Cmd"],
    )
    by_uid = {ad[classad_attrs.POD_UID]: ad for ad in ads}
    assert set(by_uid) == {p["metadata"]["uid"] for p in benign}
    for i, p in enumerate(benign):
        ad = by_uid[p["metadata"]["uid"]]
        assert ad[classad_attrs.POD_NAME] == p["metadata"]["name"]
        assert f"Memory >= {i}" in str(ad["Requirements"])
        assert ad["Cmd"].endswith(
            f"_{p['metadata']['name']}_{p['metadata']['uid']}/interlink-job-wrapper.py"
        )

    finals = plugin.wait_terminal(benign, timeout=240)
    for p in benign:
        t = state_of(finals[p["metadata"]["uid"]], "main")["terminated"]
        assert t["exitCode"] == 0
        assert plugin.logs(p, "main") == f"{p['metadata']['name']}\n"


@pytest.fixture(scope="module")
def priority_plugin(pool: PoolInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    """A plugin that lets pods set ``priority``: a value the translator accepts (one line,
    no control character) but HTCondor cannot turn into a job ad."""
    env = {"INTERLINK_HTCONDOR_POLICY__ALLOWED_SUBMIT_COMMANDS": '["priority"]'}
    with started(pool, tmp_path_factory.mktemp("priority-plugin"), **env) as p:
        yield p


def test_a_value_htcondor_refuses_fails_only_its_pod(priority_plugin: Plugin) -> None:
    tag = uuid.uuid4().hex[:6]
    prio = "htcondor.interlink.eu/submit.priority"
    benign = [pod(f"prio-{tag}-{i}", {prio: str(i)}) for i in range(5)]
    hostile = pod(f"prio-bad-{tag}", {prio: "x y"})
    pods = [*benign[:2], hostile, *benign[2:]]
    answers = run(create_all(priority_plugin.url, pods))
    bad = answers[2]
    assert bad.status_code == 422, bad.text
    assert "priority" in bad.text and "integer" in bad.text
    for p, r in zip(pods, answers, strict=True):
        if p is not hostile:
            assert r.status_code == 200, r.text
    # The refused pod's sandbox (cleaning it up after a failed create is the service's
    # business, tested there) must not outlive this test.
    m = hostile["metadata"]
    shutil.rmtree(priority_plugin.pool.pods_dir / f"{m['namespace']}_{m['name']}_{m['uid']}", True)


# ----------------------------------------------------------------------------------------
# The gateway alone, on the real schedd: plans the translator would never give.


@pytest.fixture
def gateway(pool: PoolInfo, tmp_path: Path) -> Iterator[tuple[ScheddGateway, Settings]]:
    shared = pool.make_job_dir(f"gateway-test-{uuid.uuid4().hex[:8]}")
    base = devpool.embedded_settings(pool)
    base["schedd"]["token_dir"] = str(pool.token_dir_for(0))
    base["storage"]["shared_dir"] = str(shared)
    base["policy"] = {**base.get("policy", {}), "instance": f"gw-{uuid.uuid4().hex[:8]}"}
    settings = load(base=base)
    gw = ScheddGateway(settings)
    try:
        yield gw, settings
    finally:
        constraint = f'{classad_attrs.PLUGIN} == "{settings.policy.instance}"'
        force_remove(pool_schedd(pool), constraint, "gateway test over", grace=1)
        gw.close()
        shutil.rmtree(shared, ignore_errors=True)


def _plans(settings: Settings, values: list[dict[str, str]]) -> list[Any]:
    """Translated plans of benign pods, each then given ``values`` (bypassing the
    translator), all with the same commands so that they share one batch; held, so that
    they never run."""
    out = []
    for i, extra in enumerate(values):
        p = pod(f"gw-{i}")
        plan = translate(_request(p), settings)
        submit = {**plan.submit, "hold": "true", **extra}
        out.append((dataclasses.replace(plan, submit=submit), p))
    return out


def _request(p: Json) -> Any:
    from interlink_htcondor.core.models import parse_create_body

    return parse_create_body(Plugin.create_body(p))


async def _submit_all(gw: ScheddGateway, settings: Settings, plans: list[Any]) -> list[Any]:
    async def one(plan: Any, p: Json) -> Submitted | BaseException:
        m = p["metadata"]
        sandbox = sandbox_dir(settings, m["namespace"], m["name"], m["uid"])
        write_sandbox(plan, sandbox)  # as the create handler does before it submits
        try:
            return await gw.submit(plan, sandbox)
        except Exception as e:
            return e

    return list(await asyncio.gather(*(one(plan, p) for plan, p in plans)))


def test_gateway_refuses_a_separator_for_its_pod_only(
    gateway: tuple[ScheddGateway, Settings], schedd: Any
) -> None:
    gw, settings = gateway
    values = [{"+InterlinkNote": f'"pod {i}"'} for i in range(6)]
    values[2] = {"+InterlinkNote": '"x"\x1f"evil"'}
    plans = _plans(settings, values)
    results = run(_submit_all(gw, settings, plans))
    assert isinstance(results[2], SubmitRefused) and "\\x1f" in str(results[2])
    ok = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, Submitted) for r in ok), results
    assert len({r.job_id.split(".")[0] for r in ok}) == 1  # one batch, one cluster
    ads = schedd.query(
        constraint=f'{classad_attrs.PLUGIN} == "{settings.policy.instance}"',
        projection=[classad_attrs.POD_NAME, "InterlinkNote", "ProcId"],
    )
    notes = {ad[classad_attrs.POD_NAME]: ad.get("InterlinkNote") for ad in ads}
    assert notes == {f"gw-{i}": f"pod {i}" for i in (0, 1, 3, 4, 5)}


def test_gateway_submits_each_pod_alone_when_htcondor_refuses_one(
    gateway: tuple[ScheddGateway, Settings],
) -> None:
    gw, settings = gateway
    values = [{"priority": str(i)} for i in range(4)]
    values[1] = {"priority": "x y"}
    results = run(_submit_all(gw, settings, _plans(settings, values)))
    assert isinstance(results[1], SubmitRefused) and "priority" in str(results[1])
    assert all(isinstance(r, Submitted) and r.created for i, r in enumerate(results) if i != 1)
