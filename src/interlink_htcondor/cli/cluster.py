"""``interlink-htcondor cluster``: Kubernetes and interLink's virtual node in front of the
personal pool (``devcluster``)."""

from __future__ import annotations

import argparse

from interlink_htcondor.cli import UsageError
from interlink_htcondor.devcluster import cli as cluster_cli
from interlink_htcondor.devcluster.errors import ClusterError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    cluster_cli.add_arguments(parser, name)


def run(args: argparse.Namespace, name: str) -> int:
    try:
        return cluster_cli.run(args, name)
    except ClusterError as e:
        raise UsageError(str(e)) from e
