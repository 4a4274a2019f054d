"""The Z-peak plot: data points, the fitted signal + background, in CMS-like mplhep style.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state, no backend switch), so it
works the same in scripts, on headless machines and in notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hist
import matplotlib.style
import mplhep
import numpy as np
from matplotlib.figure import Figure

from dimuon.fit import FitResult


def plot(h: hist.Hist[Any], fit: FitResult, notes: Sequence[str] = ()) -> Figure:
    with matplotlib.style.context(mplhep.style.CMS):
        fig = Figure(figsize=(9, 7))
        ax = fig.subplots()
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
        ax.set_title(r"Z$\to\mu\mu$ (simulation), Dask on HTCondor", loc="left", fontsize=20)
        fig.tight_layout()
    return fig


def save(h: hist.Hist[Any], fit: FitResult, path: Path, notes: Sequence[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot(h, fit, notes)
    with matplotlib.style.context(mplhep.style.CMS):  # fonts are resolved when drawing
        fig.savefig(path, dpi=110)
    return path
