"""The dimuon analysis on Dask workers: uproot + dask-awkward + vector + hist.

``uproot.dask`` opens the files lazily as a dask-awkward array (one partition per file
chunk); the selection builds opposite-charge muon pairs with vector's Lorentz vectors;
each partition's invariant masses are histogrammed on the worker that holds them, and
only the small partial histograms travel back. Every partial result also records which
worker (name, host, process, container) filled it, so a caller can prove where the work
ran.
"""

# dask_awkward re-exports its API without __all__, which strict mypy reads as private.
# mypy: disable-error-code="attr-defined"

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import dask
import dask_awkward as dak
import hist
import numpy as np
import uproot
import vector

from dimuon.fit import FitResult, fit_peak

MASS_BINS = (80, 60.0, 120.0)  # 0.75 GeV bins around the Z
MUON_PT_MIN = 20.0
MUON_ETA_MAX = 2.4

# dask-awkward 2025.3's column-projection and layer-fusion passes do not understand the
# graphs of dask >= 2026 (they fail with "missing dependency"/"cannot fuse"); the
# analysis reads all six muon branches anyway, so it runs without them.
_DASK_CONFIG = {"awkward.optimization.enabled": False}


def mass_axis() -> hist.axis.Regular:
    n, lo, hi = MASS_BINS
    return hist.axis.Regular(n, lo, hi, name="mass", label=r"$m_{\mu\mu}$ [GeV]")


def open_events(
    files: Sequence[Path | str],
    step_size: int = 20_000,
    worker_path: Callable[[str], str] | None = None,
) -> Any:
    """The ``Events`` trees of ``files`` as one lazy dask-awkward array, in partitions of
    at most ``step_size`` events.

    ``worker_path`` maps a file's path here to its path on the workers, when they see the
    data elsewhere (a container bind, an XRootD URL): the files are then opened here only
    to learn their entries and layout, and read on the workers under the mapped name.
    """
    if worker_path is None:
        return uproot.dask({str(f): "Events" for f in files}, step_size=step_size)
    spec: dict[str, Any] = {}
    for f in files:
        with uproot.open(str(f)) as handle:
            entries = int(handle["Events"].num_entries)
        steps = [[i, min(i + step_size, entries)] for i in range(0, entries, step_size)]
        spec[worker_path(str(f))] = {"object_path": "Events", "steps": steps}
    form = uproot.dask({str(files[0]): "Events"}, open_files=False).form
    return uproot.dask(spec, open_files=False, known_base_form=form)


def dimuon_mass(events: Any) -> Any:
    """Invariant mass of the leading opposite-charge pair of good muons, per event that
    has one (lazy)."""
    muons = dak.zip(
        {
            "pt": events.Muon_pt,
            "eta": events.Muon_eta,
            "phi": events.Muon_phi,
            "mass": events.Muon_mass,
            "charge": events.Muon_charge,
        },
        with_name="Momentum4D",
        behavior=vector.backends.awkward.behavior,
    )
    good = muons[(muons.pt > MUON_PT_MIN) & (abs(muons.eta) < MUON_ETA_MAX)]
    pairs = dak.combinations(good, 2, fields=["mu1", "mu2"])
    opposite = pairs[pairs.mu1.charge * pairs.mu2.charge < 0]
    # Muons are pT-ordered, so the first pair is the leading one.
    mass = dak.firsts((opposite.mu1 + opposite.mu2).mass)
    return mass[~dak.is_none(mass)]


@dataclass
class Partial:
    """One partition's histogram and where it was filled."""

    hist: hist.Hist[Any]
    events: int
    pairs: int
    worker: dict[str, Any]


def where_am_i() -> dict[str, Any]:
    """Identity of the process running this code (a Dask worker, or not)."""
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except ValueError:  # not inside a worker task
        name = ""
    return {
        "name": name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "container": os.environ.get("APPTAINER_CONTAINER", ""),
    }


def fill_partition(masses: ak.Array, n_events: int) -> Partial:
    """Histogram one partition's dimuon masses (runs on a worker)."""
    h = hist.Hist(mass_axis(), storage=hist.storage.Weight())
    values = ak.to_numpy(ak.drop_none(masses)).astype(np.float64)
    h.fill(mass=values)
    return Partial(h, int(n_events), int(values.size), where_am_i())


def count(partition: ak.Array) -> int:
    return len(partition)


def merge(parts: Sequence[Partial]) -> list[Partial]:
    return list(parts)


@dataclass
class AnalysisResult:
    hist: hist.Hist[Any]
    fit: FitResult
    events: int
    pairs: int
    partials: list[Partial] = field(repr=False)

    @property
    def workers(self) -> set[str]:
        """Names of the Dask workers that filled the histogram."""
        return {p.worker["name"] for p in self.partials}


def build(
    files: Sequence[Path | str],
    step_size: int = 20_000,
    worker_path: Callable[[str], str] | None = None,
) -> Any:
    """The lazy computation: a Delayed list of per-partition ``Partial`` results."""
    with dask.config.set(_DASK_CONFIG):
        events = open_events(files, step_size, worker_path)
        masses = dimuon_mass(events)
        parts = [
            dask.delayed(fill_partition)(m, dask.delayed(count)(n))
            for m, n in zip(masses.to_delayed(), events.nMuon.to_delayed(), strict=True)
        ]
    return dask.delayed(merge)(parts)


def combine(partials: Sequence[Partial]) -> AnalysisResult:
    total = hist.Hist(mass_axis(), storage=hist.storage.Weight())
    for p in partials:
        total += p.hist
    return AnalysisResult(
        hist=total,
        fit=fit_peak(total),
        events=sum(p.events for p in partials),
        pairs=sum(p.pairs for p in partials),
        partials=list(partials),
    )


def ship_by_value() -> None:
    """Send this package's functions to workers by value: the worker image has the
    analysis stack (uproot, awkward, vector, hist) but not this repository."""
    import cloudpickle  # type: ignore[import-untyped]

    import dimuon

    cloudpickle.register_pickle_by_value(dimuon)


def run(
    client: Any,
    files: Sequence[Path | str],
    step_size: int = 20_000,
    worker_path: Callable[[str], str] | None = None,
) -> AnalysisResult:
    """Run the analysis on ``client``'s workers and fit the Z peak (in the client: the
    fit needs only the merged 80-bin histogram)."""
    ship_by_value()
    with dask.config.set(_DASK_CONFIG):
        partials = client.compute(build(files, step_size, worker_path)).result()
    return combine(partials)
