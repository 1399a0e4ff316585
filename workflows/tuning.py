"""Tuning an optimizer for a question: the search over its hyperparameters and the target it is
scored on (censoring-aware), as plain functions; the runners drive it (Ray Tune's searcher
interface, or a loop in this process) and store every trial as a cell.

The search is a coarse log grid refined around the best point (coarse-to-fine). Why not a random
or Bayesian sampler (Optuna's TPE through Ray Tune): for the 1-3 hyperparameters a comparison
tunes, a grid covers the range evenly, so the tuning curve it leaves is readable and a best at
the range's edge is seen; it is deterministic, so the same search reproduces exactly and a
resumed one recomputes nothing (each point is a stored cell); and its rounds are batches of
independent points, so trials run in parallel without changing what is chosen (a sequential
sampler's choices depend on which trials finished first). Its cost: refinement is local, so it
finds the best basin of the coarse grid, not a narrow one between its points.

    axes = [Axis("optimizer.lr", 1e-4, 1.0)]
    search = CoarseToFine(axes, trials=12)
    scores = {}
    while batch := search.next_batch(scores):
        scores.update({point: evaluate(point) for point in batch})
    best = search.best(scores)

Targets (each a censored duration of the rows, workflows/rows.py): `escape` (escape_step, escaped),
`gap` (gap_step, gap_reached: f − f_min ≤ gap_epsilon), `sosp` (sosp_step, sosp_reached: an
(ε, √(ρε))-second-order stationary point, sosp_epsilon). A run that diverged never reached the
target: it counts as censored at the budget, not at the step it diverged.

Statistics: `km_median`, the Kaplan–Meier median of the target time (the default), or
`restricted_mean`, E[min(τ, budget)] with failures at the budget. Where fewer than half the runs
reach the target the KM median is undefined: such a point then scores budget·(2 − fraction
reached), so it ranks after every point whose median is defined, and among its kind by the
fraction that reached the target.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

TARGETS = {
    # name: (duration column, event column, the run setting that turns it on)
    "escape": ("escape_step", "escaped", None),
    "gap": ("gap_step", "gap_reached", "gap_epsilon"),
    "sosp": ("sosp_step", "sosp_reached", "sosp_epsilon"),
}
STATISTICS = ("km_median", "restricted_mean")
SIGNIFICANT_DIGITS = 4          # grid points are written with this many: stable cell ids, readable labels


@dataclass(frozen=True)
class Axis:
    """One tuned hyperparameter: its key in the cell (optimizer.lr) and its range [low, high],
    searched on a log scale (step sizes, 1 − β₂) or a linear one (momentum)."""
    key: str
    low: float
    high: float
    log: bool = True

    def _to(self, v):
        return np.log(v) if self.log else np.asarray(v, float)

    def _from(self, u):
        return np.exp(u) if self.log else u

    def grid(self, n: int) -> list[float]:
        return [rounded(v) for v in self._from(np.linspace(self._to(self.low), self._to(self.high), n))]

    def between(self, a: float, b: float) -> float:
        return rounded(float(self._from((self._to(a) + self._to(b)) / 2)))


def rounded(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits - 1}e}")


class CoarseToFine:
    """A deterministic search over `axes` with at most `trials` points: first a grid of the same
    number of points per axis (about half the trials, at least 3 per axis), then rounds that
    bisect, on each axis, the intervals between the best point so far and its evaluated
    neighbours on that axis, until the trials are spent or no new point is left at
    SIGNIFICANT_DIGITS."""

    def __init__(self, axes: list[Axis], trials: int):
        if not axes:
            raise ValueError("tune: no hyperparameter to search; allowed: at least one, e.g. optimizer.lr")
        self.axes, self.trials = list(axes), trials
        per_axis = max(3, int((trials / 2) ** (1 / len(axes)) + 1e-9))
        while per_axis > 2 and per_axis ** len(axes) > trials:
            per_axis -= 1
        if per_axis ** len(axes) > trials:
            raise ValueError(f"tune: trials={trials} cannot cover a grid of 2 points on each of {len(axes)} "
                             f"hyperparameters; allowed: trials >= {2 ** len(axes)}")
        self.first = list(itertools.product(*(a.grid(per_axis) for a in self.axes)))

    def next_batch(self, scores: dict[tuple, float]) -> list[tuple]:
        """The next points to evaluate, given the scores so far (lower is better); [] when done."""
        room = self.trials - len(scores)
        if room <= 0:
            return []
        if not scores:
            return self.first[:room]
        if any(p not in scores for p in self.first):
            return [p for p in self.first if p not in scores][:room]
        best = self.best(scores)
        new = []
        for i, axis in enumerate(self.axes):
            line = sorted(p[i] for p in scores if all(p[j] == best[j] for j in range(len(best)) if j != i))
            k = line.index(best[i])
            for neighbour in (line[k - 1] if k > 0 else None, line[k + 1] if k + 1 < len(line) else None):
                if neighbour is None:
                    continue
                point = best[:i] + (axis.between(best[i], neighbour),) + best[i + 1:]
                if point not in scores and point not in new:
                    new.append(point)
        return new[:room]

    @staticmethod
    def best(scores: dict[tuple, float]) -> tuple:
        """The lowest score (ties: the smallest point, deterministically)."""
        return min(scores, key=lambda p: (scores[p], p))

    def at_edge(self, point: tuple) -> list[str]:
        """The axes on which `point` lies at an end of the searched range."""
        return [a.key for a, v in zip(self.axes, point) if v in (rounded(a.low), rounded(a.high))]


def target_times(rows, target: str, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """(duration, reached) per run for a target; diverged runs and runs that never reached it are
    censored at the budget."""
    duration, event, _ = TARGETS[target]
    reached = rows[event].to_numpy(bool) & ~rows["diverged"].to_numpy(bool)
    times = np.where(reached, rows[duration].to_numpy(float), float(budget))
    return times, reached


def score(times: np.ndarray, reached: np.ndarray, budget: float, statistic: str = "km_median") -> float:
    """The censoring-aware statistic of one point (lower is better); see the module docstring.

    Every run that did not reach the target is censored at the budget, after every observed time,
    so the Kaplan–Meier estimate is the empirical one: its median is the ⌈n/2⌉-th smallest time
    (defined where at least half the runs reached the target) and the restricted mean is the mean
    of min(τ, budget). tests/test_tuning.py checks both against analysis.survival.kaplan_meier."""
    return float(scores(np.asarray(times, float)[None], np.asarray(reached, bool)[None], budget, statistic)[0])


def scores(times: np.ndarray, reached: np.ndarray, budget: float, statistic: str = "km_median") -> np.ndarray:
    """`score` of each row of times/reached [B, n] at once (the bootstrap's replicates)."""
    times = np.where(reached, times, float(budget))
    if statistic == "restricted_mean":
        return times.mean(axis=1)
    n = times.shape[1]
    k = math.ceil(n / 2) - 1
    median = np.partition(np.where(reached, times, np.inf), k, axis=1)[:, k]
    return np.where(np.isfinite(median), median, budget * (2 - reached.mean(axis=1)))
