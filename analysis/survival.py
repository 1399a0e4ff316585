"""Per-cell Kaplan–Meier summaries of censored durations (escape step, and any other pair).

A run that did not escape is right-censored at its escape_step (the budget, or where it
diverged): it stays in the risk set until then and is never counted as an escape.

Per cell: the KM median with its 95% interval (the pointwise exponential-Greenwood band
inverted at 0.5, lifelines' `median_survival_times(kmf.confidence_interval_)`); where more than
half the runs are censored the median is undefined (inf) and the restricted mean
E[min(τ, budget)] = ∫₀^budget S(t) dt is reported instead, labelled as such; where every run
escaped, also the plain mean with its t interval (what the closed forms predict).

Why not one lifelines KaplanMeierFitter per cell: it costs ~6 ms of pandas overhead per fit,
so 4000 cells (10⁶ rows) would take most of the time budget. The same estimator, vectorised
over all cells at once, is below; tests/test_analysis_survival.py checks it against lifelines
cell by cell. lifelines still draws the KM curves (figures.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

Z95 = stats.norm.ppf(0.975)

# Censored (duration, event) pairs a results table may carry: name -> (duration column, event column).
# A new pair (e.g. time to a second-order stationary point) is one line here.
DURATIONS = {
    "escape": ("escape_step", "escaped"),
    "sosp": ("sosp_step", "sosp_reached"),
}
RESTRICTED = "restricted mean <= budget"


def duration_pairs(rows: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {name: pair for name, pair in DURATIONS.items() if set(pair) <= set(rows.columns)}


def kaplan_meier_table(cell, duration, event) -> pd.DataFrame:
    """The KM curve of every cell at every distinct time: columns cell, time, at_risk, events,
    survival, lower, upper (the 95% exponential-Greenwood band, as lifelines computes it)."""
    table = (pd.DataFrame({"cell": np.asarray(cell), "time": np.asarray(duration, dtype=float),
                           "events": np.asarray(event, dtype=float)})
             .groupby(["cell", "time"], sort=True, observed=True)["events"].agg(["sum", "size"])
             .rename(columns={"sum": "events", "size": "removed"}).reset_index())
    by_cell = table.groupby("cell", sort=False, observed=True)
    removed_before = by_cell["removed"].cumsum() - table["removed"]
    table["at_risk"] = by_cell["removed"].transform("sum") - removed_before
    survivors = table["at_risk"] - table["events"]
    with np.errstate(divide="ignore", invalid="ignore"):
        # S is zero from the first time every run at risk escapes; keep logs finite and count those.
        all_out = survivors == 0
        log_factor = np.log(survivors.where(~all_out, 1)) - np.log(table["at_risk"])
        table["survival"] = np.exp(log_factor.groupby(table["cell"], observed=True).cumsum())
        table.loc[all_out.groupby(table["cell"], observed=True).cumsum() > 0, "survival"] = 0.0
        greenwood = (table["events"] / (table["at_risk"] * survivors)).replace(np.inf, 0.0)
        spread = Z95 * np.sqrt(greenwood.groupby(table["cell"], observed=True).cumsum())
        v = np.log(table["survival"])
        table["lower"] = np.exp(-np.exp(np.log(-v) - spread / v)).fillna(1.0)
        table["upper"] = np.exp(-np.exp(np.log(-v) + spread / v)).fillna(1.0)
    return table


def _first_time_at_or_below(table: pd.DataFrame, column: str, level: float = 0.5) -> pd.Series:
    crossed = table[table[column] <= level]
    return crossed.groupby("cell", observed=True)["time"].min()


def _restricted_mean(table: pd.DataFrame, horizon: pd.Series) -> pd.Series:
    """∫₀^horizon S(t) dt for the right-continuous KM step function (S = 1 before the first time)."""
    t = table[table["time"] <= table["cell"].map(horizon)]
    previous_time = t.groupby("cell", observed=True)["time"].shift(fill_value=0.0)
    previous_survival = t.groupby("cell", observed=True)["survival"].shift(fill_value=1.0)
    area = ((t["time"] - previous_time) * previous_survival).groupby(t["cell"], observed=True).sum()
    last = t.groupby("cell", observed=True)[["time", "survival"]].last()
    return area.reindex(horizon.index, fill_value=0.0) + \
        ((horizon - last["time"]).clip(lower=0) * last["survival"]).reindex(horizon.index).fillna(horizon)


def summarize_cells(rows: pd.DataFrame, name: str = "escape") -> pd.DataFrame:
    """One row per cell_id: `<name>_` n_events, median (+ _lo, _hi), restricted mean to the
    budget, mean/sd (+ _lo, _hi; only where no run was censored), and the headline `<name>_time`
    (+ _lo, _hi) with `<name>_kind` saying which of mean / median / restricted mean it is."""
    duration, event = DURATIONS[name]
    cell = rows["cell_id"]
    table = kaplan_meier_table(cell, rows[duration], rows[event])
    groups = rows.groupby(cell, observed=True, sort=True)
    out = pd.DataFrame(index=groups.size().index)
    n = groups.size()
    out[f"{name}_n_events"] = groups[event].sum().astype(int)
    for suffix, column in (("median", "survival"), ("median_lo", "lower"), ("median_hi", "upper")):
        out[f"{name}_{suffix}"] = _first_time_at_or_below(table, column).reindex(out.index, fill_value=np.inf)
    horizon = groups["budget"].max().astype(float) if "budget" in rows else groups[duration].max().astype(float)
    out[f"{name}_restricted_mean"] = _restricted_mean(table, horizon)

    all_events = out[f"{name}_n_events"] == n
    mean, sd = groups[duration].mean(), groups[duration].std()
    half_width = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    out[f"{name}_mean"] = mean.where(all_events)
    out[f"{name}_sd"] = sd.where(all_events)
    out[f"{name}_mean_lo"] = (mean - half_width).where(all_events)
    out[f"{name}_mean_hi"] = (mean + half_width).where(all_events)

    # The headline for tables and figures: the KM median, or where it is undefined the
    # restricted mean (a lower bound on the mean), never a made-up escape time.
    median_defined = np.isfinite(out[f"{name}_median"])
    out[f"{name}_kind"] = np.where(median_defined, "median", RESTRICTED)
    for suffix in ("", "_lo", "_hi"):
        fallback = out[f"{name}_restricted_mean"] if suffix == "" else np.nan
        out[f"{name}_time{suffix}"] = out[f"{name}_median{suffix}"].where(median_defined, fallback)
    return out
