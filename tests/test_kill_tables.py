"""kill -9 at chosen steps of a sweep's table writing (issue 25): while rows.parquet is streamed,
between its renaming and cells.parquet's, before meta.json; and among the cells. Each kill point is
a state the driver reaches and holds (the turnstile of tests/gate.py, tests/tables_gate.py), never a
moment of the clock. After every kill the rerun goes on from what was stored; the last run's tables
are those of an uninterrupted run, row for row."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from gate import Gate
from raycluster import kill_session, ray_env
from helpers import stored_cells

pytestmark = [pytest.mark.reliability]
ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SWEEP = """
sweeps:
  k:
    parameters:
      problem: {name: gated_saddle, dim: 2}
      problem.anisotropy: {values: [1, 2, 5, 10, 20, 50, 100, 200]}
      optimizer: {name: sgd}
      optimizer.lr: {values: [0.01, 0.03]}
      seeds: 8
      budget: 300
"""
N_CELLS = 16
BLOCKS = N_CELLS // 4            # tables_gate.MAX_CELLS cells a block
DRIVER = ("import tables_gate, runpy, sys; sys.argv = ['saddlescape', *sys.argv[1:]]; "
          "runpy.run_module('workflows', run_name='__main__')")


def driver(args, gate: Gate) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], cwd=ROOT, env=gate.env(ray_env()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill(proc: subprocess.Popen):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_session(proc.pid)


def tables(storage: Path) -> dict:
    folder = storage / "k"
    return {name: (folder / name).read_bytes() if (folder / name).exists() else None
            for name in ("rows.parquet", "cells.parquet", "meta.json")}


@pytest.fixture
def gate(tmp_path):
    gate = Gate(tmp_path / "gate")
    shutil.copy(HERE / "tables_gate.py", gate.plugin / "tables_gate.py")
    return gate


@pytest.mark.slow
def test_kill_9_while_the_tables_are_written_loses_nothing(gate, tmp_path):
    path = tmp_path / "sweeps.yaml"
    path.write_text(textwrap.dedent(SWEEP))
    reference = tmp_path / "reference"
    gate.open()
    args = ["run", str(path), "--no-analyze", "--backend", "local", "--storage"]
    done = driver([*args, str(reference)], gate)
    assert done.wait(300) == 0, done.stdout.read()
    expected = pd.read_parquet(reference / "k" / "rows.parquet")

    storage = tmp_path / "s"
    # (cells to admit this run, steps of the tables admitted, what the kill interrupts)
    # steps: BLOCKS blocks of rows, cells.parquet's table, then the renames of rows and cells, then meta.json
    points = [(N_CELLS // 2, 0, "among the cells"), (N_CELLS // 2, 0, "the first block of rows"),
              (0, 2, "the third block of rows"), (0, BLOCKS + 2, "between rows.parquet's rename and cells.parquet's"),
              (0, BLOCKS + 3, "before meta.json")]
    stored_before = 0
    for cells, steps, where in points:
        gate.reset(admitted=cells + steps)
        proc = driver([*args, str(storage)], gate)
        # Held: this run's cells are computed and the next gated step waits (a cell, or a table step).
        gate.wait_for_tickets(cells + steps + 1, alive=lambda: proc.poll() is None)
        kill(proc)
        now = len(stored_cells(storage / "k"))
        assert stored_before <= now <= stored_before + cells, where
        stored_before = now
        print(f"killed {where}: {now} cells stored, tables {[k for k, v in tables(storage).items() if v]}")
    assert (storage / "k" / "rows.parquet").exists() and (storage / "k" / "cells.parquet").exists()
    assert not (storage / "k" / "meta.json").exists()           # killed before it, every time
    gate.open()
    proc = driver([*args, str(storage)], gate)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    meta = json.loads((storage / "k" / "meta.json").read_text())
    assert meta["cells"]["done"] == N_CELLS and meta["cells"]["computed_this_run"] == 0
    rows = pd.read_parquet(storage / "k" / "rows.parquet")
    pd.testing.assert_frame_equal(rows, expected)                # row for row, in the same order
    cells = pd.read_parquet(storage / "k" / "cells.parquet")
    assert (cells.status == "ok").all() and len(cells) == N_CELLS
    assert not list((storage / "k").glob("*.tmp-*"))            # the killed writers' temporaries are gone
