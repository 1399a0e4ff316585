"""Pairwise comparisons: the vectorised KM median against lifelines, the exact order-statistic
bootstrap against brute-force resampling, scipy's log-rank against lifelines', and the bootstrap
interval's coverage of a known ratio."""
import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from scipy import stats

from analysis.pairwise import bootstrap_medians, km_medians
from workflows.core.survival import kaplan_meier


def censored_sample(n, scale, budget, rng):
    times = np.ceil(rng.exponential(scale, n))
    return np.minimum(times, budget), times <= budget


def test_vectorised_km_median_equals_the_survival_modules_on_resamples():
    """Against analysis.survival.kaplan_meier (scipy's ecdf, itself checked against lifelines): equal on
    every resample. lifelines itself agrees except where S is exactly ½ at a step, where its float
    product can land a hair above ½ and it reports the next time."""
    rng = np.random.default_rng(0)
    duration, event = censored_sample(200, 100, 120, rng)       # ties (whole steps) and censoring
    order = np.lexsort((~event, duration))
    d, e = duration[order], event[order]
    index = np.sort(rng.integers(0, len(d), size=(30, len(d))), axis=1)
    ours = km_medians(d, e, index)
    for row, value in zip(index, ours):
        assert value == kaplan_meier(d[row], e[row], 120)[0]
        fit = KaplanMeierFitter().fit(d[row], e[row])
        if value != fit.median_survival_time_:
            assert fit.survival_function_.loc[value].iloc[0] == pytest.approx(0.5, abs=1e-12)


def test_uncensored_bootstrap_is_the_order_statistic_law():
    """Without censoring the resampled median is drawn exactly (Beta order statistic): its quantiles match
    brute-force resampling's within Monte Carlo error."""
    rng = np.random.default_rng(1)
    duration = np.ceil(rng.lognormal(5, 0.4, 301))
    fast = bootstrap_medians(duration, np.ones_like(duration, bool), size=4000, seed=2)
    brute = np.array([np.sort(rng.choice(duration, len(duration)))[150] for _ in range(4000)])
    for q in (0.025, 0.5, 0.975):
        assert np.quantile(fast, q) == pytest.approx(np.quantile(brute, q), rel=0.02)


def test_scipy_logrank_equals_lifelines():
    rng = np.random.default_rng(3)
    a, ea = censored_sample(300, 100, 150, rng)
    b, eb = censored_sample(300, 120, 150, rng)
    ours = stats.logrank(stats.CensoredData(uncensored=a[ea], right=a[~ea]),
                         stats.CensoredData(uncensored=b[eb], right=b[~eb])).pvalue
    assert ours == pytest.approx(logrank_test(a, b, ea, eb).p_value, rel=1e-9)


def test_bootstrap_interval_covers_the_true_ratio():
    """Exponential escape times with medians in ratio 1.5, 25% censored: the 95% interval of the ratio of KM
    medians covers 1.5 in about 95% of 60 repetitions, and excludes 1 in most."""
    rng = np.random.default_rng(4)
    covered = excludes_one = 0
    true = 1.5
    for repeat in range(60):
        a, ea = censored_sample(256, 100 * true, 300, rng)
        b, eb = censored_sample(256, 100, 300, rng)
        ratio = bootstrap_medians(a, ea, seed=2 * repeat) / bootstrap_medians(b, eb, seed=2 * repeat + 1)
        lo, hi = np.quantile(ratio, [0.025, 0.975])
        covered += lo <= true <= hi
        excludes_one += lo > 1
    assert covered >= 52 and excludes_one >= 45
