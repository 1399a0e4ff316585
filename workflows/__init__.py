"""Sweeps of saddle-escape experiments: cells, the engine, the Ray Tune runner, the store, the CLI.
Importing this package does not import Ray: the engine runs without it."""
from .cell import cell_id, normalize_cell
from .engine import simulate, simulate_cell

__all__ = ["cell_id", "normalize_cell", "simulate", "simulate_cell"]
