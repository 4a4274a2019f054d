"""notebooks/zpeak.ipynb is executed top to bottom against the real pool, and its outputs
say what a physicist would see: workers arriving, the Z peak, the plot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from interlink_htcondor.devpool import PoolInfo

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "zpeak.ipynb"


def outputs(nb: Any, kind: str) -> list[str]:
    """All outputs of the given MIME type (or 'stream' text), in order."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stream" and out.get("output_type") == "stream":
                found.append(out["text"])
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_notebook_runs_the_analysis_on_htcondor_workers(pool: PoolInfo, tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    text = "".join(outputs(nb, "stream"))
    # No sidebar here (no Jupyter server): the notebook made its own cluster, through the
    # plugin it was told to use, and its workers are HTCondor jobs.
    assert "a cluster of this notebook's own, through the plugin at http://127.0.0.1:" in text
    listed = re.search(r"HTCondor jobs: (\{.*\})", text)
    assert listed, text
    cluster_jobs = set(re.findall(r"'(\d+\.\d+)'", listed.group(1)))
    assert len(cluster_jobs) == 2
    # one line per worker: its HTCondor job and how many partitions it filled
    lines = re.findall(r"HTCondor job\s+(\d+\.\d+)\s+(\d+) partitions", text)
    assert {job for job, _ in lines} == cluster_jobs, text
    assert sum(int(n) for _, n in lines) == 16  # 8 files x 2 steps
    assert "container /" in text  # each partition was filled inside Apptainer
    assert " - INFO - " not in text  # Dask's INFO lines stay out of the outputs
    # the physics
    m = re.search(r"Z peak: m = ([0-9.]+) ± ([0-9.]+) GeV", text)
    assert m, text
    assert abs(float(m.group(1)) - 91.2) < 0.5
    assert "320,000 events" in text
    # the live arrival display and the cluster widget were rendered
    html = "".join(outputs(nb, "text/html"))
    assert "HTCondor workers" in html and "running" in html
    # the plot is shown and written
    (png,) = outputs(nb, "image/png")
    assert len(png) > 20_000
    assert (tmp_path / "out" / "zpeak-notebook.png").exists()
    # the Kubernetes cell built a DaskCluster the operator's CRD accepts
    assert "CRD validation errors: []" in text
    assert "virtual-node.interlink/no-schedule" in text
    assert "closed: all worker jobs removed" in text
