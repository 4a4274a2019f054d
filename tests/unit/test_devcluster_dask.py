"""The development cluster's Dask add-on: the operator's command line, CRDs and facts, and
the NodePorts a VirtualNodeCluster's scheduler gets there."""

from __future__ import annotations

import random
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from interlink_htcondor.devcluster import ClusterError, daskoptions, operator


def test_operator_runs_the_packages_controller_with_kopf_on_this_python() -> None:
    argv = operator.argv("http://127.0.0.1:40000/healthz")
    assert argv[:4] == [sys.executable, "-m", "kopf", "run"]
    assert "--standalone" in argv and "--all-namespaces" in argv
    assert "--liveness=http://127.0.0.1:40000/healthz" in argv
    assert argv[-2:] == ["-m", "dask_kubernetes.operator.controller"]


def test_crds_come_from_the_installed_package() -> None:
    docs = operator.crd_manifests()
    names = {d["metadata"]["name"] for d in docs}
    assert {
        "daskclusters.kubernetes.dask.org",
        "daskworkergroups.kubernetes.dask.org",
        "daskjobs.kubernetes.dask.org",
        "daskautoscalers.kubernetes.dask.org",
    } <= names
    assert {d["spec"]["group"] for d in docs} == {operator.CRD_GROUP}


def test_operator_facts_round_trip(tmp_path: Path) -> None:
    op = operator.OperatorInfo(
        pid=42,
        liveness_url="http://127.0.0.1:1/healthz",
        log=tmp_path / "dask-operator.log",
        crds=["daskclusters.kubernetes.dask.org"],
        versions={"dask-kubernetes": "2026.3.0", "kopf": "1.45.2"},
        python="/venv/bin/python",
    )
    assert operator.OperatorInfo.from_json(op.to_json()) == op


def test_versions_name_the_extra_when_the_operator_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(ClusterError, match=r"interlink-htcondor\[dask\]"):
        operator.package_versions()


def service(*node_ports: int | None) -> Any:
    ports = [SimpleNamespace(node_port=p) for p in node_ports]
    return SimpleNamespace(spec=SimpleNamespace(ports=ports))


def test_node_ports_held_by_services() -> None:
    held = daskoptions.allocated(
        [service(30001, None), service(), SimpleNamespace(spec=None), service(32000)]
    )
    assert held == {30001, 32000}


def test_picked_ports_are_free_distinct_and_in_the_range() -> None:
    taken = set(range(30000, 32760))
    picked = daskoptions.pick(taken, 2, random.Random(1), usable=lambda p: p != 32761)
    assert len(set(picked)) == 2
    assert set(picked) <= {32760, 32762, 32763, 32764, 32765, 32766, 32767}
    with pytest.raises(ClusterError, match="fewer than 2 free NodePorts"):
        daskoptions.pick(set(range(30000, 32767)), 2, random.Random(1), usable=lambda p: True)
