"""Dask on HTCondor through interLink: what a physicist imports.

``PluginCluster`` sends worker pods straight to an interlink-htcondor plugin (no
Kubernetes); ``VirtualNodeCluster`` goes through the dask-kubernetes operator and the
interLink virtual node. Both build workers from one ``WorkerTemplate``.
``VirtualNodeCluster`` is imported on first use, so that ``PluginCluster`` does not need
a Kubernetes configuration or the operator's dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interlink_htcondor.dask.plugincluster import PluginCluster, WorkerFailure, WorkerStartError
from interlink_htcondor.dask.podstate import Counts, Phase
from interlink_htcondor.dask.template import DEFAULT_IMAGE, WorkerTemplate

if TYPE_CHECKING:
    from interlink_htcondor.dask.virtualnode import (
        VirtualNodeCluster,
        make_virtual_node_cluster_spec,
        plan_scale_down,
    )

__all__ = [
    "DEFAULT_IMAGE",
    "Counts",
    "Phase",
    "PluginCluster",
    "VirtualNodeCluster",
    "WorkerFailure",
    "WorkerStartError",
    "WorkerTemplate",
    "make_virtual_node_cluster_spec",
    "plan_scale_down",
]

_LAZY = {"VirtualNodeCluster", "make_virtual_node_cluster_spec", "plan_scale_down"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from interlink_htcondor.dask import virtualnode

        return getattr(virtualnode, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
