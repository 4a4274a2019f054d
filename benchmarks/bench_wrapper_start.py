"""The job wrapper's own start-up on an execute point, against the interpreter's.

Inside the personal pool, as the job user, with the pool's ``python3``: each repeat runs,
in turn, ``python3 -c pass`` (the baseline: the interpreter's start) and the job wrapper
up to reading its job spec (which is missing, so it stops there: its imports and the
compilation of its 2,000 lines, what every pod pays before its first container starts),
and, with ``--before REV``, the wrapper as it was at that git revision, in the same run.
Wall-clock medians and each one's ratio to the baseline.

``bench_scaleout.py`` measures the wrapper's whole phase under load (executing ->
container started); this one isolates the part that is the wrapper's own Python.

Usage (the pool up)::

    python benchmarks/bench_wrapper_start.py --repeats 20 --before 31f057e \\
        --json benchmarks/results/wrapper-start.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from interlink_htcondor.devpool import ensure_up

WRAPPER = Path(__file__).resolve().parents[1] / "src/interlink_htcondor/jobside/wrapper.py"

# Runs inside the pool (its python3): reads {name: wrapper source} on stdin, times each.
PROBE = r"""
import json, os, subprocess, sys, tempfile, time
repeats = int(sys.argv[1])
sources = json.load(sys.stdin)
out = {"python": []}
with tempfile.TemporaryDirectory() as work:
    paths = {}
    for name, text in sources.items():
        paths[name] = os.path.join(work, name + ".py")
        with open(paths[name], "w") as f:
            f.write(text)
        out[name] = []
    runs = [("python", ["python3", "-c", "pass"])]
    runs += [(n, ["python3", p, os.path.join(work, "missing.json")]) for n, p in paths.items()]
    for _ in range(repeats):
        for name, argv in runs:
            t = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out[name].append(time.perf_counter() - t)
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--before", help="also time the wrapper of this git revision")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    sources = {"wrapper": WRAPPER.read_text()}
    if args.before:
        rel = WRAPPER.relative_to(WRAPPER.parents[3]).as_posix()
        sources["wrapper_before"] = subprocess.run(
            ["git", "show", f"{args.before}:{rel}"],
            cwd=WRAPPER.parents[3],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    pool = ensure_up()
    done = pool.run_in_pool(
        ["python3", "-c", PROBE, str(args.repeats)],
        input=json.dumps(sources).encode(),
        timeout=1800,
        check=True,
    )
    runs: dict[str, list[float]] = json.loads(done.stdout)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    version = pool.run_in_pool(["python3", "--version"], check=True).stdout.decode().strip()
    print(f"{version}, {args.repeats} repeats\n\n| | median | over `python3 -c pass` |")
    print("|---|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {1000 * value:.0f} ms | {value / medians['python']:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "python": version,
            "repeats": args.repeats,
            "before": args.before,
            "medians_s": medians,
            "runs_s": runs,
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
