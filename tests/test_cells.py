"""A cell is made once where it enters (workflows/cell.py: make_cell) and passed on: normalised and
hashed once on its way from the sweep to the store, read-only after, and the same id whoever asks."""
import pickle

import pytest

import workflows.cell as cell_module
from workflows import run_sweep
from workflows.cell import Cell, cell_id, make_cell, normalize_cell

SWEEP = {"parameters": {"problem": {"value": {"name": "quadratic_saddle", "dim": 2}},
                        "optimizer.name": {"values": ["sgd", "adam"]}, "optimizer.lr": {"values": [0.01, 0.1]},
                        "seeds": 4, "budget": 50, "cnc_samples": 0}}


def test_a_sweeps_cells_are_normalised_and_hashed_once_each(tmp_path, monkeypatch):
    """quick's 84 cells cost 504 normalisations and 336 hashes before: 6 and 4 per cell."""
    calls = {"normalize": 0, "hash": 0}
    normalize, digest = cell_module.normalize_cell, cell_module._hash

    def counted_normalize(cell, memo=None):
        calls["normalize"] += not isinstance(cell, Cell)
        return normalize(cell, memo)

    def counted_hash(cell, memo=None):
        calls["hash"] += 1
        return digest(cell, memo)

    monkeypatch.setattr(cell_module, "normalize_cell", counted_normalize)
    monkeypatch.setattr(cell_module, "_hash", counted_hash)
    result = run_sweep(SWEEP, "once", storage=tmp_path, backend="local")
    assert result.counts["done"] == 4
    assert calls == {"normalize": 4, "hash": 4}, calls


def test_a_cell_knows_its_id_and_columns_and_cannot_change():
    spec = {"problem": {"name": "quadratic_saddle", "dim": 2}, "optimizer": {"name": "sgd"}, "seeds": 4}
    cell = make_cell(spec)
    assert cell.id == cell_id(spec) == cell_id(cell) and normalize_cell(cell) is cell and make_cell(cell) is cell
    assert cell.columns["problem.dim"] == 2 and cell.columns["base_seed"] == 0 and "seed" not in cell.columns
    with pytest.raises(TypeError, match="read-only"):
        cell["seeds"] = 8
    again = pickle.loads(pickle.dumps(cell))               # as Ray ships it to a worker
    assert isinstance(again, Cell) and again == cell and again.id == cell.id
    assert make_cell({**cell, "seeds": 8}).id != cell.id   # another cell is made from a copy
