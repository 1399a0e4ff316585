"""Running sweeps: the results layout and schema, resume and extension (on the local backend: the
store, the plan and the report are the same code for both backends); and on Ray Tune what only Ray
does: the rows of the local backend whatever the number of workers, a relative storage path under
Tune, the cells tracked as Tune reports them, and no SIGINT handler of Tune's left behind."""
import contextlib
import io
import os
import signal

import pandas as pd
import pytest
from helpers import assert_same_rows, meta, part_stamps, parts, write_sweep

from workflows.cli import main

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
    path = write_sweep(tmp_path, SMOKE_LIKE.format(anisotropies=anisotropies))
    code = main(["run", str(path), "--sweep", "s", "--storage", str(tmp_path / "results"), "--no-analyze", *extra])
    return code, tmp_path / "results" / "s", meta(tmp_path / "results", "s")


def test_results_layout_schema_and_meta(tmp_path):
    code, results, meta = run(tmp_path, "[1, 100]", "--backend", "local")
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


def test_a_second_run_recomputes_nothing_and_an_extended_grid_only_its_new_cells(tmp_path):
    _, results, _ = run(tmp_path, "[1, 100]", "--backend", "local")
    stamps = part_stamps(results.parent, "s")
    rows_before = pd.read_parquet(results / "rows.parquet")
    code, _, meta = run(tmp_path, "[1, 100]", "--backend", "local")
    assert code == 0 and meta["cells"]["computed_this_run"] == 0 and meta["cells"]["reused"] == 6
    assert stamps == part_stamps(results.parent, "s")
    pd.testing.assert_frame_equal(rows_before, pd.read_parquet(results / "rows.parquet"))

    code, _, meta = run(tmp_path, "[1, 10, 100]", "--backend", "local")
    assert code == 0 and meta["cells"]["computed_this_run"] == 2 and meta["cells"]["reused"] == 6
    rows = pd.read_parquet(results / "rows.parquet")
    assert len(rows) == 8 * 16 and not rows.duplicated(["cell_id", "seed"]).any()
    old = rows[rows.cell_id.isin(rows_before.cell_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, rows_before)                   # old cells untouched


def test_the_smoke_sweep_runs_and_its_report_has_every_table_and_figure(tmp_path, capsys):
    assert main(["run", "sweeps.yaml", "--sweep", "smoke", "--storage", str(tmp_path), "--backend", "local"]) == 0
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


# --- on Ray Tune ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def on_ray(local_ray, tmp_path_factory):
    """The sweep run twice through Ray Tune by the CLI in this process, on the shared Ray: on one
    worker into a relative storage path, and on two workers with a tracker; what the tests below
    check, kept from the moment each run returned."""
    root = tmp_path_factory.mktemp("on_ray")
    write_sweep(root, SMOKE_LIKE.format(anisotropies="[1, 100]"))
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for workers, storage, extra in (("1", "relative/one", []), ("2", "relative/two", ["--track", "tensorboard"])):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(["run", "sweeps.yaml", "--sweep", "s", "--storage", storage, "--no-analyze",
                             "--workers", workers, *extra])
            runs[workers] = {"code": code, "out": out.getvalue(), "results": root / storage / "s",
                             "sigint": signal.getsignal(signal.SIGINT)}
    return runs


@pytest.mark.slow
def test_one_worker_and_two_workers_give_the_same_rows(on_ray):
    assert on_ray["1"]["code"] == 0 and on_ray["2"]["code"] == 0
    assert_same_rows(pd.read_parquet(on_ray["1"]["results"] / "rows.parquet"),
                     pd.read_parquet(on_ray["2"]["results"] / "rows.parquet"))


def test_the_local_and_ray_backends_give_the_same_rows(on_ray, tmp_path):
    results = on_ray["2"]["results"]
    ray_meta = meta(results.parent, "s")
    assert ray_meta["run"]["backend"] == "ray" and ray_meta["cells"]["computed_this_run"] == 6
    code, local, _ = run(tmp_path, "[1, 100]", "--backend", "local")
    assert code == 0
    assert_same_rows(pd.read_parquet(results / "rows.parquet"), pd.read_parquet(local / "rows.parquet"))
    cells = ["cell_id", "status", "n_seeds", "n_escaped", "n_diverged", "mean_escape_step_of_escaped"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(results / "cells.parquet")[cells].sort_values("cell_id").reset_index(drop=True),
        pd.read_parquet(local / "cells.parquet")[cells].sort_values("cell_id").reset_index(drop=True))


def test_a_relative_storage_path_is_where_the_results_go(on_ray):
    """Relative to the directory the command ran in (root/relative/one), not to Tune's own folders."""
    results = on_ray["1"]["results"]
    assert on_ray["1"]["code"] == 0 and len(parts(results.parent, "s")) == 6


def test_each_cell_is_tracked_as_tune_reports_it_stored(on_ray):
    """The trackers hear of each cell from Tune's callback on the driver (workflows/tune_runner.py),
    none left over for the end of the run."""
    out, results = on_ray["2"]["out"], on_ray["2"]["results"]
    assert "tracking: tensorboard: 6 cells tracked now, 0 were already" in out, out
    assert "not tracked yet" not in out, out
    assert {p.name for p in (results / "tensorboard").iterdir()} == {p.removesuffix(".parquet")
                                                                     for p in parts(results.parent, "s")}


def test_tune_leaves_no_sigint_handler_behind(on_ray):
    """The swallowed Ctrl-C: Tune's handler stayed installed after fit() returned, so a Ctrl-C in
    the analysis only set a flag. After a Ray run, SIGINT is Python's KeyboardInterrupt again."""
    assert on_ray["1"]["sigint"] is signal.default_int_handler
    assert on_ray["2"]["sigint"] is signal.default_int_handler


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
