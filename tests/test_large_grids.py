"""Large grids (issue 25): driver work that must not grow faster than the sweep. Speed is measured
in `make bench` (benchmarks/grid_scale.py); these tests check the shape of the work, by counting
passes and allocations, never by timing."""
from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

from workflows import cli
from workflows.estimate import varying_table
from workflows.spec import load_sweeps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.grid_scale import sweep_yaml  # noqa: E402  the issue's grid, cut to a size


def grid(tmp_path, cells: int):
    path = tmp_path / "grid.yaml"
    path.write_text(sweep_yaml(cells))
    return load_sweeps(path, only="grid", max_cells=cells)["grid"]


class CountedCells(list):
    """The sweep's cells, counting the passes over them."""
    passes = 0

    def __iter__(self):
        CountedCells.passes += 1
        return super().__iter__()


class FailedStore:
    """A store whose every cell failed, plus one record of a cell that is no longer in the sweep."""

    def __init__(self, keys):
        self.records = {key: {"error": f"RuntimeError: cell {key}\ntraceback"} for key in keys}
        self.records["not-in-this-sweep"] = {"error": "RuntimeError: stale"}

    def failures(self):
        return self.records


def test_failed_cells_are_listed_in_one_pass_over_the_sweep(tmp_path, monkeypatch, capsys):
    """The listing of failed cells built the set of the sweep's cell ids once per failed cell: 1,000
    failed cells took 85 s, 10⁴ would take hours. Every failed cell of the sweep is listed, the
    stale record is not, and the sweep's cells are read once whatever the number of failures."""
    sweep = grid(tmp_path, 100)
    keys = [cell.id for cell in sweep.cells]
    sweep.cells = CountedCells(sweep.cells)
    store = FailedStore(keys)
    result = argparse.Namespace(counts={"total": 100, "done": 0, "failed": 100, "missing": 0},
                                meta={"run": {"backend": "local"}, "cells": {"computed_this_run": 0}},
                                store=store, tracking=None)
    monkeypatch.setattr(cli, "execute", lambda *a, **k: result)
    args = argparse.Namespace(storage=str(tmp_path), backend="local", workers=None, address=None, max_failures=0,
                              allow_changed=False, track=None, no_analyze=True)
    CountedCells.passes = 0
    assert cli.run_and_report(sweep, args) == 1
    listed = [line.split()[2].rstrip(":") for line in capsys.readouterr().out.splitlines()
              if line.startswith("  failed cell ")]
    assert sorted(listed) == sorted(keys)
    assert CountedCells.passes <= 1


def test_the_dry_runs_table_does_not_grow_with_the_cells(tmp_path):
    """The dry run's table of what varies made a frame of every cell's columns (1 GB at 10⁵ cells);
    now it keeps the first 40 cells and each column's first value. Python's allocations while the
    table of 10⁴ cells is made stay under 2 MB (a frame of them took about 30), and it shows the
    same thing as for the first 40 cells alone, plus the count of the rest."""
    sweep = grid(tmp_path, 10_000)
    cells = sweep.cells
    ids = [cell.id for cell in cells]
    tracemalloc.start()
    try:
        fixed, lines = varying_table(cells, set(ids[:5]), ids)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB"
    assert lines[-1] == "... and 9960 more cells"
    assert len(lines) == 1 + 40 + 1                                  # header, 40 cells, the rest counted
    header = lines[0].split()
    assert header[0] == "#" and header[-1] == "stored"
    # the grid's varying factors (the first four: learning rate, anisotropy, curvature, noise scale)
    assert {"optimizer.lr", "problem.anisotropy", "problem.curvature", "problem.noise_scale"} <= set(header)
    assert "seeds=16" in fixed and "budget=200" in fixed
    assert [line.split()[-1] for line in lines[1:6]] == ["yes"] * 5 and lines[6].split()[-1] == "no"


def test_a_stored_cell_costs_at_most_twice_its_rows(tmp_path):
    """Issue 25's storage goal: a block's bytes per cell at most 2x its rows' compressed size (the
    same rows as one parquet file without the list of cells). The list of cells in the footer was
    written twice, once base64-encoded inside pyarrow's copy of the schema: 4.6x. Every cell still
    reads back from the footer, with its row range and summary, and a block of the previous
    format (its cells as plain JSON) still reads."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from workflows import simulate
    from workflows.blocks import BlockWriter
    from workflows.store import BLOCKS, META_KEY, Store

    sweep = grid(tmp_path, 100)
    store = Store(str(tmp_path / "store"), "grid")
    with BlockWriter(store, "t-0-", flush_seconds=3600) as writer:
        for cell in sweep.cells:
            result = simulate(cell)
            writer.add(cell.id, cell["seeds"], result.columns, None, result.seconds)
    [block] = (tmp_path / "store" / "grid" / BLOCKS).glob("*.parquet")
    rows = pq.read_table(block).replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(rows, sink)
    ratio = block.stat().st_size / len(sink.getvalue())
    assert ratio <= 2, f"a block is {ratio:.2f}x its rows"
    index = store.index()
    assert sorted(index.ids()) == sorted(cell.id for cell in sweep.cells)
    entry = index.entry(sweep.cells[7].id)
    assert entry["row_start"] == 7 * 16 and entry["n_rows"] == 16 and entry["summary"]["n_seeds"] == 16
    assert rows.slice(entry["row_start"], 16).column("cell_id").to_pylist() == [sweep.cells[7].id] * 16

    # The previous format: the same rows with the list of cells as plain JSON in the schema.
    import json
    cells = [{k: v for k, v in index.entry(c.id).items() if k in ("cell_id", "seeds", "n_rows", "has_trace",
                                                                  "row_start", "stored_at")}
             for c in sweep.cells]
    store.write_table(f"{BLOCKS}/old-format.parquet", rows, {"format": 2, "cells": cells})
    block.unlink()
    assert sorted(Store(str(tmp_path / "store"), "grid").index().ids()) == sorted(cell.id for cell in sweep.cells)
    assert META_KEY in pq.read_metadata(tmp_path / "store" / "grid" / BLOCKS / "old-format.parquet").metadata


# The process's own peak (VmHWM: its memory map's, new at exec; ru_maxrss may carry the parent's).
LOAD_PEAK = """
import re, sys
from analysis.load import load_results
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
base = peak()
rows = load_results(sys.argv[1]).rows
print((peak() - base) / rows.memory_usage(deep=True).sum())
"""


def test_loading_rows_for_the_analysis_frees_arrows_columns_as_it_goes(tmp_path):
    """The analysis reads rows.parquet into one frame; the Arrow table and the frame were both whole
    at once. 10⁵ synthetic rows, loaded in a fresh process: the peak beyond the imports was 4.4-4.5x
    the frame's size, now 3.5 (at 10⁶ rows 2.9x and 2.0x: 0.92 and 0.62 GiB)."""
    import subprocess

    import numpy as np

    from analysis.synthetic import synthetic_rows

    rows = synthetic_rows(lrs=np.logspace(-4, -2, 4), sigmas=np.logspace(-3, 0, 10), seeds=250, intercept=3.5,
                          optimizers=("sgd", "adam"), dims=(2, 4, 8, 16, 32), censored=0.2)
    assert len(rows) == 100_000
    rows.to_parquet(tmp_path / "rows.parquet")
    root = Path(__file__).resolve().parent.parent
    ratio = float(subprocess.run([sys.executable, "-c", LOAD_PEAK, str(tmp_path)], cwd=root, check=True,
                                 capture_output=True, text=True).stdout.strip())
    assert ratio < 4.0, f"the load's peak is {ratio:.2f}x the frame"


def test_neither_the_command_line_nor_a_cells_summary_imports_scipy():
    """A rerun with nothing to compute is mostly the command's imports; scipy.stats (0.9 s of them)
    came in with the cells' summaries: the command line does not import it, and a cell's summary,
    computed on every worker for every cell, is scipy's Kaplan-Meier arithmetic without scipy's
    objects (tests/test_survival_km.py: the same numbers), so it does not either."""
    import subprocess

    code = ("import sys, workflows.cli; print('scipy.stats' in sys.modules); "
            "import numpy as np; from workflows.core.survival import cell_summary; "
            "s = cell_summary({'escape_step': np.array([3.0, 5.0, 9.0]), 'escaped': np.array([True, True, False]), "
            "'diverged': np.zeros(3, bool), 'budget': np.full(3, 10)}, 0.1); "
            "print(s['escape_step_km_median'], 'scipy' in sys.modules)")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["False", "5.0", "False"]


def test_the_tables_are_made_without_the_sweeps_rows_or_cells_in_python_objects(tmp_path):
    """The driver's peak at 10⁵ cells (0.97 GiB, goal 0.6) was the tables' making: the index made
    from the blocks' footers as one list of dicts of every cell, cells.parquet's parameters as
    Python lists of every cell, the fingerprint and the blocks' order as lists of every cell. Now
    each is made a few thousand cells at a time, or in arrays. Python's allocations while the
    tables of 10⁴ stored cells are made (no index.parquet: every footer read, as after a run) stay
    under 8 MB (14.9 MB before; the index and the tables themselves are Arrow's, not counted)."""
    from workflows import simulate, tables
    from workflows.blocks import BlockWriter
    from workflows.store import Store

    sweep = grid(tmp_path, 10_000)
    results = [simulate(cell) for cell in sweep.cells[::500]]
    store = Store(str(tmp_path / "store"), "grid")
    with BlockWriter(store, "t-0-", flush_seconds=3600, max_cells=1000) as writer:
        for i, cell in enumerate(sweep.cells):
            result = results[i % len(results)]
            writer.add(cell.id, cell["seeds"], result.columns, None, result.seconds)
    cells = {cell.id: cell for cell in sweep.cells}
    tracemalloc.start()
    try:
        made = tables.collect(store, cells)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MB"
    assert made.counts == {"total": 10_000, "done": 10_000, "failed": 0, "missing": 0}
    tables.publish(store, made, {"sweep": "grid"})
    stored = store.read_table("cells.parquet")
    assert stored["cell_id"].tolist() == list(cells) and (stored["rows_start"] == 16 * stored.index).all()


def test_cells_table_columns_made_in_chunks_are_typed_as_one_list():
    """cells.parquet's parameter columns are made a few thousand cells at a time; a column some
    chunks lack (adam's betas beside sgd), whole numbers with a gap, and text come out as the
    whole column converted at once did (tables._array), whatever the chunk."""
    import pyarrow as pa

    from workflows import tables
    from workflows.core.rows import flatten_cell
    from workflows.spec import sweeps_from_mapping

    sweep = sweeps_from_mapping({"parameters": {
        "problem": {"values": [{"name": "quadratic_saddle", "dim": 2}, {"name": "quadratic_saddle", "dim": 3}]},
        "optimizer": {"values": [{"name": "sgd", "lr": 0.01}, {"name": "adam", "lr": 0.01}]},
        "seeds": {"values": [2, 3]}, "budget": 20}})["notebook"]
    cells = {cell.id: cell for cell in sweep.cells}
    names = list(dict.fromkeys(name for cell in cells.values() for name in flatten_cell(cell)))
    whole = {"cell_id": tables._array(list(cells)),
             **{name: tables._array([flatten_cell(cell).get(name) for cell in cells.values()]) for name in names}}
    assert any(whole[name].null_count for name in names)             # some cells lack some columns
    for chunk in (1, 2, 3, len(cells)):
        made = tables._parameter_columns(cells, chunk)
        assert list(made) == list(whole)
        for name, column in made.items():
            assert pa.chunked_array([whole[name]]).equals(column), (chunk, name, column.type, whole[name].type)


def test_a_waiting_cell_keeps_its_shared_values_unrepeated(tmp_path):
    """A block writer held every value a cell's runs share (its parameters: 52 of a grid cell's 61
    columns) repeated into an array per cell until the block was written (5 µs and about 150 bytes
    each, per cell); it keeps them as they are and repeats them once per block. The block holds the
    same rows: each shared value on every row of its cell."""
    import numpy as np

    from workflows import simulate
    from workflows.blocks import BlockWriter
    from workflows.store import Store

    sweep = grid(tmp_path, 10)
    results = [simulate(cell) for cell in sweep.cells]
    store = Store(str(tmp_path / "store"), "grid")
    with BlockWriter(store, "t-0-", flush_seconds=3600) as writer:
        tracemalloc.start()
        try:
            for i in range(500):
                result = results[i % len(results)]
                writer.add(f"cell{i:04d}", 16, result.columns, None, result.seconds)
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert held < 500 * 2000, f"{held / 500:.0f} bytes a waiting cell"
    rows = store.read_block(store.index().entry("cell0003")["block"])
    mine = rows.slice(3 * 16, 16).to_pydict()
    assert mine["optimizer.lr"] == [sweep.cells[3]["optimizer"]["lr"]] * 16
    assert mine["cell_id"] == [sweep.cells[3].id] * 16 and mine["seed"] == list(range(16))
    assert np.array_equal(mine["escape_step"], results[3].columns["escape_step"])


# The command's entry (workflows/command.py) with a stand-in for the command line that reports the
# pool pyarrow got when the command imported it.
COMMAND_POOL = """
import sys, types
import workflows
stand_in = types.ModuleType("workflows.cli")
def entry():
    import pyarrow
    print(pyarrow.default_memory_pool().backend_name)
stand_in.entry = entry
sys.modules["workflows.cli"] = workflows.cli = stand_in
import workflows.command
workflows.command.entry()
"""


def test_the_command_takes_arrows_memory_from_malloc_unless_told_otherwise():
    """pyarrow's default pool (mimalloc) kept what the parquet reader's threads freed: at 10⁵ cells
    the driver's peak was 0.1-0.2 GiB higher while the tables were written. The command's process
    uses the C library's malloc, which gives it back; a pool named in the environment stands; and
    importing the command line (as run_sweep's users and the tests do) changes no environment."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}

    def run(code, **extra):
        return subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True, text=True,
                              env={**env, **extra}).stdout.strip()
    assert run(COMMAND_POOL) == "system"
    assert run(COMMAND_POOL, ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"
    assert run("import os; before = dict(os.environ); import workflows.cli; print(before == dict(os.environ))") == "True"
