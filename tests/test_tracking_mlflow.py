"""`--track mlflow` against a real MLflow tracking server (issue 16): one run per stored cell with
its parameters and summary, read back through the MLflow client and compared with what the test
computes itself; no duplicates on a second invocation; a server killed mid-sweep costs no stored
result, is one warning line, leaves the exit code alone, and `saddlescape track` catches up.

The server (`mlflow server`, SQLite backend, artifacts proxied to a folder) runs in its own session
on 127.0.0.1 and is stopped by SIGTERM to its process group, then SIGKILL of exactly that session's
processes (tests/raycluster.py)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from raycluster import BIN, free_ports, kill_session
from tracked import assert_metrics_match, expected_metrics, rich_sweep, sweep_cells

from workflows.cli import main

pytestmark = pytest.mark.slow
SWEEPS = str(Path(__file__).resolve().parent.parent / "sweeps.yaml")
RICH = rich_sweep("10")


class MlflowServer:
    """`mlflow server` on a free port of 127.0.0.1, its runs in root/mlflow.db, its artifacts in
    root/artifacts (uploaded through the server, as a remote server's are)."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_ports(1)[0]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 240):
        # No GenAI job runner (MLflow 3's huey workers): four more processes, and 35 s more to start here.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts")],
            cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                # Ready means the tracking API answers, not only /health: the tracker's first request
                # then meets a server that serves it.
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as answer, \
                        urllib.request.urlopen(f"{self.uri}/api/2.0/mlflow/experiments/search?max_results=1",
                                               timeout=max(5.0, deadline - time.time())) as api:
                    if answer.status == 200 and api.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"mlflow server did not answer within {timeout} s")

    def kill(self):
        """The server dies: every process of its session at once."""
        kill_session(self.proc.pid)
        self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def finished_cell_runs(self, results: str) -> int:
        """FINISHED cell runs of one results directory, read from the server's database (no request)."""
        with sqlite3.connect(f"file:{self.root}/mlflow.db?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM tags a JOIN tags b ON a.run_uuid = b.run_uuid "
                              "JOIN runs ON runs.run_uuid = a.run_uuid WHERE runs.status = 'FINISHED' "
                              "AND a.key = 'saddlescape_record' AND a.value = 'cell' "
                              "AND b.key = 'results' AND b.value = ?", (results,)).fetchone()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def tracking_uri(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    return server.uri


def runs_of(client: MlflowClient, sweep: str, results: str, record: str = "cell", view=ViewType.ACTIVE_ONLY):
    experiment = client.get_experiment_by_name(sweep)
    return [] if experiment is None else list(client.search_runs(
        [experiment.experiment_id], f"tags.saddlescape_record = '{record}' and tags.results = '{results}'",
        run_view_type=view, max_results=1000))


def mlflow_params(flat: dict) -> dict:
    return {k.replace("[", ".").replace("]", ""): str(v) for k, v in flat.items()}


def check_cell_runs(client, sweep: str, sweeps_file: str, results: Path):
    """Every stored cell once, FINISHED, nested under a parent run of this results directory, with
    the cell's parameters, its summary and the tags of the run that stored it."""
    meta = json.loads((results / "meta.json").read_text())
    rows, cells = pd.read_parquet(results / "rows.parquet"), pd.read_parquet(results / "cells.parquet")
    expected = sweep_cells(sweeps_file, sweep)
    runs = runs_of(client, sweep, str(results))
    assert sorted(r.data.tags["cell_id"] for r in runs) == sorted(expected)
    parents = {r.info.run_id for r in runs_of(client, sweep, str(results), "sweep")}
    for run in runs:
        key = run.data.tags["cell_id"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] in parents
        assert run.data.tags["sweep"] == sweep
        assert run.data.tags["definition_hash"] == meta["definition_hash"]
        assert run.data.tags["git_commit"] == str(meta["git_commit"])
        assert run.data.tags["saddlescape_version"] == str(meta["versions"]["saddlescape"])
        assert run.data.params == mlflow_params(expected[key])
        assert_metrics_match(run.data.metrics, expected_metrics(rows[rows.cell_id == key],
                                                                cells.set_index("cell_id").loc[key]),
                             rows[rows.cell_id == key], rel=1e-12, where=key)
    return runs


@pytest.mark.slow
def test_each_stored_cell_is_one_run_with_its_parameters_summary_and_a_parent_with_the_report(
        tracking_uri, tmp_path, capsys):
    """On the local backend (the trackers hear of a cell from the Ray backend's Tune callback as from
    the local loop: tests/test_run.py checks that one)."""
    results = tmp_path / "smoke"
    assert main(["run", SWEEPS, "--sweep", "smoke", "--storage", str(tmp_path), "--backend", "local",
                 "--track", "mlflow"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "tracking: mlflow: 6 cells tracked now, 0 were already" in out, captured.err
    assert "not tracked yet" not in out            # each as it was stored, none left for the end
    client = MlflowClient(tracking_uri)
    runs = check_cell_runs(client, "smoke", SWEEPS, results)
    (parent,) = runs_of(client, "smoke", str(results), "sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["command"] == "run"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.data.metrics["cells_done"] == 6 and parent.data.metrics["cells_logged"] == 6
    # meta.json as stored; the report with its tables and figures.
    logged = Path(client.download_artifacts(parent.info.run_id, "meta.json", str(tmp_path / "down")))
    assert json.loads(logged.read_text()) == json.loads((results / "meta.json").read_text())
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis/figures")}
    assert "analysis/report.md" in artifacts
    assert figures == {f"analysis/figures/{p.name}" for p in (results / "analysis" / "figures").iterdir()}
    assert figures

    # Again: nothing computed, nothing logged twice; one more parent run for this invocation.
    capsys.readouterr()
    assert main(["run", SWEEPS, "--sweep", "smoke", "--storage", str(tmp_path), "--backend", "local", "--track",
                 "mlflow", "--no-analyze"]) == 0
    assert "tracking: mlflow: 0 cells tracked now, 6 were already" in capsys.readouterr().out
    assert sorted(r.info.run_id for r in runs_of(client, "smoke", str(results))) == sorted(r.info.run_id for r in runs)
    second = [p for p in runs_of(client, "smoke", str(results), "sweep") if p.info.run_id != parent.info.run_id]
    assert len(second) == 1 and second[0].data.metrics["cells_logged"] == 0


def test_from_python_every_summary_a_list_valued_parameter_and_the_report(tracking_uri, tmp_path):
    """run_sweep(track="mlflow") as the CLI: SOSP, gap and tail metrics; `optimizer.betas[0]` is the
    param `optimizer.betas.0` ([ is refused); result.analyze() attaches the report to the parent run."""
    from workflows import run_sweep

    (tmp_path / "rich.yaml").write_text(RICH)
    result = run_sweep(str(tmp_path / "rich.yaml"), storage=str(tmp_path), backend="local", track="mlflow")
    client = MlflowClient(tracking_uri)
    runs = check_cell_runs(client, "rich", str(tmp_path / "rich.yaml"), tmp_path / "rich")
    names = set().union(*(r.data.metrics for r in runs))
    for name in ("sosp_reached_fraction", "gap_step_km_median", "tail_gap_q90_median", "final_min_eig_median"):
        assert name in names
    assert any("optimizer.betas.0" in r.data.params for r in runs)
    (parent,) = runs_of(client, "rich", str(tmp_path / "rich"), "sweep")
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["meta.json"]
    report = Path(result.analyze())
    assert "analysis/report.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    logged = client.download_artifacts(parent.info.run_id, "analysis/report.md", str(tmp_path / "down"))
    assert Path(logged).read_text() == report.read_text()


@pytest.mark.slow
def test_a_server_killed_mid_sweep_costs_no_result_is_one_warning_and_track_catches_up(
        server, tracking_uri, tmp_path, capsys):
    """24 cells (the smoke sweep at four other seeds than the first test's: a cell is one run per
    experiment, wherever it is stored), --backend local; the server is killed once the first cell
    is tracked (its run FINISHED in the server's database)."""
    results = str(tmp_path / "smoke")
    killed = {}

    def kill_after_first_cell():
        deadline = time.time() + 300
        while time.time() < deadline and not killed.get("stop"):
            tracked = server.finished_cell_runs(results)
            if tracked >= 1:
                server.kill()
                # Counted once it is dead, not when it was seen: cells the sweep tracked while the
                # kill was under way (two more on a loaded machine) count as tracked.
                killed["at"] = server.finished_cell_runs(results)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_cell, daemon=True)
    killer.start()
    try:
        code = main(["run", SWEEPS, "--sweep", "smoke", "seed=1,2,3,4", "--storage", str(tmp_path), "--backend",
                     "local", "--no-analyze", "--track", "mlflow"])
    finally:
        killed["stop"] = True
        killer.join()
        if "at" in killed:
            server.start()              # for this module's other tests, whatever is asserted below
    out, err = capsys.readouterr()
    assert "at" in killed, "the first cell was never tracked"
    assert "tracking: mlflow experiment 'smoke'" in out            # it was up when the sweep started
    assert code == 0
    cells = pd.read_parquet(tmp_path / "smoke" / "cells.parquet")
    assert len(cells) == 24 and (cells.status == "ok").all()
    assert len(pd.read_parquet(tmp_path / "smoke" / "rows.parquet")) == 24 * 64
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: mlflow: tracking stopped"), err
    assert f"catch up with `saddlescape track {results} --to mlflow`" in err
    untracked = int(err.split("note: mlflow: ")[1].split(" of the 24")[0])
    # The cells the dead server holds as finished, or one more whose run it finished while it was
    # killed but never answered for (the sweep tracks one cell at a time).
    assert 24 - killed["at"] <= untracked <= 24 - killed["at"] + 1, (killed, err)
    assert untracked < 24

    client = MlflowClient(tracking_uri)
    assert len([r for r in runs_of(client, "smoke", results) if r.info.status == "FINISHED"]) < 24
    assert main(["track", results, "--to", "mlflow"]) == 0
    runs = runs_of(client, "smoke", results)
    assert sorted(r.data.tags["cell_id"] for r in runs) == sorted(cells.cell_id)     # once each, no leftovers
    assert all(r.info.status == "FINISHED" for r in runs)
    assert main(["track", results, "--to", "mlflow"]) == 0
    assert len(runs_of(client, "smoke", results)) == 24
    assert "tracking: mlflow: 0 cells tracked now, 24 were already" in capsys.readouterr().out


@pytest.mark.slow
def test_a_tracker_that_is_down_from_the_start_changes_neither_the_results_nor_the_exit_code(tmp_path, monkeypatch,
                                                                                            capsys):
    """A dead port; half the cells fail (inject_fault): exit 1 as without tracking, the same rows.
    The untracked run runs in a process of its own, which must never import mlflow or tensorboardX."""
    args = ["run", SWEEPS, "--sweep", "smoke", "inject_fault=none,raise", "--backend", "local", "--no-analyze",
            "--max-failures", "0"]
    plain = subprocess.run(
        [sys.executable, "-c", ("import sys; from workflows.cli import main; code = main(sys.argv[1:]); "
                                "sys.exit(100 + code if {'mlflow', 'tensorboardX'} & set(sys.modules) else code)"),
         *args, "--storage", str(tmp_path / "plain")], capture_output=True, text=True, timeout=600, check=False,
        cwd=Path(SWEEPS).parent)
    assert plain.returncode == 1, plain.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_ports(1)[0]}")
    assert main([*args, "--storage", str(tmp_path / "tracked"), "--track", "mlflow"]) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        line for line in err.splitlines() if line.startswith("warning: mlflow: tracking stopped")]
    assert len([line for line in err.splitlines() if line.startswith("warning:")]) == 1, err
    assert "note: mlflow: 6 of the 6 stored cells not tracked" in err
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "plain/smoke/rows.parquet"),
                                  pd.read_parquet(tmp_path / "tracked/smoke/rows.parquet"))


def test_without_mlflow_track_is_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    from workflows import run_sweep
    from workflows.spec import SweepError

    monkeypatch.setitem(sys.modules, "mlflow", None)           # as if it were not installed
    assert main(["run", SWEEPS, "--sweep", "smoke", "--storage", str(tmp_path), "--track", "mlflow"]) == 2
    assert main(["track", str(tmp_path / "smoke"), "--to", "mlflow"]) == 2
    extra = "allowed: install the tracking extra (pip install -e '.[tracking]')"
    assert capsys.readouterr().err.splitlines() == [
        f"error: --track mlflow: the mlflow package is not installed; {extra}, or run without --track",
        f"error: --to mlflow: the mlflow package is not installed; {extra}"]
    with pytest.raises(SweepError, match="tracking extra"):
        run_sweep(SWEEPS, "smoke", storage=str(tmp_path), backend="local", track="mlflow")
    with pytest.raises(SweepError, match="allowed: mlflow, tensorboard"):
        run_sweep(SWEEPS, "smoke", storage=str(tmp_path), backend="local", track="wandb")
    assert list(tmp_path.iterdir()) == []


def test_more_params_than_a_request_takes_a_long_value_and_bracketed_names(tracking_uri):
    """MLflow's limits: 100 params a request, 6000 characters a value, no [ ] in names."""
    from workflows.trackers import CellRecord, MlflowTracker

    tracker = MlflowTracker()
    tracker.open("limits", "MLflow's limits", {"sweep": "limits"}, "test", echo=lambda line: None)
    params = {**{f"problem.spectrum[{i}]": float(i) for i in range(250)}, "problem.note": "x" * 7000,
              "problem.name": "p", "optimizer.name": "sgd"}
    now = time.time()
    tracker.log_cell(CellRecord("c0ffee0000000000", params, {"escaped_fraction": 0.5}, now - 1.5, now))
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("limits").experiment_id],
                                "tags.cell_id = 'c0ffee0000000000'")
    assert len(run.data.params) == 253
    assert run.data.params["problem.spectrum.249"] == "249.0"
    assert len(run.data.params["problem.note"]) == 6000 and run.data.params["problem.note"].endswith("…")
    assert run.data.tags["truncated_params"] == "problem.note"
    assert run.data.metrics == {"escaped_fraction": 0.5}
    assert run.info.status == "FINISHED" and abs(run.info.end_time - run.info.start_time - 1500) <= 1
