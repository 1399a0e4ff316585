"""The per-cell Kaplan–Meier estimate (core.survival.kaplan_meier) against scipy's, bit for bit:
its arithmetic is scipy.stats.ecdf's written out in numpy (every cell of a sweep is summarised on
its worker, where scipy's call cost more than the estimate)."""
import warnings

import numpy as np
import pytest
from scipy import special, stats

from workflows.core.survival import Z_95, kaplan_meier


def scipy_kaplan_meier(duration, event, horizon):
    """What core.survival.kaplan_meier computed with scipy's objects (before: 0.3 ms a cell)."""
    duration, event = np.asarray(duration, dtype=float), np.asarray(event, dtype=bool)
    if not event.any():
        return np.inf, np.inf, np.inf, float(min(horizon, duration.max()) + max(0.0, horizon - duration.max()))
    fit = stats.ecdf(stats.CensoredData(uncensored=duration[event], right=duration[~event]))
    times, survival = fit.sf.quantiles, fit.sf.probabilities
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        band = fit.sf.confidence_interval(0.95, method="log-log")
    low, high = (np.where(survival == 0, 0.0, np.nan_to_num(b.probabilities, nan=1.0)) for b in (band.low, band.high))
    edges = np.clip(np.concatenate([[0.0], times, [horizon]]), 0.0, horizon)
    restricted = float(np.sum(np.diff(edges) * np.concatenate([[1.0], survival])))

    def first(s):
        below = np.flatnonzero(s <= 0.5)
        return float(times[below[0]]) if len(below) else np.inf
    return first(survival), first(low), first(high), restricted


def cells(n=3000, seed=7):
    """Cells of a few seeds as a sweep's are: integer steps (ties, censored at an event's time),
    censoring by the budget and by divergence, none escaped, all escaped, S reaching 0, a run
    censored before the first escape (S = 1 there: the band undefined)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        runs, budget = int(rng.integers(1, 40)), int(rng.integers(5, 400))
        steps = rng.integers(1, budget + 30, runs).astype(float)
        escaped = steps <= budget
        steps = np.minimum(steps, budget)
        if i % 5 == 1:                               # divergence: censored early
            gone = rng.random(runs) < 0.3
            steps[gone], escaped[gone] = np.maximum(1, steps[gone] // 3), False
        if i % 7 == 2:
            escaped[:] = True                        # every run escaped: no censoring (scipy's other path)
        if i % 11 == 3:
            steps = np.round(steps / 50) * 50 + 1    # many ties
        yield steps, escaped, float(budget)
    yield np.array([3.0, 5.0, 9.0]), np.array([True, True, False]), 10.0
    yield np.array([2.0, 2.0, 4.0, 4.0]), np.array([False, True, True, False]), 4.0
    yield np.array([1.0, 6.0, 6.0, 8.0]), np.array([False, True, True, True]), 10.0


def test_the_normal_quantile_is_scipys():
    assert Z_95 == special.ndtri(0.975)


def test_equals_scipys_estimate_bit_for_bit():
    compared = 0
    for steps, escaped, budget in cells():
        ours, theirs = kaplan_meier(steps, escaped, budget), scipy_kaplan_meier(steps, escaped, budget)
        assert ours == theirs, (steps.tolist(), escaped.tolist(), budget, ours, theirs)
        compared += escaped.any() and not escaped.all()
    assert compared > 1000                           # censored cases, not only the easy ones


@pytest.mark.parametrize("censored_first", [True, False])
def test_a_finite_interval_where_scipys_is(censored_first):
    steps = np.array([4.0, 10, 12, 15, 20, 25, 30, 30, 40, 50, 50, 50])
    escaped = np.array([not censored_first, True, True, True, True, True, True, False, True, False, False, False])
    ours = kaplan_meier(steps, escaped, 50.0)
    assert ours == scipy_kaplan_meier(steps, escaped, 50.0)
    assert all(np.isfinite(ours[:2]))


def test_the_summarys_median_is_numpys():
    from workflows.core.survival import _median

    rng = np.random.default_rng(3)
    for n in list(range(1, 41)) * 50:
        values = rng.choice([rng.normal(size=n), rng.integers(-3, 4, n).astype(float), rng.lognormal(5, 3, n)])
        assert _median(values) == float(np.median(values)), values


def test_a_cells_summary_is_the_same_from_shared_values_as_from_repeated_ones():
    """The block writer hands the summary each value a cell's runs share as it is, not repeated
    into an array per run (workflows/blocks.py): the summary is the one of the repeated columns."""
    from workflows.blocks import _repeated
    from workflows.core.survival import cell_summary

    rng = np.random.default_rng(5)
    runs = 16
    columns = {"seed": np.arange(runs), "escaped": rng.random(runs) < 0.6, "diverged": rng.random(runs) < 0.1,
               "escape_step": rng.integers(1, 200, runs), "budget": 200, "curvature": 1.5, "sigma_escape": None,
               "final_loss": rng.normal(size=runs), "minimum_loss": float("nan"), "cnc_constant": 0.25,
               "sosp_step": rng.integers(1, 200, runs), "sosp_reached": True}
    shared = cell_summary(columns, 0.01)
    assert shared == cell_summary({k: _repeated(v, runs) for k, v in columns.items()}, 0.01)
    assert shared["curvature"] == 1.5 and "sigma_escape" not in shared and shared["sosp_reached_fraction"] == 1.0
