"""What a tracker must hold for a stored cell, computed here from the sweep's own cells and from
rows.parquet / cells.parquet, independently of workflows/trackers.py: the parameters from
workflows.cell.flatten_cell, the Kaplan–Meier summaries from lifelines (not the scipy estimator
the tracker and the analysis use)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times, restricted_mean_survival_time

from workflows.cell import cell_id
from workflows.core.rows import flatten_cell
from workflows.spec import load_sweeps

SUMMARISED_PER_RUN = ("loss_at_escape", "final_loss", "final_grad_norm", "final_distance",
                      *(f"tail_{q}_{s}" for q in ("loss", "gap") for s in ("mean", "q50", "q90")),
                      "final_min_eig", "tracking_error_mean", "tracking_error_at_escape")
CELL_NUMBERS = ("curvature", "sigma_escape", "escape_radius", "noise_anisotropy", "saddle_loss", "minimum_loss",
                "cnc_constant")
DURATIONS = (("escape_step", "escaped"), ("sosp_step", "sosp_reached"), ("gap_step", "gap_reached"))


def rich_sweep(anisotropy: str) -> str:
    """The trackers' test sweep `rich`: every optional summary (SOSP, gap, tail, per-run values)
    and a list-valued parameter (torch's betas); `anisotropy` as YAML (a value or `{values: [...]}`)."""
    return f"""
sweeps:
  rich:
    description: every optional summary, and a list-valued parameter (torch's betas)
    parameters:
      problem: {{name: quadratic_saddle, dim: 2, anisotropy: {anisotropy}, quartic: 1.0}}
      optimizer:
        values:
          - {{name: adam, lr: 0.01, beta1: 0.0}}
          - {{name: torch.optim.Adam, lr: 0.01}}
      sosp_epsilon: {{values: [0.0, 0.05]}}
      seeds: 16
      budget: 1500
      run_to_budget: true
      tail_steps: 50
      gap_epsilon: 0.05
"""


def sweep_cells(path, name) -> dict[str, dict]:
    """cell_id -> flattened cell, for every cell of the sweep."""
    return {cell_id(c): flatten_cell(c) for c in load_sweeps(path, only=name)[name].cells}


def expected_metrics(runs: pd.DataFrame, cell: pd.Series) -> dict[str, float]:
    """runs: the cell's rows of rows.parquet; cell: its row of cells.parquet."""
    out = {"n_seeds": len(runs), "n_escaped": runs.escaped.sum(), "n_diverged": runs.diverged.sum(),
           "diverged_fraction": runs.diverged.mean(), "engine_seconds": cell.engine_seconds}
    for duration, event in DURATIONS:
        if duration not in runs or runs[duration].isna().all():
            continue
        steps, happened = runs[duration].astype(float), runs[event].astype(bool)
        km = KaplanMeierFitter().fit(steps, happened)
        interval = median_survival_times(km.confidence_interval_)
        out.update({f"{event}_fraction": happened.mean(), f"{duration}_km_median": km.median_survival_time_,
                    f"{duration}_km_median_lo": interval.iloc[0, 0], f"{duration}_km_median_hi": interval.iloc[0, 1],
                    f"{duration}_restricted_mean": restricted_mean_survival_time(km, t=runs.budget.iloc[0])})
        if happened.any():
            out[f"mean_{duration}_of_{event}"] = steps[happened].mean()
    out["mean_escape_step_of_escaped"] = cell.mean_escape_step_of_escaped    # cells.parquet's own
    for name in CELL_NUMBERS:
        if name in runs:
            out[name] = runs[name].iloc[0]
    for name in SUMMARISED_PER_RUN:
        if name in runs:
            values = runs[name].to_numpy(float)
            if np.isfinite(values).any():
                out[f"{name}_median"] = np.median(values[np.isfinite(values)])
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def assert_metrics_match(got: dict, expected: dict, runs: pd.DataFrame, rel: float, where: str):
    """Equal names, equal values. A KM median may sit one event later in lifelines where S is
    exactly 0.5 at a time (its product gives 0.5 + 1e-16: tests/test_analysis_survival.py)."""
    assert set(got) == set(expected), (where, sorted(set(got) ^ set(expected)))
    for name, value in expected.items():
        if name.endswith("_km_median") and got[name] != value:
            duration = name.removesuffix("_km_median")
            km = KaplanMeierFitter().fit(runs[duration].astype(float), runs[dict(DURATIONS)[duration]].astype(bool))
            survival = km.survival_function_.iloc[:, 0]
            assert abs(survival.loc[got[name]] - 0.5) < 1e-12, (where, name, got[name], value)
            assert value == survival.index[survival.index > got[name]][0], (where, name, got[name], value)
            continue
        assert got[name] == pytest.approx(value, rel=rel, abs=1e-12), (where, name)
