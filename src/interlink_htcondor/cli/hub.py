"""``interlink-htcondor hub``: the personal JupyterHub next to the pool (``devhub``)."""

from __future__ import annotations

import argparse

from interlink_htcondor.cli import UsageError
from interlink_htcondor.devhub import HubError
from interlink_htcondor.devhub import cli as hub_cli


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    hub_cli.add_arguments(parser, name)


def run(args: argparse.Namespace, name: str) -> int:
    try:
        return hub_cli.run(args, name)
    except HubError as e:
        raise UsageError(str(e)) from e
