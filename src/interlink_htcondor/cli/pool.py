"""``interlink-htcondor pool``: the personal HTCondor + Apptainer pool (``devpool``)."""

from __future__ import annotations

import argparse

from interlink_htcondor.cli import UsageError
from interlink_htcondor.devpool import PoolError
from interlink_htcondor.devpool import cli as pool_cli


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    pool_cli.add_arguments(parser, name)


def run(args: argparse.Namespace, name: str) -> int:
    try:
        return pool_cli.run(args, name)
    except PoolError as e:
        raise UsageError(str(e)) from e
