"""Generate a dimuon dataset as NanoAOD-style ROOT files (TTree ``Events``).

Each event is either a Z -> mu+ mu- decay or continuum background:

* Z: the dimuon mass follows a relativistic Breit-Wigner at 91.1876 GeV with the
  Z width (2.4952 GeV); the Z gets a falling transverse momentum spectrum and a
  rapidity spread, and decays with the 1 + cos^2(theta*) angular distribution.
* Background: the mass falls exponentially (Drell-Yan continuum, top pairs, fakes);
  one pair in five has the same charge.
* Detector: muon transverse momenta are smeared with a pT-dependent Gaussian
  resolution; only muons with |eta| < 2.5 and pT > 3 GeV are kept, and some events
  get an extra soft muon, so events have 0 to 3 muons.

Muons are stored as jagged (awkward) branches ``nMuon``, ``Muon_pt``, ``Muon_eta``,
``Muon_phi``, ``Muon_mass`` and ``Muon_charge``, sorted by decreasing pT.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
import vector

Z_MASS = 91.1876
Z_WIDTH = 2.4952
MUON_MASS = 0.1056584
MASS_RANGE = (50.0, 130.0)


@dataclass(frozen=True)
class Config:
    n_files: int = 8
    events_per_file: int = 40_000
    signal_fraction: float = 0.7
    background_slope: float = 0.035  # 1/GeV: exp(-slope * m)
    resolution: float = 0.012  # sigma(pT)/pT at low pT ...
    resolution_slope: float = 1.5e-4  # ... growing by this much per GeV
    extra_muon_fraction: float = 0.15
    seed: int = 20261123


def _breit_wigner(rng: np.random.Generator, n: int) -> np.ndarray:
    """Relativistic Breit-Wigner in m, by the inverse CDF in m^2 (a Cauchy in s),
    truncated to MASS_RANGE."""
    m2, mg = Z_MASS**2, Z_MASS * Z_WIDTH
    lo, hi = (np.arctan((m**2 - m2) / mg) for m in MASS_RANGE)
    s = m2 + mg * np.tan(rng.uniform(lo, hi, n))
    out: np.ndarray = np.sqrt(s)
    return out


def _exponential(rng: np.random.Generator, n: int, slope: float) -> np.ndarray:
    lo, hi = MASS_RANGE
    u = rng.uniform(0.0, 1.0, n)
    out: np.ndarray = lo - np.log1p(-u * (1 - np.exp(-slope * (hi - lo)))) / slope
    return out


def _cos_theta(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sample 1 + cos^2(theta) on [-1, 1] by accept-reject (acceptance 2/3)."""
    out = np.empty(0)
    while out.size < n:
        c = rng.uniform(-1, 1, 2 * n)
        keep = rng.uniform(0, 2, c.size) < 1 + c**2
        out = np.concatenate([out, c[keep]])
    return out[:n]


def _decay(rng: np.random.Generator, mass: np.ndarray) -> tuple[Any, Any]:
    """Two muons from a resonance of ``mass``, boosted into the lab frame."""
    n = mass.size
    pt = rng.gamma(1.6, 7.0, n)  # falling pT spectrum, mean ~11 GeV
    rapidity = rng.normal(0.0, 1.6, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    mt = np.sqrt(mass**2 + pt**2)
    parent = vector.array(
        {
            "px": pt * np.cos(phi),
            "py": pt * np.sin(phi),
            "pz": mt * np.sinh(rapidity),
            "E": mt * np.cosh(rapidity),
        }
    )
    p = np.sqrt(np.maximum(mass**2 / 4 - MUON_MASS**2, 0.0))
    cos_t = _cos_theta(rng, n)
    sin_t = np.sqrt(1 - cos_t**2)
    dphi = rng.uniform(-np.pi, np.pi, n)
    e = np.sqrt(p**2 + MUON_MASS**2)
    px, py, pz = p * sin_t * np.cos(dphi), p * sin_t * np.sin(dphi), p * cos_t
    rest1: Any = vector.array({"px": px, "py": py, "pz": pz, "E": e})
    rest2: Any = vector.array({"px": -px, "py": -py, "pz": -pz, "E": e})
    mu1, mu2 = rest1.boost_p4(parent), rest2.boost_p4(parent)
    return mu1, mu2


def _smear(rng: np.random.Generator, pt: np.ndarray, cfg: Config) -> np.ndarray:
    sigma = cfg.resolution + cfg.resolution_slope * pt
    return pt * (1 + sigma * rng.standard_normal(pt.size))


def generate_events(n: int, cfg: Config, rng: np.random.Generator) -> ak.Array:
    """``n`` events as an awkward record array with a jagged ``Muon`` collection."""
    is_signal = rng.uniform(size=n) < cfg.signal_fraction
    mass = np.where(is_signal, _breit_wigner(rng, n), _exponential(rng, n, cfg.background_slope))
    mu1, mu2 = _decay(rng, mass)
    q1 = rng.choice(np.array([-1, 1], dtype=np.int32), n)
    same_sign = ~is_signal & (rng.uniform(size=n) < 0.2)
    q2 = np.where(same_sign, q1, -q1).astype(np.int32)

    # A soft extra muon (from heavy-flavour decays) in some events.
    extra = rng.uniform(size=n) < cfg.extra_muon_fraction
    x_pt = rng.exponential(6.0, n) + 3.0
    x_eta = rng.uniform(-2.5, 2.5, n)
    x_phi = rng.uniform(-np.pi, np.pi, n)
    x_q = rng.choice(np.array([-1, 1], dtype=np.int32), n)

    pt = np.stack([_smear(rng, mu1.pt, cfg), _smear(rng, mu2.pt, cfg), x_pt], axis=1)
    eta = np.stack([mu1.eta, mu2.eta, x_eta], axis=1)
    phi = np.stack([mu1.phi, mu2.phi, x_phi], axis=1)
    charge = np.stack([q1, q2, x_q], axis=1)
    present = np.stack([np.ones(n, bool), np.ones(n, bool), extra], axis=1)
    accepted = present & (pt > 3.0) & (np.abs(eta) < 2.5)

    order = np.argsort(np.where(accepted, -pt, np.inf), axis=1)  # by decreasing pT
    take = np.take_along_axis
    pt, eta, phi, charge = (take(a, order, axis=1) for a in (pt, eta, phi, charge))
    counts = accepted.sum(axis=1)
    keep = take(accepted, order, axis=1)

    def jag(a: np.ndarray, dtype: type) -> ak.Array:
        return ak.unflatten(a[keep].astype(dtype), counts)

    muons = ak.zip(
        {
            "pt": jag(pt, np.float32),
            "eta": jag(eta, np.float32),
            "phi": jag(phi, np.float32),
            "mass": jag(np.full_like(pt, MUON_MASS), np.float32),
            "charge": jag(charge, np.int32),
        }
    )
    return ak.Array({"Muon": muons})


def write_files(outdir: Path, cfg: Config = Config()) -> list[Path]:
    """Write ``cfg.n_files`` ROOT files into ``outdir`` (readable by every user, for the
    job owner on the pool). Returns their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    outdir.chmod(0o755)
    rng = np.random.default_rng(cfg.seed)
    paths = []
    for i in range(cfg.n_files):
        events = generate_events(cfg.events_per_file, cfg, rng)
        first = i * cfg.events_per_file
        path = outdir / f"dimuon_{i:03d}.root"
        tmp = path.with_suffix(".root.tmp")
        with uproot.recreate(tmp) as f:
            f.mktree(
                "Events",
                {
                    "run": np.full(cfg.events_per_file, 1, np.int32),
                    "event": np.arange(first, first + cfg.events_per_file, dtype=np.int64),
                    "Muon": events.Muon,
                },
                title="Z -> mu mu and continuum (generated)",
            )
        tmp.chmod(0o644)
        tmp.replace(path)
        paths.append(path)
    return paths


def ensure_dataset(outdir: Path, cfg: Config = Config()) -> list[Path]:
    """The dataset's files, generating them unless ``outdir`` already holds this very
    configuration (recorded in ``dataset.json``)."""
    stamp = outdir / "dataset.json"
    expected = [outdir / f"dimuon_{i:03d}.root" for i in range(cfg.n_files)]
    try:
        same = json.loads(stamp.read_text()) == asdict(cfg)
    except (OSError, ValueError):
        same = False
    if same and all(p.exists() for p in expected):
        return expected
    for old in outdir.glob("dimuon_*.root"):
        old.unlink()
    paths = write_files(outdir, cfg)
    stamp.write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    stamp.chmod(0o644)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--files", type=int, default=Config.n_files)
    parser.add_argument("--events", type=int, default=Config.events_per_file)
    parser.add_argument("--seed", type=int, default=Config.seed)
    args = parser.parse_args(argv)
    cfg = Config(n_files=args.files, events_per_file=args.events, seed=args.seed)
    for path in write_files(args.outdir, cfg):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
