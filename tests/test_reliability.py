"""Faults lose nothing: a killed driver, a failing cell, a dead worker node, a diverging run,
a corrupt part file. Every test compares the final rows with those of an undisturbed run.
The faults strike mid-sweep by construction: the sweep's cells wait at a gate the test opens
(tests/gate.py), so a fast machine cannot finish the sweep before the fault."""
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from gate import Gate
from helpers import GATED_CELLS, GATED_SWEEP, Driver, meta, part_stamps, parts, rows, write_sweep
from raycluster import ray_env

from workflows import blocks
from workflows.cli import main

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parent.parent
KEY = ["cell_id", "seed"]


def sweep_file(tmp_path) -> Path:
    return write_sweep(tmp_path, GATED_SWEEP)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The undisturbed run every faulty one must end up equal to (in a driver of its own: only
    drivers the tests start know gated_saddle; the backends give the same rows)."""
    tmp = tmp_path_factory.mktemp("reference")
    gate = Gate(tmp / "gate")
    gate.open()
    driver = Driver(["-m", "workflows", "run", str(sweep_file(tmp)), "--sweep", "r", "--storage", str(tmp / "s"),
                     "--no-analyze", "--backend", "local"], gate.env(ray_env()))
    try:
        assert driver.finish(600) == 0, driver.output
    finally:
        driver.cleanup()
    return rows(tmp / "s")


@pytest.fixture
def gate(tmp_path):
    return Gate(tmp_path / "gate")


@pytest.mark.slow
def test_killing_the_driver_at_two_points_loses_and_duplicates_nothing(reference, gate, ray_drivers, tmp_path):
    """kill -9 of the driver (and of the Ray it started) once in each half of the sweep: the first
    kill strikes a fresh run, the second a run that resumed after a kill; each leaves exactly the
    cells stored before it, and the last run completes the sweep with the undisturbed run's rows."""
    storage = tmp_path / "s"
    args = ["-m", "workflows", "run", str(sweep_file(tmp_path)), "--sweep", "r", "--storage", str(storage),
            "--no-analyze", "--workers", "2"]
    rng = random.Random(int(time.time()))
    kill_points = [rng.randint(1, GATED_CELLS // 2 - 1), rng.randint(GATED_CELLS // 2 + 1, GATED_CELLS - 2)]
    survived = []
    for point in kill_points:
        gate.reset(admitted=point - len(parts(storage)))   # this driver stores up to `point`, then waits
        driver = ray_drivers(args, gate.env(ray_env()))
        driver.wait_for(lambda p=point: len(parts(storage)) >= p, f"{point} cells stored", timeout=180)
        driver.kill9()                                      # mid-sweep
        survived.append(len(parts(storage)))
    assert survived == kill_points, f"cells stored at the kills {survived}, against the kill points {kill_points}"
    gate.open()
    driver = ray_drivers(args, gate.env(ray_env()))
    assert driver.finish(300) == 0, driver.output
    assert meta(storage)["cells"]["reused"] == survived[-1]
    final = rows(storage)
    assert not final.duplicated(KEY).any() and len(final) == len(reference)
    pd.testing.assert_frame_equal(final, reference)
    print(f"kill points {kill_points}: {survived} cells stored at each kill; {len(final)} rows equal")


FAULTY = """
sweeps:
  f:
    parameters:
      problem: {name: quadratic_saddle, dim: 2}
      optimizer: {name: sgd, lr: 0.01}
      problem.anisotropy: {values: [1, 10]}
      inject_fault: {values: [none, raise]}
      seeds: 64
      budget: 5000
"""


@pytest.mark.slow
def test_a_failing_cell_is_retried_recorded_and_rerun_alone(local_ray, tmp_path, capsys):
    """Tune retries the failed trial (its FailureConfig); the rerun's choice of cells is the plan's,
    the same for both backends: it runs on the local one."""
    path = write_sweep(tmp_path, FAULTY)
    storage = tmp_path / "s"
    args = ["run", str(path), "--sweep", "f", "--storage", str(storage), "--no-analyze", "--max-failures", "1"]
    assert main(args) == 1
    assert "injected fault" in capsys.readouterr().out
    cells = pd.read_parquet(storage / "f" / "cells.parquet")
    failed = cells[cells.status == "failed"]
    assert len(failed) == 2 and (cells.status == "ok").sum() == 2
    assert failed.inject_fault.eq("raise").all() and failed.error.str.contains("RuntimeError: injected fault").all()
    records = [json.loads(p.read_text()) for p in (storage / "f" / "failed").glob("*.json")]
    assert len(records) == 2 and all(r["attempts"] == 2 for r in records)   # max_failures=1: 2 tries
    assert len(rows(storage, "f")) == 2 * 64                                 # the rest completed
    stamps = part_stamps(storage, "f")
    assert main(args + ["--backend", "local"]) == 1             # the rerun retries only the failed cells
    assert meta(storage, "f")["cells"]["attempted_this_run"] == 2
    assert meta(storage, "f")["cells"]["computed_this_run"] == 0                # and they fail again
    assert stamps == part_stamps(storage, "f")


@pytest.mark.slow
def test_a_dead_worker_node_loses_nothing(reference, gate, ray_nodes, ray_drivers, tmp_path):
    gate.admit(3)                                      # 3 cells, then every cell waits: mid-sweep
    head = ray_nodes(num_cpus=1, env=gate.env(ray_env()))
    head.wait_for_dashboard()
    worker = ray_nodes(head_address=head.gcs_address, num_cpus=1, temp_dir=head.temp_dir, env=gate.env(ray_env()))
    storage = tmp_path / "s"
    driver = ray_drivers(["-m", "workflows", "run", str(sweep_file(tmp_path)), "--sweep", "r", "--storage",
                          str(storage), "--no-analyze", "--address", head.gcs_address, "--max-failures", "3"],
                         gate.env(ray_env()))
    driver.wait_for(lambda: len(parts(storage)) >= 3, "3 cells stored", timeout=180)
    at_kill = len(parts(storage))
    worker.kill()                                      # the node dies mid-sweep
    gate.open()
    assert driver.finish(400) == 0, driver.output
    assert at_kill < GATED_CELLS
    final = rows(storage)
    pd.testing.assert_frame_equal(final, reference)
    print(f"worker node killed with {at_kill}/{GATED_CELLS} cells stored; {len(final)} rows equal")


def test_divergence_gives_diverged_rows_and_no_crash(tmp_path):
    path = write_sweep(tmp_path, """
        sweeps:
          d:
            parameters:
              problem: {name: staib_toy, escape_radius: 100.0}
              optimizer: {values: [{name: sgd, lr: 50.0}, {name: adam, lr: 100.0, beta1: 0.0}]}
              seeds: 32
              budget: 500
        """)
    assert main(["run", str(path), "--sweep", "d", "--storage", str(tmp_path / "s"), "--no-analyze",
                 "--backend", "local"]) == 0
    out = rows(tmp_path / "s", "d")
    assert out[out["optimizer.name"] == "sgd"].diverged.all()
    assert out.escape_step.notna().all() and out.escaped.notna().all()
    assert out.escape_step.between(1, 500).all()


def test_a_truncated_or_corrupt_block_is_recomputed_never_read(tmp_path, monkeypatch):
    """Blocks of one cell each, then one truncated as a killed writer without the rename would
    leave it, one overwritten with garbage, one replaced by another block's bytes, and a leftover
    temporary file: the rerun recomputes exactly the three cells whose blocks are not theirs any
    more, and the rows are the first run's. (The merge of the test suite's reorganisation had lost
    the one-cell blocks: 16 fast cells went into one or two blocks.)"""
    storage = tmp_path / "s"
    write_sweep(tmp_path, GATED_SWEEP.replace("gated_saddle", "quadratic_saddle"))
    args = ["run", str(tmp_path / "sweeps.yaml"), "--sweep", "r", "--storage", str(storage), "--no-analyze",
            "--backend", "local"]
    monkeypatch.setattr(blocks, "MAX_CELLS", 1)
    assert main(args) == 0
    monkeypatch.undo()
    reference = rows(storage)
    folder = storage / "r" / "blocks"
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.endswith(".trace.parquet"))
    assert len(files) == GATED_CELLS
    truncated, garbage, swapped = files[0], files[1], files[2]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])               # a killed writer without the rename
    garbage.write_bytes(os.urandom(len(garbage.read_bytes())))   # a corrupt disk block
    swapped.write_bytes(files[3].read_bytes())                   # another block's cell under its name
    (folder / f"{files[4].name}.tmp-deadbeef").write_bytes(b"PAR1")   # a leftover temporary file
    assert main(args) == 0
    assert meta(storage)["cells"]["computed_this_run"] == 3
    pd.testing.assert_frame_equal(rows(storage), reference)


@pytest.mark.slow
def test_no_eval_exec_or_unpickling_of_user_input_and_token_auth_stays_on():
    sources = [p for d in ("workflows", "problems", "optimizers", "analysis") for p in (ROOT / d).rglob("*.py")]
    assert sources
    for path in sources:
        text = path.read_text()
        for banned in (r"\beval\(", r"\bexec\(", r"pickle\.loads?\(", r"yaml\.unsafe_load", r"FullLoader",
                       r"UnsafeLoader", r"allow_pickle=True", r"\"disabled\""):
            assert not re.search(banned, text), f"{banned} in {path}"
        for line in text.splitlines():
            if "yaml.load(" in line:
                assert "Loader=SweepLoader" in line, f"{path}: {line}"
    # Token authentication is what saddlescape configures before Ray starts (core/compat.configure,
    # called by the command line and by every run); importing a module changes no environment.
    env = {k: v for k, v in ray_env().items() if k != "RAY_AUTH_MODE"}
    probes = {"import": "import os, workflows.tune_runner, workflows.ray_session",
              # The command line's order: its modules (which do not import Ray), configure, then Ray.
              "command": "import os, sys, workflows.cli; assert 'ray' not in sys.modules; "
                         "from workflows.core.compat import configure; configure(); import workflows.tune_runner"}
    seen = {}
    for name, code in probes.items():
        probe = subprocess.run([sys.executable, "-c", code + "; print(os.environ.get('RAY_AUTH_MODE'))"], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=120)
        seen[name] = probe.stdout.split()[-1:] if probe.returncode == 0 else probe.stderr
    assert seen == {"import": ["None"], "command": ["token"]}, seen
