"""The real schedd gateway (real bindings, real worker processes) against a daemon that
accepts connections and never answers, as a SIGSTOPped schedd or collector does; no pool
needed. The bindings hold Python's GIL while they wait: before the calls moved to worker
processes, one such call froze the whole plugin (event loop, /healthz, /metrics) for the
bindings' own 20 s timeout. The same against the real pool's schedd:
``tests/integration/test_faults_schedd.py``."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink_htcondor.service.app import create_app
from interlink_htcondor.service.gateway import ScheddError, ScheddGateway
from interlink_htcondor.settings import Settings

# Generous against the deadlines below, far below the bindings' own 20 s.
PROMPT = 3.0


@pytest.fixture
def hung_address() -> Iterator[str]:
    """A listener whose backlog accepts connections that nobody ever reads."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def settings_for(address: str, tmp_path: Path, **schedd: Any) -> Settings:
    return Settings(
        schedd={
            "collector": address,
            "auth_methods": "IDTOKENS",
            "timeout_seconds": 1.0,
            "probe_timeout_seconds": 0.5,
            "retries": 0,
            "workers": 2,
            "unready_after_seconds": 1.0,
            "status_wait_seconds": 0.3,
            **schedd,
        },
        storage={"shared_dir": str(tmp_path / "pods")},
    )


async def timed(coro: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    try:
        value = await coro
    except ScheddError as e:
        value = e
    return time.monotonic() - t0, value


def test_calls_to_a_hung_schedd_end_at_their_deadline_and_never_block_the_loop(
    hung_address: str, tmp_path: Path
) -> None:
    gaps: list[float] = []

    async def scenario() -> None:
        gw = ScheddGateway(settings_for(hung_address, tmp_path))
        await gw.start()
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        try:
            took, error = await timed(gw.ping())
            assert isinstance(error, ScheddError) and str(error) == "schedd ping failed: timed out"
            assert took < PROMPT
            contact = gw.contact()
            assert contact.open and contact.last_ok is None and "timed out" in contact.error
            # The circuit is open: calls fail at once, saying why, without a worker.
            took, error = await timed(gw.query_jobs())
            assert took < 0.5 and "not tried" in str(error) and "has not answered" in str(error)
            took, error = await timed(gw.remove_job("1.0", "test"))  # the change lane too
            assert took < 0.5 and "not tried" in str(error)
            # Later, one trial call goes through (and times out at its deadline).
            deadline = time.monotonic() + 10
            while True:
                took, error = await timed(gw.query_jobs())
                if str(error) == "schedd query failed: timed out":
                    break
                assert time.monotonic() < deadline, error
                await asyncio.sleep(0.1)
            assert 0.9 < took < PROMPT
            # Its worker was killed at the deadline: the lane is free again at once.
            freed = time.monotonic() + 1.0
            while gw._lanes["query"].busy:
                assert time.monotonic() < freed, "the timed-out call still holds its worker"
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await tick
            gw.close()

    asyncio.run(scenario())
    assert max(gaps) < 0.5, f"the event loop stalled {max(gaps):.1f} s"


def test_the_service_answers_at_once_while_the_schedd_hangs(
    hung_address: str, tmp_path: Path
) -> None:
    """The whole app on the real gateway: /healthz, /metrics and /readyz answer at once
    while /status, the ping and /create wait on the hung schedd, and each of those
    answers within its deadline, saying why."""

    async def scenario() -> None:
        app = create_app(settings_for(hung_address, tmp_path))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://plugin", timeout=60) as c,
        ):
            pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}}
            slow = [
                asyncio.ensure_future(timed(c.request("GET", "/status", json=[pod]))),
                asyncio.ensure_future(timed(c.request("GET", "/status", json=[]))),
            ]
            for path in ("/healthz", "/metrics", "/readyz", "/healthz"):
                took, r = await timed(c.get(path))
                assert took < 1.0, f"{path} took {took:.1f} s"
                assert r.status_code == (503 if path == "/readyz" else 200), (path, r.text)
            took, r = await slow[0]
            assert took < PROMPT and r.status_code == 503 and "job query" in r.text, r.text
            took, r = await slow[1]
            assert took < PROMPT and r.status_code == 503
            assert r.json()["status"] == "error" and "pool not ready" in r.json()["message"]
            ready = (await c.get("/readyz")).json()
            assert ready["status"] == "not ready" and "has not answered yet" in ready["schedd"]
            body = {
                "pod": {
                    **pod,
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
                "container": [{"name": "c"}],
            }
            took, r = await timed(c.post("/create", json=body))
            assert took < PROMPT and r.status_code == 503, r.text
            assert "cannot submit pod ns/p" in r.text and "schedd" in r.text
            metrics = (await c.get("/metrics")).text
            assert "interlink_htcondor_schedd_circuit_open 1.0" in metrics

    asyncio.run(scenario())
