"""Time and peak memory of `analyze` on 10⁶ synthetic rows (4000 cells x 250 seeds).

    .venv/bin/python benchmarks/analysis_million_rows.py [workdir] [--rows N]

`--rows N` (a multiple of 10⁶): N rows, the learning rates N / 10⁵ instead of 10 (docs/scaling.md
measures 2·10⁶ and 4·10⁶ to see how the memory grows towards issue 25's 10⁷).

The rows are written first, in a child process; `analyze` then runs in a fresh child process so
that its peak resident memory (ru_maxrss) is its own.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WRITE = """
import numpy as np, sys
from analysis.synthetic import synthetic_rows
rows = synthetic_rows(lrs=np.logspace(-4, -2, int(sys.argv[2])), sigmas=np.logspace(-3, 0, 10), seeds=250,
                      intercept=3.5, optimizers=("sgd", "rmsprop", "adam", "precond_sgd"),
                      dims=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), censored=0.2)
rows.to_parquet(sys.argv[1] + "/rows.parquet")
print(len(rows), "rows,", rows.cell_id.nunique(), "cells")
"""
ANALYZE = """
import json, resource, sys, time
start = time.perf_counter()
from analysis import analyze
report = analyze(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "report": str(report)}))
"""
ROOT = Path(__file__).resolve().parent.parent


def measure(workdir: Path, rows: int = 10**6) -> dict:
    """{seconds (imports included), peak_GiB, report, rows} of analyze on `rows` rows (a multiple
    of 10⁶) written in workdir."""
    if rows % 10**6:
        raise ValueError(f"rows={rows}: a multiple of 10^6")
    workdir.mkdir(parents=True, exist_ok=True)
    env_path = {"cwd": ROOT}
    subprocess.run([sys.executable, "-c", WRITE, str(workdir), str(rows // 10**5)], check=True, capture_output=True,
                   **env_path)
    out = subprocess.run([sys.executable, "-c", ANALYZE, str(workdir)], check=True, capture_output=True,
                         text=True, **env_path).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "rows": rows}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--rows")]
    size = next((int(float(a.split("=", 1)[1])) for a in sys.argv[1:] if a.startswith("--rows=")), 10**6)
    result = measure(Path(args[0] if args else tempfile.mkdtemp(prefix="analysis_bench_")), size)
    print(f"analyze {result['rows']:,} rows: {result['seconds']:.1f} s (imports included), peak RSS "
          f"{result['peak_GiB']:.2f} GiB -> {result['report']}")
