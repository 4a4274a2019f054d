"""``interlink-htcondor demo``: the whole path, end to end, on this machine.

personal pool up -> plugin up (``serve``, embedded default) -> Dask workers scaled through
the plugin onto HTCondor slots, each in Apptainer -> the Z -> mu mu analysis on them ->
the fitted Z peak printed and the plot written -> workers removed, plugin stopped.
The pool keeps running for the next run (``interlink-htcondor pool down`` stops it).

``--chain`` goes through Kubernetes instead (``demo_chain``): the development cluster,
interLink's virtual kubelet and API server, the dask-kubernetes operator and a
``VirtualNodeCluster``.
"""

# distributed's Client is unannotated; dimuon (analysis/) is checked on its own.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from interlink_htcondor.cli import UsageError

DEFAULT_OUT = Path("out/zpeak.png")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = (
        "Bring up the personal pool and the plugin, scale Dask workers onto HTCondor slots "
        "through the plugin, fit the Z peak of a generated dimuon dataset on them, and "
        "write the plot."
    )
    parser.add_argument("--workers", type=int, default=4, help="Dask workers (default 4)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"plot file (default {DEFAULT_OUT})"
    )
    parser.add_argument("--files", type=int, default=8, help="ROOT files to generate")
    parser.add_argument("--events", type=int, default=40_000, help="events per file")
    parser.add_argument("--memory", default="1Gi", help="memory per worker (default 1Gi)")
    parser.add_argument(
        "--plugin-url",
        help="use this running plugin instead of starting one (it must serve the pool)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for the workers"
    )
    parser.add_argument(
        "--chain",
        action="store_true",
        help="through Kubernetes: the development cluster (interLink's virtual kubelet and "
        "API server), the dask-kubernetes operator and a VirtualNodeCluster (root)",
    )


def _say(step: str, text: str) -> None:
    print(f"[{step}] {text}", flush=True)


def run(args: argparse.Namespace, name: str) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    try:
        from distributed import Client
        from distributed.versions import VersionMismatchWarning

        from dimuon import dataset, generate
    except ImportError as e:
        raise UsageError(
            f"the analysis stack is missing ({e.name}); install it with "
            "pip install 'interlink-htcondor[analysis]'"
        ) from None
    from interlink_htcondor import devpool
    from interlink_htcondor.dask import PluginCluster, WorkerStartError
    from interlink_htcondor.dask.progress import TerminalDisplay
    from interlink_htcondor.local_plugin import LocalPlugin, PluginStartError

    # The workers run Debian bookworm's Python 3.11 with the client's exact dask and
    # distributed; only Python's patch level differs, which dask warns about.
    warnings.filterwarnings("ignore", category=VersionMismatchWarning)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if args.chain:
        if args.plugin_url:
            raise UsageError("--chain uses the development cluster's plugin: drop --plugin-url")
        from interlink_htcondor.cli import demo_chain

        return demo_chain.run(args, _say, lambda c, d, j: _analyse(c, d, j, args))
    t0 = time.monotonic()

    try:
        info = devpool.ensure_up()
    except devpool.PoolError as e:
        raise UsageError(str(e)) from None
    _say("pool", f"HTCondor pool up: {info.slots} slots, collector {info.collector}")

    plugin: LocalPlugin | None = None
    cluster: PluginCluster | None = None
    client: Any = None
    try:
        if args.plugin_url:
            url = args.plugin_url
        else:
            plugin = LocalPlugin()
            try:
                url = plugin.start()
            except PluginStartError as e:
                raise UsageError(str(e)) from None
        _say("plugin", f"serving the plugin API on {url}")

        data = dataset.prepare(
            info.shared_dir / "zpeak-data" / f"{args.files}x{args.events}",
            generate.Config(n_files=args.files, events_per_file=args.events),
        )
        _say("data", f"{len(data.files)} ROOT files, {data.events:,} events in {data.host_dir}")

        cluster = PluginCluster(
            url, memory=args.memory, nthreads=1, apptainer_options=data.apptainer_bind
        )
        _say("dask", f"scaling to {args.workers} workers through the plugin")
        cluster.scale(args.workers)
        try:
            cluster.wait_for_workers(
                args.workers, timeout=args.timeout, progress=TerminalDisplay(sys.stdout)
            )
        except (WorkerStartError, TimeoutError) as e:
            raise UsageError(f"workers did not arrive: {e}") from None
        jobs = cluster.jobs()
        client = Client(cluster)
        valid = _analyse(client, data, jobs, args)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if plugin is not None:
            plugin.stop()
    _say(
        "done",
        f"in {time.monotonic() - t0:.0f} s; workers removed, plugin stopped "
        "(the pool keeps running: interlink-htcondor pool down)",
    )
    return 0 if valid else 1


def _analyse(client: Any, data: Any, jobs: dict[str, str], args: argparse.Namespace) -> bool:
    """The analysis on the connected workers, what ran where, the fit and the plot; whether
    the fit is valid."""
    from dimuon import analyze, plot

    _say("analysis", "selecting opposite-charge muon pairs on the workers")
    result = analyze.run(client, data.files, worker_path=data.worker_path)
    per_worker = Counter(p.worker["name"] for p in result.partials)
    for worker, n in sorted(per_worker.items()):
        proc = next(p.worker for p in result.partials if p.worker["name"] == worker)
        print(
            f"    {worker}: {n} partitions, HTCondor job {jobs.get(worker, '?')}, "
            f"Python {proc['python']} in {proc['container'] or '(no container)'}"
        )
    print(f"    {result.events:,} events, {result.pairs:,} opposite-charge pairs")
    print(result.fit.summary())
    out = plot.save(
        result.hist,
        result.fit,
        args.out,
        notes=[f"{len(per_worker)} Dask workers on HTCondor"],
    )
    _say("plot", f"written to {out}")
    return bool(result.fit.valid)
