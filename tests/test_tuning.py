"""Tuning (issue 23): the coarse-to-fine search finds known optima within its resolution, flags a
best at the range's edge, is deterministic, and scores points by censoring-aware statistics that
equal the Kaplan–Meier estimates."""
import math

import numpy as np
import pandas as pd
import pytest

from workflows.core.survival import kaplan_meier
from workflows.core.tuning import Axis, CoarseToFine, rounded, score, scores, target_times


def run_search(search, evaluate):
    values = {}
    while batch := search.next_batch(values):
        values.update({point: evaluate(point) for point in batch})
    return values


@pytest.mark.parametrize("optimum", [3.7e-4, 0.0123, 0.29])
def test_one_axis_finds_a_known_optimum_within_its_resolution(optimum):
    axis = Axis("optimizer.lr", 1e-4, 1.0)
    search = CoarseToFine([axis], trials=12)
    values = run_search(search, lambda p: (math.log(p[0]) - math.log(optimum)) ** 2)
    assert len(values) <= 12
    best = search.best(values)
    # The final resolution: the coarse spacing (4 decades over 6 points) halved by each later round.
    grid = sorted(p[0] for p in values)
    k = grid.index(best[0])
    spacing = max(math.log10(grid[min(k + 1, len(grid) - 1)] / grid[k]), math.log10(grid[k] / grid[max(k - 1, 0)]))
    assert abs(math.log10(best[0] / optimum)) <= spacing, (best, optimum, grid)
    assert spacing <= 0.8 / 4 + 1e-9                      # refined twice or more below the coarse 0.8 decade
    assert not search.at_edge(best)


def test_two_axes_find_a_known_optimum():
    axes = [Axis("optimizer.lr", 1e-4, 1.0), Axis("optimizer.momentum", 0.0, 0.99, log=False)]
    search = CoarseToFine(axes, trials=30)
    values = run_search(search, lambda p: (math.log10(p[0]) + 2.2) ** 2 + 4 * (p[1] - 0.6) ** 2)
    best = search.best(values)
    assert abs(math.log10(best[0]) + 2.2) < 0.35 and abs(best[1] - 0.6) < 0.2, best


def test_a_best_at_the_ranges_edge_is_flagged_and_the_search_is_deterministic():
    axis = Axis("optimizer.lr", 1e-3, 0.1)
    first = run_search(CoarseToFine([axis], 8), lambda p: -p[0])          # larger is always better
    second = run_search(CoarseToFine([axis], 8), lambda p: -p[0])
    assert first == second
    search = CoarseToFine([axis], 8)
    assert search.best(first) == (0.1,) and search.at_edge((0.1,)) == ["optimizer.lr"]


def test_points_are_rounded_to_stable_values():
    assert Axis("optimizer.lr", 1e-4, 1.0).grid(5) == [1e-4, 1e-3, 1e-2, 0.1, 1.0]
    assert rounded(0.0031622776601683794) == 0.003162
    with pytest.raises(ValueError, match="trials=3 cannot cover a grid of 2 points on each of 2"):
        CoarseToFine([Axis("a", 1, 2), Axis("b", 1, 2)], trials=3)


@pytest.mark.parametrize("reached_fraction", [1.0, 0.8, 0.5, 0.3, 0.0])
def test_scores_equal_the_kaplan_meier_estimates(reached_fraction):
    rng = np.random.default_rng(0)
    n, budget = 101, 500.0
    times = rng.integers(1, 400, n).astype(float)
    reached = rng.random(n) < reached_fraction
    median, _, _, restricted = kaplan_meier(np.where(reached, times, budget), reached, budget)
    if math.isfinite(median):
        assert score(times, reached, budget) == median
    else:                                     # undefined: after every defined median, by fraction
        assert score(times, reached, budget) == budget * (2 - reached.mean()) > budget
    assert score(times, reached, budget, "restricted_mean") == pytest.approx(restricted)
    assert scores(np.stack([times, times]), np.stack([reached, reached]), budget)[1] == score(times, reached, budget)


def test_a_diverged_run_never_reached_the_target():
    rows = pd.DataFrame({"escape_step": [10, 20, 30], "escaped": [True, True, False],
                         "diverged": [False, True, True]})
    times, reached = target_times(rows, "escape", budget=100)
    assert reached.tolist() == [True, False, False] and times.tolist() == [10.0, 100.0, 100.0]


def test_a_last_round_too_small_for_both_sides_bisects_towards_the_better_neighbour():
    axis = Axis("optimizer.lr", 1e-4, 1.0)
    for optimum in (-1.55, -2.45, -1.3, -2.7):                       # log10 of the optimum, either side
        curve = lambda p, o=optimum: abs(math.log10(p[0]) - o)
        search = CoarseToFine([axis], trials=10)                     # 5 coarse points, rounds of 2, 2, then 1
        values, batches = {}, []
        while batch := search.next_batch(values):
            batches.append(batch)
            before = dict(values)
            values.update({p: curve(p) for p in batch})
        assert [len(b) for b in batches] == [5, 2, 2, 1]
        best = search.best(before)
        below, above = sorted(p[0] for p in before if p[0] < best[0])[-1], sorted(p[0] for p in before if p[0] > best[0])[0]
        better = below if before[(below,)] < before[(above,)] else above
        assert batches[-1] == [(axis.between(best[0], better),)], (optimum, batches)
        assert (batches[-1][0][0] > best[0]) == (optimum > math.log10(best[0]))   # towards the optimum
