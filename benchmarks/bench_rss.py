"""The plugin's resident memory with 1,000 tracked pods.

Measured in the same run, on loopback against the personal pool: the RSS of a freshly
started plugin (the baseline: interpreter, FastAPI, bindings), then after ``--pods`` pods
were created and their statuses served (the job snapshot, the status of every pod, the
per-pod caches), and again after a minute of status polling, to show it does not grow.
Their jobs never match a slot, so nothing runs.

Usage: python benchmarks/bench_rss.py [--pods 1000] [--poll-seconds 60]
"""

from __future__ import annotations

import asyncio
import json
import time

from _plugin import (
    Json,
    RawHTTP,
    create_many,
    idle_pod,
    new_result,
    parser,
    pool,
    running,
    write_result,
)


async def poll(port: int, pods: list[Json], seconds: float, rate: float = 200) -> int:
    """Single-pod /status calls at ``rate``/s, as the virtual kubelet makes them."""
    client = RawHTTP("127.0.0.1", port)
    bodies = [json.dumps([p]).encode() for p in pods]
    n = int(seconds * rate)
    start = time.perf_counter()
    for k in range(n):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        status, _ = await client.request("GET", "/status", bodies[k % len(bodies)])
        if status != 200:
            raise RuntimeError(f"/status answered {status}")
    await client.close()
    return n


def main() -> None:
    ap = parser(__doc__, pods=1000)
    ap.add_argument("--poll-seconds", type=float, default=60)
    args = ap.parse_args()

    info = pool()
    result = new_result("rss", args)
    with running(info) as bench:
        time.sleep(2)
        result["baseline_rss_mib"] = round(bench.rss_mib(), 1)
        pods = [idle_pod(i, bench.instance[-8:]) for i in range(args.pods)]
        asyncio.run(create_many(bench.url, pods))
        status, payload = asyncio.run(_all_status(bench.port, pods))
        assert status == 200 and len(json.loads(payload)) == len(pods)
        result["tracked_pods"] = len(pods)
        result["rss_mib_after_create_and_status"] = round(bench.rss_mib(), 1)
        calls = asyncio.run(poll(bench.port, pods, args.poll_seconds))
        result["status_calls_polled"] = calls
        result["rss_mib_after_polling"] = round(bench.rss_mib(), 1)
        result["growth_over_baseline_mib"] = round(
            result["rss_mib_after_polling"] - result["baseline_rss_mib"], 1
        )
        result["target_at_most_150_mib"] = result["rss_mib_after_polling"] <= 150
    write_result("rss", result)


async def _all_status(port: int, pods: list[Json]) -> tuple[int, bytes]:
    client = RawHTTP("127.0.0.1", port)
    try:
        return await client.request("GET", "/status", json.dumps(pods).encode())
    finally:
        await client.close()


if __name__ == "__main__":
    main()
