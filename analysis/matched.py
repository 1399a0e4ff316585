"""Comparisons at matched accuracy: each optimizer at its own best step size.

Staib et al.'s headline is that adaptive methods reach second-order stationary points faster.
"Faster" at one nominal step size mixes two things: how the step is rescaled (an adaptive step
is about lr per coordinate, SGD's lr·|g|) and how the noise is whitened. The fair question is
how long each method needs to reach a given accuracy when each runs at the step size that suits
it. For every censored duration whose target a sweep varies (gap: f − f_min ≤ gap_epsilon;
sosp: an (ε, √(ρε))-SOSP, ε = sosp_epsilon), and every accuracy ε:

    per (problem, optimizer variant, ε): the step size with the smallest Kaplan–Meier median
    time (ties: the smaller upper bound), that median and its 95% interval.

Choosing the best of several step sizes on the same runs favours the winner a little (the
minimum of noisy medians is biased low); with the intervals of a few hundred runs that bias is
a small fraction of the interval, and the table says how many step sizes each choice was among.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from workflows.core.survival import DURATIONS

TARGETS = {"gap": "gap_epsilon", "sosp": "sosp_epsilon"}


def matched_durations(cells: pd.DataFrame) -> list[str]:
    """The durations whose accuracy the sweep varies, with step sizes to choose from."""
    return [name for name, target in TARGETS.items()
            if f"{name}_median" in cells and target in cells and cells[target].nunique() > 1
            and cells["optimizer.lr"].nunique() > 1]


def matched_accuracy(cells: pd.DataFrame, name: str) -> pd.DataFrame:
    """One row per (problem, optimizer variant, ε): the best step size and its time."""
    target = TARGETS[name]
    median, lo, hi = f"{name}_median", f"{name}_median_lo", f"{name}_median_hi"
    events = f"{name}_n_events"
    rows = []
    keys = ["problem", "optimizer", target]
    for key, part in cells.groupby(keys, observed=True, sort=True):
        ranked = part.assign(_m=part[median].replace(np.nan, np.inf),
                             _h=part[hi].replace(np.nan, np.inf)).sort_values(["_m", "_h", "optimizer.lr"])
        best = ranked.iloc[0]
        tried = part["optimizer.lr"]
        rows.append({**dict(zip(keys, key)), "duration": DURATIONS[name][0], "best_lr": best["optimizer.lr"],
                     "lrs_tried": tried.nunique(), "lr_range": f"{tried.min():g}-{tried.max():g}",
                     # the best at an end of the step sizes tried: a better one may lie beyond it
                     "best_at_edge": best["optimizer.lr"] in (tried.min(), tried.max()), "median": best[median], "median_lo": best[lo],
                     "median_hi": best[hi], "reached": best[events] / best["runs"],
                     "censored": not np.isfinite(best[median])})
    return pd.DataFrame(rows).rename(columns={target: "epsilon"})


def verdicts(table: pd.DataFrame, name: str) -> list[str]:
    """Per problem and ε: each optimizer's time at its best step size, and which is fastest when
    the intervals do not overlap."""
    sentences = []
    for (problem, epsilon), part in table.groupby(["problem", "epsilon"], sort=True):
        shown = "; ".join(
            f"{r.optimizer} {('> ' + format(r.median_hi, '.4g')) if r.censored else format(r.median, '.4g')}"
            + ("" if r.censored else f" [{r.median_lo:.4g}, {r.median_hi:.4g}]") + f" (lr {r.best_lr:g}"
            + (", at the end of those tried" if r.best_at_edge else "") + ")"
            for r in part.sort_values("median").itertuples(index=False))
        finite = part[~part["censored"]].sort_values("median")
        verdict = ""
        if len(finite) >= 2:
            first, second = finite.iloc[0], finite.iloc[1]
            separated = first["median_hi"] < second["median_lo"]
            verdict = (f": **{first['optimizer']} is fastest**, its interval below {second['optimizer']}'s"
                       if separated else f": {first['optimizer']} and {second['optimizer']} cannot be told apart")
        what = "f - f_min <= eps" if name == "gap" else "an (eps, sqrt(rho eps))-SOSP"
        sentences.append(f"{problem}, time to {what} at eps = {epsilon:g}, each optimizer at its best step size "
                         f"(KM median steps [95% interval]): {shown}{verdict}.")
    return sentences


def matched_figure(table: pd.DataFrame, name: str, colors: dict, path, save):
    """Time to the accuracy ε at each optimizer's best step size against ε, one panel per problem."""
    from matplotlib.figure import Figure

    problems = sorted(table["problem"].unique())
    fig = Figure(figsize=(5.2 * len(problems), 4.3), layout="constrained")
    axes = fig.subplots(1, len(problems), squeeze=False)[0]
    for ax, problem in zip(axes, problems):
        part = table[table["problem"] == problem]
        for optimizer, own in part.groupby("optimizer", sort=True):
            own = own.sort_values("epsilon")
            color = colors.get(optimizer, "#555555")
            done = own[~own["censored"]]
            ax.errorbar(done["epsilon"], done["median"], yerr=[done["median"] - done["median_lo"],
                                                               (done["median_hi"] - done["median"]).clip(lower=0)],
                        fmt="-o", color=color, capsize=3, label=optimizer)
            for r in done.itertuples(index=False):
                ax.annotate(f"lr {r.best_lr:g}", (r.epsilon, r.median), fontsize=6, color=color,
                            xytext=(3, 3), textcoords="offset points")
        ax.set(xscale="log", yscale="log", xlabel="epsilon", title=problem,
               ylabel="steps (KM median [95%], each at its best lr)")
        ax.invert_xaxis()                       # smaller epsilon: more accuracy, to the right
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    what = "f - f_min <= epsilon" if name == "gap" else "an (epsilon, sqrt(rho epsilon))-SOSP"
    fig.suptitle(f"Time to {what}, each optimizer at its own best step size")
    caption = (f"Time to {what} against epsilon (more accuracy to the right), each optimizer at the step size with "
               "the smallest KM median for that epsilon (labelled), with the median's 95% interval.")
    return save(fig, path, caption)
