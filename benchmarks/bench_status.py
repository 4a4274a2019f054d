"""/status at 1,000 tracked pods: latency and schedd load under 200 single-pod calls/s.

What the virtual kubelet does with 1,000 pods on the node: one /status call per pod every
5 s, one pod per call. The plugin serves all of them from one shared snapshot.

Measured in the same run, on loopback, against the personal pool:

- ``plugin``: open-loop single-pod GET /status at ``--rate`` calls/s for ``--seconds``;
  latency from the scheduled send time (so queueing counts) and schedd queries/s from the
  plugin's own metrics;
- ``bare_http``: GET /healthz at the same rate (the HTTP stack alone);
- ``bare_query``: what a plugin without a snapshot does, one schedd query per call
  (htcondor2, 8 threads, same rate), to show the schedd load avoided.

Usage: python benchmarks/bench_status.py [--pods 1000] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from _plugin import (
    BenchPlugin,
    RawHTTP,
    cpu_seconds,
    create_many,
    idle_pod,
    new_result,
    parser,
    pool,
    running,
    summary_ms,
    write_result,
)


async def open_loop(
    port: int, path: str, bodies: list[bytes], rate: float, seconds: float
) -> tuple[list[float], int]:
    """Send ``rate`` calls/s for ``seconds`` whatever the answers' speed; latencies from
    each call's scheduled time (so queueing counts). Returns (latencies, errors)."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    client = RawHTTP("127.0.0.1", port)

    async def one(scheduled: float, body: bytes) -> None:
        nonlocal errors
        try:
            status, _ = await client.request("GET", path, body)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)
        if status != 200:
            errors += 1

    tasks = []
    start = time.perf_counter() + 0.1
    for k in range(n):
        scheduled = start + k / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, bodies[k % len(bodies)])))
    await asyncio.gather(*tasks)
    await client.close()
    return latencies, errors


def bare_queries(
    bench: BenchPlugin, uids: list[str], rate: float, seconds: float
) -> tuple[list[float], float]:
    """One schedd query per call (no snapshot), paced at ``rate``; (latencies, achieved/s)."""
    import htcondor2

    schedd = htcondor2.Schedd(
        htcondor2.Collector(bench.pool.collector).locate(htcondor2.DaemonType.Schedd)
    )
    from interlink_htcondor.core.pod_status import PROJECTION

    latencies: list[float] = []

    def query(uid: str, scheduled: float) -> None:
        schedd.query(
            constraint=f'InterlinkPodUID == "{uid}" && InterlinkPlugin == "{bench.instance}"',
            projection=list(PROJECTION),
        )
        latencies.append(time.perf_counter() - scheduled)

    n = int(rate * seconds)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool_:
        futures = []
        for k in range(n):
            scheduled = t0 + k / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool_.submit(query, uids[k % len(uids)], scheduled))
        for f in futures:
            f.result()
    elapsed = time.perf_counter() - t0
    return latencies, n / elapsed


def main() -> None:
    ap = parser(__doc__, pods=1000)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()

    info = pool()
    result = new_result("status", args)
    with running(info) as bench:
        pods = [idle_pod(i, bench.instance[-8:]) for i in range(args.pods)]
        t0 = time.perf_counter()
        asyncio.run(create_many(bench.url, pods))
        result["setup_create_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"created {len(pods)} pods in {result['setup_create_seconds']} s", flush=True)

        # Every pod known and reported (one call listing all of them).
        r = httpx.request("GET", bench.url + "/status", json=pods, timeout=120)
        answered = r.json()
        assert len(answered) == len(pods), f"{len(answered)} of {len(pods)} pods answered"
        result["tracked_pods"] = len(answered)

        bodies = [json.dumps([p]).encode() for p in pods]
        assert bench.proc is not None
        q0 = bench.metric("interlink_htcondor_schedd_call_seconds_count", 'operation="query"')
        c0, t0 = cpu_seconds(bench.proc.pid), time.perf_counter()
        lat, errors = asyncio.run(open_loop(bench.port, "/status", bodies, args.rate, args.seconds))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(bench.proc.pid) - c0
        q1 = bench.metric("interlink_htcondor_schedd_call_seconds_count", 'operation="query"')
        result["plugin"] = {
            **summary_ms(lat),
            "errors": errors,
            "achieved_calls_per_s": round(len(lat) / wall, 1),
            "schedd_queries": q1 - q0,
            "schedd_queries_per_s": round((q1 - q0) / wall, 2),
            "plugin_cpu_ms_per_call": round(cpu * 1000 / max(len(lat), 1), 3),
            "plugin_cpu_share": round(cpu / wall, 2),
        }
        c0 = cpu_seconds(bench.proc.pid)
        lat_h, err_h = asyncio.run(
            open_loop(bench.port, "/healthz", [b""], args.rate, min(args.seconds, 10))
        )
        cpu_h = cpu_seconds(bench.proc.pid) - c0
        result["bare_http"] = {
            **summary_ms(lat_h),
            "errors": err_h,
            "plugin_cpu_ms_per_call": round(cpu_h * 1000 / max(len(lat_h), 1), 3),
        }
        lat_q, achieved = bare_queries(
            bench, [p["metadata"]["uid"] for p in pods], args.rate, min(args.seconds, 10)
        )
        result["bare_query"] = {
            **summary_ms(lat_q),
            "schedd_queries_per_s": round(achieved, 1),
        }
        result["rss_mib"] = round(bench.rss_mib(), 1)
        p, h, q = result["plugin"], result["bare_http"], result["bare_query"]
        result["ratios"] = {
            "plugin_p50_over_bare_http_p50": round(p["p50_ms"] / h["p50_ms"], 2),
            "plugin_p50_over_bare_query_p50": round(p["p50_ms"] / q["p50_ms"], 2),
            "schedd_queries_saved_factor": round(
                q["schedd_queries_per_s"] / max(p["schedd_queries_per_s"], 1e-9), 1
            ),
        }
        result["targets"] = {
            "p50_under_20ms": p["p50_ms"] < 20,
            "at_most_about_1_query_per_s": p["schedd_queries_per_s"] <= 1.5,
        }
    write_result("status", result)


if __name__ == "__main__":
    main()
