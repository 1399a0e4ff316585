"""Censored durations and their Kaplan–Meier summaries: the per-cell summary every stage uses.

A run that did not reach an event (escape, an SOSP, f − f_min ≤ ε) within the budget is
right-censored at its step (the budget, or where it diverged): it stays in the risk set until then
and is never counted as an event. `kaplan_meier` gives one cell's median with its 95% interval
(the pointwise log-log band inverted at 0.5, as lifelines' `median_survival_times(
kmf.confidence_interval_)` does) and restricted mean E[min(τ, budget)]; `cell_summary` is a
cell's runs summarised, computed where the cell is: the experiment trackers record it, and the
analysis tables read the same numbers (analysis/survival.py: its table over many cells).

The estimator is scipy's (`scipy.stats.ecdf` on `CensoredData`, with its log-log band), its
arithmetic written out here in numpy: bit for bit scipy's numbers (tests/test_survival_km.py) at
about 0.05 ms a cell, where scipy's call cost 0.3 ms and a lifelines fitter 6 ms.
tests/test_analysis_survival.py checks it against lifelines cell by cell.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .rows import COLUMNS

# Censored (duration, event) pairs a results table may carry: name -> (duration column, event column).
# A new pair (e.g. time to a second-order stationary point) is one line here.
DURATIONS = {
    "escape": ("escape_step", "escaped"),
    "sosp": ("sosp_step", "sosp_reached"),
    "gap": ("gap_step", "gap_reached"),
}
# How a report names each duration.
DURATION_TITLES = {"escape": "Escape time", "sosp": "Time to a second-order stationary point",
                   "gap": "Time to f - f_min <= gap_epsilon"}
RESTRICTED = "restricted mean <= budget"


FLOAT_COLUMNS = tuple(column for column in COLUMNS if column.dtype == "float64")


def _floats(rows, name: str, n: int | None = None) -> np.ndarray:
    """A column as floats, NaN where missing (pandas' NA, None); booleans as 0 and 1. A single
    value (what every run of a cell shares, as the block writer keeps it) is repeated `n` times."""
    values = rows[name]
    if isinstance(values, pd.Series):
        return values.to_numpy(float, na_value=np.nan)
    if n is not None and not isinstance(values, (np.ndarray, list, tuple)):
        return np.full(n, np.nan if values is None or values is pd.NA else float(values))
    values = np.asarray(values)
    if values.dtype == object:
        return np.array([np.nan if v is None or v is pd.NA else float(v) for v in values], dtype=float)
    return values.astype(float)


def duration_pairs(rows: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {name: pair for name, pair in DURATIONS.items() if set(pair) <= set(rows.columns)}


def _first_at_or_below(times: np.ndarray, survival: np.ndarray, level: float = 0.5) -> float:
    below = np.flatnonzero(survival <= level)
    return float(times[below[0]]) if len(below) else np.inf


# The two-sided 95% normal quantile, scipy.special.ndtri(0.975) to the last bit (tests/test_survival_km.py).
Z_95 = 1.959963984540054


def kaplan_meier(duration: np.ndarray, event: np.ndarray, horizon: float) -> tuple[float, float, float, float]:
    """(median, median_lo, median_hi, restricted mean to `horizon`) of one cell.

    duration: (runs,) steps, event: (runs,) whether the run had the event (else right-censored
    there); horizon: the budget. The median is the first time S(t) <= 0.5 (inf where S stays
    above it), its 95% interval the pointwise log-log ("exponential Greenwood") band inverted at
    0.5, the restricted mean the area under S up to `horizon`. The arithmetic is scipy.stats.ecdf's
    on CensoredData and its `confidence_interval(0.95, method="log-log")`, step for step, so the
    numbers are scipy's to the last bit (tests/test_survival_km.py checks that on censored, tied
    and uncensored cells): a cell has a few seeds, where scipy's objects (and its 0.9 s import)
    cost more than the estimate, and every cell of a sweep is summarised on its worker."""
    duration, event = np.asarray(duration, dtype=float), np.asarray(event, dtype=bool)
    if not event.any():                         # no escape at all: S = 1 up to the last time seen
        return np.inf, np.inf, np.inf, float(min(horizon, duration.max()) + max(0.0, horizon - duration.max()))
    times, survival, at_risk, events = _product_limit(duration[event], duration[~event])
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(1 / np.log(survival) ** 2 * np.cumsum(events / (at_risk * (at_risk - events))))
        points = np.log(-np.log(survival))
        z_se = Z_95 * se
        low, high = (np.clip(np.exp(-np.exp(points + z_se)), 0, 1), np.clip(np.exp(-np.exp(points - z_se)), 0, 1))
    # The log-log band is undefined where S is 0 or 1; as lifelines does, it collapses to 0
    # where S = 0 and to 1 where S = 1.
    low, high = (np.where(survival == 0, 0.0, np.nan_to_num(b, nan=1.0)) for b in (low, high))
    # ∫₀^horizon S(t) dt of the right-continuous step function, S = 1 before the first time.
    edges = np.clip(np.concatenate([[0.0], times, [horizon]]), 0.0, horizon)
    heights = np.concatenate([[1.0], survival])
    restricted = float(np.sum(np.diff(edges) * heights))
    return (_first_at_or_below(times, survival), _first_at_or_below(times, low),
            _first_at_or_below(times, high), restricted)


def _product_limit(died: np.ndarray, lost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(unique times, S at each, runs at risk, events there) of the Kaplan–Meier estimate, as
    scipy.stats.ecdf computes them: without censoring the empirical survival 1 - F (its
    `_ecdf_uncensored`), otherwise the product of (n - d) / n (its `_ecdf_right_censored`)."""
    if not len(lost):
        sample = np.sort(died)
        times, counts = np.unique(sample, return_counts=True)
        cumulative = np.cumsum(counts)
        n = sample.size
        return times, 1 - cumulative / n, np.concatenate(([n], n - cumulative[:-1])), counts
    times = np.concatenate((died, lost))
    dead = np.concatenate((np.ones(died.size, dtype=int), np.zeros(lost.size, dtype=int)))
    order = np.argsort(times)
    times, dead = times[order], dead[order]
    at_risk = np.arange(times.size, 0, -1)
    unique = np.diff(times, prepend=-np.inf, append=np.inf) > 0
    first, last = unique[:-1], unique[1:]
    n = at_risk[first]
    events = np.diff(np.cumsum(dead)[last], prepend=0)
    return times[first], np.cumprod((n - events) / n), n, events


def _median(values: np.ndarray) -> float:
    """np.median of a 1-d array without NaN, to the last bit (the middle value, or the two middle
    ones' sum halved, as np.mean takes it), without np.median's general machinery: a cell's
    summary takes a few of these per cell, where np.median cost 30 µs each."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def cell_summary(rows, engine_seconds: float) -> dict[str, float]:
    """One cell's runs summarised, name -> value; only finite values (a KM median that is
    undefined because more than half the runs are censored is absent: `<duration>_restricted_mean`
    is then the cell's measure, as in the report). rows: the cell's rows (one per seed).

      n_seeds, n_escaped, n_diverged, diverged_fraction, engine_seconds
      per censored duration of DURATIONS the cell records (escape; sosp and gap
      where sosp_epsilon / gap_epsilon turn them on), with (duration, event) its columns:
        <event>_fraction                         escaped_fraction, sosp_reached_fraction, ...
        <duration>_km_median, _km_median_lo, _km_median_hi   Kaplan–Meier median, 95% log-log interval
        <duration>_restricted_mean               ∫₀^budget S(t) dt
        mean_<duration>_of_<event>               mean over the runs that had the event
                                                 (mean_escape_step_of_escaped, as in cells.parquet)
      every cell-scope number of rows.py (curvature, sigma_escape, noise_anisotropy, ...)
      <column>_median for every per-run float column of rows.py the cell has
        (final_loss_median, tail_loss_q90_median, tracking_error_mean_median, ...): the median over runs
    """
    # Column arrays, not frame operations: this runs on every cell of a sweep, where the engine
    # takes a few milliseconds (a frame-level version took 1.6 ms a cell). `rows` may also be a
    # mapping of column -> array or a value its runs share (what the block writer holds:
    # workflows/blocks.py).
    diverged = _floats(rows, "diverged") != 0
    n = len(diverged)
    out = {"n_seeds": n, "n_escaped": int((_floats(rows, "escaped", n) != 0).sum()), "n_diverged": int(diverged.sum()),
           "diverged_fraction": float(diverged.mean()), "engine_seconds": float(engine_seconds)}
    budget = _floats(rows, "budget", n) if "budget" in rows else None
    for duration, event in DURATIONS.values():
        if duration not in rows or event not in rows:
            continue
        steps, events = _floats(rows, duration, n), _floats(rows, event, n)
        recorded = ~np.isnan(steps) & ~np.isnan(events)
        if not recorded.any():
            continue
        steps, happened = steps[recorded], events[recorded] != 0
        # The horizon of the restricted mean is the budget, as in the analysis's tables.
        horizon = float(budget[recorded].max()) if budget is not None else float(steps.max())
        median, low, high, restricted = kaplan_meier(steps, happened, horizon)
        out.update({f"{event}_fraction": float(happened.mean()), f"{duration}_km_median": median,
                    f"{duration}_km_median_lo": low, f"{duration}_km_median_hi": high,
                    f"{duration}_restricted_mean": restricted})
        if happened.any():
            out[f"mean_{duration}_of_{event}"] = float(steps[happened].mean())
    for column in FLOAT_COLUMNS:
        if column.name not in rows or not n:
            continue
        if column.scope == "cell":
            out[column.name] = float(_floats(rows, column.name, 1)[0])
        else:
            values = _floats(rows, column.name, n)
            finite = values[np.isfinite(values)]
            if len(finite):
                out[f"{column.name}_median"] = _median(finite)
    return {name: float(value) for name, value in out.items() if math.isfinite(value)}
