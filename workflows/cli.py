"""The command line: validate, run and analyze sweeps.

    saddlescape validate sweeps.yaml
    saddlescape run sweeps.yaml --sweep quick [--workers N] [--address ADDR] [--storage URI] [--backend local]
    saddlescape analyze results/quick

Exit codes: 0 done; 1 some cells failed (the rest are stored); 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .api import BACKENDS, execute
from .cell import cell_id
from .spec import DEFAULT_MAX_CELLS, SweepError, load_sweeps
from .store import Store


def echo(line: str):
    print(line, flush=True)


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def cmd_validate(args) -> int:
    sweeps = load_sweeps(args.sweeps, max_cells=args.max_cells)
    width = max(map(len, sweeps))
    echo(f"{args.sweeps}: {len(sweeps)} sweeps, all valid")
    for name, sweep in sweeps.items():
        summary = sweep.description if len(sweep.description) <= 60 else sweep.description[:57] + "..."
        echo(f"  {name:<{width}}  {len(sweep.cells):>6} cells  <= {sweep.seed_steps:.2e} seed-steps  {summary}")
    return 0


def cmd_run(args) -> int:
    sweep = load_sweeps(args.sweeps, only=args.sweep, max_cells=args.max_cells)[args.sweep]
    result = execute(sweep, args.storage, backend=args.backend, workers=args.workers, address=args.address,
                     max_failures=args.max_failures, echo=echo)
    counts, run = result.counts, result.meta["run"]
    computed = result.meta["cells"]["computed_this_run"]
    timing = ""
    if computed and run["backend"] == "ray":
        timing = (f"; Ray start {run['ray_start_seconds']:.1f}s, Tune {run['tune_seconds']:.1f}s on "
                  f"{run['workers']} workers, engine {run['engine_seconds']:.1f}s (efficiency {run['efficiency']:.0%})")
    elif computed:
        timing = f"; in this process {run['local_seconds']:.1f}s, engine {run['engine_seconds']:.1f}s"
    echo(f"sweep {sweep.name}: {counts['done']}/{counts['total']} cells stored"
         + (f", {counts['failed']} failed" if counts["failed"] else "") + timing)
    if not args.no_analyze and counts["done"]:
        echo(f"report: {analyze_store(result.store)}")
    if counts["failed"] or counts["missing"]:
        for key, record in result.store.failures().items():
            if key in {cell_id(c) for c in sweep.cells}:
                echo(f"  failed cell {key}: {record['error'].splitlines()[0]}")
        return 1
    return 0


def analyze_store(store: Store) -> str:
    from analysis import analyze

    if store.local:
        return str(analyze(store.base))
    # Remote storage: analyse a local copy, then upload the analysis next to the results.
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("rows.parquet", "cells.parquet", "traces.parquet", "meta.json"):
            try:
                pafs.copy_files(store.path(name), f"{tmp}/{name}", source_filesystem=store.fs)
            except FileNotFoundError:
                pass
        report = analyze(tmp)
        pafs.copy_files(f"{tmp}/analysis", store.path("analysis"), destination_filesystem=store.fs)
        return f"{store.uri}/analysis/{Path(report).name}"


def cmd_analyze(args) -> int:
    from analysis import analyze

    try:
        report = analyze(args.path)
    except (ValueError, FileNotFoundError) as e:   # a results table that is not one
        return fail(str(e))
    echo(f"report: {report}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saddlescape", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check every sweep; print cells and estimated work")
    v.add_argument("sweeps", help="the sweeps file, e.g. sweeps.yaml")
    v.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS, help="largest grid allowed")
    r = sub.add_parser("run", help="run one sweep (computes only the cells not yet stored)")
    r.add_argument("sweeps")
    r.add_argument("--sweep", required=True, help="the sweep's name in the file")
    r.add_argument("--storage", default="results",
                   help="results root: a local path (default: results) or a pyarrow URI (s3://..., gs://...)")
    r.add_argument("--address", default=None,
                   help="an existing Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")
    r.add_argument("--workers", type=int, default=None, help="parallel trials (default: all cores)")
    r.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS)
    r.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial")
    r.add_argument("--backend", choices=BACKENDS, default="ray",
                   help="ray: Ray Tune trials (default); local: in this process, one cell after another, no Ray")
    r.add_argument("--no-analyze", action="store_true", help="skip the report")
    a = sub.add_parser("analyze", help="fits, figures and report.md for a results directory")
    a.add_argument("path", help="results/<sweep> or a rows.parquet")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    for flag in ("max_cells", "workers", "max_failures"):
        value = getattr(args, flag, None)
        if value is not None and value < (0 if flag == "max_failures" else 1):
            return fail(f"--{flag.replace('_', '-')}={value} is out of range; allowed: "
                        f"{'>= 0' if flag == 'max_failures' else '>= 1'}")
    try:
        return {"validate": cmd_validate, "run": cmd_run, "analyze": cmd_analyze}[args.command](args)
    except SweepError as e:
        return fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
