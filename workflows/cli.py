"""The command line: validate, run, analyze and track sweeps.

    saddlescape validate sweeps.yaml [--sweep NAME [KEY=VALUE ...]]
    saddlescape run sweeps.yaml --sweep quick [KEY=VALUE ...] [--dry-run] [--workers N] [--address ADDR]
                    [--storage URI] [--backend local] [--allow-changed] [--track mlflow|tensorboard]
    saddlescape analyze results/quick
    saddlescape track results/quick --to mlflow|tensorboard

Exit codes: 0 done; 1 some cells failed (the rest are stored); 2 bad input (nothing written);
130 interrupted by Ctrl-C (every finished cell kept: rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from . import estimate, report_inputs
from .api import BACKENDS, _version, absolute, check_trackers, execute, local_path, open_store, plan, resolve_sweep
from .core.compat import configure, exit_without_teardown
from .core.suggest import count, plural
from .interrupt import EXIT_CODE, RESUME, SweepInterrupted, exit_by_sigint, surfaced
from .lock import sweep_lock
from .registry import THIS_PROCESS, Inventory, inventory
from .spec import DEFAULT_MAX_CELLS, NeedsExtra, SweepError, load_sweeps, sweep_names
from .store import Store
from .trackers import TRACKERS, TrackingError, local_copy, track_stored


def echo(line: str):
    print(line, flush=True)


def note(line: str):
    print(f"note: {line}", file=sys.stderr, flush=True)


def warn(line: str):
    print(f"warning: {line}", file=sys.stderr, flush=True)


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def cmd_validate(args) -> int:
    checked = validate_sweeps(args)
    needs = {name: error for name, error in checked.items() if isinstance(error, NeedsExtra)}
    workers = args.workers or os.cpu_count() or 1
    width = max(map(len, checked))
    valid = "all valid" if not needs else (f"{len(checked) - len(needs)} valid, {len(needs)} "
                                           f"{plural(len(needs), 'needs', 'need')} an extra that is not installed")
    echo(f"{args.sweeps}: {count(len(checked), 'sweep')}, {valid} (estimates: every seed to its budget, on "
         f"{count(workers, 'worker')}; seed-steps a bound, time rough)")
    any_marked = False
    for name, sweep in checked.items():
        if name in needs:
            echo(f"  {name:<{width}}  needs the {sweep.extra} extra: pip install -e '.[{sweep.extra}]'")
            continue
        for line in sweep.notes:
            note(line)
        for line in sweep.warnings:
            warn(line)
        summary = sweep.description if len(sweep.description) <= 50 else sweep.description[:47] + "..."
        cells = sweep.bound_cells
        wall = estimate.wall_seconds(cells, workers)
        marked = bool(estimate.unmodelled(cells))
        any_marked = any_marked or marked
        at_most = "<=" if sweep.tuned is not None else "  "
        echo(f"  {name:<{width}}  {at_most}{len(cells):>4} {plural(len(cells), 'cell ', 'cells')}  "
             f"<= {sweep.seed_steps:.2e} seed-steps  ~ {estimate.duration(wall):>9}{'*' if marked else ' '}  {summary}")
        if sweep.tuned is not None:
            echo(f"  {'':<{width}}  {sweep.tuned.describe()}")
        warning = estimate.warning(name, cells, sweep.seed_steps, workers)
        if warning:
            warn(warning)
    for name, error in needs.items():
        note(f"sweep {name!r} needs the {error.extra} extra, which is not installed (pip install -e "
             f"'.[{error.extra}]'); not checked further: {error}")
    if any_marked:
        echo("  * some cells are of kinds the time estimate does not model (other problems than the "
             "synthetic saddles, SOSP checks, optimizers that are not built in): they can take many times longer")

    for line in registered_lines(inventory()):
        echo(line)
    return 0


def registered_lines(found: Inventory) -> list[str]:
    """What `saddlescape validate` prints about the names a sweep may use: per kind the
    built-ins, this process's registrations and the plugins (with their distribution and
    version, and the adapter's mode for a torch.optim class), the modules whose optimizer classes
    may be named by path (with their installed versions), then every plugin that failed to load,
    with its error."""
    lines = []
    for kind, builtins in found.builtins.items():
        local, plugins = found.local[kind], found.plugins[kind]
        lines.append(f"{kind}s: {len(builtins)} built-in, {len(plugins)} from plugins"
                     + (f", {len(local)} {THIS_PROCESS}" if local else ""))
        for label, names in (("built-in", builtins), (THIS_PROCESS, local)):
            if names:
                lines.append(f"  {label}: {', '.join(names)}")
        for name, component in plugins.items():
            mode = component.extra.get("mode")
            via = f"; {component.extra['class']} through the adapter, {mode or 'mode decided per cell'}" \
                if "class" in component.extra else ""
            lines.append(f"  {name} ({component.origin}{via})")
    missing = "not installed: pip install -e '.[optimizers]'"
    modules = [f"{m} ({version or missing})" for m, version in found.class_modules]
    modules += [f"{m.module} ({m.origin})" for m in found.plugin_modules]
    lines.append("optimizer classes by path (e.g. torch.optim.NAdam) from: " + ", ".join(modules))
    if found.errors:
        lines.append(f"plugins that failed to load ({len(found.errors)}; sweeps that name them fail, the others run):")
        lines += [f"  {kind} {name}: {error}" for kind, name, error in found.errors]
    return lines


def validate_sweeps(args) -> dict:
    """{name: its Sweep, or the NeedsExtra of a sweep that names what an optional extra provides,
    the extra not installed}, in the file's order. Any other error is raised (exit 2); so is a
    missing extra of the one sweep that --sweep names (it cannot run)."""
    if args.sweep is not None or args.overrides:
        return load_sweeps(args.sweeps, only=args.sweep, max_cells=args.max_cells, overrides=args.overrides)
    checked = {}
    for name in sweep_names(args.sweeps):
        try:
            checked.update(load_sweeps(args.sweeps, only=name, max_cells=args.max_cells))
        except NeedsExtra as error:
            checked[name] = error
    return checked


def cmd_run(args) -> int:
    check_trackers(args.track)                    # a missing library: one line, before anything else
    sweep = resolve_sweep(args.sweeps, args.sweep, args.max_cells, overrides=args.overrides)
    if args.dry_run:
        return dry_run(sweep, args)

    # The folder is held through the analysis too: a run waiting for it would otherwise write its
    # tables, and then its report, while this one writes its report (workflows/lock.py).
    with sweep_lock(open_store(absolute(args.storage), sweep.name), note):
        return run_and_report(sweep, args)


def run_and_report(sweep, args) -> int:
    try:
        result = execute(sweep, args.storage, backend=args.backend, workers=args.workers, address=args.address,
                         max_failures=args.max_failures, echo=echo, allow_changed=args.allow_changed, note=note,
                         warn=warn, track=args.track)
    except SweepInterrupted as stop:
        if stop.result is not None:
            counts = stop.result.counts
            echo(f"sweep {sweep.name}: {counts['done']}/{counts['total']} {plural(counts['total'], 'cell')} stored "
                 f"({stop.result.meta['cells']['computed_this_run']} computed this run) before the interruption")
        return interrupted(stop.stage)
    counts, run = result.counts, result.meta["run"]
    computed = result.meta["cells"]["computed_this_run"]
    timing = ""
    if computed and run["backend"] == "ray":
        timing = (f"; Ray start {run['ray_start_seconds']:.1f}s, Tune {run['tune_seconds']:.1f}s on "
                  f"{count(run['workers'], 'worker')}, engine {run['engine_seconds']:.1f}s (efficiency {run['efficiency']:.0%})")
    elif computed:
        timing = f"; in this process {run['local_seconds']:.1f}s, engine {run['engine_seconds']:.1f}s"
    echo(f"sweep {sweep.name}: {counts['done']}/{counts['total']} {plural(counts['total'], 'cell')} stored"
         + (f", {counts['failed']} failed" if counts["failed"] else "") + timing)
    if not args.no_analyze and counts["done"]:
        try:
            if report_inputs.up_to_date(result.store):
                echo(f"report: {report_path(result.store)} (up to date: the tables, the sweep's definition and the "
                     "analysis code are those it was written from)")
            else:
                echo(f"report: {analyze_store(result.store)}")
        except KeyboardInterrupt:
            result.store.mark_analysis_stale(counts, "the analysis was interrupted")
            return interrupted("analysis")
        if result.tracking is not None:

            try:
                with local_copy(result.store, "analysis") as analysis:
                    if analysis:
                        result.tracking.add_report(analysis)
            except KeyboardInterrupt:
                return interrupted("tracking the report")
    if counts["failed"] or counts["missing"]:

        ids = {cell.id for cell in sweep.cells}           # once: a sweep of 10⁴ failed cells took hours
        for key, record in result.store.failures().items():
            if key in ids:
                echo(f"  failed cell {key}: {record['error'].splitlines()[0]}")
        return 1
    return 0


def interrupted(stage: str) -> int:
    print(f"{RESUME} (stopped during {stage})", file=sys.stderr, flush=True)
    return EXIT_CODE


def dry_run(sweep, args) -> int:
    """The cells a run would compute, what varies across them, and an estimate; writes nothing."""
    p = plan(sweep, args.storage, args.allow_changed)
    for line in [*sweep.notes, p.verdict.message]:
        if line:
            note(line)
    workers = args.workers or os.cpu_count() or 1
    for line in sweep.warnings:
        warn(line)
    echo(f"sweep {sweep.name}: {count(len(p.cells), 'cell')}, {len(p.done)} already stored, {len(p.todo)} to run -> "
         f"{p.store.uri} (dry run: nothing written, no Ray started)")
    todo = p.todo
    if p.search is not None:
        # The searches ask for their next rounds as results come: estimate the most they may ask for.
        todo = sweep.tuned.bound_cells()[:max(0, p.search.left_at_most())]
        echo(f"  {sweep.tuned.describe()}; the cells its searches have reached so far:")
    fixed, table = estimate.varying_table(list(p.cells.values()), set(p.done), list(p.cells))
    if fixed:
        echo("  in every cell: " + ", ".join(fixed))
    for line in table:
        echo("  " + line)
    wall = estimate.wall_seconds(todo, workers, args.backend)
    what = f"the {count(len(todo), 'cell')} to run" if p.search is None else f"at most {count(len(todo), 'cell')} to run"
    echo(f"  estimate for {what}: <= {estimate.seed_steps(todo):.2e} seed-steps, "
         f"about {estimate.duration(estimate.engine_seconds(todo))} of engine time, wall about {estimate.duration(wall)} on "
         f"{count(1 if args.backend == 'local' else workers, 'worker')} "
         "(every seed to its budget; most cells stop earlier)")
    unmodelled = estimate.unmodelled(todo)
    if unmodelled:
        echo(f"  {unmodelled}")
    warning = estimate.warning(sweep.name, todo, estimate.seed_steps(todo), workers, args.backend)
    if warning:
        warn(warning)
    return 0


def analyze_store(store: Store) -> str:

    with surfaced():                                    # scipy's extensions load here
        from analysis import analyze  # lazy: scipy, lifelines and matplotlib take seconds to import

    report_inputs.forget(store)
    if store.local:
        report = str(analyze(store.base))
        report_inputs.record(store)
        return report
    # Remote storage: analyse a local copy, then upload the analysis next to the results.
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("rows.parquet", "cells.parquet", "traces.parquet", "tuning.parquet", "meta.json"):
            try:
                pafs.copy_files(store.path(name), f"{tmp}/{name}", source_filesystem=store.fs)
            except FileNotFoundError:
                pass
        report = analyze(tmp)
        pafs.copy_files(f"{tmp}/analysis", store.path("analysis"), destination_filesystem=store.fs)
        report_inputs.record(store)
        return f"{store.uri}/analysis/{Path(report).name}"


def report_path(store: Store) -> str:
    return store.path(report_inputs.REPORT) if store.local else f"{store.uri}/{report_inputs.REPORT}"


def cmd_track(args) -> int:
    """The stored cells of a results directory (or URI) not yet in the trackers; exit 1 where a
    tracker failed (the results are untouched)."""

    try:
        complete = track_stored(local_path(args.path), args.to, echo=echo, note=note, warn=warn)
    except TrackingError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return interrupted("tracking")
    return 0 if complete else 1


def cmd_analyze(args) -> int:
    from analysis import analyze  # lazy: scipy, lifelines and matplotlib take seconds to import

    path = local_path(args.path)
    options = {"dpi": args.dpi, "formats": args.format.split(","), "reference": args.reference}
    store = Store(str(Path(path).parent), Path(path).name) if Path(path, "cells.parquet").is_file() else None
    if store is not None:
        report_inputs.forget(store)
    try:
        report = analyze(path, dpi=args.dpi, formats=tuple(args.format.split(",")), reference=args.reference)
    except (ValueError, FileNotFoundError) as e:   # a results table that is not one
        return fail(str(e))
    if store is not None:
        report_inputs.record(store, options)
    echo(f"report: {report}")
    return 0


def figure_formats(text: str) -> str:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    if not formats or any(f not in ("png", "pdf", "svg") for f in formats):
        raise argparse.ArgumentTypeError(f"--format={text!r} is not allowed; allowed: png, pdf, svg, comma-separated")
    return ",".join(formats)


OVERRIDES_HELP = ("overrides of the sweep's parameters, Hydra-style: key=value (one value), key=v1,v2 (a grid), "
                  "key=[...] or key={...} (YAML flow style), ~key (remove); e.g. optimizer.lr=0.001,0.01 seeds=256")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saddlescape", description=__doc__.split("\n\n")[0],
                                epilog="Exit codes: 0 done; 1 some cells failed; 2 bad input; 130 interrupted.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check the sweeps; print cells, work and wall-time estimates")
    v.add_argument("sweeps", help="the sweeps file, e.g. sweeps.yaml")
    v.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP + " (needs --sweep)")
    v.add_argument("--sweep", default=None, help="check only this sweep (default: every sweep of the file)")
    v.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS,
                   help=f"refuse grids of more cells than this (default {DEFAULT_MAX_CELLS})")
    v.add_argument("--workers", type=int, default=None, help="workers the wall-time estimate assumes "
                   "(default: this machine's CPUs)")
    r = sub.add_parser("run", help="run one sweep (computes only the cells not yet stored)")
    r.add_argument("sweeps", help="the sweeps file, e.g. sweeps.yaml (a file of sweeps, or one sweep in "
                                  "W&B's shape)")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    r.add_argument("--sweep", default=None, help="the sweep's name in the file (required when it has several)")
    r.add_argument("--storage", default="results",
                   help="results root: a local path (default: results; ~ is your home directory) or a pyarrow URI "
                        "(s3://..., gs://...)")
    r.add_argument("--address", default=None,
                   help="an existing Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")
    r.add_argument("--workers", type=int, default=None, help="parallel trials (default: all cores)")
    r.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS,
                   help=f"refuse grids of more cells than this (default {DEFAULT_MAX_CELLS})")
    r.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (default 2)")
    r.add_argument("--backend", choices=BACKENDS, default="ray",
                   help="ray: Ray Tune trials (default); local: in this process, one cell after another, no Ray")
    r.add_argument("--no-analyze", action="store_true", help="skip the report")
    r.add_argument("--dry-run", action="store_true",
                   help="list the cells (what varies across them) and estimate the time; write nothing, start no Ray")
    r.add_argument("--allow-changed", action="store_true",
                   help="run even though the stored results were written by a definition whose cells would "
                        "drop out of the tables (keeps the cells still in the grid)")
    r.add_argument("--track", action="append", choices=TRACKERS, default=None, metavar="TRACKER",
                   help="also record every stored cell in an experiment tracker: mlflow (MLFLOW_TRACKING_URI) or "
                        "tensorboard (HParams under results/<sweep>/tensorboard); may be given twice; "
                        "needs the tracking extra")
    a = sub.add_parser("analyze", help="fits, figures and report.md for a results directory")
    a.add_argument("path", help="results/<sweep> or a rows.parquet")
    a.add_argument("--dpi", type=int, default=150, help="resolution of the PNG figures (default 150)")
    a.add_argument("--format", default="png,pdf", type=figure_formats,
                   help="figure formats, comma-separated, among png, pdf, svg (default png,pdf)")
    a.add_argument("--reference", action="append", default=None, metavar="OPTIMIZER",
                   help="compare every variant against this optimizer name (all its variants) or variant label, "
                        "e.g. sgd or 'adam (beta1=0.9)'; may be given more than once (default: the sweep's "
                        "analysis.reference, else every pair of up to three variants, else all against sgd)")
    t = sub.add_parser("track", help="record the stored cells of a results directory in an experiment tracker "
                                     "(those not recorded yet)")
    t.add_argument("path", help="results/<sweep>: a local path or a pyarrow URI (s3://bucket/prefix/<sweep>)")
    t.add_argument("--to", action="append", choices=TRACKERS, required=True, metavar="TRACKER",
                   help="mlflow or tensorboard; may be given twice")
    return p


def version() -> str:

    return _version("saddlescape") or "unknown (not installed)"


HYDRA_FLAGS = ("-m", "--multirun")


class HydraFlag(ValueError):
    """An option of Hydra's command line, which means nothing here (one line)."""


def parse(argv) -> argparse.Namespace:
    """argparse, with overrides allowed anywhere among the options (`run f.yaml --sweep q seeds=8`):
    argparse's own positional matching would take them only right after the file."""
    p = parser()
    args, extra = p.parse_known_args(argv)
    hydra = [e for e in extra if e in HYDRA_FLAGS]
    if hydra:
        raise HydraFlag(f"{hydra[0]} is Hydra's flag for a multirun; saddlescape always runs every cell of the "
                        "sweep (a grid of key=v1,v2 included); allowed: the same command without it")
    if extra:
        if any(e.startswith("-") for e in extra) or args.command not in ("run", "validate"):
            p.parse_args(argv)                    # argparse's own message and exit 2
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv=None) -> int:
    """The command (argv: its arguments, default the process's own); returns its exit code,
    whoever calls it. Interrupted by Ctrl-C it returns 130 (the process entry `entry` then dies of
    SIGINT, as shells expect)."""
    configure()
    return command(argv)


def entry():
    """The `saddlescape` command and `python -m workflows`: the process ends with the command. Killed
    by SIGINT after its cleanup when interrupted (status 130, and a shell loop running it stops);
    otherwise without the interpreter's teardown (compat.exit_without_teardown: 1.3-1.5 s saved)."""
    code = main()
    if code == EXIT_CODE:
        exit_by_sigint()
    exit_without_teardown(code)


def command(argv) -> int:
    try:
        args = parse(argv)
    except KeyboardInterrupt:
        return interrupted("start")
    except HydraFlag as e:
        return fail(str(e))
    if getattr(args, "sweeps", None):
        args.sweeps = local_path(args.sweeps)
    for flag, lowest in (("max_cells", 1), ("workers", 1), ("max_failures", 0), ("dpi", 10)):
        value = getattr(args, flag, None)
        if value is not None and value < lowest:
            return fail(f"--{flag.replace('_', '-')}={value} is out of range; allowed: >= {lowest}")
    try:
        return {"validate": cmd_validate, "run": cmd_run, "analyze": cmd_analyze,
                "track": cmd_track}[args.command](args)
    except SweepError as e:
        return fail(str(e))
    except KeyboardInterrupt:               # before the sweep started (reading, validating): nothing written
        return interrupted("start" if args.command == "run" else args.command)
    except BrokenPipeError:                 # `saddlescape run ... --dry-run | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:                    # the storage could not be written (full, read-only, gone)
        return fail(f"cannot write the results: {e}; the cells stored so far are kept, rerun to resume", 1)


if __name__ == "__main__":
    entry()
