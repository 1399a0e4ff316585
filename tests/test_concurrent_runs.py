"""Two runs into one sweep folder (issue 24, item 10): the second waits for the first, saying for
what, then computes only what is still missing; nothing is lost and no cell is computed twice.
The first run's cells are held at the turnstile (tests/gate.py) while the second starts, so the
runs overlap however fast the machine is."""
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from gate import Gate
from helpers import Driver, meta, write_sweep
from raycluster import ray_env

from workflows.lock import LOCK_NAME, sweep_lock
from workflows.store import Store

SWEEP = """
sweeps:
  g:
    parameters:
      problem: {name: gated_saddle, dim: 2}
      optimizer.name: sgd
      optimizer.lr: {values: [0.01, 0.02]}
      seeds: 4
      budget: 50
"""
WAITING = "is in use by another run (pid "


@pytest.fixture
def setup(tmp_path):
    path = write_sweep(tmp_path, SWEEP)
    storage = tmp_path / "s"
    args = ["-m", "workflows", "run", str(path), "--sweep", "g", "--storage", str(storage), "--no-analyze"]
    return path, storage, args, Gate(tmp_path / "gate")


def stored_cells(storage: Path) -> pd.DataFrame:
    return pd.read_parquet(storage / "g" / "cells.parquet")


@pytest.fixture
def runs():
    """Start local-backend runs (helpers.Driver); each stopped after the test."""
    started = []

    def start(args, env: dict) -> Driver:
        started.append(Driver(args, env))
        return started[-1]

    yield start
    for run in started:
        run.cleanup()


@pytest.mark.slow
def test_a_second_run_waits_then_computes_only_what_the_first_left(setup, runs):
    """CLI, local backend: the second run extends the grid (lr 0.03 added) while the first holds
    its first cell; a third, started meanwhile, is stopped with Ctrl-C while it waits."""
    _, storage, args, gate = setup
    env = gate.env(ray_env())
    first = runs(args + ["--backend", "local"], env)
    first.wait_for(lambda: gate.tickets() >= 1, "at the gate")        # it holds the folder now

    second = runs(args + ["--backend", "local", "optimizer.lr=0.01,0.02,0.03"], env)
    third = runs(args + ["--backend", "local"], env)
    for run in (second, third):
        run.wait_for(lambda r=run: WAITING in r.stderr or gate.tickets() > 1, "waiting")
        assert gate.tickets() == 1, "a run computed a cell while another held the folder:\n" + run.stderr
    note = [line for line in second.stderr.splitlines() if WAITING in line]
    assert len(note) == 1 and note[0].startswith(f"note: {storage / 'g'} is in use by another run "
                                                 f"(pid {first.proc.pid} on ")
    assert "workflows run" in note[0] and "Ctrl-C stops waiting" in note[0]

    os.killpg(third.proc.pid, signal.SIGINT)                        # Ctrl-C while it waits
    assert third.finish(60) == -signal.SIGINT
    assert "interrupted: rerun the same command to resume (stopped during start)" in third.stderr
    assert "Traceback" not in third.stderr

    gate.open()
    assert first.finish(400) == 0, first.output
    assert second.finish(400) == 0, second.output
    assert "sweep g: 2/2 cells stored" in first.stdout
    assert "sweep g: 3 cells, 2 already stored, 1 to run" in second.stdout
    assert "sweep g: 3/3 cells stored" in second.stdout
    assert gate.tickets() == 3                                           # every cell built once
    cells = stored_cells(storage)
    assert len(cells) == 3 and (cells.status == "ok").all()
    assert sorted(cells["optimizer.lr"]) == [0.01, 0.02, 0.03]
    assert meta(storage, "g")["cells"]["computed_this_run"] == 1 and meta(storage, "g")["cells"]["reused"] == 2
    assert not (storage / "g" / LOCK_NAME).exists()


@pytest.mark.slow
def test_run_sweep_waits_for_a_cli_run_on_ray_and_computes_nothing_twice(setup, ray_drivers):
    """The first run on an embedded Ray; run_sweep with the same grid (from another process) waits,
    then finds every cell stored and starts no Ray."""
    path, storage, args, gate = setup
    env = gate.env(ray_env())
    code = (f"from workflows import run_sweep; r = run_sweep({str(path)!r}, 'g', storage={str(storage)!r}); "
            "print('computed', r.meta['cells']['computed_this_run'], 'reused', r.meta['cells']['reused'])")
    first = ray_drivers(args + ["--workers", "1"], env)
    first.wait_for(lambda: gate.tickets() >= 1, "at the gate")
    second = ray_drivers(["-c", code], env)
    second.wait_for(lambda: WAITING in second.stderr or gate.tickets() > 1, "waiting")
    assert gate.tickets() == 1, second.stderr
    assert f"in use by another run (pid {first.proc.pid} on " in second.stderr
    gate.open()
    assert first.finish(400) == 0, first.output
    assert second.finish(400) == 0, second.output
    assert "computed 0 reused 2" in second.stdout
    assert gate.tickets() == 2
    assert len(stored_cells(storage)) == 2


def test_threads_of_one_process_take_turns_and_a_nested_hold_does_not_wait_for_itself(tmp_path):
    store = Store(str(tmp_path), "g")
    inside, release, notes, order = threading.Event(), threading.Event(), [], []

    def first():
        with sweep_lock(store, notes.append):
            with sweep_lock(store, notes.append):                       # the CLI's hold around execute's
                order.append("first in")
                inside.set()
                release.wait(60)
            order.append("first out")

    def second():
        inside.wait(60)
        with sweep_lock(store, notes.append):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(60)
    deadline = time.monotonic() + 60
    while not notes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert notes == [f"{store.uri} is in use by another run in this process; waiting for it to finish"]
    assert order == ["first in"]
    release.set()
    for thread in threads:
        thread.join(60)
    assert order == ["first in", "first out", "second in"]
    assert not (tmp_path / "g").exists()          # the lock's folder, made only for it, is gone again

