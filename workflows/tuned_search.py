"""A tuned sweep's searches, driven by what the results folder holds: one coarse-to-fine search
per group (workflows/tuned_design.py), each point a cell, then each group's fresh-seed cells.

Either backend drives it the same way: `take()` the next cell to compute, compute and store it,
`complete(cell_id)` (or `fail(cell_id)`); `finished` once every group has its fresh-seed cells.
The local backend does that in a loop (`run_here`); on Ray, Tune's Searcher interface does it
(workflows/tune_runner.py: SearchCells), the cells of a group's round running in parallel.
A group's next round is asked for only once every point of its round is scored, from the stored
rows, so the points searched and the choice made do not depend on the backend, the number of
workers or the order in which trials finish.

Resume: a point whose cell is stored is scored from its stored rows and never handed out, so an
interrupted search replays up to where it stopped and computes only what is missing. A cell that
failed (after its retries) scores as never reaching the target, and stays failed in the tables.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pandas as pd

from . import progress
from .cell import Cell
from .core.tuning import at_edge, neighbours, score, target_times
from .blocks import BlockWriter, block_prefix
from .local_runner import compute, trial_threads
from .store import Store
from .tuned_design import Group, TunedDesign

TUNE, FRESH = "tune", "fresh"


@dataclass
class _Group:
    group: Group
    search: object                                     # core.tuning.CoarseToFine
    scores: dict = field(default_factory=dict)         # point -> score (lower is better)
    rounds: dict = field(default_factory=dict)         # point -> the round that asked for it
    batch: list = field(default_factory=list)          # the points of the current round
    best: tuple | None = None
    fresh: list = field(default_factory=list)          # the best point, then its neighbours
    done: bool = False


class TunedSearch:
    """The searches of `design`'s groups over `store` (see the module's docstring)."""

    def __init__(self, design: TunedDesign, store: Store):
        self.design, self.store, self.spec = design, store, design.spec
        self.groups = [_Group(g, self.spec.search()) for g in design.groups]
        self.cells: dict[str, Cell] = {}               # every cell handed out or replayed, in order
        self.in_flight: set[str] = set()
        self.failed: set[str] = set()
        self._stored: set[str] = set()
        self._missing: set[str] = set()
        self._scores: dict[str, float] = {}            # cell_id -> score, read once
        self._index = None                             # the store's index, read when first needed
        for g in self.groups:
            self._advance(g)

    # --- driven by a runner ------------------------------------------------------------------
    def pending(self) -> list[Cell]:
        """The cells to compute now: every group's current round (or fresh-seed cells) not stored,
        not failed and not in flight."""
        return [c for c in self._wanted() if c.id not in self.in_flight]

    def take(self) -> Cell | None:
        """The next cell to compute, now counted as in flight; None where every cell wanted now is
        in flight (or the search is finished)."""
        for cell in self.pending():
            self.in_flight.add(cell.id)
            return cell
        return None

    def complete(self, cell_id: str):
        """The cell is stored: score it and move its group on."""
        self.in_flight.discard(cell_id)
        self._missing.discard(cell_id)
        self._stored.add(cell_id)
        self._advance_all()

    def fail(self, cell_id: str):
        """The cell failed after its retries: its point scores as never reaching the target."""
        self.in_flight.discard(cell_id)
        self.failed.add(cell_id)
        self._advance_all()

    @property
    def finished(self) -> bool:
        return all(g.done for g in self.groups) and not self.in_flight

    def left_at_most(self) -> int:
        """Cells still to compute, at most (every group spending its trials and fresh-seed cells)."""
        return max(0, self.design.upper_bound() - len(self._stored & self.cells.keys()) - len(self.failed))

    # --- what it found ---------------------------------------------------------------------
    def ordered(self) -> dict[str, Cell]:
        """{cell_id: cell} of every cell reached, group by group: its points in the order searched,
        then its fresh-seed cells (the order of the tables)."""
        out = {}
        for g in self.groups:
            for point in g.rounds:
                cell = self.design.cell(g.group.index, point)
                out.setdefault(cell.id, cell)
            for point in g.fresh:
                cell = self.design.fresh_cell(g.group.index, point)
                out.setdefault(cell.id, cell)
        return out

    def table(self) -> pd.DataFrame:
        """One row per (group, cell): tuning.parquet. `role` tune or fresh, the tuned values under
        their keys, the search's `round` and `score` (tune), whether the point is the group's `best`
        and `at_edge` of its range (tuned keys, comma-separated)."""
        rows = []
        for g in self.groups:
            common = {"group": g.group.index, "variant": g.group.variant, "setting": g.group.setting}
            for point, round_ in g.rounds.items():
                rows.append({**common, "role": TUNE, "cell_id": self.design.cell(g.group.index, point).id,
                             **dict(zip(self.spec.keys, point)), "round": round_,
                             "score": g.scores.get(point, math.nan), "best": point == g.best,
                             "at_edge": ",".join(at_edge(self.spec.axes, point))})
            for point in g.fresh:
                rows.append({**common, "role": FRESH, "cell_id": self.design.fresh_cell(g.group.index, point).id,
                             **dict(zip(self.spec.keys, point)), "round": -1, "score": math.nan,
                             "best": point == g.best, "at_edge": ",".join(at_edge(self.spec.axes, point))})
        return pd.DataFrame(rows)

    def stored_members(self) -> dict[str, Cell]:
        """{cell_id: cell} of the cells the stored tuning.parquet lists that this design makes at
        the same group, point and role (an earlier run of the same search)."""
        try:
            stored = self.store.read_table("tuning.parquet")
        except (FileNotFoundError, OSError):
            return {}
        out = {}
        for row in stored.itertuples(index=False):
            row = dict(zip(stored.columns, row))
            point = tuple(row.get(k) for k in self.spec.keys)
            if not 0 <= row["group"] < len(self.groups) or any(pd.isna(v) for v in point):
                continue
            make = self.design.cell if row["role"] == TUNE else self.design.fresh_cell
            try:
                cell = make(int(row["group"]), point)
            except ValueError:
                continue
            if cell.id == row["cell_id"]:
                out[cell.id] = cell
        return out

    def summary(self) -> list[str]:
        """One line per group: its best point, whether at the range's edge, its trials."""
        lines = []
        for g in self.groups:
            if g.best is None:
                lines.append(f"  {g.group.label}: searching ({len(g.scores)} of {self.spec.trials} trials scored)")
                continue
            point = ", ".join(f"{k.split('.', 1)[1]}={v:g}" for k, v in zip(self.spec.keys, g.best))
            edge = at_edge(self.spec.axes, g.best)
            lines.append(f"  {g.group.label}: best {point} of {len(g.scores)} trials"
                         + (f" (at the edge of the range: {', '.join(edge)})" if edge else ""))
        return lines

    # --- the searches ------------------------------------------------------------------------
    def _wanted(self) -> list[Cell]:
        out = {}
        for g in self.groups:
            if g.done:
                continue
            cells = ([self.design.fresh_cell(g.group.index, p) for p in g.fresh] if g.best is not None else
                     [self.design.cell(g.group.index, p) for p in g.batch if p not in g.scores])
            for cell in cells:
                if cell.id not in self.failed and not self._is_stored(cell):
                    out.setdefault(cell.id, cell)
        return list(out.values())

    def _advance_all(self):
        for g in self.groups:
            self._advance(g)

    def _advance(self, g: _Group):
        """Score what is stored of the group's round; while the round is complete, ask for the
        next; once the search is spent, the best point and its neighbours on the fresh seed."""
        while not g.done:
            if g.best is not None:
                cells = [self.design.fresh_cell(g.group.index, p) for p in g.fresh]
                g.done = all(c.id in self.failed or self._is_stored(c) for c in cells)
                return
            for point in g.batch:
                cell = self.design.cell(g.group.index, point)
                if point not in g.scores and (cell.id in self.failed or self._is_stored(cell)):
                    g.scores[point] = self._score(cell)
            if any(p not in g.scores for p in g.batch):
                return
            batch = g.search.next_batch(g.scores)
            if not batch:
                g.best = g.search.best(g.scores)
                g.fresh = [g.best, *neighbours(g.best, g.scores)]
                self._add([self.design.fresh_cell(g.group.index, p) for p in g.fresh])
                continue
            round_ = max(g.rounds.values(), default=-1) + 1
            g.rounds.update({p: round_ for p in batch})
            g.batch = batch
            self._add([self.design.cell(g.group.index, p) for p in batch])

    def _add(self, cells):
        for cell in cells:
            self.cells.setdefault(cell.id, cell)

    def stored_now(self, cell_id: str) -> bool:
        """Whether the cell is stored whole now (the store's index read afresh: a trial just ended)."""
        self._index = None
        return self._is_whole(self.cells[cell_id])

    def index(self):
        """The store's index as the search last read it (read now if it has not been)."""
        if self._index is None:
            self._index = self.store.index()
        return self._index

    def _is_whole(self, cell: Cell) -> bool:
        index = self.index()
        return cell.id in index and index.seeds(cell.id) == cell["seeds"]

    def _is_stored(self, cell: Cell) -> bool:
        if cell.id in self._stored:
            return True
        if cell.id in self._missing:
            return False
        stored = self._is_whole(cell)
        (self._stored if stored else self._missing).add(cell.id)
        return stored

    def _score(self, cell: Cell) -> float:
        if cell.id in self.failed:
            return math.inf
        if cell.id not in self._scores:
            if self._index is None or cell.id not in self._index:
                self._index = self.store.index()         # written since the index was read
            rows, _ = self.store.read_cell(cell.id, self._index)
            times, reached = target_times(rows, self.spec.target, cell["budget"])
            self._scores[cell.id] = score(times, reached, cell["budget"], self.spec.statistic)
        return self._scores[cell.id]


def run_here(search: TunedSearch, *, run: str, max_failures: int = 2, echo=print, every: float = 2.0,
             on_cell=None) -> float:
    """The search in this process (the local backend), one cell after another on TRIAL_THREADS
    torch threads; a cell that raises is retried up to `max_failures` times, then counted failed.
    Each cell is written (a block of its own, named after `run`) before the search scores it.
    Returns the summed engine seconds. `on_cell(cell_id)`: told of each cell once it is stored."""
    start, last, engine, finished, first_at = time.monotonic(), 0.0, 0.0, 0, None
    with trial_threads(), BlockWriter(search.store, block_prefix(run, "search")) as writer:
        while (cell := search.take()) is not None:
            for _attempt in range(max_failures + 1):
                outcome = compute(cell, search.store, writer)
                if outcome.error is None:
                    break
            writer.flush()                             # stored before it is scored
            if outcome.error is None:
                search.complete(cell.id)
                if on_cell is not None:
                    on_cell(cell.id)
            else:
                search.fail(cell.id)
            engine += outcome.engine_seconds
            finished += 1
            now = time.monotonic()
            first_at = now - start if first_at is None else first_at
            if now - last >= every or search.finished:
                last = now
                total = finished if search.finished else finished + search.left_at_most()
                echo(progress.line(finished, total, now - start, first_at) + ("" if search.finished else " (at most)"))
    return engine
