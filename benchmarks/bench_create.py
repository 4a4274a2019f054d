"""/create throughput against bare ``Schedd.submit`` of the same submit descriptions.

Both phases submit the same number of pods with the same concurrency, against the same
queue state (each phase cleans up after itself), on loopback against the personal pool:

- ``bare``: the plugin's own translation of each pod, computed beforehand with its sandbox
  files already written; timed is only ``Schedd.submit`` of the description (htcondor2,
  one call per pod, ``--concurrency`` threads);
- ``plugin``: POST /create of the same pods through the real plugin (HTTP, validation,
  translation, the per-pod idempotency check, sandbox files, submit).

The pods' jobs never match a slot, so nothing runs. Usage:
python benchmarks/bench_create.py [--pods 300] [--concurrency 16] [--rounds 2]
"""

from __future__ import annotations

import asyncio
import statistics
import time
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
from interlink_htcondor.devpool import embedded_settings
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
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    info = pool()
    result = new_result("create", args)
    rounds: list[Json] = []
    for r in range(args.rounds):
        with running(info) as bench:
            tag = f"{bench.instance[-8:]}r{r}"
            bare_pods = [idle_pod(i, tag + "b") for i in range(args.pods)]
            bare_s, bare_lat = bare_phase(bench, bare_pods, args.concurrency)
            bench.cleanup()
            plugin_pods = [idle_pod(i, tag + "p") for i in range(args.pods)]
            assert bench.proc is not None
            c0, t0 = cpu_seconds(bench.proc.pid), time.perf_counter()
            plugin_lat = asyncio.run(create_many(bench.url, plugin_pods, args.concurrency))
            plugin_s = time.perf_counter() - t0
            plugin_cpu = cpu_seconds(bench.proc.pid) - c0
        rounds.append(
            {
                "bare_pods_per_s": round(args.pods / bare_s, 1),
                "plugin_pods_per_s": round(args.pods / plugin_s, 1),
                "bare_call": summary_ms(bare_lat),
                "plugin_call": summary_ms(plugin_lat),
                "plugin_cpu_ms_per_pod": round(plugin_cpu * 1000 / args.pods, 2),
            }
        )
        print(rounds[-1], flush=True)
    ratios = [x["plugin_pods_per_s"] / x["bare_pods_per_s"] for x in rounds]
    result["rounds"] = rounds
    result["median_bare_pods_per_s"] = statistics.median(x["bare_pods_per_s"] for x in rounds)
    result["median_plugin_pods_per_s"] = statistics.median(x["plugin_pods_per_s"] for x in rounds)
    result["median_ratio_plugin_over_bare"] = round(statistics.median(ratios), 2)
    result["target_ratio_at_least_0.7"] = result["median_ratio_plugin_over_bare"] >= 0.7
    write_result("create", result)


if __name__ == "__main__":
    main()
