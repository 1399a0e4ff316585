"""The preconditioner's tracking error, and the β₂ that tracks best at each step size.

A diagonal adaptive method divides by √v_t, its moving-average estimate of E[g²|x_t]. With
`tracking_error: true` every run records the relative error ‖v_t − E[g²|x_t]‖ / ‖E[g²|x_t]‖
averaged over its escape phase (workflows/core/rows.py: tracking_error_mean). Staib et al. chose
β₂ = 1 − η^(2/3) so that this error is small: the average's variance grows with 1 − β₂, its lag
behind a moving x with η/(1 − β₂); balancing the two gives 1 − β₂ ∝ η^(2/3). Here that claim is
measured, not assumed:

1. per (problem, optimizer variant, η): the mean over runs of tracking_error_mean against
   1 − β₂, and its minimiser, located by a parabola through the three points of the grid around
   the smallest mean, in log(1 − β₂) (never outside the grid: at an edge the minimiser is
   reported as that edge and flagged);
2. the fit log(1 − β₂*) = log c + p log η over the step sizes (least squares);
3. intervals for both by bootstrap: runs resampled within every cell (B times), steps 1–2 redone.

The rule predicts p = 2/3 and c = 1 (the paper does not fix the constant).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .palette import shade

COLUMN = "tracking_error_mean"
BOOTSTRAP = 200
RULE_EXPONENT, RULE_CONSTANT = 2 / 3, 1.0
# A minimiser is determined when its bootstrap interval spans at most this factor: where the error
# is nearly flat in β₂ (an escape phase of a few steps, shorter than any memory), the argmin is noise.
DETERMINED = 3.0


def has_tracking(rows: pd.DataFrame) -> bool:
    return COLUMN in rows and rows[COLUMN].notna().any() and "optimizer.beta2" in rows


def _groups(rows: pd.DataFrame) -> list[str]:
    """What a β₂ scan is done within: everything that describes the cell except β₂ itself (and
    the cell's own id), i.e. one scan per (problem, optimizer variant, lr, schedule, ...)."""
    keys = ["problem.name", "optimizer.name", "optimizer.lr"]
    for column in ("optimizer.beta1", "optimizer.lr_schedule", "problem.anisotropy", "problem.dim"):
        if column in rows and rows[column].astype(str).nunique() > 1:
            keys.append(column)
    return keys


def _minimiser(log_memory: np.ndarray, error: np.ndarray) -> tuple[float, bool]:
    """(log(1 − β₂) minimising the error, whether it lies at an edge of the grid)."""
    order = np.argsort(log_memory)
    x, y = log_memory[order], error[order]
    finite = np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 3:
        return np.nan, True
    best = int(np.argmin(y))
    if best in (0, len(x) - 1):
        return float(x[best]), True
    a, b, _ = np.polyfit(x[best - 1:best + 2], y[best - 1:best + 2], 2)
    vertex = -b / (2 * a) if a > 0 else x[best]
    return float(np.clip(vertex, x[best - 1], x[best + 1])), False


def best_beta2(rows: pd.DataFrame, bootstrap: int = BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """One row per scan: lr, the best 1 − β₂ with its 95% bootstrap interval, the smallest mean
    tracking error, the rule's 1 − β₂ = lr^(2/3) and the error there (interpolated), `at_edge`."""
    rng = np.random.default_rng(seed)
    data = rows[rows[COLUMN].notna()].copy()
    data["log_memory"] = np.log1p(-data["optimizer.beta2"].astype(float))
    keys = _groups(data)
    out = []
    for key, scan in data.groupby(keys, observed=True, sort=True, dropna=False):
        per_cell = [(lm, part[COLUMN].to_numpy(float)) for lm, part in scan.groupby("log_memory", sort=True)]
        x = np.array([lm for lm, _ in per_cell])
        means = np.array([v.mean() for _, v in per_cell])
        best, at_edge = _minimiser(x, means)
        replicates = []
        for _ in range(bootstrap):
            resampled = np.array([rng.choice(v, len(v)).mean() for _, v in per_cell])
            replicates.append(_minimiser(x, resampled)[0])
        lo, hi = np.nanpercentile(replicates, [2.5, 97.5]) if bootstrap else (np.nan, np.nan)
        lr = float(dict(zip(keys, key if isinstance(key, tuple) else (key,)))["optimizer.lr"])
        rule = np.log(lr) * RULE_EXPONENT
        out.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                    "best_1-beta2": np.exp(best), "best_lo": np.exp(lo), "best_hi": np.exp(hi),
                    "at_edge": at_edge, "determined": bool(np.exp(hi - lo) <= DETERMINED),
                    "min_error": float(np.nanmin(means)),
                    "rule_1-beta2": np.exp(rule), "error_at_rule": float(np.interp(rule, x, means)),
                    "cells": len(per_cell), "runs": int(sum(len(v) for _, v in per_cell)),
                    "replicates": np.exp(np.array(replicates))})
    return pd.DataFrame(out)


def beta2_scaling(best: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, optimizer): log(1 − β₂*) = log c + p log lr over its step sizes (scans whose
    minimiser is at an edge of the β₂ grid or not determined left out), with 95% bootstrap
    intervals from the replicated minimisers."""
    out = []
    for (problem, optimizer), part in best.groupby(["problem.name", "optimizer.name"], observed=True, sort=True):
        part = part[~part["at_edge"] & part["determined"]]
        if part["optimizer.lr"].nunique() < 3:
            continue
        log_lr = np.log(part["optimizer.lr"].to_numpy(float))
        fit = np.polyfit(log_lr, np.log(part["best_1-beta2"].to_numpy(float)), 1)
        reps = np.stack(part["replicates"].to_numpy())                  # [lrs, B]
        fits = np.array([np.polyfit(log_lr, np.log(reps[:, b]), 1) for b in range(reps.shape[1])
                         if np.isfinite(reps[:, b]).all()])
        p_lo, p_hi = np.percentile(fits[:, 0], [2.5, 97.5])
        c_lo, c_hi = np.exp(np.percentile(fits[:, 1], [2.5, 97.5]))
        out.append({"problem": problem, "optimizer": optimizer, "lrs": len(part),
                    "lr_range": f"{part['optimizer.lr'].min():g}-{part['optimizer.lr'].max():g}",
                    "exponent": fit[0], "exponent_lo": p_lo, "exponent_hi": p_hi,
                    "constant": float(np.exp(fit[1])), "constant_lo": c_lo, "constant_hi": c_hi,
                    "rule_exponent_inside": bool(p_lo <= RULE_EXPONENT <= p_hi),
                    "rule_constant_inside": bool(c_lo <= RULE_CONSTANT <= c_hi)})
    return pd.DataFrame(out)


def verdicts(scaling: pd.DataFrame) -> list[str]:
    sentences = []
    for row in scaling.itertuples(index=False):
        sentences.append(
            f"**{row.optimizer} on {row.problem}**, the 1 - beta2 that minimises the mean tracking error over "
            f"the escape phase, against lr over {row.lrs} step sizes ({row.lr_range}; those whose minimiser is "
            f"determined): 1 - beta2* = c * lr^p with p = "
            f"{row.exponent:.3g} [{row.exponent_lo:.3g}, {row.exponent_hi:.3g}] (the rule: 2/3: "
            f"**{'inside' if row.rule_exponent_inside else 'outside'}** the interval) and c = {row.constant:.3g} "
            f"[{row.constant_lo:.3g}, {row.constant_hi:.3g}] (the rule: 1: "
            f"**{'inside' if row.rule_constant_inside else 'outside'}**); 95% bootstrap intervals over runs.")
    return sentences


def tracking_figure(rows: pd.DataFrame, best: pd.DataFrame, scaling: pd.DataFrame, colors: dict, path, save):
    """Left, per optimizer: the mean tracking error against 1 − β₂, a line per step size (darker:
    larger), the best 1 − β₂ (star) and the rule's η^(2/3) (open circle) on each. Right: the best
    1 − β₂ against η with its 95% interval, the fitted power law (solid) and the rule (dashed)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    data = rows[rows[COLUMN].notna()].assign(memory=lambda f: 1 - f["optimizer.beta2"].astype(float))
    optimizers = sorted(data["optimizer.name"].astype(str).unique())
    fig = Figure(figsize=(11, 4.2 * len(optimizers)), layout="constrained")
    axes = fig.subplots(len(optimizers), 2, squeeze=False)
    for (left, right), name in zip(axes, optimizers):
        color = colors.get(name, "#555555")
        own = data[data["optimizer.name"].astype(str) == name]
        lrs = sorted(own["optimizer.lr"].unique())
        for i, lr in enumerate(lrs):
            curve = own[own["optimizer.lr"] == lr].groupby("memory")[COLUMN].mean()
            tint = shade(color, float(np.interp(i, [0, max(len(lrs) - 1, 1)], [1.6, 0.6])))
            left.plot(curve.index, curve.to_numpy(), marker="o", ms=3, color=tint, label=f"lr {lr:g}")
            mark = best[(best["optimizer.name"].astype(str) == name) & (best["optimizer.lr"] == lr)]
            if len(mark):
                m = mark.iloc[0]
                left.plot([m["best_1-beta2"]], [m["min_error"]], marker="*", ms=12, color=tint, mec="black")
                left.plot([m["rule_1-beta2"]], [m["error_at_rule"]], marker="o", ms=8, mfc="none", color="black")
        left.set(xscale="log", yscale="log", xlabel="1 - beta2", ylabel="mean tracking error (escape phase)",
                 title=f"{name}: error against 1 - beta2")
        handles, labels = left.get_legend_handles_labels()
        handles += [Line2D([], [], marker="*", ms=10, color="grey", mec="black", ls=""),
                    Line2D([], [], marker="o", ms=7, mfc="none", color="black", ls="")]
        labels += ["minimum", "the rule lr^(2/3)"]
        left.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        own_best = best[best["optimizer.name"].astype(str) == name].sort_values("optimizer.lr")
        lr = own_best["optimizer.lr"].to_numpy(float)
        right.errorbar(lr, own_best["best_1-beta2"], yerr=[own_best["best_1-beta2"] - own_best["best_lo"],
                                                           own_best["best_hi"] - own_best["best_1-beta2"]],
                       fmt="o", color=color, capsize=3, label="best 1 - beta2 [95%]")
        grid = np.geomspace(lr.min(), lr.max(), 50)
        right.plot(grid, grid ** RULE_EXPONENT, "--", color="grey", label="the rule: lr^(2/3)")
        # No power law where fewer than three step sizes had a determined minimiser (an empty table).
        fit = scaling[scaling["optimizer"] == name] if "optimizer" in scaling else scaling.iloc[:0]
        if len(fit):
            f = fit.iloc[0]
            right.plot(grid, f["constant"] * grid ** f["exponent"], "-", color=color,
                       label=f"fit: {f['constant']:.2g} lr^{f['exponent']:.2f}")
        right.set(xscale="log", yscale="log", xlabel="lr", ylabel="1 - beta2", title=f"{name}: the best 1 - beta2")
        right.legend(fontsize=7)
    fig.suptitle("The preconditioner's tracking error ||v - E[g^2|x]|| / ||E[g^2|x]|| over the escape phase")
    caption = ("Tracking error of the second-moment estimate, mean over runs, against 1 - beta2 per step size; its "
               "minimiser (parabola in log(1 - beta2) through the grid's three lowest points) with a 95% bootstrap "
               "interval over runs, the fitted power law, and the paper's rule 1 - beta2 = lr^(2/3).")
    return save(fig, path, caption)
