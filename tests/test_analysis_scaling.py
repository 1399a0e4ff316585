"""Censored AFT fits recover known exponents; dropping censored runs biases them."""
import numpy as np
import pandas as pd
import pytest

from analysis.cells import cell_table
from analysis.scaling import fit_scaling, scaling_groups
from analysis.synthetic import synthetic_rows

LR_EXPONENT, SIGMA_EXPONENT = -1.0, 0.5


@pytest.fixture(scope="module")
def rows():
    # 4 lr x 4 sigma cells x 100 seeds; about 30% of the runs censored at the budget.
    return synthetic_rows(lrs=np.logspace(-3, -2, 4), sigmas=np.logspace(-2, 0, 4), seeds=100,
                          lr_exponent=LR_EXPONENT, sigma_exponent=SIGMA_EXPONENT, censored=0.3, seed=3)


def exponents_of(rows, **kwargs):
    exponents, fits = fit_scaling(rows, cell_table(rows), **kwargs)
    assert (fits["status"] == "ok").all()
    return exponents.set_index("covariate"), fits


def test_censoring_is_about_thirty_percent(rows):
    assert 0.25 < 1 - rows["escaped"].mean() < 0.35


def test_censored_fit_recovers_the_exponents(rows):
    exponents, fits = exponents_of(rows)
    for name, true in (("lr", LR_EXPONENT), ("sigma_escape", SIGMA_EXPONENT)):
        assert exponents.loc[name, "lo"] <= true <= exponents.loc[name, "hi"], exponents.loc[name]
    # anisotropy = noise_scale/sigma_escape carries no new direction: dropped, sigma_escape kept.
    assert "anisotropy" in fits["dropped"].iloc[0] and "anisotropy" not in exponents.index
    assert fits["rms_factor"].iloc[0] < 1.1           # fitted medians within ~10% of the KM medians


def test_dropping_censored_runs_biases_the_fit(rows):
    censored_fit, _ = exponents_of(rows)
    naive, _ = exponents_of(rows[rows["escaped"]])
    # The slow cells lose their slow runs, so their times look shorter: both exponents flatten,
    # the truth falls outside the naive intervals, and the error is several times the censored fit's.
    for name, true in (("lr", LR_EXPONENT), ("sigma_escape", SIGMA_EXPONENT)):
        assert not naive.loc[name, "lo"] <= true <= naive.loc[name, "hi"], naive.loc[name]
        assert abs(naive.loc[name, "exponent"]) < abs(true)
        assert abs(naive.loc[name, "exponent"] - true) > 3 * abs(censored_fit.loc[name, "exponent"] - true)


def test_binning_to_fit_the_row_budget_keeps_the_exponents(rows):
    exponents, fits = exponents_of(rows, max_rows=300)
    assert fits["bin_width"].iloc[0] > 0 and fits["fit_rows"].iloc[0] <= 300
    for name, true in (("lr", LR_EXPONENT), ("sigma_escape", SIGMA_EXPONENT)):
        assert exponents.loc[name, "exponent"] == pytest.approx(true, abs=0.05)


def test_groups_split_on_categories_and_drop_the_paper_rule():
    rows = synthetic_rows(optimizers=("rmsprop",), seeds=5)
    rows["optimizer.beta2"] = 1 - rows["optimizer.lr"] ** (2 / 3)        # the paper's rule: collinear with lr
    rows = pd.concat([rows, rows.assign(cell_id=rows["cell_id"] + "r", **{"problem.noise_alignment": "rotated"})])
    groups = scaling_groups(cell_table(rows))
    assert len(groups) == 2
    assert {g.keys["problem.noise_alignment"] for g in groups} == {"aligned", "rotated"}
    for group in groups:
        assert group.covariates == ["optimizer.lr", "sigma_escape"]
        assert "optimizer.beta2" in group.dropped
