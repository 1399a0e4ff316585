"""saddlescape's public API: sweeps of saddle-escape experiments from Python.

    from workflows import run_sweep, define_problem, register_problem, Param

    result = run_sweep("sweeps.yaml", "quick", backend="local")
    result.rows, result.cells, result.analyze()

Importing this package imports nothing heavy: each name loads its module when first used (torch,
Ray and the analysis's libraries take seconds). The layers behind it are in docs/architecture.md.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the module it lives in (relative to this package, or absolute).
_PUBLIC = {
    # running sweeps
    "run_sweep": ".api", "SweepResult": ".api", "SweepError": ".spec", "SweepInterrupted": ".interrupt",
    "simulate": ".engine", "simulate_cell": ".engine", "cell_id": ".cell", "normalize_cell": ".cell",
    # bringing problems and optimizers
    "register_problem": ".registry", "register_optimizer": ".registry", "get_problem": ".registry",
    "get_optimizer": ".registry", "make_problem": ".registry", "make_optimizer": ".registry",
    "define_problem": "problems.from_loss", "Landscape": "problems.from_loss", "GaussianNoise": "problems.from_loss",
    "Minibatches": "problems.from_loss", "Problem": "problems.base", "Optimizer": "optimizers.base",
    # parameters of problems and optimizers
    "Param": ".core.params", "choice": ".core.params", "positive": ".core.params", "non_negative": ".core.params",
    "at_least": ".core.params", "unit_open": ".core.params", "unit_closed": ".core.params",
    # the analysis of a results table
    "analyze": "analysis",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:                  # what type checkers and IDEs see; at run time, __getattr__ loads them
    from analysis import analyze
    from optimizers.base import Optimizer
    from problems.base import Problem
    from problems.from_loss import GaussianNoise, Landscape, Minibatches, define_problem

    from .api import SweepResult, run_sweep
    from .cell import cell_id, normalize_cell
    from .core.params import Param, at_least, choice, non_negative, positive, unit_closed, unit_open
    from .engine import simulate, simulate_cell
    from .interrupt import SweepInterrupted
    from .registry import get_optimizer, get_problem, make_optimizer, make_problem, register_optimizer, register_problem
    from .spec import SweepError


def __getattr__(name):
    if name in _PUBLIC:
        module = _PUBLIC[name]
        value = getattr(importlib.import_module(module, __name__ if module.startswith(".") else None), name)
        globals()[name] = value            # once: later lookups do not come here
        return value
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
