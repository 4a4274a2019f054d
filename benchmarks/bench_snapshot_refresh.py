"""How a job snapshot refresh stalls the server, for each way of doing it, same queue.

The server answers every /status call from one snapshot of the plugin's jobs, refreshed
about once a second. Whatever the refresh costs the server's event loop, every call that
arrives meanwhile waits for. For ``--jobs`` idle jobs in the schedd (submitted directly,
never matching a slot, removed at the end), each way is measured in the same run, while
a probe coroutine measures how late the event loop wakes up (a 1 ms sleep in a loop: its
largest lateness is the longest stall a request would have seen):

- ``thread``: the query and the conversion of the ads in a thread of the server (the
  bindings hold the GIL while they read the answer: the loop stalls anyway);
- ``thread_narrow``: the same with a projection of the job attributes only (no
  per-container state attributes);
- ``process_all``: a child process queries and converts; the server receives every ad
  (JSON) and parses it;
- ``worker_all``: the gateway's query in one of its worker processes
  (``service.worker_pool``); the server unpickles every ad;
- ``worker_changes`` (what the plugin does): the gateway's ``snapshot`` worker keeps its
  own view and hands over only what changed: its first answer lists every job
  (``first``), then a change query (``changes``), and one more full listing compared to
  the previous one (``relist``);
- ``precompute``: mapping every pod's status at every refresh (to serve calls from
  ready answers), the CPU it takes.

Usage: python benchmarks/bench_snapshot_refresh.py [--jobs 1000 10000 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from _plugin import Json, machine_notes, pool, write_result
from interlink_htcondor.core import classad_attrs
from interlink_htcondor.core.job_changes import index_by_uid
from interlink_htcondor.core.models import PodRef
from interlink_htcondor.core.pod_status import JOB_ATTRS, PROJECTION, pod_status
from interlink_htcondor.devpool import PoolInfo, embedded_settings
from interlink_htcondor.local_plugin import force_remove, pool_schedd
from interlink_htcondor.service.gateway import ScheddGateway, plain
from interlink_htcondor.settings import load

NEVER_MATCHES = 'TARGET.Machine == "no-such-machine.invalid"'

# The child of ``process_all``: query, convert, print every ad as JSON on one line.
ALL_CHILD = """
import json, sys
import htcondor2
from interlink_htcondor.service.gateway import configure_htcondor, locate_schedd, plain, quote
from interlink_htcondor.settings import ScheddSettings
init = json.loads(sys.argv[1])
cfg = ScheddSettings(**init["schedd"])
configure_htcondor(cfg)
mine = 'InterlinkPlugin == ' + quote(init["instance"])
schedd = htcondor2.Schedd(locate_schedd(cfg))
for line in sys.stdin:
    ads = [plain(a) for a in schedd.query(constraint=mine, projection=json.loads(line))]
    sys.stdout.write(json.dumps(ads) + "\\n")
    sys.stdout.flush()
"""


def submit_jobs(info: PoolInfo, instance: str, n: int) -> None:
    """``n`` idle jobs that look like the plugin's (its attributes), in batches."""
    import htcondor2

    schedd = pool_schedd(info)
    have = len(schedd.query(f'InterlinkPlugin == "{instance}"', ["ClusterId"]))
    sub = htcondor2.Submit(
        {
            "executable": "/bin/true",
            "transfer_executable": "false",
            "should_transfer_files": "NO",
            "requirements": NEVER_MATCHES,
            "request_cpus": "1",
            "request_memory": "2048",
            "request_disk": "1048576",
            f"+{classad_attrs.PLUGIN}": f'"{instance}"',
            f"+{classad_attrs.POD_UID}": '"$(uid)"',
            f"+{classad_attrs.POD_NAME}": '"bench-worker-$(uid)"',
            f"+{classad_attrs.POD_NAMESPACE}": '"bench"',
            f"+{classad_attrs.CONTAINERS}": '"worker"',
            f"+{classad_attrs.INIT_CONTAINERS}": '""',
            f"+{classad_attrs.IMAGES}": '"ghcr.io/dask/dask:2026.8.0"',
            f"+{classad_attrs.SANDBOX}": '"/nonexistent/bench/$(uid)"',
        }
    )
    for start in range(have, n, 5000):
        items = [{"uid": str(uuid.uuid4())} for _ in range(min(5000, n - start))]
        schedd.submit(sub, itemdata=iter(items))


async def probed(work: Callable[[], Awaitable[Any]]) -> tuple[float, float, float, Any]:
    """Run ``work`` while a probe measures the event loop's lateness; returns (wall
    seconds, the largest stall in ms, this process's CPU seconds, the result)."""
    stop = False
    worst = 0.0

    async def probe() -> None:
        nonlocal worst
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t - 0.001)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.01)
    c0, t0 = time.process_time(), time.perf_counter()
    result = await work()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop = True
    await task
    return wall, worst * 1000, cpu, result


def row(wall: float, stall_ms: float, cpu: float, **extra: Any) -> Json:
    return {"seconds": round(wall, 3), "max_stall_ms": round(stall_ms, 1),
            "server_cpu_seconds": round(cpu, 3), **extra}  # fmt: skip


async def measure(info: PoolInfo, instance: str, n: int) -> Json:
    base = embedded_settings(info)
    base["policy"] = {"instance": instance}
    base["schedd"]["token_dir"] = str(info.token_dir_for(os.geteuid()))
    settings = load(None, base)
    gw = ScheddGateway(settings)
    await gw.start()  # the worker processes' start-up is not what is measured
    out: Json = {}
    try:
        # The in-process ways: a query in a thread of the server, then a narrow one.
        def in_thread(projection: list[str]) -> Callable[[], Awaitable[list[Json]]]:
            def run() -> list[Json]:
                return [plain(a) for a in gw._schedd().query(gw.mine, projection)]

            return functools.partial(asyncio.to_thread, run)

        wall, stall, cpu, ads = await probed(in_thread(list(PROJECTION)))
        out["thread"] = row(wall, stall, cpu, ads=len(ads))
        assert len(index_by_uid(ads)) == n, f"{len(ads)} ads for {n} jobs"
        narrow = [*JOB_ATTRS, classad_attrs.state_attr("app", 0)]
        wall, stall, cpu, _ = await probed(in_thread(narrow))
        out["thread_narrow"] = row(wall, stall, cpu)

        # A worker process of the gateway (``service.worker_pool``) that sends every ad.
        wall, stall, cpu, got = await probed(gw.query_jobs)
        out["worker_all"] = row(wall, stall, cpu, ads=len(got))

        # A child that hands over every ad.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ALL_CHILD,
            json.dumps({"schedd": settings.schedd.model_dump(mode="json"),
                        "instance": instance, "full_refresh_seconds": 30}),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 30,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None

        async def all_ads() -> int:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(list(PROJECTION)).encode() + b"\n")
            line = await child.stdout.readline()
            return len(json.loads(line))

        await all_ads()  # the child's start-up is not what is measured
        wall, stall, cpu, got = await probed(all_ads)
        out["process_all"] = row(wall, stall, cpu, ads=got)
        child.stdin.close()
        await child.wait()

        # The plugin's way: the snapshot lane's worker and its change queries.
        for name in ("first", "changes", "relist"):
            refresh = functools.partial(
                gw._call, "query", "_changes_remote", [], [], name == "relist",
                lane="snapshot", retry=False,
            )  # fmt: skip
            wall, stall, cpu, changes = await probed(refresh)
            out[f"worker_changes_{name}"] = row(
                wall, stall, cpu, changed=len(changes.changed), full=changes.full
            )

        # Mapping every pod at every refresh.
        snap = index_by_uid(ads)
        refs = {
            uid: PodRef(uid=uid, name=str(ad.get(classad_attrs.POD_NAME)), namespace="bench")
            for uid, ad in snap.items()
        }
        t0 = time.process_time()
        for uid, ad in snap.items():
            pod_status(refs[uid], ad, now=time.time(), held_grace_seconds=600)
        out["precompute"] = {"server_cpu_seconds": round(time.process_time() - t0, 3)}
    finally:
        gw.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    info = pool()
    instance = f"bench-refresh-{uuid.uuid4().hex[:8]}"
    result: Json = {"benchmark": "snapshot-refresh", "machine": machine_notes(),
                    "params": vars(args), "sizes": []}  # fmt: skip
    try:
        for n in sorted(args.jobs):
            submit_jobs(info, instance, n)
            runs = []
            for r in range(args.repeats):
                runs.append(asyncio.run(measure(info, instance, n)))
                runs[-1]["loadavg_1min"] = round(os.getloadavg()[0], 2)
                print(n, r, json.dumps(runs[-1]), flush=True)
            median = {
                way: {
                    k: statistics.median(run[way][k] for run in runs)
                    for k in runs[0][way]
                    if isinstance(runs[0][way][k], int | float) and not isinstance(
                        runs[0][way][k], bool)
                }
                for way in runs[0] if isinstance(runs[0][way], dict)
            }  # fmt: skip
            result["sizes"].append({"jobs": n, "median": median, "runs": runs})
            write_result("snapshot-refresh", result)
    finally:
        force_remove(pool_schedd(info), f'InterlinkPlugin == "{instance}"', "over", grace=5)
    result["loadavg_at_end"] = os.getloadavg()
    write_result("snapshot-refresh", result)


if __name__ == "__main__":
    main()
