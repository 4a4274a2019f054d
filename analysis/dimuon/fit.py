"""Fit the Z peak: a Voigt profile (Breit-Wigner of the Z width convolved with the
Gaussian detector resolution) on an exponential background, by an extended binned
maximum-likelihood fit with iminuit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hist
import numpy as np
from iminuit import Minuit
from iminuit.cost import ExtendedBinnedNLL
from scipy.special import voigt_profile  # type: ignore[import-untyped]

Z_WIDTH = 2.4952  # GeV, fixed: the resolution, not the width, is what the detector changes


def signal_density(x: np.ndarray, mass: float, sigma: float) -> np.ndarray:
    """Breit-Wigner (FWHM = Z width) convolved with a Gaussian of width ``sigma``."""
    out: np.ndarray = np.asarray(voigt_profile(x - mass, sigma, Z_WIDTH / 2), dtype=float)
    return out


def background_density(x: np.ndarray, slope: float, lo: float, hi: float) -> np.ndarray:
    """exp(-slope * x), normalised on [lo, hi]."""
    norm = (np.exp(-slope * lo) - np.exp(-slope * hi)) / slope
    out: np.ndarray = np.exp(-slope * x) / norm
    return out


@dataclass(frozen=True)
class FitResult:
    mass: float
    mass_error: float
    sigma: float
    sigma_error: float
    n_signal: float
    n_background: float
    slope: float
    chi2_ndf: float
    valid: bool
    lo: float
    hi: float

    def density(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fitted (signal, background) densities in events per GeV."""
        sig = self.n_signal * signal_density(x, self.mass, self.sigma)
        bkg = self.n_background * background_density(x, self.slope, self.lo, self.hi)
        return sig, bkg

    def summary(self) -> str:
        return (
            f"Z peak: m = {self.mass:.3f} ± {self.mass_error:.3f} GeV, "
            f"resolution sigma = {self.sigma:.2f} ± {self.sigma_error:.2f} GeV, "
            f"{self.n_signal:.0f} signal and {self.n_background:.0f} background events, "
            f"chi2/ndf = {self.chi2_ndf:.2f}"
        )


def fit_peak(h: hist.Hist[Any]) -> FitResult:
    counts = h.values()
    edges = h.axes[0].edges
    lo, hi = float(edges[0]), float(edges[-1])

    def model(
        x: np.ndarray, ns: float, mass: float, sigma: float, nb: float, slope: float
    ) -> np.ndarray:
        """Expected events per GeV (a scaled density; the cost integrates it per bin)."""
        return ns * signal_density(x, mass, sigma) + nb * background_density(x, slope, lo, hi)

    cost = ExtendedBinnedNLL(counts, edges, model, use_pdf="numerical")
    total = float(counts.sum())
    centres = h.axes[0].centers
    m = Minuit(
        cost,
        ns=0.7 * total,
        mass=float(centres[np.argmax(counts)]),
        sigma=1.5,
        nb=0.3 * total,
        slope=0.03,
    )
    m.limits["ns"] = (0, None)
    m.limits["nb"] = (0, None)
    m.limits["mass"] = (lo, hi)
    m.limits["sigma"] = (0.05, 10)
    m.limits["slope"] = (1e-4, 1.0)
    m.migrad()
    m.hesse()
    # Pearson chi2 for the record (bins with entries)
    expected = np.diff(edges) * model(centres, *m.values)
    used = counts > 0
    chi2 = float(np.sum((counts[used] - expected[used]) ** 2 / counts[used]))
    ndf = int(used.sum()) - m.nfit
    return FitResult(
        mass=float(m.values["mass"]),
        mass_error=float(m.errors["mass"]),
        sigma=float(m.values["sigma"]),
        sigma_error=float(m.errors["sigma"]),
        n_signal=float(m.values["ns"]),
        n_background=float(m.values["nb"]),
        slope=float(m.values["slope"]),
        chi2_ndf=chi2 / max(ndf, 1),
        valid=bool(m.valid),
        lo=lo,
        hi=hi,
    )
