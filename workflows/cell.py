"""A cell: one (problem, optimizer, run settings) point of a sweep, as plain data.

    {"problem": {"name": "quadratic_saddle", "dim": 10, "anisotropy": 100},
     "optimizer": {"name": "adam", "lr": 1e-3, "beta1": 0.0, "beta2": 0.999},
     "seeds": 256, "seed": 0, "budget": 20000}

A cell is made once, where it enters (`make_cell`: the sweep's expansion, or `simulate` given a
plain dict): every default filled in, every value checked, hashed into the `cell_id` its results
are stored and resumed under (two spellings of one experiment get the same id), and flattened
into the columns its rows carry. The result, a `Cell`, is that dict, read-only, with `.id` and
`.columns`; nothing downstream normalises or hashes it again (`normalize_cell` and `cell_id`
return what it holds).
"""
from __future__ import annotations

import functools
import hashlib
import json

from .core.params import resolve
from .core.rows import flatten_cell
from .core.saddles import SYNTHETIC_SADDLES
from .core.settings import RUN_SCHEMA
from .registry import get_optimizer, get_problem, make_problem, validate_optimizer, validate_problem

CELL_KEYS = ("problem", "optimizer", *RUN_SCHEMA)


class Cell(dict):
    """A normalised cell (problem, optimizer, run settings) that knows its `id` and its row
    `columns`. A dict for everything that reads one (JSON, the engine, the analysis's tables), and
    read-only: a changed cell would no longer be the one its id names."""

    __slots__ = ("id", "_columns")

    def __init__(self, normalised: dict, key: str):
        super().__init__(normalised)
        self.id, self._columns = key, None

    @property
    def columns(self) -> dict:
        """The columns the cell gives each of its rows (core.rows.flatten_cell), made on first use:
        the engine reads them; a driver holding 10⁵ cells does not (2 KB a cell)."""
        if self._columns is None:
            self._columns = flatten_cell(self)
        return self._columns

    def __reduce__(self):                     # pickled to Ray's workers with its id
        return Cell, (dict(self), self.id)

    def _read_only(self, *args, **kwargs):
        raise TypeError(f"cell {self.id} is read-only; allowed: make_cell({{**cell, ...}}) for another cell")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _read_only


def make_cell(cell: dict, memo: dict | None = None) -> Cell:
    """The cell a spec describes, made once: normalised (`normalize_cell`) and hashed (`cell_id`).
    A Cell given is returned as it is. Raises ValueError (one line) for a spec that is not one.
    `memo`: a dict kept across the cells of one expansion, where cells share their problem's and
    optimizer's mappings (the same objects): each is then checked and hashed once, and the cells
    share the normalised mapping (a grid's cells differ in a few values)."""
    if isinstance(cell, Cell):
        return cell
    normalised = normalize_cell(cell, memo)
    return Cell(normalised, _hash(normalised, memo))


def normalize_cell(cell: dict, memo: dict | None = None) -> dict:
    """{problem, optimizer, run settings} with every default filled in and every value checked (a
    Cell is normalised already). Raises ValueError (one line)."""
    if isinstance(cell, Cell):
        return cell
    if not isinstance(cell, dict):
        raise ValueError(f"cell={cell!r} is not a mapping; allowed: a dict with keys {', '.join(CELL_KEYS)}")
    for key in ("problem", "optimizer"):
        if not isinstance(cell.get(key), dict):
            raise ValueError(f"cell: {key}={cell.get(key)!r} is not a mapping; allowed: "
                             f"{{name: ..., parameters...}}")
    run = {k: v for k, v in cell.items() if k not in ("problem", "optimizer")}
    out = {"problem": _once(memo, cell["problem"], validate_problem),
           "optimizer": _once(memo, cell["optimizer"], validate_optimizer), **resolve("cell", RUN_SCHEMA, run)}
    for key, ok, allowed in CELL_LIMITS:
        if not ok(out):
            raise ValueError(f"cell: {key}={out[key]!r} is not allowed here; allowed: {allowed}")
    # A component's own check of the whole cell: the torch.optim adapter steps the class in the
    # cell's dtype and refuses what the engine cannot step (optimizers/torch_adapter.py); a class
    # that reads second derivatives then needs a loss autograd can differentiate twice.
    check = get_optimizer(out["optimizer"]["name"]).extra.get("check_cell")
    if check is not None and getattr(check(out["optimizer"], out), "second_order", False):
        differentiable_twice(out["optimizer"]["name"], json.dumps(out["problem"], sort_keys=True), out["dtype"])
    return out


@functools.lru_cache(maxsize=256)
def differentiable_twice(optimizer: str, problem_json: str, dtype: str):
    """Refuse (one line) a problem whose loss autograd cannot differentiate twice, for an optimizer
    that reads second derivatives (Hessian-vector products through the gradient's graph): it would
    get none. The problem is built once per spec and tried near its saddle."""
    import torch


    spec = json.loads(problem_json)
    problem = make_problem(spec, seed=0, dtype=getattr(torch, dtype))
    x = (problem.saddle + 1e-3).detach()[None].clone().requires_grad_(True)
    why = "its second derivative is not finite"
    try:
        with torch.enable_grad():
            (g,) = torch.autograd.grad(problem.loss(x).sum(), x, create_graph=True)
            (h,) = torch.autograd.grad(g.sum(), x)
        ok = bool(torch.isfinite(h).all())
    except Exception as error:                      # noqa: BLE001 - reported in the refusal
        ok, why = False, f"{type(error).__name__}: {' '.join(str(error).split())}"
    if not ok:
        raise ValueError(f"optimizer {optimizer}: its step reads second derivatives (Hessian-vector products), "
                         f"but problem {spec['name']}'s loss cannot be differentiated twice by autograd ({why}); "
                         "allowed: a first-order optimizer on this problem")


# The preconditioner's tracking error needs E[g²|x] in closed form, (∇f)² + diag Σ with Σ fixed,
# and a second-moment estimate v to compare with it.
TRACKED_OPTIMIZERS, TRACKED_PROBLEMS = ("rmsprop", "adam", "amsgrad"), SYNTHETIC_SADDLES
CELL_LIMITS = (
    ("tracking_error", lambda c: not c["tracking_error"] or (c["optimizer"]["name"] in TRACKED_OPTIMIZERS
                                                             and c["problem"]["name"] in TRACKED_PROBLEMS
                                                             and c["sosp_epsilon"] == 0),
     f"true only for optimizers {', '.join(TRACKED_OPTIMIZERS)} on problems {', '.join(TRACKED_PROBLEMS)}, "
     "without sosp_epsilon"),
    ("gap_epsilon", lambda c: not c["gap_epsilon"] or c["problem"]["name"] != "quadratic_saddle"
     or c["problem"]["quartic"] > 0,
     "0 on quadratic_saddle without a quartic (no minimum: f − f_min is undefined)"),
)


def cell_id(cell: dict) -> str:
    """Hash of the normalised cell: what a result is stored under (a Cell's own `id`)."""
    return cell.id if isinstance(cell, Cell) else _hash(normalize_cell(cell))


def _once(memo: dict | None, given: dict, validate, what: str = "valid"):
    """validate(given), once per mapping object of an expansion (`memo`; the object is kept there
    with its result, so its id cannot be reused while the memo lives)."""
    if memo is None:
        return validate(given)
    key = (what, id(given))
    if key not in memo:
        memo[key] = (given, validate(given))
    return memo[key][1]


def _hash(cell: dict, memo: dict | None = None) -> str:
    """A parameter added after cells were first stored (Param.hashed_at_default = False) enters the
    hash only away from its default, so every cell stored before keeps its id. The text hashed is
    json.dumps of the whole cell with sorted keys, written out key by key so that the problem's
    and the optimizer's parts, shared by many cells, are written once (`memo`)."""
    run = _hashed({k: v for k, v in cell.items() if k not in ("problem", "optimizer")}, RUN_SCHEMA)
    # Written with 0 for both components, then each 0 replaced by the component's text: a key
    # followed by ':0' occurs nowhere else in JSON (a quote inside a string is escaped).
    text = _dumps({**run, "problem": 0, "optimizer": 0})
    for kind, get in (("problem", get_problem), ("optimizer", get_optimizer)):
        part = _once(memo, cell[kind], lambda part, get=get: _dumps(_hashed(part, get(part["name"]).schema)), "hash")
        text = text.replace(f'"{kind}":0', f'"{kind}":{part}', 1)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dumps(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _hashed(values: dict, schema: dict) -> dict:
    return {k: v for k, v in values.items()
            if k not in schema or schema[k].hashed_at_default or v != schema[k].default}


