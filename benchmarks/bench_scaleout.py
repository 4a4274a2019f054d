"""Dask scale-out: time from ``scale(N)`` to N connected workers, side by side.

* ``plugin``: ``PluginCluster`` -> interlink-htcondor plugin (``serve``) -> HTCondor, each
  worker a vanilla job whose wrapper runs the worker image with Apptainer;
* ``jobqueue``: dask-jobqueue's ``HTCondorCluster`` -> ``condor_submit`` (one per worker)
  -> HTCondor, each worker a container-universe job of the same image.

Same pool, same slots, same negotiator settings, same image, the same 1 CPU / 1 GiB memory
/ 256 MiB disk per worker, the same scheduler placement (in this process, 127.0.0.1). Each
path keeps its own worker defaults (``PluginCluster``'s come from the site's dask config;
``HTCondorCluster`` runs a nanny unless ``--jobqueue-no-nanny``). The order of the two
alternates between repeats, and every run starts from an idle pool with its slots
unclaimed, so neither path inherits the other's claims.

Per-phase breakdown (medians over the run's jobs, then over runs):

* ``submit``: ``scale(N)`` until every job has its id (client clock);
* ``negotiate``: ``QDate`` -> ``LastMatchTime`` (job ad, whole seconds);
* ``start``: ``LastMatchTime`` -> ``JobCurrentStartExecutingDate`` (job ad, whole seconds);
* ``worker_start``: that -> the worker's first log line (its Python has imported
  distributed): for the plugin, the job wrapper's start-up, Apptainer's and Python's; for
  dask-jobqueue, Apptainer's (run by the starter) and Python's;
* ``connect``: the first log line -> the worker's registration at the scheduler.

For the plugin the worker start is split further from the wrapper's own log: ``wrapper``
(the job executing -> the container process started) and ``container`` (that -> the
worker's first log line).

The host has no HTCondor tools (only the Python bindings), so dask-jobqueue's
``condor_submit``/``condor_rm``/``condor_q`` are small shims that run the real tools inside the
personal pool (``nsenter`` + ``setpriv``, a few milliseconds; measured and printed).

Usage (the pool needs at least max(N) slots)::

    INTERLINK_HTCONDOR_POOL_DIR=/var/tmp/pool64 interlink-htcondor pool up --slots 64 \
        --slot-memory 1024 --port 9650
    INTERLINK_HTCONDOR_POOL_DIR=/var/tmp/pool64 python benchmarks/bench_scaleout.py \
        --n 16 64 --repeats 5 --json benchmarks/results/scaleout.json
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes as parse_size
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.versions import VersionMismatchWarning

from interlink_htcondor.dask import PluginCluster, WorkerTemplate
from interlink_htcondor.dask.template import dask_variable
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
    "InterlinkSandbox",
]
DISK = "256MiB"  # per worker, both paths (64 workers must fit the pool's disk)


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


def pool_idle(pool: PoolInfo, schedd: Any, prefixes: list[str], timeout: float = 900) -> None:
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


def cpu_busy(window: float) -> float:
    """Share of the machine's CPU time spent busy (not idle, not waiting for I/O) over
    ``window`` seconds, from ``/proc/stat``."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return sum(fields[:8]), idle

    total0, idle0 = sample()
    time.sleep(window)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def machine_quiet(
    busy_below: float = 0.2, window: float = 5.0, timeout: float = 300
) -> tuple[float, float]:
    """Wait until the machine is quiet (the previous run's processes gone, not only its
    slots free): busy under ``busy_below`` over ``window`` seconds. Returns the seconds
    waited and the last busy share (the wait ends at ``timeout`` anyway)."""
    start = time.monotonic()
    busy = cpu_busy(window)
    while busy >= busy_below and time.monotonic() - start < timeout:
        busy = cpu_busy(window)
    return time.monotonic() - start, busy


_TICK = os.sysconf("SC_CLK_TCK")
APPTAINER = {"apptainer", "starter", "starter-suid", "squashfuse", "squashfuse_ll"}


def _processes() -> dict[int, tuple[int, str, str, float]]:
    """pid -> (ppid, comm, cmdline, CPU seconds) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        comm = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
        fields = stat[stat.rfind(b")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        out[int(name)] = (int(fields[1]), comm, cmd.decode(errors="replace"), cpu)
    return out


def _role(pid: int, procs: dict[int, tuple[int, str, str, float]], plugin: int | None) -> str:
    _, comm, cmd, _ = procs[pid]
    up, seen = pid, 0
    while up in procs and seen < 64:  # the plugin's server and its workers
        if up == plugin:
            return "plugin"
        up, seen = procs[up][0], seen + 1
    if pid == os.getpid():
        return "benchmark (scheduler)"
    if comm.startswith("condor_"):
        return comm
    if "wrapper.py" in cmd:
        return "job wrapper"
    if comm in APPTAINER:
        return "apptainer"
    if "spawn_main" in cmd or "dask" in cmd:
        return "dask nanny" if "--nanny" in cmd else "dask worker"
    return "other"


def cpu_by_role(seconds: float, plugin: int | None) -> dict[str, float]:
    """CPU used by each kind of process over about ``seconds``, in cores (CPU s per s):
    what running workers cost the machine while they wait for work. The window runs from
    the middle of one scan of /proc to the middle of the next (a scan takes a while on a
    loaded machine); processes that started within it are left out (their count is
    ``started in the window``)."""
    t0 = time.monotonic()
    before = _processes()
    t1 = time.monotonic()
    time.sleep(seconds)
    t2 = time.monotonic()
    after = _processes()
    t3 = time.monotonic()
    window = ((t2 + t3) - (t0 + t1)) / 2
    used: dict[str, float] = {}
    new = 0
    for pid, (_, _, _, cpu) in after.items():
        if pid not in before:
            new += 1
            continue
        role = _role(pid, after, plugin)
        used[role] = used.get(role, 0.0) + max(0.0, cpu - before[pid][3])
    out = {k: round(v / window, 3) for k, v in sorted(used.items())}
    return {**out, "window s": round(window, 2), "started in the window": new}


def rfc3339(text: str) -> float:
    """Unix time of an RFC 3339 UTC stamp with up to nanoseconds (the wrapper's logs)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return t + float("0." + frac) if frac else t


def dask_log_time(line: str) -> float | None:
    """Unix time of a ``distributed`` log line (``2026-11-30 03:01:02,123 - ...``, UTC)."""
    try:
        stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC).timestamp()


def plugin_times(sandbox: Path) -> dict[str, float]:
    """From the pod's sandbox: when the container process started (wrapper log) and when
    the worker wrote its first line (CRI log)."""
    out: dict[str, float] = {}
    for line in (sandbox / "wrapper.err").read_text(errors="replace").splitlines():
        if "container worker: running" in line:
            out["spawned"] = rfc3339(line.split()[0])
            break
    for line in (sandbox / "logs" / "worker.log").read_text(errors="replace").splitlines():
        if " - distributed." in line:
            out["first_log"] = rfc3339(line.split()[0])
            break
    return out


def jobqueue_times(err_file: Path) -> dict[str, float]:
    for line in err_file.read_text(errors="replace").splitlines():
        t = dask_log_time(line)
        if t is not None:
            return {"first_log": t}
    return {}


def job_phases(ads: dict[str, Any], times: dict[str, dict[str, float]],
               arrivals: dict[str, float]) -> dict[str, float]:  # fmt: skip
    cols: dict[str, list[float]] = {}
    for name, ad in ads.items():
        executing = ad.get("JobCurrentStartExecutingDate") or ad.get("JobCurrentStartDate")
        t = times.get(name, {})
        row = {
            "negotiate": ad["LastMatchTime"] - ad["QDate"],
            "start": executing - ad["LastMatchTime"],
        }
        if "first_log" in t:
            row["worker_start"] = t["first_log"] - executing
            row["connect"] = arrivals[name] - t["first_log"]
        if "spawned" in t and "first_log" in t:
            row["wrapper"] = t["spawned"] - executing
            row["container"] = t["first_log"] - t["spawned"]
        for k, v in row.items():
            cols.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in cols.items()}


def measure(
    kind: str,
    make: Callable[[], Any],
    job_ids: Callable[[Any], dict[str, str]],
    job_times: Callable[[str, Any], dict[str, float]],
    n: int,
    schedd: Any,
    timeout: float,
    plugin_pid: int | None = None,
    idle_seconds: float = 0.0,
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
        # What the N running workers cost the machine once all joined, by process kind.
        idle_cpu = cpu_by_role(idle_seconds, plugin_pid) if idle_seconds else {}
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
        # The workers' logs, before closing the cluster deletes the plugin's sandboxes.
        times = {name: job_times(name, ad) for name, ad in ads.items()}
        phases = job_phases(ads, times, arrivals.at)
        return {
            "kind": kind,
            "n": n,
            "total": t_all - t0,
            "submit": t_submitted - t0,
            "first_worker": min(arrivals.at.values()) - t0,
            "arrivals": [round(t - t0, 2) for t in sorted(arrivals.at.values())],
            "idle_cores_by_role": idle_cpu,
            **phases,
        }
    finally:
        cluster.close()


def plugin_maker(url: str, memory: str) -> Callable[[], Any]:
    def make() -> PluginCluster:
        return PluginCluster(url, memory=memory, nthreads=1, status_interval=2.0, name="bench-pc")

    return make


def jobqueue_maker(
    pool: PoolInfo, workdir: Path, memory_gib: int, nanny: bool, dask_config: dict[str, str]
) -> Callable[[], Any]:
    from dask_jobqueue import HTCondorCluster  # type: ignore[attr-defined]

    def make() -> Any:
        return HTCondorCluster(
            name="bench-jq",
            cores=1,
            processes=1,
            memory=f"{memory_gib}GiB",
            disk=DISK,
            nanny=nanny,
            python="/usr/bin/python3",  # the image's interpreter
            death_timeout=60,
            log_directory=str(workdir / "jq-logs"),
            # The worker's own Dask settings, as PluginCluster passes them (if asked).
            job_script_prologue=[
                f"export {dask_variable(k)}={shlex.quote(v)}" for k, v in dask_config.items()
            ]
            or None,
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


def plugin_job_times(_name: str, ad: Any) -> dict[str, float]:
    sandbox = ad.get("InterlinkSandbox")
    return plugin_times(Path(sandbox)) if isinstance(sandbox, str) else {}


def jobqueue_job_times(workdir: Path) -> Callable[[str, Any], dict[str, float]]:
    def times(_name: str, ad: Any) -> dict[str, float]:
        err = workdir / "jq-logs" / f"worker-{ad['ClusterId']}.{ad['ProcId']}.err"
        return jobqueue_times(err) if err.exists() else {}

    return times


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


PHASES = ("submit", "negotiate", "start", "worker_start", "connect", "wrapper", "container")


def summarise(results: list[dict[str, Any]]) -> str:
    rows = [
        "| N | path | runs | total (median) | " + " | ".join(PHASES) + " |",
        "|---|---|---|---|" + "---|" * len(PHASES),
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
            cells = [f"{m(p):.2f} s" if all(p in r for r in runs) else "-" for p in PHASES]
            rows.append(
                f"| {n} | {kind} | {len(runs)} | {m('total'):.1f} s | " + " | ".join(cells) + " |"
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
    parser.add_argument(
        "--jobqueue-no-nanny",
        action="store_true",
        help="HTCondorCluster without a nanny (its default has one)",
    )
    parser.add_argument(
        "--jobqueue-dask-config",
        action="store_true",
        help="give HTCondorCluster's workers the Dask settings PluginCluster's have "
        "(WorkerTemplate().dask_config; its default is distributed's own)",
    )
    parser.add_argument(
        "--paths", nargs="+", default=["plugin", "jobqueue"], choices=["plugin", "jobqueue"]
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.2,
        help="before each run, wait (up to 5 min) until the CPUs are busy less than this share",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=15.0,
        help="once all workers joined, measure the CPU they cost idle for this long (0: not)",
    )
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
    (workdir / "jq-logs").mkdir(mode=0o755)  # the jobs (the job user) write their logs there
    os.chown(workdir / "jq-logs", pool.job_uid, pool.job_gid)
    # dask-jobqueue writes each submit file to the temp dir; the shim's condor_submit
    # reads it inside the pool, where only the shared directory has the same path.
    tempfile.tempdir = str(workdir)
    shim_dir = shims(pool, Path(tempfile.mkdtemp(prefix="shims-", dir=workdir)), workdir)
    os.environ["PATH"] = f"{shim_dir}{os.pathsep}{os.environ['PATH']}"
    notes = machine_notes(pool)
    notes["shim_overhead_ms"] = round(1000 * shim_overhead(shim_dir), 1)
    # Each path's own worker process model (PluginCluster's from the site's dask config).
    notes["plugin_nanny"] = WorkerTemplate().nanny
    notes["plugin_worker_dask_config"] = dict(WorkerTemplate().dask_config)
    jobqueue_config = notes["plugin_worker_dask_config"] if args.jobqueue_dask_config else {}
    notes["jobqueue_worker_dask_config"] = jobqueue_config
    notes["jobqueue_nanny"] = not args.jobqueue_no_nanny
    print(json.dumps(notes, indent=1), flush=True)

    results: list[dict[str, Any]] = []
    plugin_env = {
        "INTERLINK_HTCONDOR_POLICY__INSTANCE": "bench-scaleout",
        "INTERLINK_HTCONDOR_RESOURCES__DEFAULT_DISK_MIB": str(parse_size(DISK) // 2**20),
    }
    with LocalPlugin(env=plugin_env) as plugin:
        makers = {
            "plugin": (plugin_maker(plugin.url, "1Gi"), lambda c: c.jobs(), plugin_job_times),
            "jobqueue": (
                jobqueue_maker(pool, workdir, 1, not args.jobqueue_no_nanny, jobqueue_config),
                jobqueue_ids,
                jobqueue_job_times(workdir),
            ),
        }
        for n in args.n:
            for rep in range(args.repeats):
                order = args.paths if rep % 2 == 0 else args.paths[::-1]
                for kind in order:
                    pool_idle(pool, schedd, ["bench-pc", "bench-jq"])
                    waited, busy = machine_quiet(args.quiet_below)
                    make, ids, times = makers[kind]
                    load = os.getloadavg()[0]
                    r = measure(
                        kind, make, ids, times, n, schedd, args.timeout,
                        plugin_pid=plugin.pid, idle_seconds=args.idle_seconds,
                    )  # fmt: skip
                    r["repeat"] = rep
                    r["loadavg_1min_before"] = round(load, 2)
                    r["cpu_busy_before"] = round(busy, 3)
                    r["quiet_wait_s"] = round(waited, 1)
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    if args.json:  # what is done so far survives a failure
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(
                            json.dumps({"machine": notes, "runs": results}, indent=1) + "\n"
                        )
    table = summarise(results)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": notes, "runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
