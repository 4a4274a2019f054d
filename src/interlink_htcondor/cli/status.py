"""``interlink-htcondor status``: a pod's status as a running plugin reports it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from interlink_htcondor.cli import admin
from interlink_htcondor.cli.manifests import Json

POLL_SECONDS = 2.0


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = "Show a pod's status as the plugin reports it."
    admin.add_connection_arguments(parser)
    admin.add_identity_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    parser.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        default=0,
        help="poll until every container has terminated (or time out)",
    )


def run(args: argparse.Namespace, name: str) -> int:
    return admin.run_against_plugin(_status, args)


async def _status(args: argparse.Namespace) -> int:
    pod = admin.identity(args)
    deadline = time.monotonic() + args.wait
    async with admin.client(args) as client:
        while True:
            answer = await client.status([pod])
            entry = answer[0] if isinstance(answer, list) and answer else None
            if entry is None or not args.wait or finished(entry):
                break
            if time.monotonic() >= deadline:
                print("timed out waiting for the pod to finish", file=sys.stderr)
                break
            await asyncio.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
    if entry is None:
        meta = pod["metadata"]
        print(
            f"pod {meta['namespace']}/{meta['name']} (uid {meta['uid']}) is not known to "
            "the plugin",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(entry, indent=2))
        return 0
    print(format_status(entry))
    return 0


def finished(entry: Json) -> bool:
    containers = entry.get("containers") or []
    return bool(containers) and all("terminated" in (c.get("state") or {}) for c in containers)


def format_status(entry: Json) -> str:
    """A kubectl-like table of one pod status entry."""
    rows = [("CONTAINER", "KIND", "STATE", "DETAIL")]
    for kind, key in (("init", "initContainers"), ("app", "containers")):
        for c in entry.get(key) or []:
            state = c.get("state") or {}
            if "terminated" in state:
                t = state["terminated"]
                detail = f"exit {t.get('exitCode')} {t.get('reason', '')} {t.get('message', '')}"
                rows.append((c["name"], kind, "terminated", detail.strip()))
            elif "running" in state:
                since = state["running"].get("startedAt", "")
                rows.append((c["name"], kind, "running", f"since {since}".strip()))
            else:
                w = state.get("waiting") or {}
                detail = f"{w.get('reason', '')} {w.get('message', '')}".strip()
                rows.append((c["name"], kind, "waiting", detail))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    head = (
        f"pod {entry.get('namespace')}/{entry.get('name')} uid {entry.get('UID')} "
        f"job {entry.get('JID')}"
    )
    lines = [head] + ["  ".join(r[i].ljust(width[i]) for i in range(3)) + "  " + r[3] for r in rows]
    return "\n".join(lines)
