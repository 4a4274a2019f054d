"""Dask scale-out: time from ``scale(N)`` to N connected workers, side by side.

* ``plugin``: ``PluginCluster`` -> interlink-htcondor plugin (``serve``) -> HTCondor, each
  worker a vanilla job whose wrapper runs the worker image with Apptainer;
* ``jobqueue``: dask-jobqueue's ``HTCondorCluster`` -> ``condor_submit`` (one per worker)
  -> HTCondor, each worker a container-universe job of the same image.

Same pool, same slots, same negotiator settings, same image, the same 1 CPU / 1 GiB /
1 GiB disk per worker, the same scheduler placement (in this process, 127.0.0.1). The order
of the two alternates between repeats, and every run starts from an idle pool with its
slots unclaimed, so neither path inherits the other's claims.

Per-phase breakdown (medians over the run's jobs):
* ``submit``: ``scale(N)`` until every job has its id (client clock);
* ``negotiate``: ``QDate`` -> ``LastMatchTime`` (job ad, whole seconds);
* ``start``: ``LastMatchTime`` -> ``JobCurrentStartExecutingDate`` (job ad, whole seconds);
* ``connect``: that -> the worker's registration at the scheduler (scheduler clock).

The host has no HTCondor tools (only the Python bindings), so dask-jobqueue's
``condor_submit``/``condor_rm``/``condor_q`` are small shims that run the real tools inside the
personal pool (``nsenter`` + ``setpriv``, a few milliseconds; measured and printed).

Usage (the pool needs at least max(N) slots)::

    interlink-htcondor pool up --slots 16
    python benchmarks/bench_scaleout.py --n 1 4 8 16 --repeats 3 --json out/scaleout.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.versions import VersionMismatchWarning

from interlink_htcondor.dask import PluginCluster
from interlink_htcondor.devpool import PoolInfo, ensure_up
from interlink_htcondor.local_plugin import LocalPlugin

warnings.filterwarnings("ignore", category=VersionMismatchWarning)
ATTRS = [
    "ClusterId",
    "ProcId",
    "QDate",
    "LastMatchTime",
    "JobCurrentStartDate",
    "JobCurrentStartExecutingDate",
    "JobStatus",
]


class Arrivals(SchedulerPlugin):
    """Records when each worker registers at the scheduler (by worker name)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.at[str(scheduler.workers[worker].name)] = time.time()


def shims(pool: PoolInfo, where: Path, cwd: Path) -> Path:
    """``condor_submit``, ``condor_rm`` and ``condor_q`` that run inside the pool as the job
    user, in ``cwd`` (a shared directory), with the pool's own configuration (not the
    bindings' environment)."""
    where.mkdir(parents=True, exist_ok=True)
    prefix = [
        "nsenter", f"--target={pool.init_pid}", "--mount", "--pid", "--root", "--wd",
        "setpriv", f"--reuid={pool.job_user}", f"--regid={pool.job_user}", "--init-groups",
        "--", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"HOME=/home/{pool.job_user}",
        "sh", "-c", 'cd "$1" && shift && exec "$@"', "shim",
    ]  # fmt: skip
    for tool in ("condor_submit", "condor_rm", "condor_q"):
        path = where / tool
        entry = " ".join(shlex.quote(a) for a in [*prefix, str(cwd), tool])
        path.write_text(f'#!/bin/sh\nexec {entry} "$@"\n')
        path.chmod(0o755)
    return where


def shim_overhead(shim_dir: Path) -> float:
    """Median seconds the shim adds: running ``true`` through the same namespace entry."""
    script = (shim_dir / "condor_q").read_text().replace("condor_q", "true")
    probe = shim_dir / "probe-true"
    probe.write_text(script)
    probe.chmod(0o755)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        subprocess.run([str(probe)], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pool_idle(pool: PoolInfo, schedd: Any, prefixes: list[str], timeout: float = 180) -> None:
    """Wait until none of the benchmark's jobs is left and every slot CPU is unclaimed."""
    import htcondor2

    collector = htcondor2.Collector(pool.collector)
    deadline = time.monotonic() + timeout
    constraint = " || ".join(
        f'regexp("^{p}-", InterlinkPodName ?: JobBatchName ?: "")' for p in prefixes
    )
    while time.monotonic() < deadline:
        mine = schedd.query(constraint=constraint, projection=["ClusterId"])
        slots = collector.query(
            htcondor2.AdTypes.Startd, projection=["Cpus", "TotalSlotCpus", "SlotType"]
        )
        free = all(
            s.get("SlotType") != "Dynamic" and s.get("Cpus") == s.get("TotalSlotCpus")
            for s in slots
        )
        if not mine and free:
            return
        time.sleep(1)
    raise TimeoutError("the pool did not become idle")


def job_phases(ads: dict[str, Any], arrivals: dict[str, float]) -> dict[str, float]:
    neg, start, connect = [], [], []
    for name, ad in ads.items():
        executing = ad.get("JobCurrentStartExecutingDate") or ad.get("JobCurrentStartDate")
        neg.append(ad["LastMatchTime"] - ad["QDate"])
        start.append(executing - ad["LastMatchTime"])
        connect.append(arrivals[name] - executing)
    return {
        "negotiate": statistics.median(neg),
        "start": statistics.median(start),
        "connect": statistics.median(connect),
    }


def measure(
    kind: str,
    make: Callable[[], Any],
    job_ids: Callable[[Any], dict[str, str]],
    n: int,
    schedd: Any,
    timeout: float,
) -> dict[str, Any]:
    cluster = make()
    try:
        arrivals = Arrivals()
        cluster.scheduler.add_plugin(arrivals)
        t0 = time.time()
        cluster.scale(n)
        while len(job_ids(cluster)) < n:
            if time.time() - t0 > timeout:
                raise TimeoutError(f"{kind}: {len(job_ids(cluster))} of {n} jobs submitted")
            time.sleep(0.01)
        t_submitted = time.time()
        while len(arrivals.at) < n:
            if time.time() - t0 > timeout:
                raise TimeoutError(f"{kind}: {len(arrivals.at)} of {n} workers connected")
            time.sleep(0.01)
        t_all = time.time()
        # Job ids are ClusterId.ProcId: the plugin may submit a batch as one cluster.
        by_job = {j: name for name, j in job_ids(cluster).items()}
        clusters = {j.split(".")[0] for j in by_job}
        ads = {
            by_job[f"{ad['ClusterId']}.{ad['ProcId']}"]: ad
            for ad in schedd.query(
                constraint=" || ".join(f"ClusterId == {c}" for c in clusters),
                projection=ATTRS,
            )
            if f"{ad['ClusterId']}.{ad['ProcId']}" in by_job
        }
        phases = job_phases(ads, arrivals.at)
        return {
            "kind": kind,
            "n": n,
            "total": t_all - t0,
            "submit": t_submitted - t0,
            "first_worker": min(arrivals.at.values()) - t0,
            **phases,
        }
    finally:
        cluster.close()


def plugin_maker(url: str, memory: str) -> Callable[[], Any]:
    def make() -> PluginCluster:
        return PluginCluster(url, memory=memory, nthreads=1, status_interval=2.0, name="bench-pc")

    return make


def jobqueue_maker(pool: PoolInfo, workdir: Path, memory_gib: int) -> Callable[[], Any]:
    from dask_jobqueue import HTCondorCluster  # type: ignore[attr-defined]

    def make() -> Any:
        return HTCondorCluster(
            name="bench-jq",
            cores=1,
            processes=1,
            memory=f"{memory_gib}GiB",
            disk="1GiB",
            python="/usr/bin/python3",  # the image's interpreter
            death_timeout=60,
            scheduler_options={"host": "127.0.0.1", "dashboard": False},
            job_extra_directives={
                "universe": "container",
                "container_image": str(pool.images["python"]),
                "transfer_container": "false",  # the image is already on the execute point
                "transfer_executable": "false",
                "initialdir": str(workdir),
            },
        )

    return make


def jobqueue_ids(cluster: Any) -> dict[str, str]:
    return {str(n): w.job_id for n, w in list(cluster.workers.items()) if w.job_id}


def machine_notes(pool: PoolInfo) -> dict[str, Any]:
    from importlib.metadata import version

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    mem = next(
        int(ln.split()[1]) // 1024 // 1024
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    condor = pool.run_in_pool(["condor_version"], timeout=30).stdout.decode().splitlines()[0]
    apptainer = pool.run_in_pool(["apptainer", "--version"], timeout=30).stdout.decode().strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "slots": pool.slots,
        "slot_memory_mib": pool.slot_memory_mib,
        "condor": condor,
        "apptainer": apptainer,
        "dask": version("dask"),
        "distributed": version("distributed"),
        "dask_jobqueue": version("dask-jobqueue"),
        "python": platform.python_version(),
    }


def summarise(results: list[dict[str, Any]]) -> str:
    rows = [
        "| N | path | runs | total (median) | submit | negotiate | start | connect |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for n in sorted({r["n"] for r in results}):
        med: dict[str, float] = {}
        for kind in ("plugin", "jobqueue"):
            runs = [r for r in results if r["n"] == n and r["kind"] == kind]
            if not runs:
                continue

            def m(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return float(statistics.median(r[key] for r in runs))

            med[kind] = m("total")
            rows.append(
                f"| {n} | {kind} | {len(runs)} | {m('total'):.1f} s | {m('submit'):.2f} s | "
                f"{m('negotiate'):.1f} s | {m('start'):.1f} s | {m('connect'):.1f} s |"
            )
        if len(med) == 2:
            ratios.append(f"| {n} | {med['plugin'] / med['jobqueue']:.2f} |")
    return "\n".join([*rows, "", "| N | plugin / jobqueue (median total) |", "|---|---|", *ratios])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args(argv)

    pool = ensure_up()
    pool.apply_client_env()
    if max(args.n) > pool.slots:
        parser.error(
            f"the pool has {pool.slots} slots; N={max(args.n)} needs as many "
            "(interlink-htcondor pool down; interlink-htcondor pool up --slots 16)"
        )
    import htcondor2

    schedd = htcondor2.Schedd(
        htcondor2.Collector(pool.collector).locate(htcondor2.DaemonType.Schedd)
    )
    workdir = pool.shared_dir / f"bench-scaleout-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(mode=0o755)
    os.chown(workdir, pool.job_uid, pool.job_gid)
    # dask-jobqueue writes each submit file to the temp dir; the shim's condor_submit
    # reads it inside the pool, where only the shared directory has the same path.
    tempfile.tempdir = str(workdir)
    shim_dir = shims(pool, Path(tempfile.mkdtemp(prefix="shims-", dir=workdir)), workdir)
    os.environ["PATH"] = f"{shim_dir}{os.pathsep}{os.environ['PATH']}"
    notes = machine_notes(pool)
    notes["shim_overhead_ms"] = round(1000 * shim_overhead(shim_dir), 1)
    print(json.dumps(notes, indent=1), flush=True)

    results: list[dict[str, Any]] = []
    with LocalPlugin(env={"INTERLINK_HTCONDOR_POLICY__INSTANCE": "bench-scaleout"}) as plugin:
        makers = {
            "plugin": (plugin_maker(plugin.url, "1Gi"), lambda c: c.jobs()),
            "jobqueue": (jobqueue_maker(pool, workdir, 1), jobqueue_ids),
        }
        for n in args.n:
            for rep in range(args.repeats):
                order = ["plugin", "jobqueue"] if rep % 2 == 0 else ["jobqueue", "plugin"]
                for kind in order:
                    pool_idle(pool, schedd, ["bench-pc", "bench-jq"])
                    make, ids = makers[kind]
                    r = measure(kind, make, ids, n, schedd, args.timeout)
                    r["repeat"] = rep
                    results.append(r)
                    print(json.dumps(r), flush=True)
    table = summarise(results)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": notes, "runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
