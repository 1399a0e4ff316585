"""Figures, each drawn only when the sweep has the data for it; each returns (file, caption) or None.

Figures are matplotlib Figure objects saved as PNG (the Agg renderer), never pyplot: nothing
global (the backend, open figures) changes for the caller. Axes are set to log scale before
seaborn draws, so where several cells share a point seaborn averages them in log space (a
geometric mean, with a geometric confidence band). Censored cells stay visible: where more
than half the runs did not escape, the point is the restricted mean (a lower bound) drawn as a
hollow triangle; KM curves mark censoring with ticks.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from lifelines import KaplanMeierFitter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from .scaling import covariate_name, descriptors
from .survival import DURATIONS, RESTRICTED
from .theory import follows_paper_rule, minimum_loss

MAX_FACETS = 6
MAX_CURVES = 8
MAX_LINES = 6
MAX_COLUMNS = 3
LABEL_COLUMNS = ("optimizer.lr", "problem.anisotropy", "sigma_escape", "optimizer.beta2", "problem.dim",
                 "curvature", "escape_radius")


def _varying(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].nunique() > 1


def _palette(cells):
    names = sorted(cells["optimizer"].unique())
    return dict(zip(names, sns.color_palette("colorblind", len(names))))


def _figure(rows, columns, width, height, **kwargs):
    fig = Figure(figsize=(width * columns, height * rows))
    return fig, fig.subplots(rows, columns, squeeze=False, **kwargs)


def _save(fig, path: Path, caption: str):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path, caption


def _facets(cells, column):
    """(value, part) per facet: one per value of `column` where it varies; past MAX_FACETS values,
    MAX_FACETS of them evenly spread from the smallest to the largest."""
    if not (column and _varying(cells, column)):
        return [(None, cells)]
    facets = list(cells.groupby(column, sort=True))
    keep = np.unique(np.linspace(0, len(facets) - 1, min(MAX_FACETS, len(facets))).round().astype(int))
    return [facets[i] for i in keep]


def _lines(part: pd.DataFrame, x: str, facet: str | None) -> pd.Series:
    """A line label per cell: its optimizer and the other parameters that vary within that optimizer's
    cells here and are not a function of x (sigma_escape when x is anisotropy)."""
    labels = pd.Series("", index=part.index)
    for optimizer, own in part.groupby("optimizer"):
        others = [c for c in descriptors(own) if c not in (x, facet) and _varying(own, c)
                  and own.groupby(x)[c].nunique().max() > 1]
        labels[own.index] = optimizer + own[others].astype(str).agg(", ".join, axis=1).radd(": ") \
            if others else optimizer
    return labels


def escape_time_plot(cells, x, path, title, facet=None, mark_paper_rule=False):
    """Measured escape time (KM median, interval bars; hollow triangle: restricted mean of a cell
    censored past half) against x, one line per optimizer and combination of the other parameters
    (a geometric mean with a 95% band where there would be more than MAX_LINES); dashed: the
    theory's median. One panel per problem and value of `facet`, MAX_COLUMNS to a row."""
    data = cells[np.isfinite(cells[x]) & np.isfinite(cells["escape_time"])]
    problems = [p for p, part in data.groupby("problem") if part.groupby("optimizer")[x].nunique().gt(1).any()]
    if not problems:
        return None
    palette = _palette(data)
    panels = [(problem, value, part) for problem in problems
              for value, part in _facets(data[data["problem"] == problem], facet)]
    columns = min(MAX_COLUMNS, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = _figure(rows, columns, 4.6, 4.0)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    averaged = False
    for i, (ax, (problem, value, part)) in enumerate(zip(axes.flat, panels)):
        part = part.assign(line=_lines(part, x, facet))
        average = part.groupby("optimizer")["line"].nunique().max() > MAX_LINES
        averaged |= average
        ax.set_xscale("log")        # before drawing: seaborn then averages in log space
        ax.set_yscale("log")
        style = dict(errorbar=("ci", 95), n_boot=200, seed=0) if average else dict(units="line", estimator=None)
        sns.lineplot(data=part, x=x, y="escape_time", hue="optimizer", palette=palette, marker="o", ax=ax,
                     legend=i == 0, **style)
        _overlay(ax, part, x, palette, "optimizer" if average else "line", mark_paper_rule)
        if mark_paper_rule and value is not None:
            ax.axvline(value ** (2 / 3), color="grey", linestyle=":")
        ax.set_xlabel(covariate_name(x))
        ax.set_ylabel("escape step (median)")
        label = f", {covariate_name(facet)} = {value:g}" if value is not None else ""
        ax.set_title(problem + label, fontsize=10)
        if i == 0:
            _legend(ax, mark_paper_rule)
    fig.suptitle(title)
    shown = {value for _, value, _ in panels}
    total = data[facet].nunique() if facet and facet in data else 1
    caption = (f"{title}: KM median escape step per cell (bars: 95% interval), one line per optimizer and "
               "setting of the other varied parameters"
               + (" (averaged geometrically, band: 95% interval, where there were more than "
                  f"{MAX_LINES})" if averaged else "")
               + "; dashed: the closed form's median; hollow triangles: restricted mean of cells censored past "
                 "half (a lower bound)"
               + ("; stars and dotted line: beta2 = 1 - lr^(2/3)" if mark_paper_rule else "")
               + (f"; panels for {len(shown)} of the {total} values of {covariate_name(facet)}"
                  if len(shown) < total else "") + ".")
    return _save(fig, path, caption)


def _overlay(ax, part, x, palette, line, mark_paper_rule):
    """Per-cell KM intervals, censored cells, the theory and the paper's beta2 rule over a panel."""
    for (optimizer, _), own in part.groupby(["optimizer", line]):
        color = palette[optimizer]
        known = own[own["escape_kind"] != RESTRICTED]
        if line != "optimizer":          # averaged lines show their band instead of every cell's interval
            ax.errorbar(known[x], known["escape_time"], fmt="none", ecolor=color, alpha=0.5,
                        yerr=[(known["escape_time"] - known["escape_time_lo"]).to_numpy(),
                              (known["escape_time_hi"] - known["escape_time"]).replace(np.inf, 0).to_numpy()])
        censored = own[own["escape_kind"] == RESTRICTED]
        ax.scatter(censored[x], censored["escape_time"], marker="^", s=60, facecolors="none", edgecolors=color)
        theory = own[np.isfinite(own["predicted_median"])]
        if len(theory):
            theory = theory.groupby(x)["predicted_median"].apply(lambda v: np.exp(np.log(v).mean()))
            ax.plot(theory.index, theory.to_numpy(), linestyle="--", color=color, alpha=0.8)
        if mark_paper_rule:
            rule = own[follows_paper_rule(own["optimizer.lr"], own["optimizer.beta2"])]
            ax.scatter(rule[x], rule["escape_time"], marker="*", s=160, color=color, edgecolors="k", zorder=5)


def _legend(ax, mark_paper_rule):
    handles, labels = ax.get_legend_handles_labels()
    extra = [(Line2D([], [], color="k", linestyle="--"), "theory (median)"),
             (Line2D([], [], marker="^", color="k", markerfacecolor="none", linestyle=""),
              "censored > half (lower bound)")]
    if mark_paper_rule:
        star = Line2D([], [], marker="*", color="k", markersize=10, linestyle="")
        extra.append((star, "beta2 = 1 - lr^(2/3)"))
    ax.legend(handles + [h for h, _ in extra], labels + [t for _, t in extra], fontsize=7)


def speedup_heatmap(speedups: pd.DataFrame, path: Path):
    """τ_SGD/τ_adaptive over anisotropy × lr, one panel per (problem, adaptive optimizer)."""
    if speedups.empty:
        return None
    panels = [(key, part) for key, part in speedups.groupby(["problem", "optimizer"])
              if part["anisotropy"].nunique() > 1 and part["lr"].nunique() > 1]
    if not panels:
        return None
    fig, axes = _figure(1, len(panels), 5.2, 4.2)
    for ax, ((problem, optimizer), part) in zip(axes[0], panels):
        grid = part.pivot_table(index="anisotropy", columns="lr", values="speedup", aggfunc="first")
        bound = part.pivot_table(index="anisotropy", columns="lr", values="bound", aggfunc="first")
        text = bound.replace({"=": ""}).fillna("") + grid.map(lambda v: f"{v:.3g}" if np.isfinite(v) else "")
        with warnings.catch_warnings():      # seaborn 0.13 calls matplotlib's deprecated cmap.set_bad
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(np.log10(grid), annot=text, fmt="", cmap="vlag", center=0, ax=ax,
                        cbar_kws={"label": "log10 speed-up"})
        ax.set_title(f"{problem}: sgd / {optimizer}", fontsize=10)
        ax.set_xticklabels([f"{v:g}" for v in grid.columns], rotation=45)
        ax.set_yticklabels([f"{v:g}" for v in grid.index], rotation=0)
    caption = ("Speed-up tau_SGD / tau_adaptive (median escape step) over anisotropy and lr; >= / <=: one side "
               "was censored past half, so the value is a bound; '?': both censored.")
    return _save(fig, path, caption)


def _label_columns(cells: pd.DataFrame) -> list[str]:
    """Up to 4 varying parameters that tell these cells apart, skipping any that is a function of
    those already chosen (sigma_escape next to anisotropy)."""
    chosen = []
    for column in LABEL_COLUMNS:
        if column in cells and cells[column].notna().any() and _varying(cells, column) and len(chosen) < 4 and \
                (not chosen or cells.groupby(chosen, dropna=False)[column].nunique().max() > 1):
            chosen.append(column)
    return chosen


def _curve_label(cell, columns, with_problem):
    parts = [f"{c.split('.', 1)[-1]}={cell[c]:g}" for c in columns if pd.notna(cell[c])]
    return ", ".join(([cell["problem"]] if with_problem else []) + parts) or str(cell["cell_id"])[:8]


def kaplan_meier_curves(rows, cells, path, name="escape"):
    """KM survival curves (fraction of runs not yet escaped) for up to MAX_CURVES cells per optimizer,
    spread over the range of median escape times; ticks mark censored runs."""
    duration, event = DURATIONS[name]
    optimizers = sorted(cells["optimizer"].unique())[:MAX_FACETS]
    columns = min(MAX_COLUMNS, len(optimizers))
    fig, axes = _figure(-(-len(optimizers) // columns), columns, 4.8, 4.2, sharey=True)
    for ax in axes.flat[len(optimizers):]:
        ax.set_visible(False)
    with_problem = cells["problem"].nunique() > 1
    for ax, optimizer in zip(axes.flat, optimizers):
        own = cells[cells["optimizer"] == optimizer].sort_values(f"{name}_time")
        chosen = own.iloc[np.unique(np.linspace(0, len(own) - 1, min(MAX_CURVES, len(own))).round().astype(int))]
        labels = _label_columns(own)
        ax.set_xscale("log")
        selected = rows[rows["cell_id"].isin(chosen["cell_id"])]
        for _, cell in chosen.iterrows():
            runs = selected[selected["cell_id"] == cell["cell_id"]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                km = KaplanMeierFitter().fit(runs[duration], runs[event],
                                             label=_curve_label(cell, labels, with_problem))
                km.plot_survival_function(ax=ax, show_censors=True, ci_alpha=0.15,
                                          censor_styles={"marker": "|", "ms": 8})
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(optimizer, fontsize=10)
        ax.set_xlabel(f"{duration} (log)")
        ax.set_ylabel(f"fraction of runs without {event}")
        ax.legend(fontsize=6)
    caption = (f"Kaplan-Meier curves of {duration}: the fraction of runs not yet {event}, up to {MAX_CURVES} "
               "cells per optimizer spread over their range; shaded: 95% band; ticks: censored runs.")
    return _save(fig, path, caption)


def loss_traces(traces: pd.DataFrame, cells: pd.DataFrame, path: Path):
    """The paper's Figure 1: loss against iteration, median over runs (band: 10-90%), one panel per
    (problem, optimizer), one line per lr; dotted: the minimum's loss where known."""
    if traces is None or traces.empty:
        return None
    quantiles = (traces.groupby(["cell_id", "step"], observed=True)["loss"].quantile([0.1, 0.5, 0.9])
                 .unstack().reset_index().rename(columns={0.1: "q10", 0.5: "q50", 0.9: "q90"}))
    quantiles["cell_id"] = quantiles["cell_id"].astype(str)
    data = quantiles.merge(cells[["cell_id", "problem", "optimizer", "optimizer.lr"]], on="cell_id")
    if data.empty:
        return None
    panels = list(data.groupby(["problem", "optimizer"], sort=True))[:MAX_FACETS]
    fig, axes = _figure(1, len(panels), 4.8, 4.0, sharey=True)
    for ax, ((problem, optimizer), part) in zip(axes[0], panels):
        ax.set_xscale("log")
        lrs = sorted(part["optimizer.lr"].unique())
        colors = dict(zip(lrs, sns.color_palette("viridis", len(lrs))))
        for (lr, cell), line in part.groupby(["optimizer.lr", "cell_id"], sort=True):   # legend in lr order
            ax.plot(line["step"], line["q50"], color=colors[lr], label=f"lr={lr:g}")
            ax.fill_between(line["step"], line["q10"], line["q90"], color=colors[lr], alpha=0.15)
        floor = minimum_loss(_problem_params(cells[cells["problem"] == problem].iloc[0]))
        if np.isfinite(floor):
            ax.axhline(floor, color="k", linestyle=":", label="minimum loss")
        ax.set_title(f"{problem}: {optimizer}", fontsize=10)
        ax.set_xlabel("iteration (log)")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    caption = ("Loss against iteration (the paper's Figure 1): median over runs, band 10-90%, one line per step "
               "size; dotted: the local minimum's loss.")
    return _save(fig, path, caption)


def _problem_params(cell: pd.Series) -> dict:
    params = {k.split(".", 1)[1]: v for k, v in cell.items() if k.startswith("problem.")}
    return {**params, "curvature": cell.get("curvature")}


def draw_figures(rows, cells, traces, speedups, out_dir: Path):
    """Every figure that applies: ([(path, caption)], [(file, why it was not drawn)]). A figure
    that fails is listed as skipped with its error, never a crash of the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = cells.assign(**{"1-beta2": 1 - cells["optimizer.beta2"]} if "optimizer.beta2" in cells else {})
    noise_x = "problem.anisotropy" if _varying(cells, "problem.anisotropy") else "sigma_escape"
    adaptive = cells[cells["optimizer.name"].isin(["rmsprop", "adam"])] if "1-beta2" in cells else cells.iloc[:0]
    jobs = [
        ("escape_vs_noise.png", lambda p: escape_time_plot(
            cells, noise_x, p, f"Escape time vs {covariate_name(noise_x)}", facet="optimizer.lr")),
        ("escape_vs_lr.png", lambda p: escape_time_plot(
            cells, "optimizer.lr", p, "Escape time vs lr", facet=noise_x)),
        ("escape_vs_beta2.png", lambda p: escape_time_plot(
            adaptive, "1-beta2", p, "Escape time vs 1 - beta2 (rmsprop/adam)", facet="optimizer.lr",
            mark_paper_rule=True) if len(adaptive) else None),
        ("speedup_heatmap.png", lambda p: speedup_heatmap(speedups, p)),
        *[(f"kaplan_meier_{name}.png", lambda p, name=name: kaplan_meier_curves(rows, cells, p, name))
          for name, pair in DURATIONS.items() if set(pair) <= set(rows.columns)],
        ("figure1_loss_traces.png", lambda p: loss_traces(traces, cells, p)),
    ]
    drawn, skipped = [], []
    for filename, draw in jobs:
        try:
            result = draw(out_dir / filename)
        except Exception as error:                      # a figure never stops the report
            skipped.append((filename, f"failed: {type(error).__name__}: {error}"))
            continue
        if result is None:
            skipped.append((filename, "not applicable: the sweep does not vary what it plots"))
        else:
            drawn.append(result)
    return drawn, skipped
