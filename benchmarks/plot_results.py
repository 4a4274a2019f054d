"""Figures and tables of the benchmark results, for the docs.

Reads ``benchmarks/results/{status-loop,rss,scaleout}.json`` (those present) and writes
``docs/images/status-loop.png``, ``docs/images/rss.png`` and
``docs/images/scaleout-phases.png``, then prints the
Markdown tables the docs quote.

Usage: python benchmarks/plot_results.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "images"
Json = dict[str, Any]


def load(name: str) -> Json | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def status_loop(result: Json) -> str:
    sizes = result["sizes"]
    pods = [s["pods"] for s in sizes]
    status = [s["median"]["status"]["loop_seconds"] for s in sizes]
    health = [s["median"]["healthz"]["loop_seconds"] for s in sizes]
    ratio = [s["ratio_loop_status_over_healthz_median"] for s in sizes]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.loglog(pods, status, "o-", label="/status (one pod per call, as the VK)")
    ax.loglog(pods, health, "s--", label="/healthz (same number of calls)")
    ax.set_xlabel("tracked pods")
    ax.set_ylabel("one loop over every pod (s, median)")
    ax.set_title("Virtual kubelet status loop")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    for p, r, s in zip(pods, ratio, status, strict=True):
        ax.annotate(f"{r:.2f}x", (p, s), textcoords="offset points", xytext=(4, 6))
    p99 = [s["median"]["status"]["p99_ms"] for s in sizes]
    worst = [s["max_call_ms_status"] for s in sizes]
    worst_h = [s["max_call_ms_healthz"] for s in sizes]
    bx.semilogx(pods, p99, "o-", label="/status p99 (median of loops)")
    bx.semilogx(pods, worst, "^-", label="/status slowest call")
    bx.semilogx(pods, worst_h, "v--", label="/healthz slowest call")
    bx.axhline(50, color="grey", lw=0.8, ls=":")
    bx.set_xlabel("tracked pods")
    bx.set_ylabel("ms")
    bx.set_title("Per-call latency")
    bx.grid(True, which="both", alpha=0.3)
    bx.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "status-loop.png", dpi=110)
    rows = [
        "| pods | /status loop | /healthz loop | ratio (median of pairs) | /status p50 | p99 | "
        "slowest | /healthz slowest | calls > 50 ms | schedd queries/s | first (cold) loop | "
        "plugin RSS | schedd RSS | bare query |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        st = s["median"]["status"]
        over = sum(r["calls_over_50ms"] for r in s["runs"]["status"])
        q = sum(r["schedd_queries"] for r in s["runs"]["status"])
        t = sum(r["loop_seconds"] for r in s["runs"]["status"])
        c = s.get("cold_status_loop")
        cold = f"{c['loop_seconds']:.1f} s, slowest {c['max_ms']:.0f} ms" if c else "-"
        rows.append(
            f"| {s['pods']:,} | {st['loop_seconds']:.2f} s | "
            f"{s['median']['healthz']['loop_seconds']:.2f} s | "
            f"{s['ratio_loop_status_over_healthz_median']:.2f} | {st['p50_ms']:.2f} ms | "
            f"{st['p99_ms']:.1f} ms | {s['max_call_ms_status']:.0f} ms | "
            f"{s['max_call_ms_healthz']:.0f} ms | {over} | {q / t:.2f} | {cold} | "
            f"{s['plugin_rss_mib']:.0f} MiB | {s.get('schedd_rss_mib', 0):.0f} MiB | "
            f"{s['bare_query_seconds']:.2f} s |"
        )
    return "\n".join(rows)


def rss(result: Json) -> str:
    samples = result["samples"]
    t = [s["t"] / 60 for s in samples]
    roles = sorted({r for s in samples for r in s.get("pss_mib_by_role", {})})
    if roles:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
        bx.plot(t, [s["server_pss_mib"] for s in samples], label="server")
        for name in roles:
            bx.plot(t, [s["pss_mib_by_role"].get(name, 0.0) for s in samples], label=name)
        bx.set_xlabel("minutes of status loops")
        bx.set_ylabel("PSS (MiB)")
        bx.set_title("By process")
        bx.grid(True, alpha=0.3)
        bx.legend(loc="upper left", fontsize="small", ncol=2)
    else:
        fig, ax = plt.subplots(figsize=(7, 3.8))
    if "total_pss_mib" in samples[0]:
        ax.plot(t, [s["total_pss_mib"] for s in samples], label="server + workers (PSS)")
        ax.plot(t, [s["server_mib"] for s in samples], "--", label="server (RSS)")
        ax.plot(t, [s["total_mib"] for s in samples], ":", label="server + workers (sum of RSS)")
    else:
        ax.plot(t, [s["total_mib"] for s in samples], label="server + snapshot process")
        ax.plot(t, [s["server_mib"] for s in samples], "--", label="server")
    goal = 200e6 / 2**20  # the goal is 200 MB
    ax.axhline(goal, color="grey", lw=0.8, ls=":")
    ax.annotate("goal: 200 MB", (0, goal), xytext=(2, 3), textcoords="offset points", fontsize=8)
    ax.set_ylim(0, max(220, max(s["total_mib"] for s in samples) * 1.1))
    ax.set_xlabel("minutes of status loops")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"Plugin memory, {result['tracked_pods']:,} tracked pods")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(DOCS / "rss.png", dpi=110)
    loops = result.get("loop_seconds") or [0.0]
    return (
        f"baseline {result['baseline_rss_mib']} MiB; largest total "
        f"{result['max_total_mib']} MiB (sum of RSS), "
        f"{result.get('max_total_pss_mib', '-')} MiB (PSS); server alone at most "
        f"{result.get('max_server_mib', '-')} MiB; slope after the first minute "
        f"{result['slope_mib_per_minute_after_first_minute']} MiB/min; "
        f"{result['calls']:,} calls in {len(loops)} full loops "
        f"(median {statistics.median(loops):.1f} s)"
    )


PHASES = ("submit", "negotiate", "start", "wrapper", "container", "worker_start", "connect")


def scaleout(result: Json) -> str:
    runs = result["runs"]
    ns = sorted({r["n"] for r in runs})
    kinds = [k for k in ("plugin", "jobqueue") if any(r["kind"] == k for r in runs)]
    rows = ["| N | path | runs | total | " + " | ".join(PHASES) + " |"]
    rows.append("|---|---|---|---|" + "---|" * len(PHASES))
    ratios = ["| N | plugin / jobqueue (median total) |", "|---|---|"]
    fig, axes = plt.subplots(1, len(ns), figsize=(5.5 * len(ns), 3.8), squeeze=False)
    for ax, n in zip(axes[0], ns, strict=True):
        med: dict[str, float] = {}
        bottom = [0.0] * len(kinds)
        for phase in ("submit", "negotiate", "start", "worker_start", "connect"):
            vals = []
            for kind in kinds:
                rs = [r for r in runs if r["n"] == n and r["kind"] == kind and phase in r]
                vals.append(statistics.median(r[phase] for r in rs) if rs else 0.0)
            ax.barh(kinds, vals, left=bottom, label=phase)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        for kind in kinds:
            rs = [r for r in runs if r["n"] == n and r["kind"] == kind]
            med[kind] = statistics.median(r["total"] for r in rs)
            cells = []
            for p in PHASES:
                vals = [r[p] for r in rs if p in r]
                cells.append(f"{statistics.median(vals):.2f} s" if vals else "-")
            rows.append(f"| {n} | {kind} | {len(rs)} | {med[kind]:.1f} s | " + " | ".join(cells))
        ax.set_title(f"N = {n}")
        ax.set_xlabel("seconds (median phases)")
        if "plugin" in med and "jobqueue" in med:
            ratios.append(f"| {n} | {med['plugin'] / med['jobqueue']:.2f} |")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "scaleout-phases.png", dpi=110)
    return "\n".join([*rows, "", *ratios])


def main() -> None:
    for name, fn in (("status-loop", status_loop), ("rss", rss), ("scaleout", scaleout)):
        result = load(name)
        if result is not None:
            print(f"## {name}\n\n{fn(result)}\n")


if __name__ == "__main__":
    main()
