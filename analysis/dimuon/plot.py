"""The Z-peak plot: data points, the fitted signal + background, in CMS-like mplhep style."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hist
import matplotlib

matplotlib.use("Agg")  # files only; notebooks show the saved image or the returned figure

import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dimuon.fit import FitResult  # noqa: E402


def plot(h: hist.Hist, fit: FitResult, notes: Sequence[str] = ()) -> Figure:
    plt.style.use(mplhep.style.CMS)
    fig, ax = plt.subplots(figsize=(9, 7))
    mplhep.histplot(h, ax=ax, histtype="errorbar", color="black", label="Generated data")
    edges = h.axes[0].edges
    x = np.linspace(edges[0], edges[-1], 600)
    width = float(np.mean(np.diff(edges)))
    sig, bkg = fit.density(x)
    ax.plot(x, (sig + bkg) * width, color="tab:blue", lw=2, label="Fit: Voigt + exponential")
    ax.fill_between(x, 0, bkg * width, color="tab:orange", alpha=0.35, label="Background")
    ax.axvline(fit.mass, color="tab:red", ls="--", lw=1)
    ax.set_xlabel(r"$m_{\mu^+\mu^-}$ [GeV]")
    ax.set_ylabel(f"Events / {width:.2f} GeV")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(bottom=0)
    text = [
        rf"$m_Z$ = {fit.mass:.2f} $\pm$ {fit.mass_error:.2f} GeV",
        rf"$\sigma$ = {fit.sigma:.2f} GeV, $\Gamma_Z$ fixed",
        *notes,
    ]
    ax.text(0.03, 0.95, "\n".join(text), transform=ax.transAxes, va="top", fontsize=16)
    ax.legend(loc="upper right", fontsize=15)
    mplhep.label.exp_label(exp="Dask on HTCondor", llabel=" Simulation", rlabel="", ax=ax)
    fig.tight_layout()
    return fig


def save(h: hist.Hist, fit: FitResult, path: Path, notes: Sequence[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot(h, fit, notes)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
