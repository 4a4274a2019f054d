"""The dimuon dataset and the analysis chain on small data, in this process (no pool)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import dask
import hist
import numpy as np
import pytest
import uproot

from dimuon import analyze, dataset, fit, generate, plot


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dataset.Dataset:
    cfg = generate.Config(n_files=2, events_per_file=25_000, seed=3)
    return dataset.prepare(tmp_path_factory.mktemp("dimuon"), cfg)


def test_files_are_nanoaod_style_ttrees_with_jagged_muons(data: dataset.Dataset) -> None:
    assert [f.name for f in data.files] == ["dimuon_000.root", "dimuon_001.root"]
    tree = uproot.open(str(data.files[0]))["Events"]
    assert tree.classname == "TTree" and tree.num_entries == 25_000
    assert {"nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"} <= set(
        tree.keys()
    )
    ev = tree.arrays(["nMuon", "Muon_pt", "Muon_charge"])
    counts = ak.to_numpy(ev.nMuon)
    assert (
        set(np.unique(counts)) <= {0, 1, 2, 3} and (counts >= 2).mean() > 0.6
    )  # acceptance: |eta| < 2.5
    pt = ev.Muon_pt
    assert ak.all(pt[:, :-1] >= pt[:, 1:])  # sorted by decreasing pT
    assert set(np.unique(ak.to_numpy(ak.flatten(ev.Muon_charge)))) == {-1, 1}
    assert data.events == 50_000


def test_generated_z_masses_follow_the_breit_wigner() -> None:
    rng = np.random.default_rng(1)
    m = generate._breit_wigner(rng, 200_000)
    assert abs(np.median(m) - generate.Z_MASS) < 0.05
    inside = np.mean(np.abs(m - generate.Z_MASS) < generate.Z_WIDTH / 2)
    assert 0.45 < inside < 0.55  # half the probability within the half width


def test_dataset_is_reused_only_for_the_same_configuration(tmp_path: Path) -> None:
    small = generate.Config(n_files=1, events_per_file=1_000)
    first = generate.ensure_dataset(tmp_path, small)
    mtime = first[0].stat().st_mtime_ns
    assert generate.ensure_dataset(tmp_path, small)[0].stat().st_mtime_ns == mtime
    other = generate.ensure_dataset(tmp_path, generate.Config(n_files=1, events_per_file=2_000))
    assert uproot.open(str(other[0]))["Events"].num_entries == 2_000


def test_worker_paths_map_the_host_directory(data: dataset.Dataset) -> None:
    assert data.worker_path(str(data.files[1])) == "/data/dimuon/dimuon_001.root"
    assert data.apptainer_bind == f"--bind {data.host_dir}:/data/dimuon:ro"


def test_analysis_finds_the_z_peak(data: dataset.Dataset) -> None:
    with dask.config.set(scheduler="sync"):
        result = analyze.combine(analyze.build(data.files, step_size=10_000).compute())
    assert len(result.partials) == 6  # 2 files x 3 steps
    assert result.events == 50_000 and result.pairs > 20_000
    assert result.fit.valid and abs(result.fit.mass - 91.19) < 0.1
    assert 0.5 < result.fit.sigma < 2.5
    # in this process, not a worker: the partials say so
    assert result.workers == {""}


def test_worker_path_mapping_reads_the_same_events(data: dataset.Dataset) -> None:
    with dask.config.set(scheduler="sync"):
        direct = analyze.combine(analyze.build(data.files).compute())
        mapped = analyze.combine(analyze.build(data.files, worker_path=lambda p: p).compute())
    assert mapped.events == direct.events
    assert np.array_equal(mapped.hist.values(), direct.hist.values())


def test_selection_keeps_only_opposite_charge_pairs_of_good_muons() -> None:
    events = ak.Array(
        {
            "Muon_pt": [[45.0, 40.0], [45.0, 40.0], [45.0, 10.0], [50.0]],
            "Muon_eta": [[0.1, -0.3], [0.1, -0.3], [0.1, 0.2], [0.0]],
            "Muon_phi": [[0.0, 3.0], [0.0, 3.0], [0.0, 3.0], [0.0]],
            "Muon_mass": [[0.106, 0.106], [0.106, 0.106], [0.106, 0.106], [0.106]],
            "Muon_charge": [[1, -1], [1, 1], [1, -1], [1]],
        }
    )
    import dask_awkward as dak

    with dask.config.set(analyze._DASK_CONFIG | {"scheduler": "sync"}):
        events = dak.from_awkward(events, npartitions=1)  # type: ignore[attr-defined]
        masses = analyze.dimuon_mass(events).compute()
    assert len(masses) == 1  # same sign, soft second muon and single muon are dropped
    assert 80 < masses[0] < 90


def test_fit_recovers_a_known_peak() -> None:
    rng = np.random.default_rng(5)
    n_sig = 40_000
    signal = rng.standard_cauchy(n_sig) * fit.Z_WIDTH / 2 + 91.0 + rng.normal(0, 1.5, n_sig)
    background = 60 + rng.exponential(30, 10_000)
    h = hist.Hist(analyze.mass_axis(), storage=hist.storage.Weight())
    h.fill(mass=np.concatenate([signal, background]))
    result = fit.fit_peak(h)
    assert result.valid
    assert abs(result.mass - 91.0) < 3 * result.mass_error + 0.02
    assert abs(result.sigma - 1.5) < 0.2


def test_plot_is_written(data: dataset.Dataset, tmp_path: Path) -> None:
    with dask.config.set(scheduler="sync"):
        result = analyze.combine(analyze.build(data.files[:1]).compute())
    out = plot.save(result.hist, result.fit, tmp_path / "z" / "peak.png", ["unit test"])
    assert out.read_bytes()[:4] == b"\x89PNG"
