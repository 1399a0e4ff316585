"""Running sweeps on Ray Tune: the results layout and schema, resume, extension, and the same
rows whatever the number of workers."""
import json
import os
import textwrap

import pandas as pd
import pytest
from stored import stored_cells, stored_files

from workflows.cli import main

pytestmark = pytest.mark.ray

SMOKE_LIKE = """
sweeps:
  s:
    parameters:
      problem:
        values:
          - {{name: quadratic_saddle, dim: 2, anisotropy: {{values: {anisotropies}}}}}
          - {{name: staib_toy}}
      optimizer:
        values:
          - {{name: sgd, lr: 0.01}}
          - {{name: adam, lr: 0.001, beta1: 0.0, beta2: {{rule: paper}}}}
      seeds: 16
      budget: 1500
      trace_points: 10
"""


def run(tmp_path, anisotropies="[1, 100]", *extra):
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "sweeps.yaml"
    path.write_text(textwrap.dedent(SMOKE_LIKE.format(anisotropies=anisotropies)))
    code = main(["run", str(path), "--sweep", "s", "--storage", str(tmp_path / "results"), "--no-analyze", *extra])
    results = tmp_path / "results" / "s"
    return code, results, json.loads((results / "meta.json").read_text())


def test_results_layout_schema_and_meta(local_ray, tmp_path):
    code, results, meta = run(tmp_path)
    assert code == 0
    rows = pd.read_parquet(results / "rows.parquet")
    cells = pd.read_parquet(results / "cells.parquet")
    assert len(cells) == 6 and (cells.status == "ok").all()
    assert len(rows) == 6 * 16 and rows.groupby("cell_id").seed.nunique().eq(16).all()
    assert not rows.duplicated(["cell_id", "seed"]).any()
    for column, kind in {"escaped": "bool", "diverged": "bool", "escape_step": "int64", "seed": "int64",
                         "final_loss": "float64", "sigma_escape": "float64", "optimizer.lr": "float64"}.items():
        assert str(rows[column].dtype) == kind, column
    assert rows["optimizer.beta2"].isna().sum() == 3 * 16          # sgd takes no beta2
    assert set(rows["problem.name"]) == {"quadratic_saddle", "staib_toy"}
    traces = pd.read_parquet(results / "traces.parquet")
    assert set(traces.columns) == {"cell_id", "seed", "step", "loss"} and set(traces.cell_id) == set(cells.cell_id)
    for key in ("sweep", "yaml", "hash", "versions", "git_commit", "started", "finished", "cells", "run",
                "definition", "definition_hash", "overrides"):
        assert key in meta
    assert meta["interrupted"] is False and meta["interrupted_during"] is None and meta["overrides"] == []
    assert meta["cells"] == {"computed_this_run": 6, "attempted_this_run": 6, "reused": 0, "total": 6, "done": 6,
                             "failed": 0, "missing": 0}
    assert meta["versions"]["torch"].startswith("2.13.0") and meta["versions"]["ray"] == "2.60.0"
    assert not list(results.rglob("*.tmp-*"))                          # every write was atomic


def test_a_second_run_recomputes_nothing_and_an_extended_grid_only_its_new_cells(local_ray, tmp_path):
    _, results, _ = run(tmp_path)
    stamps = stored_files(results)
    tables = {name: (results / name).stat().st_mtime_ns for name in ("rows.parquet", "cells.parquet")}
    rows_before = pd.read_parquet(results / "rows.parquet")
    code, _, meta = run(tmp_path)
    assert code == 0 and meta["cells"]["computed_this_run"] == 0 and meta["cells"]["reused"] == 6
    assert stamps == stored_files(results)
    # Nothing changed: the tables are not rewritten (issue 25).
    assert tables == {name: (results / name).stat().st_mtime_ns for name in ("rows.parquet", "cells.parquet")}
    pd.testing.assert_frame_equal(rows_before, pd.read_parquet(results / "rows.parquet"))

    code, _, meta = run(tmp_path, "[1, 10, 100]")
    assert code == 0 and meta["cells"]["computed_this_run"] == 2 and meta["cells"]["reused"] == 6
    rows = pd.read_parquet(results / "rows.parquet")
    assert len(rows) == 8 * 16 and not rows.duplicated(["cell_id", "seed"]).any()
    old = rows[rows.cell_id.isin(rows_before.cell_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, rows_before)                   # old cells untouched


def test_one_worker_and_two_workers_give_the_same_rows(local_ray, tmp_path):
    _, one, _ = run(tmp_path / "one", "[1, 100]", "--workers", "1")
    _, two, _ = run(tmp_path / "two", "[1, 100]", "--workers", "2")
    key = ["cell_id", "seed"]
    a = pd.read_parquet(one / "rows.parquet").sort_values(key).reset_index(drop=True)
    b = pd.read_parquet(two / "rows.parquet").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_the_smoke_sweep_runs_and_its_report_has_every_table_and_figure(local_ray, tmp_path, capsys):
    assert main(["run", "sweeps.yaml", "--sweep", "smoke", "--storage", str(tmp_path)]) == 0
    assert f"report: {tmp_path / 'smoke' / 'analysis' / 'report.md'}" in capsys.readouterr().out
    analysis = tmp_path / "smoke" / "analysis"
    for table in ("cells.csv", "comparison.csv", "exponents.csv", "fits.csv"):
        assert (analysis / table).stat().st_size > 0, table
    figures = {p.name for p in (analysis / "figures").glob("*.png")}
    # escape_vs_<parameter> for each varied numeric parameter (analysis/figures.py): smoke varies anisotropy.
    assert {"escape_vs_anisotropy.png", "kaplan_meier_escape.png", "figure1_loss_traces.png"} <= figures
    report = (analysis / "report.md").read_text()
    assert "## What was run" in report and "smoke" in report
    assert all(f"figures/{name}" in report for name in figures)


def test_a_relative_storage_path_is_where_the_results_go(local_ray, tmp_path, monkeypatch):
    path = tmp_path / "sweeps.yaml"
    path.write_text(textwrap.dedent(SMOKE_LIKE.format(anisotropies="[1]")))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "sweeps.yaml", "--sweep", "s", "--storage", "relative/results", "--no-analyze"]) == 0
    assert len(stored_cells(tmp_path / "relative" / "results" / "s")) == 4


def test_tune_does_not_import_the_trackers_to_count_callbacks_when_usage_statistics_are_off():
    """Tune's fit() imports mlflow's, wandb's and comet's integrations to count its callbacks for
    Ray's usage statistics (1.6 s per run with mlflow installed); with the statistics off (our
    default, compat.configure) a sweep's fit() runs without that (compat.quiet_tune), and the
    process keeps Ray's own function outside it: nothing is patched at import."""
    import subprocess
    import sys

    code = ("import sys; from workflows.core import compat; compat.configure(); import workflows.tune_runner as t; "
            "original = compat.usage_tag_callbacks()\n"
            "with compat.quiet_tune(): compat.usage_tag_callbacks()([t.Progress(1, print)])\n"
            "print('mlflow' in sys.modules, compat.usage_tag_callbacks() is original)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_USAGE_STATS_ENABLED"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False True", out.stderr


def test_a_prefetched_module_is_the_module_and_a_failed_prefetch_fails_as_an_ordinary_import():
    import json as json_module

    from workflows.prefetch import prefetch

    assert prefetch("json").module() is json_module
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        prefetch("no_such_module_here").module()
