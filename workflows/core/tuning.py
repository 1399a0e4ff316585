"""Tuning an optimizer for a question: what a sweep's `tune:` block asks (TuneSpec), the search
over the tuned hyperparameters (CoarseToFine) and the censoring-aware score of a point, as plain
functions. The runners drive the search (workflows/tuned_search.py: Ray Tune's Searcher, or a loop
in this process) and store every trial as a cell; the analysis (analysis/tuned.py) re-selects with
the same score in its bootstrap. Both read it from here, so a choice is made one way only.

The search is a coarse log grid refined around the best (coarse-to-fine). Why not a random or
Bayesian sampler (Optuna's TPE through Ray Tune): for the 1-3 hyperparameters a comparison
tunes, a grid covers the range evenly, so the tuning curve it leaves is readable and a best at
the range's edge is seen; it is deterministic, so the same search reproduces exactly from its
definition and the seed of its cells, and a resumed one recomputes nothing (each point is a
stored cell, and the search replays from the stored scores); and its rounds are batches of
independent points, so trials run in parallel without changing what is chosen (a sequential
sampler's choices depend on which trials finished first). Its cost: refinement is local, so it
finds the best basin of the coarse grid, not a narrow one between its points.

    axes = [Axis("optimizer.lr", 1e-4, 1.0)]
    search = CoarseToFine(axes, trials=12)
    scores = {}
    while batch := search.next_batch(scores):
        scores.update({point: evaluate(point) for point in batch})
    best = search.best(scores)

Targets (each a censored duration of the rows, core/survival.DURATIONS): `escape` (escape_step,
escaped), `gap` (gap_step, gap_reached: f − f_min ≤ gap_epsilon), `sosp` (sosp_step,
sosp_reached: an (ε, √(ρε))-second-order stationary point, sosp_epsilon). A run that diverged
never reached the target: it counts as censored at the budget, not at the step it diverged.

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

from .suggest import did_you_mean
from .survival import DURATIONS

# name: (duration column, event column, the run setting that turns it on, or None: always recorded)
TARGETS = {name: (*DURATIONS[name], setting) for name, setting in
           (("escape", None), ("gap", "gap_epsilon"), ("sosp", "sosp_epsilon"))}
STATISTICS = ("km_median", "restricted_mean")
SIGNIFICANT_DIGITS = 4          # grid points are written with this many: stable cell ids, readable labels
SCALES = ("log", "linear")
# A tune: block's settings besides its hyperparameters (dotted keys).
TUNE_SETTINGS = ("target", "statistic", "trials", "fresh_seed", "fresh_seeds")
DEFAULT_TRIALS_PER_AXIS = 12


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

    def as_dict(self) -> dict:
        return {"key": self.key, "min": self.low, "max": self.high, "scale": "log" if self.log else "linear"}

    @classmethod
    def from_dict(cls, d: dict) -> Axis:
        return cls(d["key"], float(d["min"]), float(d["max"]), d.get("scale", "log") == "log")


def rounded(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits - 1}e}")


class CoarseToFine:
    """A deterministic search over `axes` with at most `trials` points: first a grid of the same
    number of points per axis (about half the trials, at least 3 per axis), then rounds that
    bisect, on each axis, the intervals between the best point so far and its evaluated
    neighbours on that axis, until the trials are spent or no new point is left at
    SIGNIFICANT_DIGITS. A last round with too few trials left for all its bisections takes those
    towards the better-scoring neighbours."""

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
        new = {}
        for i, axis in enumerate(self.axes):
            for neighbour in _sides(best, i, scores):
                if neighbour is None:
                    continue
                point = best[:i] + (axis.between(best[i], neighbour),) + best[i + 1:]
                if point not in scores and point not in new:
                    new[point] = scores[best[:i] + (neighbour,) + best[i + 1:]]
        # Where the trials left cannot take the whole round, the bisections towards the better
        # neighbours go first: the optimum more likely lies on their side (ties: in axis order).
        return sorted(new, key=lambda point: new[point])[:room]

    @staticmethod
    def best(scores: dict[tuple, float]) -> tuple:
        """The lowest score (ties: the smallest point, deterministically)."""
        return min(scores, key=lambda p: (scores[p], p))

    def at_edge(self, point: tuple) -> list[str]:
        """The axes on which `point` lies at an end of the searched range."""
        return at_edge(self.axes, point)


def at_edge(axes, point: tuple) -> list[str]:
    """The keys of the axes on which `point` lies at an end of its searched range: a better point
    may lie beyond it."""
    return [a.key for a, v in zip(axes, point) if v in (rounded(a.low), rounded(a.high))]


def _sides(best: tuple, i: int, evaluated) -> tuple:
    """The evaluated values of axis i next to best[i], below and above (None where there is none),
    along the line through `best` (the other axes at best's values)."""
    line = sorted({p[i] for p in evaluated if all(p[j] == best[j] for j in range(len(best)) if j != i)})
    k = line.index(best[i])
    return (line[k - 1] if k > 0 else None, line[k + 1] if k + 1 < len(line) else None)


def neighbours(best: tuple, evaluated) -> list[tuple]:
    """The evaluated points next to `best` on each axis (one or two per axis): with the best, the
    points re-run on fresh seeds, among which the analysis's bootstrap re-selects."""
    out = []
    for i in range(len(best)):
        for value in _sides(best, i, evaluated):
            if value is not None:
                point = best[:i] + (value,) + best[i + 1:]
                if point not in out:
                    out.append(point)
    return out


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
    of min(τ, budget). tests/test_tuning.py checks both against core.survival.kaplan_meier."""
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


def defined(value: float, budget: float) -> bool:
    """Whether a score is a time (a KM median or restricted mean), not the rank of a point where
    fewer than half the runs reached the target (scored past the budget)."""
    return bool(value <= budget)


# --- the tune: block ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneSpec:
    """What a sweep's `tune:` block asks: the hyperparameters (`axes`), the `target` and the
    `statistic` a point is scored on, the `trials` per variant and setting, and the fresh-seed
    cells' base seed (`fresh_seed`, None: the tuning cells' seed + 1) and run count (`fresh_seeds`,
    None: the tuning cells' `seeds`)."""
    axes: tuple[Axis, ...]
    target: str = "escape"
    statistic: str = "km_median"
    trials: int = DEFAULT_TRIALS_PER_AXIS
    fresh_seed: int | None = None
    fresh_seeds: int | None = None

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.axes]

    def search(self) -> CoarseToFine:
        return CoarseToFine(list(self.axes), self.trials)

    def as_dict(self) -> dict:
        """Plain data for meta.json (and from_dict back)."""
        return {"axes": [a.as_dict() for a in self.axes], "target": self.target, "statistic": self.statistic,
                "trials": self.trials, "fresh_seed": self.fresh_seed, "fresh_seeds": self.fresh_seeds}

    @classmethod
    def from_dict(cls, d: dict) -> TuneSpec:
        return cls(tuple(Axis.from_dict(a) for a in d["axes"]), d["target"], d["statistic"], int(d["trials"]),
                   d.get("fresh_seed"), d.get("fresh_seeds"))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value, lowest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lowest


def parse_tune(block) -> TuneSpec:
    """The tune: block as a TuneSpec; ValueError (one line naming the key, the value and what is
    allowed) for anything else. Hyperparameters are the dotted keys (optimizer.<h>: {min, max},
    with scale: log, the default, or linear); the rest are TUNE_SETTINGS."""
    allowed_keys = "optimizer.<hyperparameter>: {min, max[, scale]}, " + ", ".join(TUNE_SETTINGS)
    if not isinstance(block, dict) or not block:
        raise ValueError(f"tune={block!r} is not a non-empty mapping; allowed: {allowed_keys}")
    axes = []
    for key, value in block.items():
        if not isinstance(key, str):
            raise ValueError(f"tune: key {key!r} is not a name; allowed: {allowed_keys}")
        if "." in key:
            axes.append(_axis(key, value))
        elif key not in TUNE_SETTINGS:
            raise ValueError(f"tune.{key} is not known{did_you_mean(key, TUNE_SETTINGS)}; allowed: {allowed_keys}")
    if not axes:
        raise ValueError("tune: no hyperparameter to tune; allowed: at least one, e.g. optimizer.lr: "
                         "{min: 1.0e-4, max: 1.0}")
    target = block.get("target", "escape")
    if target not in TARGETS:
        raise ValueError(f"tune.target={target!r} is not known{did_you_mean(str(target), TARGETS)}; allowed: "
                         "escape (time to escape), gap (time to f - f_min <= gap_epsilon), sosp (time to an "
                         "(eps, sqrt(rho eps))-SOSP, sosp_epsilon)")
    statistic = block.get("statistic", "km_median")
    if statistic not in STATISTICS:
        raise ValueError(f"tune.statistic={statistic!r} is not known{did_you_mean(str(statistic), STATISTICS)}; "
                         f"allowed: {', '.join(STATISTICS)}")
    trials = block.get("trials", DEFAULT_TRIALS_PER_AXIS * len(axes))
    if not _integer(trials, 2 ** len(axes)):
        raise ValueError(f"tune.trials={trials!r} is not allowed; allowed: an integer >= {2 ** len(axes)} (points "
                         f"searched per variant and setting; a grid of 2 points on each of {len(axes)} "
                         f"hyperparameter{'s' if len(axes) > 1 else ''} at least)")
    for key, lowest, what in (("fresh_seed", 0, "the base seed of the fresh-seed cells (default: seed + 1)"),
                              ("fresh_seeds", 1, "runs of each fresh-seed cell (default: seeds)")):
        if key in block and not _integer(block[key], lowest):
            raise ValueError(f"tune.{key}={block[key]!r} is not allowed; allowed: an integer >= {lowest}, {what}")
    spec = TuneSpec(tuple(axes), target, statistic, trials, block.get("fresh_seed"), block.get("fresh_seeds"))
    spec.search()                      # trials too few for the coarse grid: one line now
    return spec


def _axis(key: str, value) -> Axis:
    head, _, field = key.partition(".")
    if head != "optimizer" or not field or "." in field:
        raise ValueError(f"tune.{key} cannot be tuned; allowed: an optimizer's hyperparameter, optimizer.<name> "
                         "(e.g. optimizer.lr, optimizer.beta2, optimizer.momentum)")
    form = "{min: a, max: b} with 0 < a < b (searched on a log scale), or {min: a, max: b, scale: linear}"
    if not isinstance(value, dict) or not {"min", "max"} <= set(value) or set(value) - {"min", "max", "scale"}:
        raise ValueError(f"tune.{key}={value!r} is not a range; allowed: {form}")
    low, high, scale = value["min"], value["max"], value.get("scale", "log")
    if scale not in SCALES:
        raise ValueError(f"tune.{key}.scale={scale!r} is not known; allowed: {', '.join(SCALES)}")
    if not (_number(low) and _number(high) and low < high and (scale == "linear" or low > 0)):
        raise ValueError(f"tune.{key}: min={low!r}, max={high!r} is not a range; allowed: {form}")
    return Axis(key, float(low), float(high), scale == "log")
