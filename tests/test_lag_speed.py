"""The lag model's compiled map and memoised laws give the numpy map's numbers exactly (issue 25:
analyze on 10⁶ rows spent its time in run_map). tests/lag_cases.json holds the predictions of the
numpy-only code (git 6e6c376) for tests/lag_cases.py's varied cells."""
import json
from pathlib import Path

import numpy as np
import pytest

from analysis import lag_cells
from analysis.lag import (Stable, StableSpread, exact_rule, exponential_rule, lag_escape, run_map, run_map_numpy,
                          sum_rule)
from lag_cases import lag_cells as varied_cells

FROZEN = json.loads((Path(__file__).parent / "lag_cases.json").read_text())


def test_predictions_are_the_numpy_maps_to_the_bit():
    cells = varied_cells()
    got = lag_cells.lag_predictions(cells)
    for i, cell_id in zip(got.index, cells["cell_id"]):
        have = [None if v != v else float(v) for v in got.loc[i, FROZEN["columns"]]] + [got.loc[i, "reason"]]
        assert have == FROZEN["cells"][cell_id], cell_id
    exponents = lag_cells.local_exponents(cells.iloc[0])
    assert {k: None if v != v else float(v) for k, v in exponents.items()} == FROZEN["local_exponents_lag00"]


def test_the_compiled_map_is_in_use():
    from analysis import _lag_kernel  # noqa: F401  (numba is a dependency: no silent fallback here)


RULES = {
    "rmsprop": lambda n: exponential_rule(np.full(n, 3e-3), 0.99, eps=1e-8),
    "adam": lambda n: exponential_rule(np.full(n, 3e-3), 0.999, beta1=0.9, bias_correction=True, eps=1e-8),
    "adam_no_bias": lambda n: exponential_rule(np.full(n, 1e-3), 0.99, beta1=0.5, eps=1e-8),
    "amsgrad": lambda n: exponential_rule(np.full(n, 3e-3), 0.99, eps=1e-8, running_max=True),
    "cosine_beta2_per_step": lambda n: exponential_rule(
        1e-2 * (1 + np.cos(np.pi * np.arange(n) / n)) / 2 + 1e-5, 1 - np.linspace(0.02, 0.001, n), eps=1e-8),
    "adagrad": lambda n: sum_rule(np.full(n, 0.05), eps=1e-10, initial=0.1),
    "exact": lambda n: exact_rule(np.full(n, 1e-2), 1.0, 1e-12),
    "exact_alpha_half": lambda n: exact_rule(np.full(n, 1e-2), 0.5, 1e-12),
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("quartic", [0.0, 0.8])
def test_compiled_map_equals_the_numpy_loop(name, quartic):
    """Every rule kind, with the norm measure's moving thresholds (three stable pairs) and the
    quartic's drift, over nodes spread across decades (some escaping at step 1, some never)."""
    rule = RULES[name](4000)
    stable = Stable(np.array([1.0, 0.3, 0.1]), np.array([0.5, 0.2, 1.0]), np.array([2.0, 1.0, 3.0]))
    sigma, curvature, radius = 0.05, 1.0, 1.0
    y1 = np.concatenate([np.geomspace(1e-8, 30.0, 997), [0.0, np.nan, 25.0, 1e-300]])
    runs = []
    for fn in (run_map, run_map_numpy):
        spread = StableSpread(rule, stable)

        def thresholds(steps):
            return curvature / sigma * np.sqrt(np.maximum(radius**2 - spread.upto(steps), 0.0))
        runs.append(fn(rule, curvature, sigma, thresholds, y1, 0.3 * y1, 1.0, chunk=97, quartic=quartic,
                       spread=spread.upto))
    assert (runs[0] == 1).any() and (runs[0] == rule.steps + 1).any() and len(np.unique(runs[0])) > 50
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("pairs", [1, 2, 5, 7, 9])
def test_compiled_stable_moments_equal_the_numpy_loop(pairs):
    """β₁ > 0: V_⊥(t) through the compiled recursion (below 8 pairs) and the numpy one, asked for
    in uneven pieces as the map asks, to the bit, and held once stationary."""
    rule = exponential_rule(np.full(6000, 1e-2), 0.999, beta1=0.9, bias_correction=True, eps=1e-8)
    rng = np.random.default_rng(pairs)
    stable = Stable(rng.uniform(0.5, 2, pairs), rng.uniform(0.05, 1, pairs), rng.integers(1, 40, pairs).astype(float),
                    0.01)
    compiled, reference = StableSpread(rule, stable), StableSpread(rule, stable)
    reference._with_momentum = reference._with_momentum_numpy
    for steps in (1, 2, 50, 513, 1800, 6000):
        np.testing.assert_array_equal(compiled.upto(steps), reference.upto(steps))
    assert compiled.settled == reference.settled and compiled.settled > 8


def test_cells_that_differ_in_what_the_law_ignores_share_one_law():
    """Projection measure, no start offset: the dimension and the noise's alignment do not enter
    the law; one computation serves them all, with the same numbers. A start offset makes the
    dimension count again."""
    cells = varied_cells().iloc[[3]]
    moved = cells.assign(**{"problem.dim": 64, "problem.noise_alignment": "rotated"})
    lag_cells._law.cache_clear()
    first, second = lag_cells.lag_predictions(cells), lag_cells.lag_predictions(moved)
    assert lag_cells._law.cache_info().misses == 1 and lag_cells._law.cache_info().hits == 1
    assert first["predicted_mean"].iloc[0] == second["predicted_mean"].iloc[0]
    offset = cells.assign(start_offset=0.2)
    lag_cells.lag_predictions(offset), lag_cells.lag_predictions(offset.assign(**{"problem.dim": 64}))
    assert lag_cells._law.cache_info().misses == 3


def test_lag_escape_of_a_shared_rule_is_unchanged_by_another_cell():
    """The shared 1 − β₁ᵗ array is read-only: no cell can change another's."""
    rule = exponential_rule(np.full(500, 3e-3), 0.999, beta1=0.9, bias_correction=True, eps=1e-8)
    with pytest.raises(ValueError):
        rule.bias1[0] = 0.0
    assert lag_escape(rule, 1.0, 0.1, 1.0).mean == lag_escape(
        exponential_rule(np.full(500, 3e-3), 0.999, beta1=0.9, bias_correction=True, eps=1e-8), 1.0, 0.1, 1.0).mean
