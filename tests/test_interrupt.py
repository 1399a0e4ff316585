"""Ctrl-C (issue 15, item 6): SIGINT to the driver's process group, as a terminal sends it, stops
the sweep within seconds, keeps every finished cell, says "interrupted: rerun the same command to
resume" (never Tune's Tuner.restore advice), ends with status 130 (it dies of SIGINT after its
cleanup, as shells expect: a shell reports 130 and a shell loop stops), leaves meta.json telling the truth, and
a rerun completes the sweep. Measured in Ray's start, among the cells (Ray and local backends),
in consolidation and in the analysis. Each driver runs in its own session; the test stops
exactly that session's processes."""
import json
import os
import re
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import stored_files
from gate import Gate
from helpers import GATED_CELLS, GATED_SWEEP, Driver, meta, parts, write_sweep
from raycluster import ray_env, session_members

from workflows import tables
from workflows import run_sweep
from workflows.cli import main
from workflows.interrupt import RESUME, SweepInterrupted
from workflows.store import Store

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
STOP_WITHIN = 30.0        # seconds from SIGINT to exit: generous, the machine is shared


@pytest.fixture
def sweep_args(tmp_path):
    path = write_sweep(tmp_path, GATED_SWEEP)
    storage = tmp_path / "s"
    return storage, ["-m", "workflows", "run", str(path), "--sweep", "r", "--storage", str(storage), "--no-analyze",
                     "--workers", "2"]


@pytest.fixture
def gate(tmp_path):
    return Gate(tmp_path / "gate")


def interrupted_output_is_right(driver: Driver, stage: str):
    out = driver.output
    # Killed by SIGINT after its cleanup, as shells expect: a shell reports 130 and stops its loop.
    assert driver.proc.returncode == -signal.SIGINT, out
    assert f"{RESUME} (stopped during {stage})" in out, out
    assert "Tuner.restore" not in out and "Traceback" not in out, out


def check_resume(storage: Path, args, kept: set[str], gate: Gate, start):
    """A rerun (a driver from `start`) completes the sweep, computing only what the interruption
    left, never a kept cell again."""
    stamps = stored_files(storage / "r")
    gate.open()
    rerun = start(args, gate.env(ray_env()))
    assert rerun.finish() == 0, rerun.output
    m = meta(storage)
    assert m["interrupted"] is False and m["cells"]["done"] == GATED_CELLS
    if "--backend" not in args or "ray" in args:
        # Its own embedded Ray: every trial ran on a worker started and warmed while Tune started.
        assert m["run"]["trials"] >= 1 and m["run"]["warm_trials"] == m["run"]["trials"], m["run"]
    assert m["cells"]["reused"] == len(kept) and m["cells"]["computed_this_run"] == GATED_CELLS - len(kept)
    assert stamps.items() <= stored_files(storage / "r").items()      # no stored block rewritten
    rows = pd.read_parquet(storage / "r" / "rows.parquet")
    assert len(rows) == GATED_CELLS * 128 and not rows.duplicated(["cell_id", "seed"]).any()


def ctrl_c_among_the_cells_stops_keeps_and_resumes(sweep_args, gate, backend, start):
    storage, args = sweep_args
    args = args + ["--backend", backend]
    gate.admit(2)                                # two cells run; the next ones wait at the gate
    driver = start(args, gate.env(ray_env()))
    driver.wait_for(lambda: len(parts(storage)) >= 2 and gate.tickets() >= 3)
    at_sigint = parts(storage)
    seconds = driver.interrupt()
    interrupted_output_is_right(driver, "cells")
    assert driver.leftovers() == []
    driver.cleanup()
    kept = parts(storage)
    assert at_sigint <= kept and len(kept) < GATED_CELLS
    m = meta(storage)
    cells = pd.read_parquet(storage / "r" / "cells.parquet")
    assert m["interrupted"] is True and m["interrupted_during"] == "cells"
    assert m["cells"]["computed_this_run"] == len(kept) == m["cells"]["done"] == (cells.status == "ok").sum()
    assert m["cells"]["missing"] == GATED_CELLS - len(kept)
    assert f"{len(kept)}/{GATED_CELLS} cells stored ({len(kept)} computed this run) before the interruption" \
        in driver.output
    assert seconds < STOP_WITHIN
    check_resume(storage, args, kept, gate, start)
    print(f"{backend}: stopped {seconds:.1f} s after SIGINT; {len(at_sigint)} cells stored at SIGINT, "
          f"{len(kept)} kept at exit; rerun computed the other {GATED_CELLS - len(kept)}")


@pytest.mark.slow
def test_ctrl_c_among_the_cells_stops_keeps_and_resumes_on_ray(sweep_args, gate, ray_drivers):
    ctrl_c_among_the_cells_stops_keeps_and_resumes(sweep_args, gate, "ray", ray_drivers)


@pytest.mark.slow
def test_ctrl_c_among_the_cells_stops_keeps_and_resumes_locally(sweep_args, gate, drivers):
    ctrl_c_among_the_cells_stops_keeps_and_resumes(sweep_args, gate, "local", drivers)


@pytest.mark.parametrize("moment", ["import", "init"])
def test_ctrl_c_while_ray_starts(sweep_args, gate, moment, ray_drivers):
    """While Ray is imported, or once ray.init has started Ray's own processes (a Ctrl-C then
    waits for it to be up, and stops it: nothing of it outlives the command)."""
    storage, args = sweep_args
    driver = ray_drivers(args, gate.env(ray_env()))
    driver.wait_for(lambda: any(line.startswith("sweep r:") for line in driver.lines))
    if moment == "init":
        driver.wait_for(lambda: len(session_members(driver.proc.pid)) > 1)
    seconds = driver.interrupt()             # Ray is starting: its "trials on" line is not out yet
    assert not any(re.search(r"\btrials? on\b", line) for line in driver.lines), driver.output
    interrupted_output_is_right(driver, "ray start")
    assert driver.leftovers() == []
    m = meta(storage)
    assert m["interrupted_during"] == "ray start" and m["cells"]["computed_this_run"] == 0 and not parts(storage)
    assert seconds < STOP_WITHIN
    print(f"ray start ({moment}): stopped {seconds:.1f} s after SIGINT")


def test_ctrl_c_in_the_analysis(tmp_path, gate, drivers):
    path = write_sweep(tmp_path, GATED_SWEEP.replace("gated_saddle", "quadratic_saddle").replace("seeds: 128", "seeds: 8")
                       .replace("20000", "500\n      cnc_samples: 0"))
    storage = tmp_path / "s"
    args = ["run", str(path), "--sweep", "r", "--storage", str(storage), "--backend", "local"]
    assert main(args + ["--no-analyze"]) == 0
    gate.hold_analysis()                     # the analysis waits at the gate as it begins
    driver = drivers(["-m", "workflows", *args], gate.env(ray_env()))
    driver.wait_for(lambda: gate.tickets() >= 1, "the analysis at the gate")
    seconds = driver.interrupt()
    interrupted_output_is_right(driver, "analysis")
    assert meta(storage)["interrupted"] is False                # the sweep itself was complete
    assert seconds < STOP_WITHIN
    code = main(args)                                          # the rerun writes the report
    assert code == 0 and (storage / "r" / "analysis" / "report.md").exists()
    print(f"analysis: stopped {seconds:.1f} s after SIGINT")


@pytest.mark.slow
def test_ctrl_c_stops_a_shell_loop_of_sweeps_and_the_shell_sees_130(sweep_args, gate, drivers):
    """A shell waits for its command; if the command died of SIGINT the shell stops too, if it
    exit()ed (even with 130) the loop goes on to the next sweep."""
    storage, args = sweep_args
    command = " ".join([sys.executable, *args, "--backend", "local"])
    script = f"{command}; echo status $?; for i in 1 2; do {command}; echo next sweep; done"
    gate.admit(1)
    driver = drivers(None, gate.env(ray_env()), shell=script)
    # One cell stored, the second waiting at the gate: the first command is among the cells.
    driver.wait_for(lambda: len(parts(storage)) >= 1 and gate.tickets() >= 2)
    inner = [p for p in session_members(driver.proc.pid) if p != driver.proc.pid]
    for pid in inner:                  # Ctrl-C reaching only the command: the shell reports 130
        os.kill(pid, signal.SIGINT)
    driver.wait_for(lambda: "status" in driver.output)
    assert "status 130" in driver.output, driver.output
    # The loop's first command: one more cell (ticket 2), then it waits at ticket 3.
    gate.admit(3)
    driver.wait_for(lambda: len(parts(storage)) >= 2 and gate.tickets() >= 4)
    driver.interrupt()                 # Ctrl-C to the whole group, in the loop: the loop stops
    assert "next sweep" not in driver.output and driver.proc.returncode == -signal.SIGINT, driver.output


SMALL = {"parameters": {"problem.name": "quadratic_saddle", "problem.dim": 2, "optimizer.name": "sgd",
                        "optimizer.lr": {"values": [0.1, 0.2]}, "seeds": 4, "budget": 40}}


def test_ctrl_c_while_reading_the_parts_leaves_the_stored_tables_as_they_were(tmp_path, monkeypatch):
    first = run_sweep(SMALL, "c", storage=tmp_path, backend="local")
    before = {p.name: p.read_bytes() for p in Path(first.path).glob("*.*")}
    grown = {"parameters": {**SMALL["parameters"], "optimizer.lr": {"values": [0.1, 0.2, 0.3]}}}

    def interrupted_collect(store, cells, index=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(tables, "collect", interrupted_collect)
    with pytest.raises(SweepInterrupted) as stop:
        run_sweep(grown, "c", storage=tmp_path, backend="local")
    assert stop.value.stage == "consolidation" and stop.value.result is None
    assert before == {p.name: p.read_bytes() for p in Path(first.path).glob("*.*")}
    monkeypatch.undo()
    assert run_sweep(grown, "c", storage=tmp_path, backend="local").meta["cells"]["reused"] == 3


def test_ctrl_c_while_writing_the_tables_waits_for_meta_json(tmp_path, monkeypatch):
    original = Store.write_json
    calls = []

    def sigint_then_write_json(self, relpath, data):
        if relpath == "meta.json" and not calls:
            calls.append(relpath)
            os.kill(os.getpid(), signal.SIGINT)              # arrives between the tables and meta.json
        return original(self, relpath, data)

    monkeypatch.setattr(Store, "write_json", sigint_then_write_json)
    with pytest.raises(SweepInterrupted) as stop:
        run_sweep(SMALL, "w", storage=tmp_path, backend="local")
    assert calls and stop.value.stage == "consolidation"
    m = json.loads((tmp_path / "w" / "meta.json").read_text())     # written after the signal came
    cells = pd.read_parquet(tmp_path / "w" / "cells.parquet")
    assert m["cells"]["done"] == len(cells) == 2 and m["cells"]["computed_this_run"] == 2


def test_a_ctrl_c_inside_an_extension_modules_import_is_still_a_ctrl_c():
    """A KeyboardInterrupt during a C extension's initialisation surfaces as an ImportError caused
    by it (seen in CI: scipy's HiGHS module, Ctrl-C during the analysis's imports); `surfaced`
    turns it back into the KeyboardInterrupt the CLI handles. Other errors pass unchanged."""
    from workflows.interrupt import surfaced

    with pytest.raises(KeyboardInterrupt):
        with surfaced():
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as e:
                raise ImportError("initialization failed") from e
    with pytest.raises(ImportError, match="no module"):
        with surfaced():
            raise ImportError("no module")


def test_a_ctrl_c_that_c_code_swallows_is_raised_when_the_block_ends():
    """interrupt.noticed: C code may report a KeyboardInterrupt as "Exception ignored" and go on (a
    Cython module's initialisation during `import ray` did); the Ctrl-C is raised all the same."""
    import sys as sys_module

    from workflows.interrupt import noticed

    done = []
    with pytest.raises(KeyboardInterrupt):
        with noticed():
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:                   # what the swallowing C code does with it
                sys_module.stderr.write("Exception ignored: KeyboardInterrupt\n")
            done.append("the block went on")
    assert done == ["the block went on"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_child_forked_while_ctrl_c_is_noted_does_not_raise_it():
    """Ray forks its processes from the driver while `noticed` is active (ray.init): a Ctrl-C to the
    group reached such a child before its exec, whose inherited handler raised KeyboardInterrupt in
    its at-fork code ("Exception ignored ... Traceback" on the terminal; seen in
    test_ctrl_c_while_ray_starts[init] under load). The handler leaves other processes alone."""
    from workflows.interrupt import noticed

    with noticed():
        pid = os.fork()
        if pid == 0:                                  # the child: as a process before its exec
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_ctrl_c_where_python_cannot_raise_it_is_raised_at_the_end_without_a_traceback(monkeypatch):
    """The parent's side of the race above: a Ctrl-C landing in an at-fork callback of the driver
    (logging's lock release, after each of Ray's forks) or a __del__ is "Exception ignored" to
    Python, whose hook printed its traceback (test_ctrl_c_while_ray_starts[init], under load). It
    is noted and raised when the block ends, and never reaches the hook; other errors still do."""
    from workflows.interrupt import noticed

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: reported.append(report.exc_type))

    class Collected:
        def __init__(self, error=None):
            self.error = error

        def __del__(self):
            if self.error:
                raise self.error
            signal.raise_signal(signal.SIGINT)       # the handler runs here, where raising is "ignored"

    with pytest.raises(KeyboardInterrupt), noticed():
        Collected()
        Collected(ValueError("not an interruption"))
        reached_the_end_of_the_block = True
    assert reached_the_end_of_the_block and reported == [ValueError]
