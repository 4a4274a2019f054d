"""What a Dask worker's container start costs on an idle execute point, split in two.

Inside the personal pool, as the job user, with the job wrapper's own Apptainer options
(``--containall --no-mount hostfs,cwd --workdir ... --no-eval``) and the pool's Python
image, each of these is run ``--repeats`` times, one at a time (wall-clock medians):

* ``apptainer``: ``true`` in the container: Apptainer's own start-up and teardown;
* ``python``: ``python3 -c pass``: that, plus the interpreter's start;
* ``distributed``: ``python3 -c "import distributed"``: that, plus what a worker imports
  before its first log line;
* ``worker``: ``dask worker --help``: the ``dask`` command's start (click and its plugins).

``bench_scaleout.py`` measures the same phases under load, from the wrapper's and the
worker's logs; this one says how much of them is Apptainer and how much Python on a quiet
machine.

Usage (the pool up)::

    python benchmarks/bench_container_start.py --repeats 10 \\
        --json benchmarks/results/container-start.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from interlink_htcondor.devpool import ensure_up

# Runs inside the pool (its python3): times each command, prints JSON.
PROBE = r"""
import json, subprocess, sys, tempfile, time
image, repeats = sys.argv[1], int(sys.argv[2])
commands = {
    "apptainer": ["true"],
    "python": ["python3", "-c", "pass"],
    "distributed": ["python3", "-c", "import distributed"],
    "worker": ["dask", "worker", "--help"],
}
out = {}
for name, argv in commands.items():
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as work:
            cmd = ["apptainer", "--silent", "exec", "--containall", "--no-mount", "hostfs,cwd",
                   "--workdir", work, "--no-eval", "--pwd", "/", image, *argv]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
    out[name] = times
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    pool = ensure_up()
    image = str(pool.images["python"])
    done = pool.run_in_pool(
        ["python3", "-c", PROBE, image, str(args.repeats)], timeout=1800, check=True
    )
    runs: dict[str, list[float]] = json.loads(done.stdout)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    rows = [
        ("Apptainer start and teardown (`true`)", medians["apptainer"], None),
        ("+ Python's start (`python3 -c pass`)", medians["python"], "apptainer"),
        ("+ `import distributed`", medians["distributed"], "python"),
        ("`dask worker --help` (the command's start)", medians["worker"], "apptainer"),
    ]
    print("| | median | over the row it builds on |\n|---|---|---|")
    for label, value, base in rows:
        extra = f"+{1000 * (value - medians[base]):.0f} ms" if base else ""
        print(f"| {label} | {1000 * value:.0f} ms | {extra} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"repeats": args.repeats, "medians_s": medians, "runs_s": runs}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
