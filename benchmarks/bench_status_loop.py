"""The virtual kubelet's status loop at 1,000 to 50,000 tracked pods, against /healthz.

interLink's virtual kubelet refreshes pod status with a sequential loop: it walks every
non-terminal pod and makes one single-pod ``GET /status`` call per pod on one keep-alive
connection, waiting for each answer, then starts the next loop. How stale every pod's
status is in Kubernetes is the time of that loop.

For each size in ``--pods`` (ascending; the pods of a smaller size stay tracked), the
pods are created through the plugin's ``/create`` (in batches, as interLink would: their
jobs never match a slot, so they stay idle and cost no execute slot), then, in the same
run and alternating which goes first:

- ``status``: one loop over every pod, a single-pod ``/status`` call each, the pod JSON as
  the virtual kubelet sends it (about 3 kB, with the ``JobID`` annotation);
- ``healthz``: the same number of ``GET /healthz`` calls on one connection (the HTTP stack
  alone, the baseline).

The first status loop after the pods were created is timed apart (``cold``): the plugin
parses each pod's body and maps its status for the first time; the loops that follow,
like the virtual kubelet's from its second on, find both cached while the job is
unchanged (``service.answer_cache``).

Reported per size: the median loop time of each and their ratio, per-call p50/p99/max,
the schedd queries per second during the status loops (from the plugin's own metrics),
the plugin's RSS and CPU, the schedd's RSS and the time of a bare query of all the
pods' jobs, and the load average. Per loop, what could hold a call: each call over 50 ms
with the client's CPU time in it, the server's late event-loop wake-ups by cause and its
long garbage collections (``service.stalls``, on /metrics), and the client's longest
collection. Every job and sandbox of the run is removed at the end.

Usage: python benchmarks/bench_status_loop.py [--pods 1000 10000 50000] [--loops 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time

import httpx

from _plugin import (
    BenchPlugin,
    Json,
    RawHTTP,
    cpu_seconds,
    create_many,
    machine_notes,
    pool,
    rss_mib,
    schedd_pid,
    summary_ms,
    vk_pod,
    write_result,
)
from interlink_htcondor.core.pod_status import PROJECTION

QUERY_OPS = ('operation="query"',)


async def loop_once(
    port: int, path: str, bodies: list[bytes]
) -> tuple[float, list[float], list[float]]:
    """One sequential pass: a call per body on one keep-alive connection, each waiting for
    its answer. Returns (wall seconds, per-call latencies, the client's CPU time in each)."""
    client = RawHTTP("127.0.0.1", port)
    latencies: list[float] = []
    cpu: list[float] = []
    try:
        start = time.perf_counter()
        for body in bodies:
            t0, c0 = time.perf_counter(), time.thread_time()
            status, payload = await client.request("GET", path, body)
            latencies.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {payload[:300]!r}")
        wall = time.perf_counter() - start
    finally:
        await client.close()
    return wall, latencies, cpu


def queue_queries(bench: BenchPlugin) -> float:
    return sum(
        bench.metrics_sum("interlink_htcondor_schedd_call_seconds_count", op) for op in QUERY_OPS
    )


def bare_query_seconds(bench: BenchPlugin) -> float:
    """One query of all the run's jobs, projected as the plugin projects (bindings)."""
    import htcondor2

    schedd = htcondor2.Schedd(
        htcondor2.Collector(bench.pool.collector).locate(htcondor2.DaemonType.Schedd)
    )
    t0 = time.perf_counter()
    schedd.query(f'InterlinkPlugin == "{bench.instance}"', list(PROJECTION))
    return time.perf_counter() - t0


def check_answers(bench: BenchPlugin, pods: list[Json]) -> None:
    """Every pod is known and reported (a sample, one call each)."""
    step = max(1, len(pods) // 50)

    async def run() -> None:
        client = RawHTTP("127.0.0.1", bench.port)
        try:
            for pod in pods[::step]:
                status, payload = await client.request("GET", "/status", json.dumps([pod]).encode())
                answer = json.loads(payload)
                if status != 200 or len(answer) != 1 or answer[0]["UID"] != pod["metadata"]["uid"]:
                    raise RuntimeError(f"pod not reported: {status} {payload[:300]!r}")
                if not answer[0]["containers"]:
                    raise RuntimeError("a pod reported without containers")
        finally:
            await client.close()

    asyncio.run(run())


def server_stalls(bench: BenchPlugin) -> dict[str, float]:
    """From one read of the server's /metrics (``service.stalls``): its event loop's
    wake-ups later than 25 ms by cause (a stall of 45 ms or more shows as one), and its
    garbage collections longer than 25 ms, so far."""
    samples: dict[str, float] = {}
    for line in httpx.get(bench.url + "/metrics", timeout=10).text.splitlines():
        if not line.startswith("#") and " " in line:
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)

    def over(name: str, labels: str) -> float:
        total = sum(v for k, v in samples.items() if k.startswith(name + "_count{" + labels))
        within = sum(
            v
            for k, v in samples.items()
            if k.startswith(name + "_bucket{" + labels) and 'le="0.025"' in k
        )
        return total - within

    lag = "interlink_htcondor_event_loop_lag_seconds"
    return {
        "server_late_over_25ms": over(lag, 'cause="server"'),
        "machine_late_over_25ms": over(lag, 'cause="machine"'),
        "gc_over_25ms": over("interlink_htcondor_gc_pause_seconds", ""),
    }


class ClientPauses:
    """The longest garbage collection of this (client) process while it is watched."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._t0 = 0.0

    def __enter__(self) -> ClientPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._t0)


def one_loop(bench: BenchPlugin, path: str, payload: list[bytes], schedd: int | None) -> Json:
    """One timed loop, with the plugin's and the schedd's CPU and queries meanwhile, and
    what held the server (late event-loop wake-ups, long collections) or the client."""
    assert bench.proc is not None
    q0 = queue_queries(bench)
    stalls0 = server_stalls(bench)
    c0 = cpu_seconds(bench.proc.pid)
    s0 = cpu_seconds(schedd, children=True) if schedd is not None else 0.0
    load = os.getloadavg()[0]
    with ClientPauses() as client_gc:
        wall, lat, client_cpu = asyncio.run(loop_once(bench.port, path, payload))
    # Each call over 50 ms: its time and the client's own CPU time during it (ms).
    slow = [
        [round(x * 1000, 1), round(c * 1000, 1)]
        for x, c in zip(lat, client_cpu, strict=True)
        if x > 0.05
    ]
    cpu = cpu_seconds(bench.proc.pid) - c0
    stalls1 = server_stalls(bench)
    schedd_cpu = (cpu_seconds(schedd, children=True) - s0) if schedd is not None else float("nan")
    queries = queue_queries(bench) - q0
    return {
        "loop_seconds": round(wall, 3),
        **summary_ms(lat),
        "calls_over_50ms": sum(1 for x in lat if x > 0.05),
        "slow_calls": slow,
        **{f"server_{k}": stalls1[k] - stalls0[k] for k in stalls0},
        "client_gc_longest_ms": round(client_gc.longest * 1000, 1),
        "plugin_cpu_ms_per_call": round(cpu * 1000 / len(lat), 4),
        "schedd_queries": queries,
        "schedd_queries_per_s": round(queries / wall, 3),
        "schedd_cpu_share": round(schedd_cpu / wall, 3),
        "loadavg_1min": round(load, 2),
    }


def measure_size(
    bench: BenchPlugin, pods: list[Json], loops: int, pause: float, schedd: int | None
) -> Json:
    bodies = [json.dumps([p]).encode() for p in pods]
    health = [b""] * len(pods)
    assert bench.proc is not None
    runs: dict[str, list[Json]] = {"status": [], "healthz": []}
    cold = one_loop(bench, "/status", bodies, schedd)
    print("cold status", len(pods), json.dumps(cold), flush=True)
    time.sleep(pause)
    for k in range(loops):
        order = ["status", "healthz"] if k % 2 == 0 else ["healthz", "status"]
        for kind in order:
            path, payload = ("/status", bodies) if kind == "status" else ("/healthz", health)
            runs[kind].append(one_loop(bench, path, payload, schedd))
            print(kind, len(pods), json.dumps(runs[kind][-1]), flush=True)
            time.sleep(pause)
    med = {
        kind: {
            key: statistics.median(r[key] for r in rs)
            for key in ("loop_seconds", "p50_ms", "p99_ms", "plugin_cpu_ms_per_call")
        }
        for kind, rs in runs.items()
    }
    ratios = [
        s["loop_seconds"] / h["loop_seconds"]
        for s, h in zip(runs["status"], runs["healthz"], strict=True)
    ]
    out: Json = {
        "pods": len(pods),
        "cold_status_loop": cold,
        "runs": runs,
        "median": med,
        "ratio_loop_status_over_healthz_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "max_call_ms_status": max(r["max_ms"] for r in runs["status"]),
        "max_call_ms_healthz": max(r["max_ms"] for r in runs["healthz"]),
        "max_schedd_queries_per_s": max(r["schedd_queries_per_s"] for r in runs["status"]),
        "plugin_rss_mib": round(bench.rss_mib(), 1),
        "bare_query_seconds": round(bare_query_seconds(bench), 3),
    }
    if schedd is not None:
        out["schedd_rss_mib"] = round(rss_mib(schedd), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, nargs="+", default=[1000])
    ap.add_argument("--loops", type=int, default=3, help="status and healthz loops per size")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between loops")
    ap.add_argument("--batch", type=int, default=1000, help="pods per /create batch")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent /create calls")
    ap.add_argument("--name", default="status-loop", help="result file name")
    args = ap.parse_args()

    info = pool()
    result: Json = {"benchmark": "status-loop", "machine": machine_notes(), "params": vars(args)}
    schedd = schedd_pid(info)
    if schedd is not None:
        result["schedd_rss_mib_before"] = round(rss_mib(schedd), 1)
    bench = BenchPlugin(info)
    bench.start()
    sizes: list[Json] = []
    pods: list[Json] = []
    try:
        tag = bench.instance[-8:]
        for size in sorted(args.pods):
            t0 = time.perf_counter()
            while len(pods) < size:
                batch = [
                    vk_pod(len(pods) + i, tag) for i in range(min(args.batch, size - len(pods)))
                ]
                asyncio.run(create_many(bench.url, batch, args.concurrency))
                pods += batch
                print(f"created {len(pods)} pods", flush=True)
            created = time.perf_counter() - t0
            check_answers(bench, pods)
            entry = measure_size(bench, pods, args.loops, args.pause, schedd)
            entry["create_seconds"] = round(created, 1)
            sizes.append(entry)
            result["sizes"] = sizes
            write_result(args.name, result)  # what is done so far survives a failure
    finally:
        bench.stop()
        t0 = time.perf_counter()
        bench.cleanup()
        result["cleanup_seconds"] = round(time.perf_counter() - t0, 1)
    result["loadavg_at_end"] = os.getloadavg()
    write_result(args.name, result)


if __name__ == "__main__":
    main()
