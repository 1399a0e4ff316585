"""rows.parquet read a group of cells at a time (analysis.lean; issue 25: 10⁷ rows within 2 GB):
the analysis is the same as from the whole frame, to the byte, and holds only the durations."""
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis import analyze, lean, load
from analysis.load import load_results
from analysis.synthetic import synthetic_rows



def mixed_rows() -> pd.DataFrame:
    """Two optimizers, SOSP tracked in some cells only, a column of the user's constant within each
    cell and one that varies within a cell, cells of unequal sizes."""
    tracked = synthetic_rows(lrs=(1e-3, 3e-3), sigmas=(0.1, 1.0), seeds=9, optimizers=("sgd", "rmsprop"),
                             sosp_epsilon=0.1, tail_steps=5)
    plain = synthetic_rows(lrs=(1e-3, 3e-3), sigmas=(0.1, 1.0), seeds=5, optimizers=("sgd", "rmsprop"), seed=1,
                           tail_steps=5).assign(cell_id=lambda r: r["cell_id"] + "b")
    rows = pd.concat([tracked, plain], ignore_index=True)
    rows = rows[~((rows["cell_id"] == rows["cell_id"].iloc[0]) & (rows["seed"] > 3))]   # a smaller cell
    rows["my_label"] = "L" + rows["cell_id"].str[-3:]                                      # per cell
    rows["my_metric"] = np.arange(len(rows)) % 7 * 0.5                                 # per run
    return rows.reset_index(drop=True)


def analysed(tmp_path, name, rows, monkeypatch, whole: bool, batch: int):
    folder = tmp_path / name
    folder.mkdir()
    rows.to_parquet(folder / "rows.parquet")
    (folder / "meta.json").write_text(json.dumps({"sweep": "mixed"}))
    with monkeypatch.context() as patch:
        patch.setattr(lean, "BATCH_ROWS", batch)
        if whole:
            patch.setattr(load, "lean_rows", lambda *a: None)
        analyze(folder, folder / "analysis", dpi=30, formats=("png",))
    return folder / "analysis"


@pytest.mark.parametrize("batch", [7, 64, 10**6])
def test_the_analysis_read_in_groups_of_cells_is_the_whole_frames(tmp_path, monkeypatch, batch):
    """Batches of 7 rows cut every cell (carried into the next batch); 64, some; 10⁶, none."""
    rows = mixed_rows()
    whole = analysed(tmp_path, "whole", rows, monkeypatch, True, batch)
    grouped = analysed(tmp_path, "grouped", rows, monkeypatch, False, batch)
    written = sorted(p.name for p in whole.iterdir() if p.is_file())
    assert written == sorted(p.name for p in grouped.iterdir() if p.is_file()) and "cells.csv" in written
    for name in written:
        a, b = (whole / name).read_text(), (grouped / name).read_text()
        if name == "report.md":
            a, b = (re.sub(r"Analysis took [0-9.]+ s", "", text.replace(str(folder.parent), "<source>"))
                    for text, folder in ((a, whole), (b, grouped)))
        assert a == b, name
    figures = sorted(p.name for p in (whole / "figures").iterdir())
    assert figures == sorted(p.name for p in (grouped / "figures").iterdir()) and figures


def test_lean_rows_hold_the_durations_only(tmp_path, monkeypatch):
    rows = mixed_rows()
    rows.to_parquet(tmp_path / "rows.parquet")
    monkeypatch.setattr(lean, "BATCH_ROWS", 50)
    read = load_results(tmp_path, lean=True)
    assert read.lean is not None
    assert list(read.rows.columns) == ["cell_id", "seed", "escaped", "escape_step", "final_step", "sosp_reached",
                                       "sosp_step", "diverged"]
    assert read.rows["cell_id"].dtype == "category" and len(read.rows) == len(rows)
    assert "my_metric" in read.lean.split[2] and "my_label" in read.lean.split[0]
    whole = load_results(tmp_path)
    assert whole.lean is None and whole.rows.shape == rows.shape
    np.testing.assert_array_equal(read.rows["escape_step"], whole.rows["escape_step"])
    assert list(read.rows["cell_id"].astype(str)) == list(whole.rows["cell_id"].astype(str))


def test_a_file_whose_cells_are_not_grouped_is_read_whole(tmp_path, monkeypatch):
    rows = mixed_rows()
    rows.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "rows.parquet")
    monkeypatch.setattr(lean, "BATCH_ROWS", 50)
    read = load_results(tmp_path, lean=True)
    assert read.lean is None and read.rows.shape == rows.shape
    analyze(tmp_path, tmp_path / "analysis", dpi=30, formats=("png",))    # and is analysed as before


def test_a_table_with_the_tracking_error_is_read_whole(tmp_path):
    rows = mixed_rows().assign(tracking_error_mean=0.5)
    rows.to_parquet(tmp_path / "rows.parquet")
    assert load_results(tmp_path, lean=True).lean is None


# The process's own peak (VmHWM), beyond the imports, against the whole frame's size.
PEAK = """
import re, sys
from analysis.load import load_results
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
base = peak()
read = load_results(sys.argv[1], lean=sys.argv[2] == "lean")
print(peak() - base, read.rows.memory_usage(deep=True).sum(), len(read.rows))
"""


@pytest.mark.slow
def test_reading_lean_does_not_grow_with_the_rows_as_the_whole_frame_does(tmp_path):
    """2·10⁵ and 8·10⁵ synthetic rows (53 columns), each read in a fresh process: the whole frame's
    peak grows by about 3.5x the frame (measured: 2·10⁵ -> 8·10⁵ rows, +324 MiB), the lean read's by
    its lean columns (22 bytes a run: +27 MiB; its peak is a batch's work, BATCH_ROWS rows)."""
    peaks = {}
    for lrs in (8, 32):
        rows = synthetic_rows(lrs=np.logspace(-4, -2, lrs), sigmas=np.logspace(-3, 0, 10), seeds=250, intercept=3.5,
                              optimizers=("sgd", "adam"), dims=(2, 4, 8, 16, 32), censored=0.2)
        folder = tmp_path / str(len(rows))
        folder.mkdir()
        rows.to_parquet(folder / "rows.parquet")
        for how in ("whole", "lean"):
            out = subprocess.run([sys.executable, "-c", PEAK, str(folder), how], check=True, capture_output=True,
                                 text=True).stdout.split()
            peaks[how, len(rows)] = [int(v) for v in out]
    assert peaks["lean", 800_000][1] / 800_000 < 30 and peaks["lean", 800_000][2] == 800_000
    growth = {how: peaks[how, 800_000][0] - peaks[how, 200_000][0] for how in ("whole", "lean")}
    frame = peaks["whole", 800_000][1] - peaks["whole", 200_000][1]
    assert growth["whole"] > frame and growth["lean"] < frame / 4, (growth, frame, peaks)
