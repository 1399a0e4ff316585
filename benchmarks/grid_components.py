"""Large grids by component (issue 25, docs/scaling.md): what each stage of a sweep costs per cell,
in this process, without Ray, on the grid of benchmarks/grid_scale.py.

    .venv/bin/python benchmarks/grid_components.py [--cells 10000] [--workdir DIR]

Measured, each on its own: expanding the sweep and hashing its cells; the engine on a sample of
its cells; handing computed cells to a BlockWriter and writing them as blocks (a cell's summary
included); reading what is stored from the blocks' footers (no index.parquet) and from the cached
index; writing the tables from the blocks and finding them up to date; planning a rerun (the
sweep's expansion and the index: what a rerun does before it finds nothing to compute); and the
bytes stored per cell: blocks/, index.parquet, and the cell's rows inside rows.parquet (the rows'
compressed size, the footer spread over every cell).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.grid_scale import sweep_yaml  # noqa: E402
from workflows import simulate, tables  # noqa: E402
from workflows.api import plan  # noqa: E402
from workflows.blocks import BlockWriter  # noqa: E402
from workflows.spec import load_sweeps  # noqa: E402
from workflows.store import Store  # noqa: E402

ENGINE_SAMPLE = 300         # cells simulated for the engine's cost per cell


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def folder_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


def measure(cells: int, workdir: Path) -> dict:
    spec = workdir / f"grid-{cells}.yaml"
    spec.write_text(sweep_yaml(cells))
    sweep, expand_s = timed(lambda: load_sweeps(spec, only="grid", max_cells=cells)["grid"])
    grid = sweep.cells
    out = {"cells": cells, "expand_ms_per_cell": 1e3 * expand_s / cells}

    # The engine: a sample of the grid's cells (spread over it), their engine seconds and wall.
    step = max(1, cells // ENGINE_SAMPLE)
    sample = grid[::step][:ENGINE_SAMPLE]
    simulate(sample[0])                                             # warm the kernel
    results, wall = timed(lambda: [simulate(c) for c in sample])
    out["engine_ms_per_cell"] = 1e3 * sum(r.seconds for r in results) / len(sample)
    out["simulate_wall_ms_per_cell"] = 1e3 * wall / len(sample)

    # Writing the grid's cells as blocks: the sample's results handed round under every cell's id.
    store = Store(str(workdir / "store"), "grid")

    def write():
        with BlockWriter(store, "bench-0-", flush_seconds=3600) as writer:
            for i, cell in enumerate(grid):
                r = results[i % len(results)]
                writer.add(cell.id, cell["seeds"], r.columns, r.trace, r.seconds)
            return writer.blocks
    blocks, write_s = timed(write)
    out.update(block_write_ms_per_cell=1e3 * write_s / cells, blocks=blocks)

    index, footers_s = timed(store.index)                          # no index.parquet: every footer read
    store.save_index(index)
    _, cached_s = timed(store.index)
    out.update(index_from_footers_ms_per_cell=1e3 * footers_s / cells, index_cached_ms_per_cell=1e3 * cached_s / cells)

    ids = {cell.id: cell for cell in grid}
    made, tables_s = timed(lambda: tables.collect(store, ids, store.index()))
    _, publish_s = timed(lambda: tables.publish(store, made, {"sweep": "grid"}))
    again, up_to_date_s = timed(lambda: tables.collect(store, ids, store.index()))
    assert again.up_to_date
    out.update(tables_ms_per_cell=1e3 * (tables_s + publish_s) / cells,
               tables_up_to_date_ms_per_cell=1e3 * up_to_date_s / cells)

    # A rerun's work before it finds nothing to compute: expansion, plan (index), tables found up to date.
    def rerun():
        again_sweep = load_sweeps(spec, only="grid", max_cells=cells)["grid"]
        p = plan(again_sweep, str(workdir / "store"))
        assert not p.todo
        return tables.collect(p.store, p.cells, p.index)
    _, rerun_s = timed(rerun)
    out["rerun_in_process_s"] = rerun_s

    base = workdir / "store" / "grid"
    rows_bytes = (base / "rows.parquet").stat().st_size
    out.update(block_bytes_per_cell=folder_bytes(base / "blocks") / cells,
               index_bytes_per_cell=(base / "index.parquet").stat().st_size / cells,
               rows_table_bytes_per_cell=rows_bytes / cells,
               cells_table_bytes_per_cell=(base / "cells.parquet").stat().st_size / cells,
               peak_GiB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    out["block_over_rows"] = out["block_bytes_per_cell"] / out["rows_table_bytes_per_cell"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="grid_components_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(measure(args.cells, workdir), indent=1))


if __name__ == "__main__":
    main()
