"""Time and peak memory of `analyze` on 10⁶ synthetic rows (4000 cells x 250 seeds).

    PYTHONPATH=. python benchmarks/analysis_million_rows.py [workdir]

The rows are written first, in a child process; `analyze` then runs in a fresh child process so
that its peak resident memory (ru_maxrss) is its own.
"""
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITE = """
import numpy as np, sys
from analysis.synthetic import synthetic_rows
rows = synthetic_rows(lrs=np.logspace(-4, -2, 10), sigmas=np.logspace(-3, 0, 10), seeds=250,
                      intercept=3.5, optimizers=("sgd", "rmsprop", "adam", "precond_sgd"),
                      dims=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), censored=0.2)
rows.to_parquet(sys.argv[1] + "/rows.parquet")
print(len(rows), "rows,", rows.cell_id.nunique(), "cells")
"""
ANALYZE = """
import resource, sys, time
start = time.perf_counter()
from analysis import analyze
report = analyze(sys.argv[1])
print(f"analyze: {time.perf_counter() - start:.1f} s (imports included), "
      f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB -> {report}")
"""

if __name__ == "__main__":
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="analysis_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", WRITE, str(workdir)], check=True)
    subprocess.run([sys.executable, "-c", ANALYZE, str(workdir)], check=True)
