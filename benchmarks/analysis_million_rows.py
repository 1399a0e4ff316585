"""Time and peak memory of `analyze` on 10⁶ synthetic rows (4000 cells x 250 seeds), or more.

    .venv/bin/python benchmarks/analysis_million_rows.py [workdir] [--rows N] [--cells]

`--rows N` (a multiple of 10⁶): N rows of the same 4000 cells, 250·N/10⁶ seeds each (so 2500 at
10⁷ rows, issue 25's analysis goal): the analysis's cost per row, apart from its cost per cell
(the lag model's predictions, the fits' groups and the figures grow with the cells). `--cells`
instead keeps 250 seeds and takes N / 10⁵ learning rates (4·10⁴ cells at 10⁷ rows).

10⁶ rows are drawn in one go (the table of docs/scaling.md's earlier figures); more are drawn and
written one learning rate at a time (a row group each, as the store writes its table a block at a
time), at the 10⁶ table's budget, so that writing them does not need the whole table in memory.

The rows are written first, in a child process; `analyze` then runs in a fresh child process so
that its peak resident memory (ru_maxrss) is its own.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WRITE = """
import numpy as np, sys
import pyarrow as pa, pyarrow.parquet as pq
from analysis.synthetic import synthetic_rows
GRID = dict(sigmas=np.logspace(-3, 0, 10), seeds=int(sys.argv[3]), intercept=3.5, optimizers=("sgd", "rmsprop", "adam", "precond_sgd"),
            dims=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), censored=0.2)
lrs = np.logspace(-4, -2, int(sys.argv[2]))
if len(lrs) == 10 and GRID["seeds"] == 250:
    rows = synthetic_rows(lrs=lrs, **GRID)
    rows.to_parquet(sys.argv[1] + "/rows.parquet")
    print(len(rows), "rows,", rows.cell_id.nunique(), "cells")
else:
    writer, n, cells = None, 0, 0
    for i, lr in enumerate(lrs):
        part = synthetic_rows(lrs=(lr,), seed=i, budget=BUDGET, first_cell=cells, **GRID)
        table = pa.Table.from_pandas(part, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(sys.argv[1] + "/rows.parquet", table.schema)
        table = table.replace_schema_metadata(writer.schema.metadata)
        writer.write_table(table)
        n, cells = n + len(part), cells + part.cell_id.nunique()
    writer.close()
    print(n, "rows,", cells, "cells")
""".replace("BUDGET", "31747")     # the 10⁶ table's (its 80% quantile of the drawn escape steps)
ANALYZE = """
import json, resource, sys, time
start = time.perf_counter()
from analysis import analyze
report = analyze(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "report": str(report)}))
"""
ROOT = Path(__file__).resolve().parent.parent


def measure(workdir: Path, rows: int = 10**6, more_cells: bool = False) -> dict:
    """{seconds (imports included), peak_GiB, report, rows, cells, load (1-minute average before,
    after)} of analyze on `rows` rows (a multiple of 10⁶) written in workdir: more seeds per cell
    past 10⁶, or more cells (`more_cells`)."""
    if rows % 10**6:
        raise ValueError(f"rows={rows}: a multiple of 10^6")
    workdir.mkdir(parents=True, exist_ok=True)
    env_path = {"cwd": ROOT}
    lrs, seeds = (rows // 10**5, 250) if more_cells else (10, 250 * rows // 10**6)
    subprocess.run([sys.executable, "-c", WRITE, str(workdir), str(lrs), str(seeds)], check=True,
                   capture_output=True, **env_path)
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", ANALYZE, str(workdir)], check=True, capture_output=True,
                         text=True, **env_path).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "rows": rows, "cells": 400 * lrs,
            "load": [load_before, os.getloadavg()[0]]}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    size = next((int(float(a.split("=", 1)[1])) for a in sys.argv[1:] if a.startswith("--rows=")), 10**6)
    result = measure(Path(args[0] if args else tempfile.mkdtemp(prefix="analysis_bench_")), size, "--cells" in sys.argv)
    print(f"analyze {result['rows']:,} rows in {result['cells']:,} cells: {result['seconds']:.1f} s (imports included), peak RSS "
          f"{result['peak_GiB']:.2f} GiB, load {result['load'][0]:.1f} before / {result['load'][1]:.1f} after "
          f"-> {result['report']}")
