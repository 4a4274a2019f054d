"""/create throughput against bare ``Schedd.submit`` of the same submit descriptions.

Both phases submit the same number of pods with the same concurrency, against the same
queue state (each phase cleans up after itself), on loopback against the personal pool,
in alternating order from round to round:

- ``bare``: the plugin's own translation of each pod, computed beforehand with its sandbox
  files already written; timed is only ``Schedd.submit`` of the description (htcondor2,
  one call per pod, ``--concurrency`` threads);
- ``plugin``: POST /create of the same pods through the real plugin (HTTP, validation,
  translation, the per-pod idempotency check, sandbox files, submit).

Then a burst: ``--burst`` creates sent all at once to a fresh plugin, each answered 200
and each pod given exactly one job.

The pods' jobs never match a slot, so nothing runs. Usage:
python benchmarks/bench_create.py [--pods 300] [--concurrency 16] [--rounds 5] [--burst 1000]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _plugin import (
    BenchPlugin,
    Json,
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
from interlink_htcondor import settings
from interlink_htcondor.core import models, translate
from interlink_htcondor.devpool import PoolInfo, embedded_settings
from interlink_htcondor.local_plugin import pool_schedd
from interlink_htcondor.service.sandbox_store import write_sandbox


def bare_phase(bench: BenchPlugin, pods: list[Json], concurrency: int) -> tuple[float, list[float]]:
    """Seconds to submit all pods' descriptions with bare htcondor2, and per-call latency."""
    import htcondor2

    cfg = settings.load(None, embedded_settings(bench.pool))
    cfg = cfg.model_copy(
        update={"policy": cfg.policy.model_copy(update={"instance": bench.instance})}
    )
    descriptions = []
    for pod in pods:
        req = models.parse_create_body({"pod": pod, "container": [{"name": "main"}]})
        plan = translate.translate(req, cfg)
        meta = req.pod.metadata
        sandbox = translate.sandbox_dir(cfg, meta.namespace, meta.name, meta.uid)
        write_sandbox(plan, Path(sandbox))
        descriptions.append(htcondor2.Submit(dict(plan.submit)))
    schedd = htcondor2.Schedd(
        htcondor2.Collector(bench.pool.collector).locate(htcondor2.DaemonType.Schedd)
    )
    latencies: list[float] = []

    def submit(d: object) -> None:
        t0 = time.perf_counter()
        schedd.submit(d, count=1)
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(submit, descriptions))
    return time.perf_counter() - t0, latencies


def main() -> None:
    ap = parser(__doc__, pods=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burst", type=int, default=1000, help="creates sent all at once")
    args = ap.parse_args()

    info = pool()
    result = new_result("create", args)
    rounds: list[Json] = []
    for r in range(args.rounds):
        with running(info) as bench:
            tag = f"{bench.instance[-8:]}r{r}"
            assert bench.proc is not None
            out: Json = {"loadavg_1min": round(os.getloadavg()[0], 2)}
            for phase in ("bare", "plugin") if r % 2 == 0 else ("plugin", "bare"):
                pods = [idle_pod(i, tag + phase[0]) for i in range(args.pods)]
                if phase == "bare":
                    seconds, lat = bare_phase(bench, pods, args.concurrency)
                else:
                    c0, t0 = cpu_seconds(bench.proc.pid), time.perf_counter()
                    lat = asyncio.run(create_many(bench.url, pods, args.concurrency))
                    seconds = time.perf_counter() - t0
                    cpu = cpu_seconds(bench.proc.pid) - c0
                    out["plugin_cpu_ms_per_pod"] = round(cpu * 1000 / args.pods, 2)
                out[f"{phase}_pods_per_s"] = round(args.pods / seconds, 1)
                out[f"{phase}_call"] = summary_ms(lat)
                bench.cleanup()
            out["ratio"] = round(out["plugin_pods_per_s"] / out["bare_pods_per_s"], 3)
        rounds.append(out)
        print(rounds[-1], flush=True)
    result["rounds"] = rounds
    result["median_bare_pods_per_s"] = statistics.median(x["bare_pods_per_s"] for x in rounds)
    result["median_plugin_pods_per_s"] = statistics.median(x["plugin_pods_per_s"] for x in rounds)
    result["median_ratio_plugin_over_bare"] = round(
        statistics.median(x["ratio"] for x in rounds), 2
    )
    result["target_ratio_at_least_0.9"] = result["median_ratio_plugin_over_bare"] >= 0.9
    if args.burst:
        result["burst"] = burst(info, args.burst)
        print(result["burst"], flush=True)
    write_result("create", result)


def burst(info: PoolInfo, n: int) -> Json:
    """``n`` creates at once: every answer 200, every pod exactly one job."""
    with running(info) as bench:
        pods = [idle_pod(i, bench.instance[-8:] + "x") for i in range(n)]
        t0 = time.perf_counter()
        lat = asyncio.run(create_many(bench.url, pods, concurrency=n, check=False))
        seconds = time.perf_counter() - t0
        errors = sum(1 for p in pods if "JobID" not in p["metadata"].get("annotations", {}))
        schedd = pool_schedd(info)
        ads = schedd.query(f'InterlinkPlugin == "{bench.instance}"', ["InterlinkPodUID"])
        per_pod = Counter(str(a.get("InterlinkPodUID")) for a in ads)
        uids = {p["metadata"]["uid"] for p in pods}
        return {
            "creates": n,
            "errors": errors,
            "seconds": round(seconds, 2),
            "pods_per_s": round(n / seconds, 1),
            "call": summary_ms(lat),
            "pods_with_one_job": sum(1 for u in uids if per_pod.get(u) == 1),
            "pods_with_more_than_one_job": sum(1 for u in uids if per_pod.get(u, 0) > 1),
            "loadavg_1min": round(os.getloadavg()[0], 2),
        }


if __name__ == "__main__":
    main()
