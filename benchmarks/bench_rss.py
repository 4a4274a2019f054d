"""The plugin's resident memory with 10,000 tracked pods, over minutes of status loops.

Measured in the same run, on loopback against the personal pool: the RSS of a freshly
started plugin (the baseline: interpreter, FastAPI, bindings), then ``--pods`` pods are
created (their jobs never match a slot, so nothing runs) and the virtual kubelet's status
loop runs for ``--minutes`` (sequential single-pod ``/status`` calls over every pod, then
again), while the RSS and PSS of the server and of the processes below it (the gateway's
fork server and worker processes) are sampled every ``--sample-seconds``. Reported: the
samples, the largest totals, and the slope of a line fitted to the samples after the
first minute (flat means it does not grow). The goal is judged on PSS: the workers fork
from one server and share most pages with it, which a sum of RSS counts again for each.

Usage: python benchmarks/bench_rss.py [--pods 10000] [--minutes 5] [--sample-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from _plugin import (
    BenchPlugin,
    Json,
    RawHTTP,
    create_many,
    machine_notes,
    pool,
    rss_mib,
    vk_pod,
    write_result,
)


def children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (the fork server is started from one of the
    server's threads, not its main thread)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the gateway's fork server and its workers)."""
    out: list[int] = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def pss_mib(pid: int) -> float:
    """Proportional set size: each page shared by n processes counts 1/n in each (the
    workers fork from one server and share most of their pages with it)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no Pss")


def role(pid: int) -> str:
    """What a process below the server is: a worker names itself after its lane
    (``schedd-query``...); the fork server and multiprocessing's resource tracker do not."""
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm.startswith("schedd-"):
        return comm
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    if b"forkserver" in cmdline:
        return "fork-server"
    if b"resource_tracker" in cmdline:
        return "resource-tracker"
    return comm


def sample(bench: BenchPlugin, t0: float) -> Json:
    assert bench.proc is not None
    server = rss_mib(bench.proc.pid)
    server_pss = pss_mib(bench.proc.pid)
    kids = kids_pss = 0.0
    by_role: dict[str, float] = {}
    pids = descendants(bench.proc.pid)
    for pid in pids:
        try:
            pss = pss_mib(pid)
            kids += rss_mib(pid)
            name = role(pid)
        except (OSError, RuntimeError):
            continue
        kids_pss += pss
        by_role[name] = round(by_role.get(name, 0.0) + pss, 1)
    return {
        "t": round(time.monotonic() - t0, 1),
        "server_mib": round(server, 1),
        "workers_mib": round(kids, 1),
        "total_mib": round(server + kids, 1),
        "server_pss_mib": round(server_pss, 1),
        "workers_pss_mib": round(kids_pss, 1),
        "total_pss_mib": round(server_pss + kids_pss, 1),
        "processes": 1 + len(pids),
        "pss_mib_by_role": dict(sorted(by_role.items())),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


async def loops(bench: BenchPlugin, pods: list[Json], minutes: float, every: float) -> Json:
    """Status loops for ``minutes`` while sampling memory every ``every`` seconds."""
    bodies = [json.dumps([p]).encode() for p in pods]
    client = RawHTTP("127.0.0.1", bench.port)
    samples: list[Json] = []
    t0 = time.monotonic()
    end = t0 + minutes * 60
    next_sample = t0
    calls = 0
    loop_times: list[float] = []
    try:
        while time.monotonic() < end:
            start = time.monotonic()
            for body in bodies:
                status, payload = await client.request("GET", "/status", body)
                if status != 200:
                    raise RuntimeError(f"/status answered {status}: {payload[:200]!r}")
                calls += 1
                if time.monotonic() >= next_sample:
                    samples.append(sample(bench, t0))
                    next_sample += every
                if time.monotonic() >= end:
                    break
            else:
                loop_times.append(time.monotonic() - start)
    finally:
        await client.close()
    samples.append(sample(bench, t0))
    return {"samples": samples, "calls": calls, "loop_seconds": loop_times}


def slope_mib_per_minute(samples: list[Json], after: float, key: str = "total_mib") -> float:
    pts = [(s["t"] / 60, s[key]) for s in samples if s["t"] >= after and key in s]
    if len(pts) < 2:
        return float("nan")
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return float(sum((x - mx) * (y - my) for x, y in pts) / var)


def by_role(samples: list[Json]) -> list[Json]:
    """The samples with each role's PSS as a key of its own (for the slope)."""
    return [{"t": s["t"], **s["pss_mib_by_role"]} for s in samples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--sample-seconds", type=float, default=5)
    ap.add_argument("--name", default="rss")
    ap.add_argument(
        "--recycle-mib", type=float, help="the plugin's schedd.worker_recycle_mib (0: never)"
    )
    args = ap.parse_args()

    info = pool()
    result: Json = {"benchmark": "rss", "machine": machine_notes(), "params": vars(args)}
    env = {}
    if args.recycle_mib is not None:
        env["INTERLINK_HTCONDOR_SCHEDD__WORKER_RECYCLE_MIB"] = str(args.recycle_mib)
    bench = BenchPlugin(info, env)
    bench.start()
    try:
        time.sleep(2)
        result["baseline_rss_mib"] = round(bench.rss_mib(), 1)
        result["baseline"] = sample(bench, time.monotonic())
        pods = [vk_pod(i, bench.instance[-8:]) for i in range(args.pods)]
        for i in range(0, len(pods), 1000):
            asyncio.run(create_many(bench.url, pods[i : i + 1000]))
        result["tracked_pods"] = len(pods)
        result["after_creates"] = sample(bench, time.monotonic())
        run = asyncio.run(loops(bench, pods, args.minutes, args.sample_seconds))
        result.update(run)
        samples = run["samples"]
        result["max_total_mib"] = max(s["total_mib"] for s in samples)
        result["max_total_pss_mib"] = max(s["total_pss_mib"] for s in samples)
        result["max_server_mib"] = max(s["server_mib"] for s in samples)
        result["slope_mib_per_minute_after_first_minute"] = round(
            slope_mib_per_minute(samples, 60), 3
        )
        result["slope_pss_mib_per_minute_after_first_minute"] = round(
            slope_mib_per_minute(samples, 60, "total_pss_mib"), 3
        )
        roles = by_role(samples)
        result["slope_pss_mib_per_minute_by_role"] = {
            name: round(slope_mib_per_minute(roles, 60, name), 3)
            for name in samples[-1]["pss_mib_by_role"]
        }
        result["target_at_most_200_mib"] = result["max_total_pss_mib"] <= 200
    finally:
        bench.stop()
        bench.cleanup()
    result["loadavg_at_end"] = os.getloadavg()
    write_result(args.name, result)


if __name__ == "__main__":
    main()
