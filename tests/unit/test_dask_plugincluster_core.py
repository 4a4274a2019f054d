"""PluginCluster's cluster-manager logic against a scripted plugin endpoint.

The endpoint below speaks the plugin API over real HTTP and plays the job's part by
starting an in-process Dask worker for pods it "runs". It exercises what the cluster
manager decides (concurrency of creation, what the user sees for held and failed jobs,
which workers scale-down removes); the real plugin and pool are in
tests/integration/test_dask_plugincluster.py.
"""

from __future__ import annotations

import asyncio
import html
import io
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import html5lib
import pytest
import uvicorn
from distributed import Client, Worker
from distributed.core import Status
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from interlink_htcondor.dask import PluginCluster, WorkerStartError, plugincluster
from interlink_htcondor.dask.podstate import Phase
from interlink_htcondor.dask.progress import TerminalDisplay

Behaviour = Callable[[str], str]

BAD_IMAGE = "could not open image /images/nope.sif: no such file or directory"
TOO_BIG = (
    "HTCondor job 1.0 cannot run: it requests 204800 MiB memory, more than any slot of the "
    "pool offers (at most 2048 MiB)"
)


class ScriptedPlugin:
    """Pods behave as ``behaviour(pod name)`` says: run, pending, held, fail or refuse."""

    def __init__(self, behaviour: Behaviour, create_delay: float = 0.3) -> None:
        self.behaviour = behaviour
        self.create_delay = create_delay
        self.pods: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.busy_deletes = 0  # the next deletes answered 503, as a plugin out of workers
        self.workers: dict[str, Worker] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.status_calls = 0
        self.status_sizes: list[int] = []  # pods asked about, per /status call
        self.app = self._app()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/create")
        async def create(request: Request) -> Any:
            pod = (await request.json())["pod"]
            name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                await asyncio.sleep(self.create_delay)  # a schedd round trip
            finally:
                self.inflight -= 1
            if self.behaviour(name) == "refuse":
                return PlainTextResponse("image rule: no image for 'nope:1'", status_code=422)
            self.pods[uid] = pod
            if self.behaviour(name) == "run":
                env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
                self.workers[uid] = await Worker(
                    env["DASK_SCHEDULER_ADDRESS"], name=env["DASK_WORKER_NAME"], nthreads=1
                )
            return {"PodUID": uid, "PodJID": f"{len(self.pods)}.0"}

        @app.get("/status")
        async def status(request: Request) -> Any:
            self.status_calls += 1
            pods = await request.json()
            self.status_sizes.append(len(pods))
            out = []
            for pod in pods:
                uid = pod["metadata"]["uid"]
                if uid not in self.pods:
                    continue
                state = self._state(pod["metadata"]["name"])
                worker = self.workers.get(uid)
                if worker is not None and worker.status == Status.closed:
                    # The worker process left (client.restart(), a kill): the job ends.
                    state = {"terminated": {"exitCode": 0, "reason": "Completed"}}
                out.append(
                    {
                        "name": pod["metadata"]["name"],
                        "UID": uid,
                        "namespace": pod["metadata"]["namespace"],
                        "JID": pod["metadata"]["annotations"].get("JobID", ""),
                        "containers": [{"name": "worker", "state": state}],
                        "initContainers": [],
                    }
                )
            return JSONResponse(out)

        @app.post("/delete")
        async def delete(request: Request) -> Any:
            pod = await request.json()
            if self.busy_deletes > 0:
                self.busy_deletes -= 1
                return PlainTextResponse("all schedd-change workers busy", status_code=503)
            uid = pod["metadata"]["uid"]
            self.deleted.append(pod["metadata"]["name"])
            self.pods.pop(uid, None)
            worker = self.workers.pop(uid, None)
            if worker is not None:
                await worker.close()
            return PlainTextResponse("")

        @app.get("/getLogs")
        async def logs(request: Request) -> Any:
            if self.behaviour((await request.json())["PodName"]) == "bad-image":
                return PlainTextResponse(f"FATAL:   {BAD_IMAGE}\n")  # as in the status
            return PlainTextResponse("starting worker\nImportError: no module named dask\n")

        return app

    def _state(self, name: str) -> dict[str, Any]:
        what = self.behaviour(name)
        if what == "run":
            return {"running": {"startedAt": "2026-11-23T10:00:00Z"}}
        if what == "held":
            return {
                "waiting": {
                    "reason": "JobHeld",
                    "message": "HTCondor job 3.0 is held: Failed to execute apptainer",
                }
            }
        if what == "fail":
            return {"terminated": {"exitCode": 1, "reason": "Error", "message": "worker died"}}
        if what == "bad-image":
            return {
                "terminated": {
                    "exitCode": 128,
                    "reason": "ContainerCannotRun",
                    "message": BAD_IMAGE,
                }
            }
        if what == "too-big":
            return {"waiting": {"reason": "Unschedulable", "message": TOO_BIG}}
        return {"waiting": {"reason": "Pending", "message": "HTCondor job is idle, waiting"}}


@asynccontextmanager
async def serve(plugin: ScriptedPlugin) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(plugin.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        for w in list(plugin.workers.values()):
            await w.close()


@asynccontextmanager
async def cluster_for(plugin: ScriptedPlugin, **kw: Any) -> AsyncIterator[PluginCluster]:
    async with serve(plugin) as url:
        cluster = await PluginCluster(url, asynchronous=True, status_interval=0.2, **kw)
        try:
            yield cluster
        finally:
            await cluster.close()  # type: ignore[misc]  # annotated as maybe not awaitable


async def until(cond: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_scale_creates_pods_concurrently_and_workers_connect() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "run", create_delay=0.5)
        async with cluster_for(plugin, memory="1Gi") as cluster:
            t0 = time.monotonic()
            cluster.scale(8)
            await cluster.wait_for_workers(8, timeout=30)
            elapsed = time.monotonic() - t0
            assert plugin.max_inflight == 8  # all eight /create calls overlapped
            assert elapsed < 8 * 0.5  # far below eight sequential round trips
            names = {w["name"] for w in cluster.scheduler_info["workers"].values()}
            assert names == {f"{cluster._prefix}-{i}" for i in range(8)}
            pod = next(iter(plugin.pods.values()))
            assert pod["metadata"]["namespace"] == "dask"
            assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
            assert cluster.counts().running == 8
            assert "8/8 running" in repr(cluster)

    run(main())


def test_one_status_call_per_interval_for_all_pods() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "pending", create_delay=0)
        async with cluster_for(plugin) as cluster:
            cluster.scale(6)
            await until(lambda: len(plugin.pods) == 6)
            before = plugin.status_calls
            await until(lambda: plugin.status_calls >= before + 3)
            # Every call asks about all six pods: one call per interval, not one per pod.
            assert plugin.status_sizes[before:] and set(plugin.status_sizes[before:]) == {6}
            assert cluster.counts().pending == 6

    run(main())


def test_held_worker_is_a_failure_at_once_with_the_hold_reason() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "held" if name.endswith("-1") else "run")
        async with cluster_for(plugin) as cluster:
            cluster.scale(2)
            t0 = time.monotonic()
            with pytest.raises(WorkerStartError, match="Failed to execute apptainer") as e:
                await cluster.wait_for_workers(2, timeout=600)
            assert time.monotonic() - t0 < 30  # at once, not after the timeout
            (failure,) = e.value.failures
            assert failure.reason.startswith("JobHeld: ")
            assert cluster.failures == [failure]
            await until(lambda: failure.name in plugin.deleted)  # its job is removed
            text = repr(cluster)
            assert "1/1 running" in text and "1 failed" in text
            assert any("is held" in msg for _, msg in cluster._cluster_manager_logs)

    run(main())


def test_pod_that_can_never_run_fails_at_once() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "too-big")
        async with cluster_for(plugin) as cluster:
            cluster.scale(1)
            t0 = time.monotonic()
            with pytest.raises(WorkerStartError, match="more than any slot") as e:
                await cluster.wait_for_workers(1, timeout=600)
            assert time.monotonic() - t0 < 30
            assert e.value.failures[0].reason.startswith("Unschedulable: ")

    run(main())


def test_a_bad_image_says_why_once_in_each_place(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "bad-image")
        async with cluster_for(plugin) as cluster:
            cluster.scale(1)
            shown = io.StringIO()
            display = TerminalDisplay(shown)  # what the demo shows in a terminal
            with pytest.raises(WorkerStartError) as e:
                await cluster.wait_for_workers(1, timeout=600, progress=display)
            assert BAD_IMAGE not in shown.getvalue()  # the exception says it
            assert str(e.value).count(BAD_IMAGE) == 1  # not again from the log tail
            assert repr(cluster).count(BAD_IMAGE) == 1
            assert cluster._repr_html_().count(html.escape(BAD_IMAGE)) == 1
            # The widget's other tab (distributed's method is untyped).
            assert BAD_IMAGE not in cluster._scaling_status()  # type: ignore[no-untyped-call]
            assert BAD_IMAGE in "\n".join(m for _, m in cluster._cluster_manager_logs)

    run(main())
    out = capsys.readouterr()
    assert BAD_IMAGE not in out.out + out.err  # the exception carries it: no extra copy


def test_widget_is_valid_html_inside_distributeds_cluster_table() -> None:
    async def main() -> None:
        def behaviour(name: str) -> str:
            return {"0": "run", "1": "pending", "2": "bad-image"}[name.rsplit("-", 1)[1]]

        plugin = ScriptedPlugin(behaviour, create_delay=0)
        async with cluster_for(plugin) as cluster:
            cluster.scale(3)
            await until(lambda: len(cluster.failures) == 1 and cluster.counts().running == 1)
            page = cluster._repr_html_()
            # strict: a parse error (a block element where a table allows only rows, an
            # unclosed or misnested tag) raises instead of being repaired
            html5lib.HTMLParser(strict=True).parseFragment(page)
            # the widget's counts agree with its Scheduler Info: one connected worker
            info = cluster.scheduler_info
            assert len(info["workers"]) == 1 == cluster.counts().running
            assert "1/2 running" in page and "Workers:</strong> 1" in page

    run(main())


def test_failed_workers_are_reported_removed_and_raise_in_wait() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "fail" if name.endswith("-0") else "run")
        async with cluster_for(plugin) as cluster:
            cluster.scale(2)
            with pytest.raises(WorkerStartError) as e:
                await cluster.wait_for_workers(2, timeout=30)
            (failure,) = e.value.failures
            assert failure.reason == "Error: exit code 1: worker died"
            assert "ImportError: no module named dask" in failure.log_tail
            assert failure.name.endswith("-0") and failure.job_id
            assert "worker died" in str(e.value)
            await until(lambda: failure.name in plugin.deleted)  # its job is cleaned up
            assert cluster.counts().failed == 1
            assert "1 failed" in repr(cluster)
            # the failed worker left the spec: scale() again replaces it
            assert len(cluster.worker_spec) == 1

    run(main())


def test_create_refused_by_the_plugin_is_a_failure_with_its_message() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "refuse")
        async with cluster_for(plugin) as cluster:
            cluster.scale(1)
            with pytest.raises(WorkerStartError, match="no image for 'nope:1'"):
                await cluster.wait_for_workers(1, timeout=30)
            assert cluster.failures[0].reason.startswith("CreateFailed")

    run(main())


def test_timeout_lists_why_workers_wait() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "pending")
        async with cluster_for(plugin, pending_warning=0.5) as cluster:
            cluster.scale(1)
            with pytest.raises(TimeoutError, match="idle, waiting"):
                await cluster.wait_for_workers(1, timeout=3)

    run(main())


def test_scale_down_cancels_pending_before_touching_running_workers() -> None:
    async def main() -> None:
        def behaviour(name: str) -> str:
            return "run" if int(name.rsplit("-", 1)[1]) < 2 else "pending"

        plugin = ScriptedPlugin(behaviour, create_delay=0)
        async with cluster_for(plugin) as cluster:
            cluster.scale(4)
            await until(lambda: cluster.counts().running == 2 and cluster.counts().pending == 2)
            cluster.scale(2)
            p = cluster._prefix
            await until(lambda: sorted(plugin.deleted) == [f"{p}-2", f"{p}-3"])
            before = plugin.status_calls
            await until(lambda: plugin.status_calls >= before + 3)  # a few more rounds
            assert sorted(plugin.deleted) == [f"{p}-2", f"{p}-3"]
            assert cluster.counts().running == 2

    run(main())


def test_scale_down_of_running_workers_retires_them_gracefully() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "run", create_delay=0)
        async with cluster_for(plugin) as cluster:
            cluster.scale(2)
            await cluster.wait_for_workers(2, timeout=30)
            async with Client(cluster, asynchronous=True) as client:  # type: ignore[no-untyped-call]
                workers = list(cluster.scheduler_info["workers"])
                futures = [
                    client.submit(lambda i: i * 10, i, workers=[w], pure=False)
                    for i, w in enumerate(workers)
                ]
                assert await client.gather(futures) == [0, 10]
                cluster.scale(1)
                await until(lambda: len(plugin.deleted) == 1)
                # the retired worker's result moved to the survivor before its job went
                assert await client.gather(futures) == [0, 10]
                assert cluster._backend.phase(plugin.deleted[0]) != Phase.RUNNING

    run(main())


def test_a_worker_that_leaves_is_replaced_with_a_new_pod() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "run", create_delay=0)
        async with cluster_for(plugin) as cluster:
            cluster.scale(1)
            await cluster.wait_for_workers(1, timeout=30)
            name = f"{cluster._prefix}-0"
            await until(lambda: cluster._backend.records[name].joined)
            (first,) = list(plugin.workers.values())
            first_uid = cluster._backend.records[name].uid
            # Its process ends on its own (no nanny restarts it): the job completes.
            await first.close()
            await until(lambda: name in plugin.deleted)  # the old pod is cleaned up
            await until(lambda: cluster._backend.records.get(name) is not None
                        and cluster._backend.records[name].uid != first_uid)  # fmt: skip
            await cluster.wait_for_workers(1, timeout=30)
            assert list(cluster.worker_spec) == [name] and not cluster.failures
            assert len(plugin.pods) == 1

    run(main())


def test_a_worker_that_never_joined_is_not_replaced() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "fail", create_delay=0)
        async with cluster_for(plugin) as cluster:
            cluster.scale(1)
            await until(lambda: len(cluster.failures) == 1)
            await until(lambda: len(plugin.deleted) == 1)
            assert cluster.worker_spec == {} and plugin.pods == {}

    run(main())


def test_close_deletes_every_pod() -> None:
    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "pending", create_delay=0)
        async with serve(plugin) as url:
            cluster = await PluginCluster(url, asynchronous=True, status_interval=0.2)
            cluster.scale(3)
            await until(lambda: len(plugin.pods) == 3)
            await cluster.close()  # type: ignore[misc]  # annotated as maybe not awaitable
            assert plugin.pods == {} and len(plugin.deleted) == 3

    run(main())


def test_close_retries_deletes_a_busy_plugin_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugincluster, "DELETE_RETRY_PAUSES", (0.05, 0.05, 0.05))

    async def main() -> None:
        plugin = ScriptedPlugin(lambda name: "pending", create_delay=0)
        async with serve(plugin) as url:
            cluster = await PluginCluster(url, asynchronous=True, status_interval=0.2)
            cluster.scale(3)
            await until(lambda: len(plugin.pods) == 3)
            plugin.busy_deletes = 4  # more 503s than pods: some pod is refused twice
            await cluster.close()  # type: ignore[misc]  # annotated as maybe not awaitable
            assert plugin.busy_deletes == 0
            assert plugin.pods == {} and len(plugin.deleted) == 3

    run(main())


def test_unreachable_plugin_is_reported() -> None:
    async def main() -> None:
        cluster = await PluginCluster("http://127.0.0.1:9", asynchronous=True, status_interval=0.2)
        try:
            cluster.scale(1)
            with pytest.raises(WorkerStartError, match="PluginUnreachable"):
                await cluster.wait_for_workers(1, timeout=20)
        finally:
            await cluster.close()  # type: ignore[misc]  # annotated as maybe not awaitable

    run(main())


def test_dask_labextension_drives_a_plugin_cluster_through_the_site_config() -> None:
    """What the sidebar's NEW, SCALE, ADAPT and SHUTDOWN do, through dask-labextension's own
    cluster manager and the factory a site configures (as the hub does)."""
    import dask.config

    async def main() -> None:
        # Its import makes a module-level manager on the current (running) loop.
        from dask_labextension.manager import DaskClusterManager

        plugin = ScriptedPlugin(lambda name: "run", create_delay=0)
        async with serve(plugin) as url:
            site = {
                "labextension.factory": {
                    "module": "interlink_htcondor.dask",
                    "class": "PluginCluster",
                    "args": [],
                    "kwargs": {"status_interval": 0.2},
                },
                "interlink-htcondor.plugin-url": url,
            }
            with dask.config.set(site):
                manager = await DaskClusterManager()
                model = await manager.start_cluster()
                assert model["name"] == "PluginCluster 1" and model["workers"] == 0
                assert model["scheduler_address"].startswith("tcp://127.0.0.1:")
                cid = model["id"]
                await manager.scale_cluster(cid, 2)
                await until(lambda: manager.get_cluster(cid)["workers"] == 2, 30)
                assert len(plugin.pods) == 2
                model = manager.adapt_cluster(cid, 0, 3)
                assert model["adapt"] == {"minimum": 0, "maximum": 3}
                await manager.close_cluster(cid)
                assert plugin.pods == {} and len(plugin.deleted) == 2
                assert manager.list_clusters() == []

    run(main())
