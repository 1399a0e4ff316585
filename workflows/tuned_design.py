"""A tuned sweep's design: which comparisons it makes and the cells of each tuned point.

A sweep with a `tune:` block (workflows/core/tuning.py: TuneSpec) compares its optimizer
variants, each tuned for the question. Its grid without the tuned keys gives the **groups**: one
per (variant, setting), where the variants are the sweep's optimizer values (an optimizer with a
grid of its own, adam's beta1: {values: [0, 0.9]}, is one variant per value) and a setting is
every other parameter combination (problem, its parameters, the run settings). Each group is
tuned on its own: a point (a value per tuned key) is a cell, made by the same expansion as any
grid with the tuned keys as the top layer (as command-line overrides are), so a rule such as
beta2: {rule: paper} follows the tuned step size. A group is its position in that expansion,
which the tuned keys never change (they are single values, and no variant writes one).

Fresh-seed cells: a point's cell at another base seed (`fresh_seed`, default the tuning seed + 1;
runs `fresh_seeds`, default the cell's `seeds`). The engine draws a cell's noise, and a problem's
random instance where it has one (matrix factorization's target, a digits subset), from its base
seed alone, so these runs share nothing with the tuning runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .cell import Cell, make_cell
from .core.rows import flatten_cell
from .core.tuning import TARGETS, TuneSpec


@dataclass(frozen=True)
class Group:
    """One comparison's tuning: `index` (its position in the grid's expansion), the `variant` it
    tunes (as the report labels it: 'adam (beta1=0.9)') and its `setting` ('anisotropy=100'; ''
    where the sweep has one)."""
    index: int
    variant: str
    setting: str

    @property
    def label(self) -> str:
        return f"{self.variant}, {self.setting}" if self.setting else self.variant


class TunedDesign:
    """The groups of a tuned sweep and the cells of its points. `expand(point)`: the raw cells of
    the sweep's grid with the tuned keys set to `point` ({key: value}), in the grid's order.
    Raises ValueError (one line) where the sweep cannot be tuned as asked."""

    def __init__(self, spec: TuneSpec, expand: Callable[[dict], list[dict]], seed: int):
        self.spec, self._expand, self._cells = spec, expand, {}
        self.coarse = spec.search().first
        self.size = len(self._raw(self.coarse[0]))
        for point in self.coarse:              # every coarse point made and checked now: the range's ends among them
            self.cells_at(point)
        first = self.cells_at(self.coarse[0])
        self.fresh_seed = spec.fresh_seed if spec.fresh_seed is not None else seed + 1
        if self.fresh_seed == seed:
            raise ValueError(f"tune.fresh_seed={self.fresh_seed} is the tuning cells' seed; allowed: another base "
                             "seed, so that the verdict's runs share nothing with the runs that chose the setting")
        _, _, setting = TARGETS[spec.target]
        off = [c for c in first if setting and not c[setting]]
        if off:
            raise ValueError(f"tune.target={spec.target} needs {setting} > 0 in every cell, and a cell of "
                             f"{off[0]['optimizer']['name']} on {off[0]['problem']['name']} has {setting}=0; allowed: "
                             f"{setting}: <epsilon> among the sweep's parameters, or another target")
        self.groups = _groups(first, self.cells_at(self.coarse[-1]), spec.keys)

    def _raw(self, point: tuple) -> list[dict]:
        return self._expand(dict(zip(self.spec.keys, point)))

    def cells_at(self, point: tuple) -> list[Cell]:
        """Every group's cell at `point` (a value per tuned key, in the spec's order)."""
        point = tuple(point)
        if point not in self._cells:
            raw = self._raw(point)
            if len(raw) != self.size:            # the tuned keys changed the grid's shape: never by construction
                raise ValueError(f"tune: the grid has {len(raw)} cells at {point} and {self.size} at {self.coarse[0]}")
            cells = [make_cell(c) for c in raw]
            for cell in cells:
                for key, value in zip(self.spec.keys, point):
                    field = key.split(".", 1)[1]
                    if cell["optimizer"].get(field) != value:
                        raise ValueError(f"tune.{key}: {field} is not a hyperparameter of {cell['optimizer']['name']} "
                                         "(or the cell did not take the tuned value); allowed: keys every variant "
                                         "of the sweep takes")
            self._cells[point] = cells
        return self._cells[point]

    def cell(self, group: int, point: tuple) -> Cell:
        return self.cells_at(point)[group]

    def fresh_cell(self, group: int, point: tuple) -> Cell:
        """The point's cell on the fresh seed."""
        cell = self.cell(group, point)
        return make_cell({**cell, "seed": self.fresh_seed, "seeds": self.spec.fresh_seeds or cell["seeds"]})

    @property
    def coarse_cells(self) -> list[Cell]:
        """The cells of the search's first round, every group's: what is known before any result."""
        return [self.cell(g.index, p) for g in self.groups for p in self.coarse]

    def upper_bound(self) -> int:
        """Cells at most: every group's trials and its fresh-seed cells (the best and up to two
        neighbours per tuned key)."""
        return len(self.groups) * (self.spec.trials + 1 + 2 * len(self.spec.axes))

    def bound_cells(self) -> list[Cell]:
        """Stand-ins for the most cells the searches can ask for, for the estimates of work and
        time (which do not depend on the tuned values): each group's first cell once per trial,
        and its fresh-seed cell once per fresh cell it may get."""
        point = self.coarse[0]
        return [c for g in self.groups for c in [self.cell(g.index, point)] * self.spec.trials
                + [self.fresh_cell(g.index, point)] * (1 + 2 * len(self.spec.axes))]

    def describe(self) -> str:
        """One line: what is tuned, for what, how many groups and cells at most."""
        ranges = ", ".join(f"{a.key} {a.low:g} to {a.high:g}{'' if a.log else ' (linear)'}" for a in self.spec.axes)
        what = {"escape": "escape time", "gap": "time to f - f_min <= gap_epsilon",
                "sosp": "time to an (eps, sqrt(rho eps))-SOSP"}[self.spec.target]
        statistic = {"km_median": "KM median", "restricted_mean": "restricted mean"}[self.spec.statistic]
        return (f"tuned comparison: {len(self.groups)} variants and settings, each searching {ranges} for the "
                f"smallest {statistic} {what} in {self.spec.trials} trials, then its best point and neighbours on "
                f"seed {self.fresh_seed}: at most {self.upper_bound()} cells")


def _groups(first: list[Cell], last: list[Cell], tuned: list[str]) -> list[Group]:
    """Each position's variant and setting labels. A hyperparameter whose value moves with the
    tuned point (beta2 by the paper's rule) is the rule's, not the variant's."""
    flat = [flatten_cell(c) for c in first]
    moved = {k for a, b in zip(flat, (flatten_cell(c) for c in last)) for k in a if a.get(k) != b.get(k)}
    hidden = set(tuned) | moved
    names = [f["optimizer.name"] for f in flat]
    variant_keys = {name: [k for k in dict.fromkeys(k for f in flat if f["optimizer.name"] == name for k in f)
                           if k.startswith("optimizer.") and k not in hidden and k != "optimizer.name"
                           and len({str(f.get(k)) for f in flat if f["optimizer.name"] == name}) > 1]
                    for name in set(names)}
    setting_keys = [k for k in dict.fromkeys(k for f in flat for k in f)
                    if not k.startswith("optimizer.") and _setting_varies(flat, k)]
    out = []
    for i, f in enumerate(flat):
        own = variant_keys[f["optimizer.name"]]
        variant = f["optimizer.name"] + (" (" + ", ".join(f"{k.split('.', 1)[1]}={_text(f.get(k))}" for k in own)
                                         + ")" if own else "")
        # A problem's label names only its own parameters (matrix factorization's size is not deep
        # linear's), those that vary among the cells of some problem.
        setting = ", ".join(f"{'problem' if k == 'problem.name' else k.removeprefix('problem.')}={_text(f.get(k))}"
                            for k in setting_keys if f.get(k) is not None)
        out.append(Group(i, variant, setting))
    return out


def _setting_varies(flat: list[dict], key: str) -> bool:
    """Whether a setting takes two values: a problem's parameter among the cells of one problem
    (absent from another problem is not a value), anything else among all cells."""
    if key.startswith("problem.") and key != "problem.name":
        values: dict[str, set] = {}
        for f in flat:
            if f.get(key) is not None:
                values.setdefault(f["problem.name"], set()).add(str(f[key]))
        return any(len(v) > 1 for v in values.values())
    return len({str(f.get(key)) for f in flat}) > 1


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
