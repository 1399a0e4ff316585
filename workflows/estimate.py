"""What a sweep will cost and what varies across its cells: `validate` and `run --dry-run`.

The cost of a cell is workflows/packing.estimated_seconds: a rough estimate of the engine's time
if every seed ran to its budget, from per-step costs measured on the synthetic saddles. It is not
a bound: most cells stop early (the quick sweep's cells took about a tenth of it), but a built-in
adam cell that runs to its budget took 1.02x it, and kinds of step it does not model
(packing.unmodelled_kinds) take many times longer; those are counted and named. The seed-steps
are a bound (every seed to its budget). The wall time spreads the cells over the workers longest
first, as the runner's packing does, and adds the fixed cost of a Ray run (a few seconds).
"""
from __future__ import annotations

import math

import pandas as pd

from .core.rows import flatten_cell
from .core.suggest import count
from .packing import estimated_seconds, longest_first, unmodelled_kinds

RAY_FIXED_SECONDS = 6.0            # Ray's start + Tune's worker start, measured on 2 cores (README)
ABSURD_SEED_STEPS = 1e12
ABSURD_SECONDS = 86_400.0          # a day
ALWAYS_SHOWN = ("problem.name", "optimizer.name", "seeds", "budget")


def wall_seconds(cells: list[dict], workers: int, backend: str = "ray") -> float:
    """Estimated wall time of `cells` on `workers` (longest first onto the least loaded), seconds;
    see the module's docstring for what it leaves out."""
    if not cells:
        return 0.0
    if backend == "local":
        workers = 1
    costs = [estimated_seconds(c) for c in cells]
    busiest = max(sum(costs[i] for i in b) for b in longest_first(costs, min(workers, len(cells))))
    return busiest + (RAY_FIXED_SECONDS if backend == "ray" else 0.0)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.3g} days"


def warning(name: str, cells: list[dict], seed_steps: int, workers: int, backend: str = "ray") -> str | None:
    """One line when a sweep's work is absurd (over 1e12 seed-steps, or over a day of wall time
    on `workers`; the local backend runs one cell at a time)."""
    workers = 1 if backend == "local" else workers
    seconds = wall_seconds(cells, workers, backend)
    if seed_steps > ABSURD_SEED_STEPS or seconds > ABSURD_SECONDS:
        return (f"sweep {name!r}: up to {seed_steps:.2e} seed-steps, about {duration(seconds)} on {count(workers, 'worker')}; "
                "is that meant? (fewer seeds, a smaller budget or fewer cells)")
    return None


def varying_table(cells: list[dict], stored: set[str] | None = None, ids: list[str] | None = None,
                  limit: int = 40) -> tuple[list[str], list[str]]:
    """(the settings every cell shares, among the usual ones; the table of what varies, as lines).
    `stored`/`ids`: cell ids already stored, and each cell's id, for a `stored` column.
    One pass over the cells, keeping each column's first value (per component name) and the first
    `limit` cells: a frame of every cell's columns took 1 GB and 18 s at 10⁵ cells."""
    firsts: dict[tuple, str] = {}
    columns: dict[str, None] = {}          # in the order they first appear
    varying: set[str] = set()
    shown = []
    for i, cell in enumerate(cells):
        flat = flatten_cell(cell)
        if i < limit:
            shown.append(flat)
        for column, value in flat.items():
            columns.setdefault(column)
            if column in varying:
                continue
            # A component's field varies when it takes two values for one component name: beta2
            # present for adam and absent for sgd is the optimizer varying, not beta2.
            family = column.split(".", 1)[0]
            group = flat.get(f"{family}.name") if family in ("problem", "optimizer") and column != f"{family}.name" \
                else None
            text = str(value)
            if firsts.setdefault((column, group), text) != text:
                varying.add(column)
    ordered = [c for c in columns if c in varying]
    first = shown[0] if shown else {}
    fixed = [f"{c}={first[c]}" for c in ALWAYS_SHOWN if c in first and c not in varying]
    frame = pd.DataFrame(shown, columns=list(columns))
    table = frame[ordered].copy() if ordered else pd.DataFrame(index=frame.index)
    table = table.astype(object).where(table.notna(), "-")
    if stored is not None and ids is not None:
        table["stored"] = ["yes" if i in stored else "no" for i in ids[:limit]]
    table.insert(0, "#", range(1, len(frame) + 1))
    lines = table.to_string(index=False, float_format=lambda v: f"{v:.6g}").splitlines()
    if len(cells) > limit:
        lines.append(f"... and {count(len(cells) - limit, 'more cell', 'more cells')}")
    return fixed, lines


def seed_steps(cells: list[dict]) -> int:
    return sum(c["seeds"] * c["budget"] for c in cells)


def engine_seconds(cells: list[dict]) -> float:
    return math.fsum(estimated_seconds(c) for c in cells)


def unmodelled(cells: list[dict]) -> str:
    """'' when the estimate models every cell's kind of step, else a note naming how many do not
    and which problems and optimizers they use."""
    per_cell = [unmodelled_kinds(c) for c in cells]
    others = sum(1 for k in per_cell if k)
    if not others:
        return ""
    kinds = sorted({kind for k in per_cell for kind in k})
    shown = ", ".join(kinds[:4]) + (f" and {len(kinds) - 4} more" if len(kinds) > 4 else "")
    of = f"{others} of the {len(cells)} cells are" if len(cells) > 1 else "the cell is"
    return (f"{of} of kinds the time estimate does not model "
            f"({shown}): they can take many times longer")
