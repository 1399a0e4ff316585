"""A cell: one (problem, optimizer, run settings) point of a sweep, as plain data.

    {"problem": {"name": "quadratic_saddle", "dim": 10, "anisotropy": 100},
     "optimizer": {"name": "adam", "lr": 1e-3, "beta1": 0.0, "beta2": 0.999},
     "seeds": 256, "seed": 0, "budget": 20000}

`normalize_cell` fills every default and checks every value, so two spellings of the same
experiment get the same `cell_id` (the key results are stored and resumed under).
"""
from __future__ import annotations

import hashlib
import json

from optimizers import validate_optimizer
from problems import validate_problem
from problems.params import Param, at_least, choice, non_negative, positive, resolve

RUN_SCHEMA = {
    "seeds": Param(256, int, ">= 1", at_least(1), "independent runs, simulated as one batch"),
    "seed": Param(0, int, ">= 0", non_negative, "fixes the problem's randomness and the noise stream"),
    "budget": Param(10_000, int, ">= 1", at_least(1), "steps; runs not escaped by then are censored"),
    "start_offset": Param(0.0, float, ">= 0", non_negative,
                          "start at distance start_offset from the saddle, in a random direction"),
    "run_to_budget": Param(False, bool, "true or false",
                           doc="keep escaped runs going to the budget (post-escape behaviour)"),
    "trace_points": Param(0, int, ">= 0", non_negative,
                          "record every run's loss at this many log-spaced steps; 0: no trace"),
    "tail_steps": Param(0, int, ">= 0", non_negative,
                        "loss statistics over the last tail_steps steps (the neighbourhood reached)"),
    "divergence_radius": Param(1e6, float, "> 0", positive,
                               "a run farther than this from the saddle (or non-finite) has diverged"),
    "dtype": choice("float32", "float32", "float64"),
    "sosp_epsilon": Param(0.0, float, ">= 0", non_negative,
                          "track the first (ε, √(ρε))-second-order stationary point, ‖∇f‖ ≤ ε and "
                          "λ_min(∇²f) ≥ −√(ρε); 0: off"),
    "sosp_rho": Param(1.0, float, "> 0", positive, "ρ, the Hessian-Lipschitz constant in √(ρε)"),
    "sosp_every": Param(10, int, ">= 1", at_least(1), "test for the SOSP every k steps (and at step 0)"),
    "sosp_method": choice("auto", "auto", "exact", "lanczos",
                          doc="λ_min by a dense eigvalsh (exact), Lanczos on Hessian-vector products, "
                              "or exact up to d = 64 (auto)"),
    "cnc_samples": Param(4096, int, ">= 0", non_negative,
                         "stochastic gradients at the saddle for cnc_constant = E[(vᵀg)²]; 0: off"),
    "inject_fault": choice("none", "none", "raise",
                           doc="testing only: raise inside the engine after the first block"),
}
CELL_KEYS = ("problem", "optimizer", *RUN_SCHEMA)
# Run settings added after cells were first stored: hashed only when not at their default, so
# every cell that existed before keeps its cell_id.
LATER_KEYS = ("sosp_epsilon", "sosp_rho", "sosp_every", "sosp_method", "cnc_samples")


def normalize_cell(cell: dict) -> dict:
    if not isinstance(cell, dict):
        raise ValueError(f"cell={cell!r} is not a mapping; allowed: a dict with keys {', '.join(CELL_KEYS)}")
    for key in ("problem", "optimizer"):
        if not isinstance(cell.get(key), dict):
            raise ValueError(f"cell: {key}={cell.get(key)!r} is not a mapping; allowed: "
                             f"{{name: ..., parameters...}}")
    run = {k: v for k, v in cell.items() if k not in ("problem", "optimizer")}
    return {"problem": validate_problem(cell["problem"]),
            "optimizer": validate_optimizer(cell["optimizer"]),
            **resolve("cell", RUN_SCHEMA, run)}


def cell_id(cell: dict) -> str:
    """Hash of the normalised cell: what a result is stored under."""
    cell = normalize_cell(cell)
    hashed = {k: v for k, v in cell.items() if k not in LATER_KEYS or v != RUN_SCHEMA[k].default}
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten_cell(cell: dict) -> dict:
    """Columns of a results row: problem.*, optimizer.*, then the run settings.
    The cell's `seed` becomes `base_seed`, since each row's `seed` is its run index."""
    flat = {f"problem.{k}": v for k, v in cell["problem"].items()}
    flat.update({f"optimizer.{k}": v for k, v in cell["optimizer"].items()})
    flat.update({("base_seed" if k == "seed" else k): v for k, v in cell.items()
                 if k not in ("problem", "optimizer")})
    return flat
