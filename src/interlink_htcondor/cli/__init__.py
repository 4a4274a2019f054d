"""The ``interlink-htcondor`` command: a thin dispatcher to one module per subcommand.

Each subcommand module exposes ``add_arguments(parser, name)`` and ``run(args, name) ->
int``; it is imported only when used, so ``pool`` works before the plugin's heavier
imports are needed, and ``healthcheck`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pool": ("interlink_htcondor.cli.pool", "run a personal HTCondor + Apptainer pool"),
    "cluster": ("interlink_htcondor.cli.cluster", "run Kubernetes + interLink's virtual node"),
    "hub": ("interlink_htcondor.cli.hub", "run a personal JupyterHub with the Dask sidebar"),
    "serve": ("interlink_htcondor.cli.serve", "serve the interLink plugin API"),
    "render": ("interlink_htcondor.cli.render", "print the job a pod manifest becomes"),
    "submit": ("interlink_htcondor.cli.submit", "send a pod to a running plugin"),
    "status": ("interlink_htcondor.cli.status", "show a pod's status from a running plugin"),
    "logs": ("interlink_htcondor.cli.logs", "print a container's logs from a running plugin"),
    "demo": ("interlink_htcondor.cli.demo", "pool, plugin, Dask workers and the Z-peak analysis"),
    "healthcheck": ("interlink_htcondor.cli.healthcheck", "probe a running plugin (exit 0 if up)"),
    "config-reference": (
        "interlink_htcondor.cli.config_reference",
        "print the configuration reference (or a YAML file of the defaults)",
    ),
}


class UsageError(Exception):
    """A command-line or environment problem, reported as one clear line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="interlink-htcondor", description="Run Kubernetes pods on HTCondor through interLink."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in COMMANDS:
        parser.parse_args(args_list)  # prints usage or the error, exits
        return 2
    name = args_list[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"interlink-htcondor {name}")
    module.add_arguments(cmd_parser, name)
    args = cmd_parser.parse_args(args_list[1:])
    try:
        return int(module.run(args, name))
    except UsageError as e:
        print(f"interlink-htcondor {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
