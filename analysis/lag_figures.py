"""The lag model's floor against R = r(1 − β₂)/η, with measured floors (the anisotropy study's figure).

Deep in the sign regime (little noise along the escape direction) RMSProp's and Adam's escape time
is (r/η) f, and in the continuum f = (2/R) ln I₀(R/2) depends on R alone (analysis.lag.floor). The
figure draws that curve, the discrete map's floors along the paper's rule β₂ = 1 − η^(2/3) (where
R = r η^(−1/3)) and at fixed β₂, and the measured floors η E[τ]/r with their 95% intervals.
Matplotlib Figure objects (Agg), never pyplot.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workflows.core.schedules import paper_beta2

from .lag import exponential_rule, floor, floor_ratio, lag_escape

VARIANTS = {"rmsprop": {}, "adam (beta1=0)": {"bias_correction": True},
            "adam (beta1=0.9)": {"bias_correction": True, "beta1": 0.9}}
# Three clearly different hues (two Adam variants must not read as one).
COLOURS = {"rmsprop": "#009E73", "adam (beta1=0)": "#0072B2", "adam (beta1=0.9)": "#CC79A7"}


def map_floor(lr: float, beta2: float, radius: float = 1.0, **rule) -> float:
    """η E[τ]/r of the lag map with σ₁ → 0 (along the escape direction)."""
    steps = int(np.ceil(3 * radius / lr)) + 10
    law = lag_escape(exponential_rule(np.full(steps, lr), beta2, **rule), 1.0, 1e-9, radius, quantiles=8)
    return law.mean * lr / radius


def floor_curves(lrs=np.geomspace(1e-4, 0.03, 22), beta2s=(0.99, 0.999)) -> pd.DataFrame:
    """The discrete map's floors: per variant, along the paper's rule and at each fixed β₂ (η up to
    0.03: beyond, escape takes a handful of steps and the floor measures the steps, not the lag)."""
    rows = []
    for label, rule in VARIANTS.items():
        for lr in lrs:
            for beta2, how in [(float(paper_beta2(lr)), "paper rule")] + [(b, f"beta2={b:g}") for b in beta2s]:
                ratio = float(floor_ratio(lr, beta2))
                if 0.2 <= ratio <= 200:
                    rows.append({"variant": label, "beta2": how, "lr": lr, "R": ratio,
                                 "floor": map_floor(lr, beta2, **rule)})
    return pd.DataFrame(rows)


def floor_figure(measured: pd.DataFrame, path: Path, curves: pd.DataFrame | None = None, dpi: int = 150) -> Path:
    """measured: one row per deep-sign cell with columns variant (a VARIANTS key), R, floor, lo, hi.
    Writes path (.png) and its .pdf."""
    curves = floor_curves() if curves is None else curves
    colours = COLOURS
    fig = Figure(figsize=(7.2, 4.4))
    ax = fig.add_subplot()
    grid = np.geomspace(0.2, 200, 400)
    ax.plot(grid, floor(grid), color="black", lw=1.6, label="continuum: (2/R) ln I0(R/2)")
    styles = {"paper rule": "-", "beta2=0.99": "--", "beta2=0.999": ":"}
    for (variant, how), part in curves.groupby(["variant", "beta2"], sort=False):
        ax.plot(part["R"], part["floor"], styles.get(how, "-."), color=colours[variant], lw=1.1, alpha=0.8,
                label=f"lag map, {variant}, {how}")
    for variant, part in measured.groupby("variant", sort=False):
        y = part["floor"].to_numpy(float)
        spread = np.vstack([y - part["lo"].to_numpy(float), part["hi"].to_numpy(float) - y])
        ax.errorbar(part["R"].to_numpy(float), y, yerr=spread,
                    fmt="o", ms=5, color=colours.get(variant, "grey"), mec="black", mew=0.6, capsize=2,
                    label=f"measured, {variant}")
    ax.axhline(1.0, color="grey", lw=0.8, ls=(0, (1, 3)))
    ax.text(0.22, 1.01, "r/η (no lag)", color="grey", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_xlim(0.2, 200)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("R = r (1 - beta2) / lr")
    ax.set_ylabel("floor f = lr E[escape step] / r")
    ax.set_title("RMSProp/Adam deep in the sign regime: escape time over r/lr against R", fontsize=10)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.subplots_adjust(left=0.09, right=0.62, bottom=0.12, top=0.92)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=dpi)
    fig.savefig(path.with_suffix(".pdf"))
    return path.with_suffix(".png")
