"""Large grids: the cost of a sweep outside the engine, at 10³, 10⁴ and 10⁵ cells (issue 25).

    .venv/bin/python benchmarks/grid_scale.py [--cells 1000,10000] [--before REF] [--backend ray]

The grid is issue 25's: quadratic_saddle in 2 dimensions, sgd, 16 seeds, budget 200, over five
factors of ten values (learning rate, anisotropy, curvature, noise scale, seed), cut to the number
of cells asked for. Each size is run as `saddlescape run ... --no-analyze` in a fresh process (the
driver), twice: the run, then the rerun that has nothing to compute. Measured per run: wall time,
Tune's time (meta.json), the time after the last cell (tables and meta.json), the driver's peak
resident memory (its own ru_maxrss: Ray's processes are not the driver), the results folder's
files and bytes; then the dry run's time and peak memory. `--before REF` also runs the same grid
with the code of git REF (exported with `git archive` into a temporary folder), alternately with
this checkout, so that both see the same machine load; `uptime` is recorded before each run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTORS = (("optimizer.lr", [round(0.001 * 1.5 ** i, 6) for i in range(10)]),
           ("problem.anisotropy", [float(1 + i) for i in range(10)]),
           ("problem.curvature", [round(0.5 + 0.1 * i, 3) for i in range(10)]),
           ("problem.noise_scale", [round(0.5 + 0.1 * i, 3) for i in range(10)]),
           ("seed", list(range(10))))

# The driver, run in a fresh process: the CLI's main with its own peak memory written at exit, and
# the moment the last cell was stored (the end of Tune or of the local loop) as a timestamp.
DRIVER = """
import json, resource, sys, time
sys.argv = ["saddlescape", *sys.argv[2:]]
import os
out = os.environ["GRID_SCALE_OUT"]
from workflows.cli import main
code = main(sys.argv[1:])
json.dump({"code": code, "peak_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "ended": time.time()}, open(out, "w"))
"""


def sweep_yaml(cells: int) -> str:
    """The grid cut to `cells` cells (a power of ten up to 10⁵): the first log10(cells) factors."""
    factors = FACTORS[: len(str(cells)) - 1]
    assert 10 ** len(factors) == cells, f"cells={cells}: a power of ten from 10 to 10^5"
    lines = ["sweeps:", "  grid:", "    parameters:", "      problem: {name: quadratic_saddle, dim: 2}",
             "      optimizer: {name: sgd}", "      seeds: 16", "      budget: 200"]
    lines += [f"      {key}: {{values: {json.dumps(values)}}}" for key, values in factors]
    return "\n".join(lines) + "\n"


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and "_tune" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def drive(source: Path, args: list[str], workdir: Path) -> dict:
    out = workdir / f"driver-{time.monotonic_ns()}.json"
    env = dict(os.environ, GRID_SCALE_OUT=str(out), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(source))
    start = time.time()
    done = subprocess.run([sys.executable, "-c", DRIVER, "x", *args], cwd=source, env=env,
                          capture_output=True, text=True)
    wall = time.time() - start
    if not out.exists():
        raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if result["code"] != 0:
        raise RuntimeError(f"run exited {result['code']}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {**result, "wall_s": wall, "started": start, "stdout": done.stdout}


def measure(source: Path, cells: int, backend: str, workdir: Path, label: str) -> dict:
    """One size with one source tree: run, rerun, dry run."""
    spec = workdir / f"grid-{cells}.yaml"
    spec.write_text(sweep_yaml(cells))
    storage = workdir / f"results-{label}-{cells}"
    common = [str(spec), "--sweep", "grid", "--storage", str(storage), "--max-cells", str(max(cells, 10_000)),
              "--no-analyze", "--workers", str(WORKERS), "--backend", backend]
    row = {"cells": cells, "code": label, "backend": backend, "load_before": uptime()}
    first = drive(source, ["run", *common], workdir)
    meta = json.loads((storage / "grid" / "meta.json").read_text())
    run = meta["run"]
    # After the last cell, as issue 25 measured it: the wall time less Ray's start and Tune's (so
    # the driver's own start-up, imports and expansion, counts in it), for both codes alike; and,
    # where the driver stamps the end of its last cell (meta.json's run.cells_ended_at), exactly.
    last_cell = first["started"] + (run.get("ray_start_seconds", 0) + run.get("tune_seconds", 0) if backend == "ray"
                                    else run.get("local_seconds", 0))
    row["after_last_cell_stamped_s"] = first["ended"] - run["cells_ended_at"] if "cells_ended_at" in run else None
    row.update(wall_s=first["wall_s"], tune_s=run.get("tune_seconds"), engine_s=run.get("engine_seconds"),
               ray_start_s=run.get("ray_start_seconds"), peak_GiB=first["peak_GiB"])
    # After the last cell: from the end of Tune to the end of the driver's command (tables, meta.json).
    row["after_last_cell_s"] = first["ended"] - last_cell
    row["files"], row["bytes"] = folder_size(storage / "grid")
    row["load_rerun"] = uptime()
    again = drive(source, ["run", *common], workdir)
    row.update(rerun_s=again["wall_s"], rerun_peak_GiB=again["peak_GiB"])
    dry = drive(source, ["run", *common, "--dry-run"], workdir)
    row.update(dry_run_s=dry["wall_s"], dry_run_peak_GiB=dry["peak_GiB"])
    return row


def export(ref: str, workdir: Path) -> Path:
    target = workdir / f"source-{ref}"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def measure_sizes(cells: list[int], *, before: str | None = None, after: str | None = None, backend: str = "ray",
                  before_cells: list[int] | None = None, workdir: Path | None = None, out: str | None = None,
                  echo=print) -> list[dict]:
    """Each size with this checkout (or git ref `after`; 'none': not measured) and, where `before`
    names a git ref, with that code too, alternately (before, after) size by size. `before_cells`:
    the sizes the before code runs (default: all; its 10⁵ takes about 45 minutes)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="grid_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    sources = [] if after == "none" else [("after", export(after, workdir) if after else ROOT)]
    if before:
        sources.insert(0, ("before", export(before, workdir)))
    rows = []
    for size in cells:
        for label, source in sources:
            if label == "before" and before_cells is not None and size not in before_cells:
                continue
            row = measure(source, size, backend, workdir, label)
            rows.append(row)
            echo(json.dumps(row))
            if out:
                with open(out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


COLUMNS = ("cells", "code", "wall", "Tune phase", "after the last cell", "wall / (engine / workers + Ray start)",
           "rerun, nothing to compute", "dry run", "driver peak (run / rerun / dry run)", "files / bytes",
           "load before / at the rerun")
WORKERS = 2                 # what `measure` runs with (--workers 2)


def goal_ratio(row: dict) -> float | None:
    """Issue 25's wall-time goal as a ratio (goal: at most 1.3): the wall time over the engine's
    summed seconds shared by the workers, plus Ray's start; None where the run did not measure them."""
    if not row.get("engine_s") or row.get("ray_start_s") is None:
        return None
    return row["wall_s"] / (row["engine_s"] / WORKERS + row["ray_start_s"])


def table_rows(rows: list[dict]) -> list[dict]:
    """The issue's table, one line per measured size and code."""
    def mb(n):
        return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"
    return [{"cells": f"{r['cells']:,}", "code": r["code"], "wall": f"{r['wall_s']:.1f} s",
             "Tune phase": f"{r['tune_s']:.1f} s" if r.get("tune_s") is not None else "-",
             # wall less Ray's start and Tune's phase (the driver's own start counts in it), and where
             # the driver stamps its last cell, the exact time from that stamp to the command's end
             "after the last cell": f"{r['after_last_cell_s']:.1f} s" + (
                 f" ({r['after_last_cell_stamped_s']:.1f} s stamped)" if r.get("after_last_cell_stamped_s") else ""),
             "wall / (engine / workers + Ray start)": "-" if goal_ratio(r) is None else
                 f"{goal_ratio(r):.2f} ({r['engine_s']:.1f} s / {WORKERS} + {r['ray_start_s']:.1f} s)",
             "rerun, nothing to compute": f"{r['rerun_s']:.1f} s", "dry run": f"{r['dry_run_s']:.1f} s",
             "driver peak (run / rerun / dry run)":
                 f"{r['peak_GiB']:.2f} / {r['rerun_peak_GiB']:.2f} / {r['dry_run_peak_GiB']:.2f} GiB",
             "files / bytes": f"{r['files']:,} / {mb(r['bytes'])}",
             "load before / at the rerun": f"{r['load_before'].split()[0]} / {r['load_rerun'].split()[0]}"}
            for r in rows]


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in table_rows(rows)]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="1000,10000")
    parser.add_argument("--before", default=None, help="a git ref whose code is measured too, alternately")
    parser.add_argument("--before-cells", default=None, help="the sizes the --before code runs (default: all)")
    parser.add_argument("--after", default=None,
                        help="a git ref for the code measured as `after` (default: this checkout as it is); "
                             "'none' measures only --before")
    parser.add_argument("--backend", default="ray", choices=("ray", "local"))
    parser.add_argument("--out", default=None, help="append the rows, as JSON lines, to this file")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--table", default=None, help="print the table of the rows of this JSON-lines file; run nothing")
    args = parser.parse_args()
    if args.table:
        print(markdown([json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]))
        return
    rows = measure_sizes(list(map(int, args.cells.split(","))), before=args.before, after=args.after,
                         backend=args.backend, workdir=args.workdir, out=args.out,
                         before_cells=list(map(int, args.before_cells.split(","))) if args.before_cells else None)
    print(markdown(rows))


if __name__ == "__main__":
    main()
