"""Sweeps of saddle-escape experiments: cells, the engine, the Ray Tune runner, the store, the CLI,
and the Python API.

    from workflows import run_sweep, simulate

Importing this package imports nothing heavy: `workflows.core.params`, `workflows.registry` and
`workflows.core.rows` are shared ground that problems, optimizers and the analysis import on their
own; the engine (torch) and the runner (Ray) load when first used.
"""
from __future__ import annotations

import importlib

_LAZY = {"cell_id": ".cell", "normalize_cell": ".cell", "simulate": ".engine", "simulate_cell": ".engine",
         "run_sweep": ".api", "SweepResult": ".api"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
