"""``interlink-htcondor logs``: a container's logs from a running plugin (``-f`` follows)."""

from __future__ import annotations

import argparse
import sys

from interlink_htcondor.cli import UsageError, admin
from interlink_htcondor.cli.manifests import Json


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = "Print a container's logs."
    admin.add_connection_arguments(parser)
    admin.add_identity_arguments(parser)
    parser.add_argument("-c", "--container", help="container (default: the only one)")
    parser.add_argument("-f", "--follow", action="store_true", help="stream until it ends")
    parser.add_argument("--tail", type=int, default=0, help="last N lines")
    parser.add_argument("--limit-bytes", type=int, default=0, help="at most N bytes")
    parser.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="SECONDS",
        help="only lines newer than this many seconds",
    )
    parser.add_argument("--since-time", help="only lines at or after this RFC 3339 time")
    parser.add_argument("--timestamps", action="store_true", help="prefix each line's time")


def run(args: argparse.Namespace, name: str) -> int:
    return admin.run_against_plugin(_logs, args)


async def _logs(args: argparse.Namespace) -> int:
    pod = admin.identity(args)
    meta = pod["metadata"]
    container = args.container
    async with admin.client(args) as client:
        if container is None:
            answer = await client.status([pod])
            if not answer:
                raise UsageError(f"pod {meta['namespace']}/{meta['name']} is not known")
            names = [c["name"] for c in answer[0].get("containers") or []]
            if len(names) != 1:
                raise UsageError(f"choose a container with -c: {', '.join(names)}")
            container = names[0]
        opts: Json = {
            "Tail": args.tail,
            "Bytes": args.limit_bytes,
            "SinceSeconds": args.since,
            "Timestamps": args.timestamps,
        }
        if args.since_time:
            opts["SinceTime"] = args.since_time
        call = (meta["namespace"], meta["name"], meta["uid"], container)
        if args.follow:
            async for chunk in client.follow_logs(*call, **opts):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(await client.logs(*call, **opts))
    return 0
