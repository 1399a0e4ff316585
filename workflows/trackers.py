"""Experiment trackers: every stored cell as one MLflow run, or one TensorBoard HParams session.

    saddlescape run sweeps.yaml --sweep quick --track mlflow [--track tensorboard]
    saddlescape track results/quick --to mlflow          # results that already exist
    run_sweep(..., track="mlflow")                       # the same from Python

A cell's record is read back from the store (its block and its summary), so a cell
tracked as Tune reports it, at the end of a run, or by `saddlescape track` from any storage is
the same record: its parameters (the flattened cell, as in rows.parquet) and a summary of its
runs (workflows/core/survival.py: cell_summary). The trackers run in one
background thread of the driver: a slow or dead tracker never holds up Tune's loop or the engine,
and it never costs a result or changes an exit code. Its first failure is one warning line;
the tracker is then left alone for the rest of the command, and the command ends with a note
saying how many stored cells it did not track and the `saddlescape track` that catches up. A
cell already recorded (an MLflow run of the experiment tagged with its cell_id and FINISHED; a
TensorBoard folder tensorboard/<cell_id>/ holding an event file) is never recorded again.

mlflow and tensorboardX are optional (`pip install -e '.[tracking]'`) and are imported only here,
in the tracking thread, only when a tracker is asked for.
"""
from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import logging
import math
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .core.rows import is_parameter
from .core.suggest import count
from .core.survival import cell_summary
from .store import Store

TRACKERS = ("mlflow", "tensorboard")
LIBRARIES = {"mlflow": ("mlflow",), "tensorboard": ("tensorboardX",)}
INSTALL = "pip install -e '.[tracking]'"
TENSORBOARD_DIR = "tensorboard"            # under results/<sweep>/: `tensorboard --logdir` it


class TrackingError(ValueError):
    """A tracker that cannot be asked for (unknown, or its library not installed); one line."""


def check(track, key: str = "--track") -> tuple[str, ...]:
    """The trackers asked for, in TRACKERS' order, once each; raises TrackingError naming the
    value and what is allowed when one is unknown or its library is missing. Imports nothing."""
    if track is None or track == "" or track == ():
        return ()
    if not isinstance(track, (str, list, tuple, set)):
        raise TrackingError(f"{key}={track!r} is not a tracker; allowed: {' or '.join(TRACKERS)}, or a list of them")
    asked = [track] if isinstance(track, str) else list(track)
    for name in asked:
        if name not in TRACKERS:
            raise TrackingError(f"{key}={name!r} is not a tracker; allowed: {', '.join(TRACKERS)}")
        missing = [lib for lib in LIBRARIES[name] if importlib.util.find_spec(lib) is None]
        if missing:
            raise TrackingError(f"{key} {name}: the {' and '.join(missing)} package is not installed; allowed: "
                                f"install the tracking extra ({INSTALL})"
                                + (f", or run without {key}" if key == "--track" else ""))
    return tuple(name for name in TRACKERS if name in asked)


# --- a cell's record, read from its part file ------------------------------------------------

@dataclass
class CellRecord:
    cell_id: str
    params: dict            # column -> value: the flattened cell (workflows.cell.flatten_cell), as stored
    metrics: dict           # name -> finite float (a metric that is undefined for the cell is absent)
    started: float          # epoch seconds: when the engine started on it (stored time - engine time)
    stored: float           # epoch seconds: when its part file was written


def read_record(store, key: str, index=None) -> CellRecord:
    """The record of the stored cell `key` (`index`: the store's, where the caller keeps one).
    Raises (OSError, ValueError, KeyError) where it is not stored."""
    rows, entry = store.read_cell(key, index)
    stored = entry["stored_at"] or time.time()
    params = {column: _native(rows[column].iloc[0]) for column in rows.columns if is_parameter(column)}
    # The summary computed where the cell was (the block's footer); the same function's.
    metrics = entry["summary"] or cell_summary(rows, entry["engine_seconds"])
    return CellRecord(key, params, metrics, stored - entry["engine_seconds"], stored)


def _native(value):
    """A parquet cell as a plain Python value: numpy scalars unwrapped, a missing value None."""
    import pandas as pd

    if value is None or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


# --- MLflow ------------------------------------------------------------------------------------

# MLflow's client retries a refused connection 7 times with exponential back-off (about four
# minutes) and waits 120 s for an answer; a tracker that is down would hold the end of every
# sweep that long. These apply where the user has not set them, while saddlescape talks to MLflow.
# The URL lines set_terminated prints for every run would be two lines per cell.
MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
              "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
# MLflow's limits (mlflow/utils/validation.py): names of at most 250 characters from
# [A-Za-z0-9_ ./-] (a colon only off Windows), values of at most 6000 characters, 100 params a request.
MLFLOW_NAME_LENGTH, MLFLOW_VALUE_LENGTH, MLFLOW_PARAMS_PER_BATCH = 250, 6000, 100


def mlflow_name(column: str) -> str:
    """A rows.parquet column as an MLflow param name: an entry of a list-valued parameter
    `optimizer.betas[0]` becomes `optimizer.betas.0` ([ and ] are refused); any other character
    MLflow refuses becomes `_`."""
    name = re.sub(r"\[(\d+)\]", r".\1", column)
    return re.sub(r"[^\w./ -]", "_", name)[:MLFLOW_NAME_LENGTH]


def mlflow_value(value) -> str:
    text = str(value)
    return text if len(text) <= MLFLOW_VALUE_LENGTH else text[:MLFLOW_VALUE_LENGTH - 1] + "…"


@contextlib.contextmanager
def mlflow_environment():
    added = [key for key in MLFLOW_ENV if key not in os.environ]
    os.environ.update({key: MLFLOW_ENV[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class MlflowTracker:
    """One experiment per sweep (named after it); per command one parent run (meta.json, the
    report) and, nested under it, one run per cell. The destination is MLflow's own:
    MLFLOW_TRACKING_URI, else mlflow's default (sqlite:///mlflow.db in the working directory; where
    ./mlruns holds an old file store, that store, which MLflow 3 refuses unless
    MLFLOW_ALLOW_FILE_STORE=true: the refusal is shown whole)."""
    name = "mlflow"

    def __init__(self):
        self.known: set[str] = set()          # cells with a FINISHED run in the experiment
        self.logged: set[str] = set()         # cells this command logged
        self.unfinished: dict[str, list] = {}  # cell -> runs a killed command left half-written

    def open(self, sweep: str, description: str, tags: dict, command: str, echo):
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.uri = self.client.tracking_uri
        experiment = self.client.get_experiment_by_name(sweep)
        if experiment is None:
            experiment_id = self.client.create_experiment(
                sweep, tags={"mlflow.note.content": description, "sweep": sweep})
        elif experiment.lifecycle_stage != "active":
            raise RuntimeError(f"the experiment {sweep!r} is deleted in {self.uri}; restore it "
                               "(mlflow experiments restore) or remove it for good (mlflow gc)")
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        self._find_cells()
        self.tags = tags
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self.parent = self.client.create_run(experiment_id, run_name=f"{command} {sweep} {stamp}", tags={
            **tags, "saddlescape_record": "sweep", "command": command, "mlflow.note.content": description}).info.run_id
        where = (f"{self.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{self.parent}"
                 if self.uri.startswith("http") else f"{self.uri}, experiment {experiment_id}, run {self.parent}")
        echo(f"tracking: mlflow experiment {sweep!r} ({count(len(self.known), 'cell')} already there): {where}")

    def _find_cells(self):
        from mlflow.entities import ViewType

        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], "tags.saddlescape_record = 'cell'",
                                           run_view_type=ViewType.ACTIVE_ONLY, max_results=50000, page_token=token)
            for run in page:
                key = run.data.tags.get("cell_id")
                if run.info.status == "FINISHED":
                    self.known.add(key)
                else:
                    self.unfinished.setdefault(key, []).append(run.info.run_id)
            token = page.token
            if not token:
                return

    def log_cell(self, record: CellRecord):
        from mlflow.entities import Metric, Param, RunTag

        params, truncated = {}, []
        for column, value in record.params.items():
            name = mlflow_name(column)
            if name in params:
                raise ValueError(f"params {column!r} and another column are both {name!r} in MLflow")
            params[name] = mlflow_value(value)
            if len(str(value)) > MLFLOW_VALUE_LENGTH:
                truncated.append(name)
        stamp = int(record.stored * 1000)
        label = f"{record.params.get('optimizer.name')} {record.params.get('problem.name')} {record.cell_id}"
        run = self.client.create_run(self.experiment_id, start_time=int(record.started * 1000), run_name=label,
                                     tags={**self.tags, "cell_id": record.cell_id, "saddlescape_record": "cell",
                                           "mlflow.parentRunId": self.parent}).info.run_id
        items = [Param(name, value) for name, value in params.items()]
        chunks = [items[i:i + MLFLOW_PARAMS_PER_BATCH] for i in range(0, len(items), MLFLOW_PARAMS_PER_BATCH)] or [[]]
        for chunk in chunks[:-1]:
            self.client.log_batch(run, params=chunk, synchronous=True)
        self.client.log_batch(run, params=chunks[-1], synchronous=True,
                              metrics=[Metric(name, value, stamp, 0) for name, value in record.metrics.items()],
                              tags=[RunTag("truncated_params", ",".join(truncated))] if truncated else [])
        self.client.set_terminated(run, "FINISHED", end_time=stamp)
        for stale in self.unfinished.pop(record.cell_id, []):    # one run per cell in the experiment
            self.client.delete_run(stale)
        self.logged.add(record.cell_id)

    def finish(self, meta: dict | None, counts: dict, status: str):
        from mlflow.entities import Metric

        if meta is not None:
            self.client.log_text(self.parent, json.dumps(meta, indent=2, sort_keys=True, default=str), "meta.json")
        stamp = int(time.time() * 1000)
        metrics = {**{f"cells_{k}": v for k, v in counts.items()}, "cells_logged": len(self.logged)}
        self.client.log_batch(self.parent, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
                              synchronous=True)
        self.client.set_terminated(self.parent, status)

    def add_report(self, directory: str):
        self.client.log_artifacts(self.parent, directory, artifact_path="analysis")


# --- TensorBoard -------------------------------------------------------------------------------

class TensorboardTracker:
    """One HParams session per cell, results/<sweep>/tensorboard/<cell_id>/: its parameters as
    hyperparameters and its summary as scalars (the HParams tab's metric columns). No experiment
    summary is written: TensorBoard reads only the first one it finds, and then hides every
    parameter the first cell lacks; without one it builds the table from every session."""
    name = "tensorboard"

    def __init__(self, store):
        self.store = store
        self.known: set[str] = set()
        self.logged: set[str] = set()

    def open(self, sweep: str, description: str, tags: dict, command: str, echo):
        import pyarrow.fs as pafs
        import tensorboardX  # noqa: F401  (loaded here, in the tracking thread, not per cell)

        selector = pafs.FileSelector(self.store.path(TENSORBOARD_DIR), recursive=True, allow_not_found=True)
        for info in self.store.fs.get_file_info(selector):
            parts = info.path.rsplit("/", 2)
            if info.type == pafs.FileType.File and "tfevents" in parts[-1] and ".tmp-" not in parts[-1]:
                self.known.add(parts[-2])
        echo(f"tracking: tensorboard HParams under {self.store.uri}/{TENSORBOARD_DIR} "
             f"({count(len(self.known), 'cell')} already there): tensorboard --logdir {self.store.uri}/{TENSORBOARD_DIR}")

    def log_cell(self, record: CellRecord):
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        _experiment, session_start, session_end = hparams(record.params, record.metrics)
        with tempfile.TemporaryDirectory(prefix="saddlescape-tb-") as local:
            with SummaryWriter(logdir=local) as writer:
                writer.file_writer.add_summary(session_start, walltime=record.stored)
                for name, value in record.metrics.items():
                    writer.add_scalar(name, value, 0, walltime=record.stored)
                writer.file_writer.add_summary(session_end, walltime=record.stored)
            # Written whole, then renamed (the store's atomic write): a half-written event file
            # never counts as a recorded cell.
            for filename in os.listdir(local):
                with open(os.path.join(local, filename), "rb") as f:
                    self.store._write_bytes(f"{TENSORBOARD_DIR}/{record.cell_id}/{filename}", f.read())
        self.logged.add(record.cell_id)

    def finish(self, meta: dict | None, counts: dict, status: str):
        pass

    def add_report(self, directory: str):
        pass


# --- the tracking thread -----------------------------------------------------------------------

@dataclass
class Session:
    """The trackers of one command, fed from the driver: `cell_stored(cell_id)` as each cell is
    stored (never blocks, never raises), `finish(...)` at the end (tracks every stored cell not
    tracked yet, closes the parent run, prints the outcome), `add_report(dir)` once a report exists.
    `catch_up` names the command that tracks what this one could not."""
    names: tuple
    store: object
    sweep: str
    description: str
    tags: dict
    command: str
    echo: Callable[[str], None]
    note: Callable[[str], None]
    warn: Callable[[str], None]
    trackers: list = field(init=False)
    errors: dict = field(init=False, default_factory=dict)       # tracker name -> its first failure
    unreadable: dict = field(init=False, default_factory=dict)   # cell_id -> why its part could not be read

    def __post_init__(self):
        self.trackers = [MlflowTracker() if name == "mlflow" else TensorboardTracker(self.store) for name in self.names]
        self.tasks: queue.Queue = queue.Queue()
        self._index = None                  # the store's index, refreshed when a cell is not in it
        self.abandon = threading.Event()
        self.thread = threading.Thread(target=self._work, name="saddlescape-tracking", daemon=True)
        self.thread.start()
        self.tasks.put((self._open, ()))

    # --- called by the driver -------------------------------------------------------------------
    def cell_stored(self, key: str):
        self.tasks.put((self._cell, (key,)))

    def finish(self, stored: set, meta: dict | None, counts: dict, status: str, interrupted: bool = False) -> bool:
        """Track the stored cells still missing (not after an interruption: the rerun does), close
        the parent run with meta.json, then say what was not tracked. Returns whether everything was."""
        if interrupted:
            self.abandon.set()
        else:
            self.tasks.put((self._catch_up, (set(stored),)))
        self.tasks.put((self._finish, (meta, counts, status)))
        self.tasks.put(None)
        # Interruptible (a Ctrl-C lands here, not in a lock wait); after a Ctrl-C only a moment.
        deadline = time.monotonic() + 2.0 if interrupted else math.inf
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(0.2)
        return self._outcome(set(stored))

    def add_report(self, directory: str):
        """Attach a report directory (analysis/) to the parent run; after finish()."""
        for tracker in self._alive():
            try:
                with self._quiet(), mlflow_environment():
                    tracker.add_report(directory)
            except Exception as e:                      # noqa: BLE001 - a tracker never fails the command
                self._failed(tracker, e)
                self.note(f"{tracker.name}: the report was not tracked; {self.catch_up_command(tracker.name)} "
                          "adds it with a new parent run")

    def catch_up_command(self, name: str) -> str:
        return f"`saddlescape track {self.store.uri} --to {name}`"

    # --- the tracking thread --------------------------------------------------------------------
    def _work(self):
        with self._quiet(), mlflow_environment():
            while (task := self.tasks.get()) is not None:
                function, args = task
                try:
                    function(*args)
                except Exception as e:                  # noqa: BLE001 - reported by _failed, never raised
                    for tracker in self._alive():
                        self._failed(tracker, e)

    def _alive(self):
        return [t for t in self.trackers if t.name not in self.errors]

    def _failed(self, tracker, error: Exception):
        if tracker.name in self.errors:
            return
        self.errors[tracker.name] = reason(error)
        self.warn(f"{tracker.name}: tracking stopped ({self.errors[tracker.name]}); the sweep goes on and "
                  "its results are stored as always")

    def _open(self):
        for tracker in self._alive():
            try:
                tracker.open(self.sweep, self.description, self.tags, self.command, self.echo)
            except Exception as e:                      # noqa: BLE001
                self._failed(tracker, e)

    def _cell(self, key: str):
        if self.abandon.is_set():
            return
        wanting = [t for t in self._alive() if key not in t.known and key not in t.logged]
        if not wanting:
            return
        try:
            if self._index is None or key not in self._index:
                self._index = self.store.index()     # the blocks written since
            record = read_record(self.store, key, self._index)
        except Exception as e:                          # noqa: BLE001 - the cell stays stored, untracked
            self.unreadable[key] = f"{type(e).__name__}: {e}"
            return
        for tracker in wanting:
            try:
                tracker.log_cell(record)
            except Exception as e:                      # noqa: BLE001
                self._failed(tracker, e)

    def _catch_up(self, stored: set):
        missing = {key for t in self._alive() for key in stored - t.known - t.logged}
        if missing:
            self.echo(f"tracking: {count(len(missing), 'stored cell')} not tracked yet, tracking them now")
        for key in sorted(missing):
            self._cell(key)

    def _finish(self, meta, counts, status):
        for tracker in self._alive():
            try:
                tracker.finish(meta, counts, status)
            except Exception as e:                      # noqa: BLE001
                self._failed(tracker, e)

    def _outcome(self, stored: set) -> bool:
        complete = True
        for tracker in self.trackers:
            untracked = stored - tracker.known - tracker.logged
            if tracker.name in self.errors or untracked:
                complete = False
                self.note(f"{tracker.name}: {len(untracked)} of the {count(len(stored), 'stored cell')} not tracked"
                          + (" (interrupted)" if self.abandon.is_set() else "")
                          + f"; catch up with {self.catch_up_command(tracker.name)}")
            else:
                self.echo(f"tracking: {tracker.name}: {count(len(tracker.logged), 'cell')} tracked now, "
                          f"{len(stored & tracker.known)} were already")
        for key, why in list(self.unreadable.items())[:3]:
            self.note(f"cell {key} not tracked: its part could not be read ({why})")
        return complete

    @contextlib.contextmanager
    def _quiet(self):
        """Lines the trackers' libraries would print from the tracking thread: urllib3's warning per
        retry of a refused request (the failure is reported once, by _failed) and MLflow's notes
        on creating its database (the destination is echoed once, by the tracker's open)."""
        ident = threading.get_ident()
        filters = [(logging.getLogger("urllib3.connectionpool"), _ThreadFilter(ident, logging.CRITICAL)),
                   (logging.getLogger("mlflow.store.db.utils"), _ThreadFilter(ident, logging.WARNING))]
        for logger, drop in filters:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger, drop in filters:
                logger.removeFilter(drop)


def reason(error: Exception) -> str:
    """A tracker's failure on one line: MLflow's HTTP errors, which spell out urllib3's whole retry
    history, in a few words; any other message whole (MLflow 3's refusal of its file store ends
    with its opt-out, MLFLOW_ALLOW_FILE_STORE=true), cut only past REASON_LENGTH characters."""
    text = " ".join(str(error).split())
    request = re.match(r"API request to (\S+) failed with exception (.*)", text)
    if request:
        url, cause = request.groups()
        cause = ("no connection" if re.search(r"NewConnectionError|Connection refused|RemoteDisconnected|"
                                              r"ConnectionResetError|Connection aborted", cause)
                 else "no answer (timed out)" if re.search(r"[Tt]imed? ?out", cause) else cause)
        text = f"{url}: {cause}"
    text = text if len(text) <= REASON_LENGTH else text[:REASON_LENGTH - 1] + "…"
    return f"{type(error).__name__}: {text}"


REASON_LENGTH = 2000


class _ThreadFilter(logging.Filter):
    """Drops the records of one thread below a level."""

    def __init__(self, ident: int, below: int):
        super().__init__()
        self.ident, self.below = ident, below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.ident or record.levelno >= self.below


# --- `saddlescape track` -----------------------------------------------------------------------

def open_results(path: str):
    """The Store of results/<sweep> (a local path or a pyarrow URI) and its meta.json; raises
    TrackingError (one line) where nothing there looks like a sweep's results."""

    path = str(path).rstrip("/")
    if "://" in path:                       # s3://bucket/prefix/<sweep>?endpoint_override=...: the query is the root's
        base, mark, query = path.partition("?")
        root, _, name = base.rstrip("/").rpartition("/")
        root += mark + query
    else:
        root, name = os.path.split(os.path.abspath(path))
    try:
        store = Store(root, name)
        meta = store.read_json("meta.json")
        stored = store.stored_cell_ids()
    except (OSError, ValueError) as e:
        raise TrackingError(f"track: RESULTS={path!r} cannot be read ({e}); allowed: a results/<sweep> "
                            "directory or URI written by saddlescape run") from None
    if meta is None and not stored:
        raise TrackingError(f"track: RESULTS={path!r} holds no stored cells (no meta.json, no parts/); "
                            "allowed: a results/<sweep> directory or URI written by saddlescape run")
    return store, meta or {}, stored


def sweep_tags(sweep: str, definition_hash, version, git_commit, results: str) -> dict[str, str]:
    """What every tracked run of a sweep is tagged with, by `run --track` and by `track` alike."""
    return {"sweep": sweep, "definition_hash": str(definition_hash), "saddlescape_version": str(version),
            "git_commit": str(git_commit), "results": results}


def track_stored(path: str, names, *, echo, note, warn) -> bool:
    """Track every stored cell of results/<sweep> not tracked yet (one parent run holding
    meta.json and the report); returns whether every stored cell is tracked now."""
    names = check(names, "--to")
    store, meta, stored = open_results(path)
    sweep = meta.get("sweep") or store.uri.rsplit("/", 1)[-1]
    tags = sweep_tags(sweep, meta.get("definition_hash"), (meta.get("versions") or {}).get("saddlescape"),
                      meta.get("git_commit"), store.uri)
    session = Session(names, store, sweep, meta.get("description", ""), tags, "track", echo, note, warn)
    counts = {k: v for k, v in (meta.get("cells") or {}).items() if isinstance(v, (int, float))}
    complete = session.finish(stored, meta or None, counts, "FINISHED")
    with local_copy(store, "analysis") as analysis:
        if analysis:
            session.add_report(analysis)
    return complete and not session.errors


@contextlib.contextmanager
def local_copy(store, folder: str):
    """A local directory holding the store's `folder` (itself where the store is local); None
    where there is no such folder."""
    import pyarrow.fs as pafs

    info = store.fs.get_file_info(store.path(folder))
    if info.type != pafs.FileType.Directory:
        yield None
    elif store.local:
        yield store.path(folder)
    else:
        with tempfile.TemporaryDirectory(prefix="saddlescape-") as tmp:
            pafs.copy_files(store.path(folder), f"{tmp}/{folder}", source_filesystem=store.fs)
            yield f"{tmp}/{folder}"
