"""The command line: validate, run and analyze sweeps.

    saddlescape validate sweeps.yaml
    saddlescape run sweeps.yaml --sweep quick [--workers N] [--address ADDR] [--storage URI]
    saddlescape analyze results/quick

Exit codes: 0 done; 1 some cells failed (the rest are stored); 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .cell import cell_id
from .packing import pack_cells
from .spec import DEFAULT_MAX_CELLS, SweepError, load_sweeps
from .store import Store

PACKAGES = ("torch", "ray", "pandas", "numpy", "pyarrow", "pyyaml", "lifelines", "scipy", "seaborn")


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
    # Absolute: Tune runs each trial in a directory of its own, where a relative path would
    # point somewhere else.
    args.storage = args.storage if "://" in args.storage else os.path.abspath(args.storage)
    store = Store(args.storage, sweep.name)
    cells = {cell_id(c): c for c in sweep.cells}
    done = store.done(cells)
    todo = [c for k, c in cells.items() if k not in done]
    for key in cells.keys() - done.keys():
        store.delete(f"failed/{key}.json")        # about to be retried: count its attempts afresh
    started = now()
    echo(f"sweep {sweep.name}: {len(cells)} cells, {len(done)} already stored, {len(todo)} to run -> {store.uri}")
    run = {"workers": 0, "ray_start_seconds": 0.0, "tune_seconds": 0.0, "engine_seconds": 0.0,
           "address": args.address or os.environ.get("RAY_ADDRESS")}
    if todo:
        from . import tune_runner            # Ray only when there is work for it

        t0 = time.perf_counter()
        with tune_runner.connected(args.address, args.workers) as workers:
            t1 = time.perf_counter()
            packs = pack_cells(todo, workers)
            echo(f"  {len(packs)} trials on {workers} workers")
            engine = tune_runner.run_packs(packs, args.storage, sweep.name, workers=workers,
                                           max_failures=args.max_failures, echo=echo)
            t2 = time.perf_counter()
        # Parallel efficiency: engine time over the workers' wall time while Tune ran; the rest is
        # Tune's per-trial overhead and idle workers at the end.
        run.update(workers=workers, ray_start_seconds=round(t1 - t0, 3), tune_seconds=round(t2 - t1, 3),
                   engine_seconds=round(engine, 3), efficiency=round(engine / ((t2 - t1) * workers), 4))
    meta = {
        "sweep": sweep.name, "description": sweep.description,
        "yaml": yaml.safe_dump({sweep.name: sweep.definition}, sort_keys=False),
        "hash": hashlib.sha256("".join(sorted(cells)).encode()).hexdigest()[:16],
        "versions": versions(), "git_commit": git_commit(), "host": platform.node(),
        "started": started, "finished": now(),
        "cells": {"computed_this_run": len(todo), "reused": len(done)},
        "run": run,
    }
    counts = store.consolidate(cells, meta)
    echo(f"sweep {sweep.name}: {counts['done']}/{counts['total']} cells stored"
         + (f", {counts['failed']} failed" if counts["failed"] else "")
         + (f"; Ray start {run['ray_start_seconds']:.1f}s, Tune {run['tune_seconds']:.1f}s on "
            f"{run['workers']} workers, engine {run['engine_seconds']:.1f}s (efficiency {run['efficiency']:.0%})"
            if todo else ""))
    if not args.no_analyze and counts["done"]:
        echo(f"report: {analyze_store(store)}")
    if counts["failed"] or counts["missing"]:
        for key, record in store.failures().items():
            if key in cells:
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


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    out = {"python": platform.python_version(), "saddlescape": _version("saddlescape")}
    out.update({name: _version(name) for name in PACKAGES})
    return out


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not shutil.which("git"):
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


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
