"""Running packs of cells as Ray Tune trials (connecting to Ray: workflows/ray_session.py), and a
tuned sweep's search as Ray Tune trials chosen by a Tune Searcher (SearchCells, run_search).

The trainable is a thin function of its config (a pack of cells): it runs each cell with the
engine and writes each cell's rows to the store as soon as they exist, so a crash of the
driver, a worker or a node loses at most the cells in flight. A cell that raises does not stop
its pack; the trial then fails with every failed cell named, Tune retries it as FailureConfig
says (the retry skips the cells already stored), and what still fails is recorded as failed.
"""
from __future__ import annotations

import contextlib
import sys
import time

import ray
import torch
from ray import tune
from ray.tune.search import Searcher

from . import progress
from .cell import cell_id
from .core import compat
from .engine import keep_freed_memory
from .blocks import BlockWriter, block_prefix
from .local_runner import TRIAL_THREADS, compute
from .ray_session import warm_workers
from .registry import adopt_registrations, local_registrations
from .store import Store
from .tuned_search import TunedSearch

TRIAL_RESOURCES = {"cpu": TRIAL_THREADS}


class CellFailures(RuntimeError):
    pass


# Result keys avoid Tune's reserved names: a result with `done: True` ends the trial.
def run_pack(config: dict, packs: list, registrations=None, run: str = ""):
    """The trainable: one pack of cells. `packs` holds one object reference per pack, so a trial
    fetches only its own pack (ray.get), never the sweep's; the config holds only the pack's index,
    so Tune's per-result logs stay small. Cells are written a block at a time
    (workflows/blocks.py), and each block written is one report to Tune: a result per few seconds
    of work, not per cell. A retried trial skips the cells its earlier attempts wrote (its blocks'
    names begin with the pack's prefix).
    `registrations`: the optimizers and problems the driver registered in its own process."""
    run_cells(ray.get(packs[config["pack"]]), config, registrations, block_prefix(run, f"p{config['pack']:05d}"))


def run_cell(config: dict, registrations=None, run: str = ""):
    """The trainable of a tuned sweep's search: the one cell its Searcher chose (config["cell"]),
    written as a block of its own when the trial ends (the search scores it then)."""
    run_cells([config["cell"]], config, registrations, block_prefix(run, f"c{cell_id(config['cell'])}"))


def run_cells(cells: list[dict], config: dict, registrations, prefix: str):
    """Each cell computed and given to a block writer, one report to Tune per block written; raises
    CellFailures naming the cells that failed, once the others are stored. `prefix`: the names of
    this trial's blocks (a retried trial skips the cells an earlier attempt wrote)."""
    # Whether this worker is one Ray started ahead and warmed (workflows/warm_worker.py), not one
    # started for this trial: its process was created before Tune began (a causal order, not a race
    # with the worker's imports). Both clocks are this machine's (a cluster's workers are not warmed).
    warmed = sys.modules.get(f"{__package__}.warm_worker")
    warm = int(warmed is not None and warmed.process_started() < config["tune_started"])
    start_worker()
    adopt_registrations(registrations)
    store = Store(config["store_root"], config["sweep"])
    already = set(store.index(prefix=prefix).ids())
    failures: dict[str, str] = {}

    def report(writer):                  # from this thread: Tune's report is the trial's own
        for keys, seconds in writer.take_written():
            tune.report({"cell_ids": keys, "cells_stored": len(keys), "engine_seconds": seconds, "warm_worker": warm,
                         "cells_failed": len(failures)})

    with BlockWriter(store, prefix) as writer:
        for cell in cells:
            if cell_id(cell) in already:
                continue
            outcome = compute(cell, store, writer)
            if outcome.error is not None:
                failures[outcome.cell_id] = outcome.error
            report(writer)
    report(writer)
    if failures:
        raise CellFailures("; ".join(f"cell {k}: {v}" for k, v in failures.items()))


def inherited_environment():
    """Trial actors without a runtime_env on the embedded local Ray, whose workers were started and
    warmed ahead and inherit the driver's environment (compat.trials_without_runtime_env says why);
    on a cluster Tune's defaults stand."""
    return compat.trials_without_runtime_env() if warm_workers() else contextlib.nullcontext()


def start_worker():
    """What a trial's process sets once: one torch thread (a trial owns one core: no
    oversubscription) and an allocator that keeps freed memory (workflows/engine.py says why).
    Done here, where the trial starts, not when the engine is imported."""
    torch.set_num_threads(TRIAL_THREADS)
    keep_freed_memory()


class Progress(tune.Callback):
    """Cells done / total, elapsed time, and an estimate of the time left (workflows/progress.py). `on_cell(cell_id)`:
    told of each cell once it is stored (the experiment trackers, workflows/trackers.py; it only
    queues the cell, so Tune's loop never waits for a tracker)."""

    def __init__(self, total: int, echo, every: float = 2.0, on_cell=None):
        self.total, self.echo, self.every, self.on_cell = total, echo, every, on_cell
        self.done: set[str] = set()
        self.trials: set[str] = set()         # trials that reported, and those that ran on a warm worker
        self.warm_trials: set[str] = set()
        self.engine_seconds = 0.0
        self.start = time.monotonic()
        self.last = 0.0
        self.first_at: float | None = None    # seconds from the start to the first cells stored
        self.first_done = 0                   # and how many they were (a block brings several)

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment's state (for Tuner.restore); the hook
        # holds the trackers' thread and stays in this process, with the callback Tune runs.
        return {**self.__dict__, "on_cell": None}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.trials.add(trial.trial_id)
        if result.get("warm_worker"):
            self.warm_trials.add(trial.trial_id)
        stored = [key for key in result.get("cell_ids") or () if key not in self.done]
        if stored:
            self.done.update(stored)
            if self.first_at is None:
                self.first_at, self.first_done = time.monotonic() - self.start, len(self.done)
            self.engine_seconds += result.get("engine_seconds", 0.0)
            if self.on_cell is not None:
                for key in stored:
                    self.on_cell(key)
        now = time.monotonic()
        if now - self.last >= self.every or len(self.done) == self.total:
            self.last = now
            self.echo(self.line())

    def line(self) -> str:
        return progress.line(len(self.done), self.total, time.monotonic() - self.start, self.first_at,
                             self.first_done)


def run_packs(packs: list[list[dict]], store_root: str, sweep: str, *, run: str, workers: int, max_failures: int,
              echo=print, on_cell=None) -> Progress:
    """Run every pack as a Tune trial; returns the Progress: `engine_seconds` (summed over the
    cells run), `trials` and `warm_trials` (the trial ids that reported, and those of them that
    ran on a worker warmed ahead: workflows/warm_worker.py).
    Failures are left in the store (failed/<cell_id>.json) for the caller to report.
    `run`: this run's id, the first part of its blocks' names.
    `on_cell(cell_id)`: called on the driver as each cell is stored (Progress)."""
    store = Store(store_root, sweep)
    total = sum(len(p) for p in packs)
    progress = Progress(total, echo, on_cell=on_cell)
    refs = [ray.put(pack) for pack in packs]
    trainable = tune.with_resources(
        tune.with_parameters(run_pack, packs=refs, registrations=local_registrations(), run=run), TRIAL_RESOURCES)
    tuner = tune.Tuner(
        trainable,
        param_space={"pack": tune.grid_search(list(range(len(packs)))), "store_root": store_root, "sweep": sweep,
                     "tune_started": time.clock_gettime(time.CLOCK_BOOTTIME)},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=workers),
        run_config=tune.RunConfig(
            name="_tune", storage_path=store.base,
            storage_filesystem=None if store.local else store.fs,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[progress], verbose=0, log_to_file=True),
    )
    with inherited_environment(), compat.quiet_tune():
        grid = tuner.fit()
    # A trial that died without writing its failures (a killed worker): record them here.
    failed = [result for result in grid if result.error is not None]
    if failed:
        recorded, stored = store.failures(), store.index()
        for result in failed:
            for cell in packs[result.config["pack"]]:
                key = cell_id(cell)
                if key not in recorded and key not in stored:
                    store.record_failure(cell, key, f"trial failed: {result.error}")
    return progress


class SearchCells(Searcher):
    """A tuned sweep's search (workflows/tuned_search.py) as a Ray Tune search algorithm: each trial
    one cell it chose, its next round asked for once a group's round is stored and scored. The
    search's state is the results folder (stored cells replay), so Tune's searcher checkpoint is
    not written."""

    def __init__(self, search: TunedSearch):
        super().__init__()
        self.search = search
        self.trials: dict[str, str] = {}                 # trial id -> cell id

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True                                      # the space is the search's own

    def suggest(self, trial_id: str):
        cell = self.search.take()
        if cell is None:
            return Searcher.FINISHED if self.search.finished else None
        self.trials[trial_id] = cell.id
        return {"cell": cell}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        key = self.trials.pop(trial_id, None)
        if key is None:
            return
        stored = self.search.stored_now(key)
        (self.search.complete if stored else self.search.fail)(key)

    def save(self, checkpoint_path: str):
        pass                                             # the results folder is the state


def run_search(search: TunedSearch, store_root: str, sweep: str, *, run: str, workers: int, max_failures: int,
               echo=print, on_cell=None) -> Progress:
    """A tuned sweep's search as Ray Tune trials, one cell each, chosen by SearchCells; at most
    `workers` at a time. Returns the Progress (as run_packs). A cell that failed after its retries
    is recorded in the store and scored as never reaching the target."""
    store = Store(store_root, sweep)
    progress = Progress(search.left_at_most(), echo, on_cell=on_cell)
    trainable = tune.with_resources(tune.with_parameters(run_cell, registrations=local_registrations(), run=run),
                                    TRIAL_RESOURCES)
    tuner = tune.Tuner(
        trainable,
        param_space={"store_root": store_root, "sweep": sweep, "tune_started": time.clock_gettime(time.CLOCK_BOOTTIME)},
        tune_config=tune.TuneConfig(search_alg=SearchCells(search), num_samples=-1, reuse_actors=True,
                                    max_concurrent_trials=workers,
                                    trial_dirname_creator=lambda trial: f"cell_{trial.trial_id}"),
        run_config=tune.RunConfig(
            name="_tune", storage_path=store.uri if not store.local else store.base,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[progress], verbose=0, log_to_file=True),
    )
    with inherited_environment(), compat.quiet_tune():
        grid = tuner.fit()
    failed = [(result.config["cell"], result.error) for result in grid
              if result.error is not None and "cell" in result.config]
    if failed:
        recorded, stored = store.failures(), store.index()
        for cell, error in failed:
            if cell_id(cell) not in recorded and cell_id(cell) not in stored:
                store.record_failure(cell, cell_id(cell), f"trial failed: {error}")
    return progress
