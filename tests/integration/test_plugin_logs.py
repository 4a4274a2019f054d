"""Container logs through the real plugin: live and after the end, each option, follow."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from plugin_harness import Json, Plugin, load_pod, run, state_of

from interlink_htcondor.client import log_request

pytestmark = pytest.mark.integration

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")
ALL = "".join(f"line-{i}\nerr-{i}\n" for i in range(1, 7))


@pytest.fixture(scope="module")
def talker(plugin: Plugin) -> Json:
    """The logs pod, followed from its start to its end (the follow is the first test)."""
    pod = load_pod("logs.yaml", name=f"logs-{uuid.uuid4().hex[:6]}")
    plugin.create(pod)
    return pod


def test_follow_streams_until_the_container_ends(plugin: Plugin, talker: Json) -> None:
    m = talker["metadata"]
    arrivals: list[tuple[float, str]] = []

    async def follow() -> None:
        async with plugin.client() as c:
            async for chunk in c.follow_logs(m["namespace"], m["name"], m["uid"], "talk"):
                arrivals.append((time.monotonic(), chunk))

    t0 = time.monotonic()
    run(follow())
    text = "".join(c for _, c in arrivals)
    # Heartbeat newlines may come while the job waits for a slot.
    assert text.lstrip("\n").endswith(ALL), text
    assert ALL in text
    # Lines arrived while the container ran, not all at the end.
    first_line = next(t for t, c in arrivals if "line-1" in c)
    assert arrivals[-1][0] - first_line >= 3
    entry = plugin.status_of(talker)
    assert entry is not None and "terminated" in state_of(entry, "talk")
    assert time.monotonic() - t0 < 180


def test_logs_after_the_end(plugin: Plugin, talker: Json) -> None:
    plugin.wait_terminal([talker])
    assert plugin.logs(talker, "talk") == ALL


def test_tail(plugin: Plugin, talker: Json) -> None:
    assert plugin.logs(talker, "talk", Tail=3) == "err-5\nline-6\nerr-6\n"


def test_bytes(plugin: Plugin, talker: Json) -> None:
    assert plugin.logs(talker, "talk", Bytes=9) == "line-1\ner"
    assert plugin.logs(talker, "talk", Bytes=0) == ALL


def test_timestamps(plugin: Plugin, talker: Json) -> None:
    out = plugin.logs(talker, "talk", Timestamps=True)
    lines = out.splitlines()
    assert len(lines) == 12
    assert all(TS.match(line) for line in lines), lines
    assert [TS.sub("", line) for line in lines] == ALL.splitlines()


def _line_times(plugin: Plugin, pod: Json) -> list[datetime]:
    out = plugin.logs(pod, "talk", Timestamps=True)
    stamps = [line.split(" ", 1)[0] for line in out.splitlines()]
    return [
        datetime.strptime(s[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) for s in stamps
    ]


def test_since_time(plugin: Plugin, talker: Json) -> None:
    times = _line_times(plugin, talker)
    cut = times[6]  # line-4's time
    since = cut.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = plugin.logs(talker, "talk", SinceTime=since)
    assert out.startswith("line-4\n") and out.endswith("err-6\n")


def test_since_seconds(plugin: Plugin, talker: Json) -> None:
    times = _line_times(plugin, talker)
    age = (datetime.now(UTC) - times[-1]).total_seconds()
    out = plugin.logs(talker, "talk", SinceSeconds=int(age) + 2)
    assert out.endswith("err-6\n") and "line-1\n" not in out
    assert plugin.logs(talker, "talk", SinceSeconds=100000) == ALL


def test_previous_of_a_container_never_restarted_is_400(plugin: Plugin, talker: Json) -> None:
    m = talker["metadata"]
    body = log_request(m["namespace"], m["name"], m["uid"], "talk", Previous=True)
    r = plugin.raw("GET", "/getLogs", body)
    assert r.status_code == 400, r.text
    assert r.text == (
        f"previous terminated container 'talk' in pod {m['namespace']}/{m['name']} not found\n"
    )


def test_unknown_container_and_pod_are_404(plugin: Plugin, talker: Json) -> None:
    m = talker["metadata"]
    body: dict[str, Any] = {
        "Namespace": m["namespace"],
        "PodUID": m["uid"],
        "PodName": m["name"],
        "ContainerName": "nope",
        "Opts": {},
    }
    r = plugin.raw("GET", "/getLogs", body)
    assert r.status_code == 404 and "nope" in r.text
    body.update(PodUID=str(uuid.uuid4()), ContainerName="talk")
    r = plugin.raw("GET", "/getLogs", body)
    assert r.status_code == 404


def test_logs_of_a_running_container(plugin: Plugin) -> None:
    pod = load_pod("sleeper.yaml", name=f"live-{uuid.uuid4().hex[:6]}")
    pod["spec"]["containers"][0]["env"][0]["value"] = "8"
    plugin.create(pod)
    plugin.wait_for(pod, lambda e: "running" in state_of(e, "sleep"), timeout=120)
    deadline = time.monotonic() + 10
    while plugin.logs(pod, "sleep") != "awake\n" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert plugin.logs(pod, "sleep") == "awake\n"
    final = plugin.wait_terminal([pod])[pod["metadata"]["uid"]]
    assert state_of(final, "sleep")["terminated"]["exitCode"] == 0
    assert plugin.logs(pod, "sleep") == "awake\ndone\n"
