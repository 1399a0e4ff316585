"""`--track tensorboard` (issue 16): one HParams session per stored cell under
results/<sweep>/tensorboard/<cell_id>/, read back with TensorBoard's own event reader
(EventAccumulator) and through a real `tensorboard` server's HParams API (what its HParams tab
shows); nothing written twice; `saddlescape track` writes what is missing, from a path or a URI;
Ctrl-C with a tracker behaves as without one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from gate import Gate
from helpers import parts
from raycluster import BIN, free_ports, kill_session
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata
from tracked import assert_metrics_match, expected_metrics, rich_sweep, sweep_cells

from workflows.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SWEEP = rich_sweep("{values: [1, 10]}")


def sessions(logdir: Path) -> dict[str, EventAccumulator]:
    """cell folder -> its events, read by TensorBoard's reader."""
    out = {}
    for folder in sorted(p for p in logdir.iterdir() if p.is_dir()):
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        events.Reload()
        out[folder.name] = events
    return out


def hparam(value):
    kind = value.WhichOneof("kind")
    return getattr(value, kind)


def expected_hparams(flat: dict) -> dict:
    """As tensorboardX's hparams() writes them: numbers as float64, None left out."""
    return {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in flat.items() if v is not None}


def files(logdir: Path) -> dict[str, float]:
    return {str(p.relative_to(logdir)): p.stat().st_mtime for p in logdir.rglob("*") if p.is_file()}


def test_each_stored_cell_is_one_hparams_session_with_its_parameters_and_summary(tmp_path):
    (tmp_path / "rich.yaml").write_text(SWEEP)
    run = ["run", str(tmp_path / "rich.yaml"), "--storage", str(tmp_path), "--backend", "local", "--no-analyze",
           "--track", "tensorboard"]
    assert main(run) == 0
    results, logdir = tmp_path / "rich", tmp_path / "rich" / "tensorboard"
    rows, cells = pd.read_parquet(results / "rows.parquet"), pd.read_parquet(results / "cells.parquet").set_index("cell_id")
    expected = sweep_cells(tmp_path / "rich.yaml", "rich")
    found = sessions(logdir)
    assert sorted(found) == sorted(expected) and len(expected) == 8
    for key, events in found.items():
        assert len(list((logdir / key).iterdir())) == 1                   # one event file
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        # A session start and end, and no experiment summary (TensorBoard would read only the first).
        assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        assert {k: hparam(v) for k, v in start.hparams.items()} == expected_hparams(expected[key])
        assert "optimizer.betas[0]" in start.hparams or expected[key]["optimizer.name"] == "adam"
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        assert end.status == 1                                            # STATUS_SUCCESS
        scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
        assert all(len(points) == 1 for points in scalars.values())
        # Event files hold float32 scalars.
        assert_metrics_match({tag: points[0].value for tag, points in scalars.items()},
                             expected_metrics(rows[rows.cell_id == key], cells.loc[key]),
                             rows[rows.cell_id == key], rel=1e-6, where=key)
    names = set().union(*(e.Tags()["scalars"] for e in found.values()))
    assert {"sosp_step_km_median", "gap_step_km_median", "tail_loss_q90_median", "escaped_fraction"} <= names

    # Again: nothing written; `track` rewrites only a cell whose folder is gone, from a path or a URI.
    before = files(logdir)
    assert main(run) == 0
    assert files(logdir) == before
    gone = min(found)
    for f in (logdir / gone).iterdir():
        f.unlink()
    (logdir / gone).rmdir()
    assert main(["track", f"file://{results}", "--to", "tensorboard"]) == 0
    after = files(logdir)
    assert {k: v for k, v in after.items() if not k.startswith(gone)} == {
        k: v for k, v in before.items() if not k.startswith(gone)}
    assert len([k for k in after if k.startswith(gone + "/")]) == 1
    assert sorted(sessions(logdir)) == sorted(expected)
    assert main(["track", str(results), "--to", "tensorboard"]) == 0
    assert files(logdir) == after
    assert main(["track", str(tmp_path / "nothing"), "--to", "tensorboard"]) == 2
    assert not (tmp_path / "nothing").exists()

    # What TensorBoard's HParams tab shows: one session group per cell, its metrics as columns.
    groups = hparams_tab(logdir, len(expected))
    assert sorted(g["name"] for g in groups) == sorted(expected)
    for group in groups:
        key = group["name"]
        assert group["hparams"]["optimizer.name"] == expected[key]["optimizer.name"]
        assert group["hparams"]["problem.anisotropy"] == expected[key]["problem.anisotropy"]
        shown = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert shown["escaped_fraction"] == pytest.approx(rows[rows.cell_id == key].escaped.mean(), rel=1e-6)


def hparams_tab(logdir: Path, sessions: int, timeout: float = 120) -> list[dict]:
    """The session groups of a real `tensorboard --logdir` (its HParams plugin's API), in its own
    session on 127.0.0.1, stopped by SIGTERM to its group, then SIGKILL of exactly that session."""
    port = free_ports(1)[0]
    proc = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1",
                             "--port", str(port), "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    body = json.dumps({"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
                       "colParams": [], "startIndex": 0, "sliceSize": 1000}).encode()
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert proc.poll() is None, "tensorboard exited"
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups",
                                                 data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as answer:
                    groups = json.loads(answer.read()).get("sessionGroups", [])
                if len(groups) >= sessions:          # the first answers may come before every folder is read
                    return groups
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"tensorboard did not show {sessions} HParams sessions within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        kill_session(proc.pid)
        proc.wait()


INTERRUPTED = """
sweeps:
  r:
    parameters:
      problem: {name: gated_saddle, dim: 10}
      problem.anisotropy: {values: [1, 10, 100, 1000]}
      optimizer.name: {values: [sgd, adam]}
      optimizer.lr: 0.001
      seeds: 64
      budget: 20000
"""


@pytest.mark.slow
def test_ctrl_c_with_a_tracker_stops_as_without_and_the_rerun_tracks_the_rest(tmp_path):
    """SIGINT to the driver's process group among the cells (--backend local): it still dies of
    SIGINT within seconds with the resume advice, never a tracker's traceback; no cell is in
    TensorBoard that is not stored; rerunning the same command tracks every cell. Two cells run, the
    rest wait at a gate (tests/gate.py) until the signal has landed."""
    (tmp_path / "r.yaml").write_text(INTERRUPTED)
    gate = Gate(tmp_path / "gate")
    gate.admit(2)
    env = gate.env(dict(os.environ))
    args = [sys.executable, "-m", "workflows", "run", str(tmp_path / "r.yaml"), "--storage", str(tmp_path),
            "--backend", "local", "--no-analyze", "--track", "tensorboard"]
    logdir = tmp_path / "r" / "tensorboard"

    def stored():
        return parts(tmp_path, "r")

    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while (len(stored()) < 2 or gate.tickets() < 3) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read()
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
        seconds = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_session(proc.pid)
        proc.wait()
    assert proc.returncode == -signal.SIGINT, out
    assert "interrupted: rerun the same command to resume (stopped during cells)" in out, out
    assert "Traceback" not in out and "warning:" not in out, out
    assert seconds < 30, out
    kept = stored()
    assert len(kept) < 8
    tracked = {p.name for p in logdir.iterdir()} if logdir.exists() else set()
    assert tracked <= kept
    if tracked != kept:
        assert f"note: tensorboard: {len(kept - tracked)} of the {len(kept)} stored cells not tracked (interrupted)" \
            in out, out
    gate.open()
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert {p.name for p in logdir.iterdir()} == stored() and len(stored()) == 8
    print(f"stopped {seconds:.1f} s after SIGINT with {len(kept)} cells stored, {len(tracked)} tracked; the rerun "
          "tracked the rest")
