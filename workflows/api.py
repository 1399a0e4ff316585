"""The Python API: run a sweep from a notebook and get its tables back.

    from workflows import run_sweep
    result = run_sweep("sweeps.yaml", "smoke", backend="local")
    result.rows          # one row per seed per cell (pandas)
    result.cells         # one row per cell: status, counts, engine seconds
    result.path          # where they are stored (results/smoke)
    result.analyze()     # report.md with its tables and figures

    run_sweep("sweeps.yaml", "smoke", track="mlflow")   # every stored cell also an MLflow run

It is what `saddlescape run` does (the CLI calls `execute` below): the same store, the same
resume (a second call computes nothing), the same meta.json, the same refusal of a results
folder written by a definition whose cells would drop out of its tables (workflows/definition.py;
allow_changed=True proceeds), and the same Ctrl-C: every finished cell kept, then
SweepInterrupted (a KeyboardInterrupt) raised. `backend="ray"` (the default) runs
the cells as Ray Tune trials on an embedded local Ray or the cluster at `address`;
`backend="local"` runs them one after another in this process, without Ray: for sweeps of
seconds, tests, and optimizers or problems defined in the notebook itself (registered with
workflows.registry; through Ray they are shipped to the workers with the cells).
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from . import estimate, report_inputs, tables, yaml12
from .blocks import new_run_id
from .cell import cell_id
from .core.compat import configure
from .core.suggest import count
from .definition import Verdict, compare
from .interrupt import SweepInterrupted, deferred, noticed
from .local_runner import run_cells
from .lock import sweep_lock, this_command
from .packing import pack_cells
from .prefetch import prefetch
from .registry import parameter_conditions
from .spec import DEFAULT_MAX_CELLS, Sweep, SweepError, load_sweeps, sweep_names, sweeps_from_mapping
from .store import Store, explicit_root
from .trackers import Session, TrackingError, check, sweep_tags
from .tuned_search import TunedSearch, run_here

BACKENDS = ("ray", "local")
PACKAGES = ("torch", "ray", "pandas", "numpy", "pyarrow", "pyyaml", "lifelines", "scipy", "seaborn")


@dataclass
class SweepResult:
    """What a sweep stored: `rows` (one row per seed per cell), `cells` (one row per cell, with
    its status), `meta` (meta.json), `path` (the results directory or URI) and the cell `counts`."""
    path: str
    meta: dict
    counts: dict
    store: Store = field(repr=False)
    tracking: object = field(default=None, repr=False)   # the trackers' session (workflows/trackers.py)

    @property
    def rows(self) -> pd.DataFrame:
        return self.store.read_table("rows.parquet") if self.counts.get("done") else pd.DataFrame()

    @property
    def cells(self) -> pd.DataFrame:
        return self.store.read_table("cells.parquet")

    def analyze(self, out_dir=None, *, reference=None):
        """The report (analysis.analyze) of these results; returns report.md's path. `reference`: the
        optimizer name(s) or variant label(s) to compare against (default: the sweep's). Run with
        `track=`, the report and its figures also go to the tracker (MLflow: the parent run)."""
        from analysis import analyze  # lazy: scipy, lifelines and matplotlib take seconds to import

        if not self.store.local:
            raise ValueError(f"analyze: {self.path} is remote; allowed: a local results directory "
                             "(or use `saddlescape analyze`, which copies it)")
        options = {"reference": list(reference) if isinstance(reference, (list, tuple)) else reference}
        # Not while another run writes these tables or its own report (workflows/lock.py).
        with sweep_lock(self.store, lambda line: print(f"note: {line}", file=sys.stderr, flush=True)):
            if out_dir is None:
                report_inputs.forget(self.store)
            report = analyze(self.store.base, None if out_dir is None else local_path(out_dir), reference=reference)
            if out_dir is None:
                report_inputs.record(self.store, options)
        if self.tracking is not None:
            self.tracking.add_report(str(Path(report).parent))
        return report


def run_sweep(spec_or_path, sweep: str | None = None, *, storage=None, workers: int | None = None,
              address: str | None = None, backend: str = "ray", max_failures: int = 2,
              max_cells: int = DEFAULT_MAX_CELLS, echo: Callable[[str], None] | None = None,
              allow_changed: bool = False, track=None) -> SweepResult:
    """Run one sweep (only its cells not stored yet) and return its tables.

    spec_or_path: a sweeps file (path), or a mapping: a whole file ({defaults, sweeps}) or one
        sweep's block ({description, method, parameters}).
    sweep: the sweep's name (needed when the file has more than one; a single block is named
        `sweep`, default "notebook").
    storage: results root, a local path or a pyarrow URI (default: "results").
    backend: "ray" (Ray Tune trials) or "local" (in this process, no Ray).
    allow_changed: proceed when the stored results were written by a definition whose stored
        cells would drop out of the tables (workflows/definition.py); default: refuse.
    track: "mlflow", "tensorboard" or both (a list): every stored cell also goes to that
        experiment tracker (workflows/trackers.py), as with `saddlescape run --track`; a tracker
        that fails is one warning on stderr, never an exception.
    Raises SweepError (a ValueError) on a bad spec, with one line naming what is wrong, before
    anything is written; SweepInterrupted (a KeyboardInterrupt) on Ctrl-C, after keeping every
    finished cell (calling run_sweep again resumes).
    """

    chosen = resolve_sweep(spec_or_path, sweep, max_cells)
    return execute(chosen, storage or "results", backend=backend, workers=workers, address=address,
                   max_failures=max_failures, echo=echo or (lambda line: None), allow_changed=allow_changed,
                   track=track, python=True, command=f"run_sweep in {this_command()}")


def resolve_sweep(spec_or_path, sweep: str | None, max_cells: int = DEFAULT_MAX_CELLS, overrides=()) -> Sweep:
    if isinstance(spec_or_path, dict):
        sweeps = sweeps_from_mapping(spec_or_path, sweep or "notebook", max_cells=max_cells)
        if sweep is None and list(sweeps) == ["notebook"] and "sweeps" not in spec_or_path:
            sweeps["notebook"].unnamed = True         # the refusal of a clash says how to name it
    else:
        spec_or_path = local_path(spec_or_path)
        if sweep is None:                 # a file of one sweep needs no name; choose before expanding
            names = sweep_names(spec_or_path)
            if len(names) != 1:
                raise SweepError(f"{spec_or_path}: defines {len(names)} sweeps, which one? allowed: --sweep NAME, "
                                 f"one of {', '.join(names)}")
            sweep = names[0]
        sweeps = load_sweeps(spec_or_path, only=sweep, max_cells=max_cells, overrides=overrides)
    if sweep is None:
        if len(sweeps) != 1:
            raise SweepError(f"sweep=None but the file defines {len(sweeps)} sweeps; allowed: one of "
                             + ", ".join(sweeps))
        sweep = next(iter(sweeps))
    if sweep not in sweeps:
        raise SweepError(f"sweep={sweep!r} is not defined; allowed: {', '.join(sweeps)}")
    return sweeps[sweep]


@dataclass
class RunPlan:
    """What a run of `sweep` on `store` would do, found without writing anything."""
    root: str                    # the results root, absolute where local
    store: Store
    cells: dict                  # cell_id -> cell, in the sweep's order
    done: set                    # the ids of the cells already stored
    todo: list                   # the cells to compute (a tuned sweep: those of its searches' current rounds)
    verdict: Verdict             # how the sweep relates to the definition that wrote the store
    index: object = None         # what the store held (store.Index)
    search: TunedSearch | None = None   # a tuned sweep's searches, replayed from what is stored


def local_path(path) -> str:
    """A path as people write it: `~` and `~user` are their home directories (a quoted '~/x'
    reaches the command unexpanded, as does --storage=~/x); a URI (s3://...) is left alone."""
    path = str(path)
    return path if "://" in path else os.path.expanduser(path)


def absolute(storage) -> str:
    """The results root as people write it (`local_path`), absolute where local: Tune runs each
    trial in a directory of its own, where a relative path would point somewhere else. The lock
    and the plan both take their path from here."""
    storage = local_path(storage)
    return storage if "://" in storage else os.path.abspath(storage)


def plan(sweep: Sweep, storage: str, allow_changed: bool = False, python: bool = False) -> RunPlan:
    """Raises SweepError when the store holds results of a definition this one may not share.
    `python`: errors name run_sweep's arguments (storage=) instead of the command line's."""

    flag = "storage=" if python else "--storage "
    storage = absolute(storage)
    store = open_store(storage, sweep.name, flag)
    try:
        # A tuned sweep's cells are those its searches reach: replayed from the stored ones, up to
        # the rounds still to compute (workflows/tuned_search.py).
        search = TunedSearch(sweep.tuned, store) if sweep.tuned is not None else None
        cells = search.ordered() if search is not None else {cell_id(c): c for c in sweep.cells}
        members = _members(search, store, sweep) if search is not None else cells
        verdict = compare(store, sweep, members, allow_changed, python)
    except OSError as e:                  # a remote store that cannot be read (credentials, network)
        raise SweepError(f"{flag}{storage}: cannot be read ({e}); allowed: a local path or a "
                         "pyarrow filesystem URI this machine can read and write") from None
    if verdict.kind == "refused":
        raise SweepError(verdict.message)
    index = search.index() if search is not None else store.index()   # the search read it already
    done = index.done(members)
    todo = search.pending() if search is not None else [c for k, c in cells.items() if k not in done]
    return RunPlan(storage, store, cells, done, todo, verdict, index, search)


def _members(search: TunedSearch, store: Store, sweep: Sweep) -> dict:
    """The cells of a tuned sweep that a stored result may belong to: those its searches reach now,
    and, where the stored results were written by this very definition, every cell its stored
    tuning.parquet lists that this design makes (a search resumed after a lost cell replays only up
    to it, and reaches the rest again once it is recomputed: the search is deterministic)."""
    meta = store.read_json("meta.json") or {}
    if meta.get("definition_hash") != sweep.hash:
        return search.ordered()
    return {**search.ordered(), **search.stored_members()}


def open_store(storage: str, name: str, flag: str = "--storage ") -> Store:
    """The sweep's store, refused in one line (before anything is written) when `storage` cannot
    hold it: a URI pyarrow does not know, a local path under a file or where nothing may be written."""
    try:
        store = Store(storage, name)
    except (ValueError, OSError) as e:    # pyarrow's ArrowInvalid is a ValueError
        raise SweepError(f"{flag}{storage!r} is not a results root ({e}); allowed: a local path or a pyarrow "
                         "filesystem URI (s3://bucket/prefix, gs://...)") from None
    if store.local:
        existing = Path(store.base)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            what = "a file" if existing.is_file() else "not writable"
            raise SweepError(f"{flag}{storage}: {existing} is {what}; allowed: a directory this user can "
                             "write (created where missing)")
    return store


def execute(sweep: Sweep, storage: str, *, backend: str = "ray", workers: int | None = None,
            address: str | None = None, max_failures: int = 2, echo=print, allow_changed: bool = False,
            note: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
            track=(), python: bool = False, command: str | None = None) -> SweepResult:
    """Compute the sweep's missing cells on `backend`, consolidate its tables, write meta.json.

    Refuses (SweepError, nothing written) a store written by a definition whose stored cells
    would drop out of the tables, unless `allow_changed`. Holds the sweep's folder from its plan
    to its last table: a run of the same sweep into the same storage waits for it (one note),
    then computes only what is still missing (workflows/lock.py; `command`: how this run is named
    to such a run). On Ctrl-C: stops the cells in flight,
    writes the tables of every finished cell and a meta.json that says `interrupted`, and raises
    SweepInterrupted (with the result). `note`, `warn`: where one-line notes and warnings go
    (default: stderr). `track`: experiment trackers that get every stored cell
    (workflows/trackers.py); refused (SweepError, nothing written) when unknown or not installed.
    `python`: called by run_sweep (errors name its arguments). A sweep whose cells to run would
    take more than a day, or more than 1e12 seed-steps, gets the warning `validate` gives, and runs.
    One run at a time per sweep folder: another waits for it (workflows/lock.py); `command` says
    who holds it."""

    if backend not in BACKENDS:
        raise SweepError(f"backend={backend!r} is not known; allowed: {', '.join(BACKENDS)}")
    if backend == "ray":
        configure()                               # before Ray is imported or started (core/compat.py)
    note = note or (lambda line: print(f"note: {line}", file=sys.stderr, flush=True))
    warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr, flush=True))
    trackers = check_trackers(track)
    flag = "storage=" if python else "--storage "
    with sweep_lock(open_store(absolute(storage), sweep.name, flag), note, command):
        return _execute(sweep, storage, backend, workers, address, max_failures, echo, allow_changed, note, warn,
                        trackers, python)


def _execute(sweep: Sweep, storage: str, backend, workers, address, max_failures, echo, allow_changed, note, warn,
             trackers, python) -> SweepResult:
    p = plan(sweep, storage, allow_changed, python)
    _prepare(sweep, p, backend, address, note, warn)
    started = now()
    if p.search is not None:
        echo(f"sweep {sweep.name}: tuned comparison of {count(len(sweep.tuned.groups), 'variant and setting', 'variants and settings')}"
             f" (at most {count(p.search.design.upper_bound(), 'cell')}), {len(p.done)} already stored, "
             f"{len(p.todo)} of its next rounds to run -> {p.store.uri}")
    else:
        echo(f"sweep {sweep.name}: {count(len(p.cells), 'cell')}, {len(p.done)} already stored, {len(p.todo)} to run "
             f"-> {p.store.uri}")
    session = open_tracking(trackers, sweep, p.store, echo, note, warn)
    run, interrupted = _compute(sweep, p, backend=backend, workers=workers, address=address,
                                max_failures=max_failures, echo=echo, warn=warn,
                                on_cell=session.cell_stored if session else None)
    if p.search is not None:              # the cells the searches reached, in the order of their groups
        p.cells = p.search.ordered()
        for line in p.search.summary():
            echo(line)
    made = _consolidate(p, session)
    computed = made.done - p.done
    if interrupted:
        run["engine_seconds"] = round(tables.engine_seconds(made, computed), 3)
    meta = _meta(sweep, p, run, started, interrupted, computed)
    if not _published(p, made, meta):
        interrupted = interrupted or "consolidation"
    counts = made.counts
    result = SweepResult(p.store.uri, {**meta, "cells": {**meta["cells"], **counts}}, counts, p.store, session)
    interrupted = _finish_tracking(session, made, result, interrupted)
    if interrupted:
        raise SweepInterrupted(interrupted, result)
    return result


def _prepare(sweep: Sweep, p: RunPlan, backend: str, address, note, warn):
    """The sweep's notes and warnings; a cluster address checked; the failed cells' attempts
    counted afresh."""
    for line in [*sweep.notes, p.verdict.message]:
        if line:
            note(line)
    for line in sweep.warnings:
        warn(line)
    if p.todo and backend == "ray" and (address or os.environ.get("RAY_ADDRESS")):
        from .ray_session import cluster_address

        cluster_address(address)              # one line now, not minutes of Ray's retries later
    p.store.clear_failures(p.cells.keys() - p.done)      # about to be retried: count its attempts afresh


@dataclass
class _Stage:
    """Where a run is, for the line and the meta.json of a Ctrl-C: None, "ray start" or "cells"."""
    name: str | None = None


def _compute(sweep: Sweep, p: RunPlan, *, backend: str, workers, address, max_failures: int, echo, warn,
            on_cell) -> tuple[dict, str | None]:
    """Compute the plan's cells to do on `backend`, each stored as it finishes (`on_cell` then gets
    it, from the driver). Returns (the run's record for meta.json: backend, workers and seconds,
    the stage a Ctrl-C came in or None); on Ctrl-C the cells in flight stop and the finished ones
    are kept, and the record holds what was measured until then."""
    run = {"backend": backend, "workers": 0, "ray_start_seconds": 0.0, "tune_seconds": 0.0, "engine_seconds": 0.0,
           "address": address or os.environ.get("RAY_ADDRESS") if backend == "ray" else None}
    stage = _Stage()
    try:
        if p.todo and backend == "ray":
            _run_on_ray(sweep, p, run, stage, workers=workers, address=address, max_failures=max_failures,
                       echo=echo, warn=warn, on_cell=on_cell)
        elif p.todo:
            _run_here(sweep, p, run, stage, max_failures=max_failures, echo=echo, warn=warn, on_cell=on_cell)
    except KeyboardInterrupt:
        echo(f"  interrupted during {stage.name}: keeping the finished cells")
        return run, stage.name
    return run, None


def _run_on_ray(sweep: Sweep, p: RunPlan, run: dict, stage: _Stage, *, workers, address, max_failures: int, echo, warn,
               on_cell):
    """The cells as Ray Tune trials, packed for the workers; `run` gets the workers and the seconds
    of Ray's start, of Tune and of the engine."""
    stage.name = "ray start"
    with noticed():                       # a Ctrl-C during `import ray` is not lost
        from . import ray_session  # Ray only when there is work for it

    t0 = time.perf_counter()
    runner = prefetch(f"{__package__}.tune_runner")    # Ray Tune, while Ray starts
    with ray_session.connected(address, workers) as n_workers:
        with noticed():
            tune_runner = runner.module()
        t1 = time.perf_counter()          # "Ray start": Ray up and Ray Tune imported
        stage.name = "cells"
        _warn_if_absurd(sweep, p.todo, n_workers, "ray", warn)
        run.update(workers=n_workers, ray_start_seconds=round(t1 - t0, 3))
        if p.search is not None:
            echo(f"  the search's cells as trials (one cell each) on {count(n_workers, 'worker')}")
            progress = tune_runner.run_search(p.search, explicit_root(p.root), sweep.name, run=new_run_id(),
                                              workers=n_workers, max_failures=max_failures, echo=echo, on_cell=on_cell)
        else:
            packs = pack_cells(p.todo, n_workers)
            echo(f"  {count(len(packs), 'trial')} on {count(n_workers, 'worker')}")
            progress = tune_runner.run_packs(packs, explicit_root(p.root), sweep.name, run=new_run_id(),
                                             workers=n_workers, max_failures=max_failures, echo=echo, on_cell=on_cell)
        engine = progress.engine_seconds
        t2 = time.perf_counter()
        run["cells_ended_at"] = time.time()       # epoch seconds: what follows is Ray's stop and the tables
    # Parallel efficiency: engine time over the workers' wall time while Tune ran; the rest
    # is Tune's per-trial overhead and idle workers at the end.
    run.update(tune_seconds=round(t2 - t1, 3), engine_seconds=round(engine, 3),
               trials=len(progress.trials), warm_trials=len(progress.warm_trials),
               efficiency=round(engine / max((t2 - t1) * n_workers, 1e-9), 4))


def _run_here(sweep: Sweep, p: RunPlan, run: dict, stage: _Stage, *, max_failures: int, echo, warn, on_cell):
    """The cells one after another in this process (the local backend); `run` gets the seconds."""
    stage.name = "cells"
    _warn_if_absurd(sweep, p.todo, 1, "local", warn)
    t1 = time.perf_counter()
    if p.search is not None:
        engine = run_here(p.search, run=new_run_id(), max_failures=max_failures, echo=echo, on_cell=on_cell)
    else:
        engine = run_cells(p.todo, p.store, run=new_run_id(), max_failures=max_failures, echo=echo, on_cell=on_cell)
    run["cells_ended_at"] = time.time()
    run.update(workers=1, engine_seconds=round(engine, 3), local_seconds=round(time.perf_counter() - t1, 3))


def _warn_if_absurd(sweep: Sweep, todo: list, n_workers: int, backend: str, warn):
    """validate's warning of a sweep of days, for the cells this run computes on its workers."""
    absurd = estimate.warning(sweep.name, todo, estimate.seed_steps(todo), n_workers, backend)
    if absurd:
        warn(absurd)


def _consolidate(p: RunPlan, session):
    """The sweep's tables from its stored cells (workflows/tables.py: made in temporaries, or found
    up to date). A Ctrl-C here leaves the stored tables as they were, closes the tracking session
    as killed and raises SweepInterrupted."""
    try:
        # Nothing computed: what the store holds is what the plan read. Otherwise the plan's index
        # is out of date, and let go before the store's is read (at 10⁵ cells, 0.3 KB a cell).
        if p.todo:
            p.index = None
        return tables.collect(p.store, p.cells, p.index)
    except KeyboardInterrupt:
        if session is not None:
            session.finish(set(p.done), None, {}, "KILLED", interrupted=True)
        raise SweepInterrupted("consolidation") from None       # the stored tables are as they were


def _meta(sweep: Sweep, p: RunPlan, run: dict, started: str, interrupted: str | None, computed: set) -> dict:
    """meta.json: the sweep's definition, the versions and commit that ran it, its cells' counts and
    the run's record (`_compute`)."""
    return {
        "sweep": sweep.name, "description": sweep.description,
        "yaml": yaml12.dump({sweep.name: sweep.definition}),
        "definition": sweep.definition, "definition_hash": sweep.hash,
        "overrides": sweep.overrides,
        "hash": hashlib.sha256("".join(sorted(p.cells)).encode()).hexdigest()[:16],
        "versions": versions(), "git_commit": git_commit(), "host": platform.node(),
        "analysis": sweep.analysis, "conditions": parameter_conditions(p.cells.values()),
        "started": started, "finished": now(),
        "interrupted": interrupted is not None, "interrupted_during": interrupted,
        "definition_change": p.verdict.message or None,
        # computed: cells that got results in this run; attempted: the cells it set out to run.
        "cells": {"computed_this_run": len(computed), "reused": len(p.done),
                  # a tuned sweep's searches ask for more cells as they go than its first rounds
                  "attempted_this_run": len(p.todo) if p.search is None else len(computed) + len(p.search.failed)},
        "run": run,
        **({"tuning": {**sweep.tuned.spec.as_dict(), "fresh_seed": sweep.tuned.fresh_seed,
                       "groups": len(sweep.tuned.groups), "finished": p.search.finished}}
           if p.search is not None else {}),
    }


def _published(p: RunPlan, made: tables.Tables, meta: dict) -> bool:
    """The tables and their meta.json put in place together (a Ctrl-C is held until both are: a few
    renames and a small file); False where one came meanwhile. A tuned sweep's tuning.parquet
    (which group, point and role each of its cells is: TunedSearch.table) goes first: meta.json,
    last, describes them all."""
    try:
        with deferred():
            if p.search is not None:
                p.store.write_table("tuning.parquet", p.search.table())
            tables.publish(p.store, made, meta)
    except KeyboardInterrupt:
        return False
    finally:
        tables.discard(p.store, made)
    return True


def _finish_tracking(session, made, result: SweepResult, interrupted: str | None) -> str | None:
    """The trackers get the run's last cells, meta and status (killed, failed or finished); returns
    the stage of the run's interruption ("tracking" where a Ctrl-C came now), or None."""
    if session is None:
        return interrupted
    counts = result.counts
    status = "KILLED" if interrupted else "FAILED" if counts["failed"] else "FINISHED"
    try:
        session.finish(made.done, result.meta, result.meta["cells"], status, interrupted=interrupted is not None)
    except KeyboardInterrupt:               # Ctrl-C while the last cells were being tracked
        return interrupted or "tracking"
    return interrupted


def check_trackers(track) -> tuple:
    """The experiment trackers asked for; SweepError (one line, before anything is written) when
    one is unknown or its library is missing. Without trackers nothing of tracking is imported."""
    if not track:
        return ()

    try:
        return check(track)
    except TrackingError as e:
        raise SweepError(str(e)) from None


def open_tracking(trackers: tuple, sweep: Sweep, store: Store, echo, note, warn):
    """The tracking session of this run (None without trackers): its trackers open in their own
    thread while the sweep starts."""
    if not trackers:
        return None

    tags = sweep_tags(sweep.name, sweep.hash, _version("saddlescape"), git_commit(), store.uri)
    return Session(trackers, store, sweep.name, sweep.description, tags, "run", echo, note, warn)


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
