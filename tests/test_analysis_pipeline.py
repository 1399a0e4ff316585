"""analyze() on real engine output: every table and figure that applies, a readable report, and
no torch or ray inside analysis/."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from analysis import analyze
from workflows.core.schedules import paper_beta2
from workflows import simulate, simulate_cell

TABLES = ("cells.csv", "comparison.csv", "comparison_summary.csv", "comparisons.csv", "exponents.csv", "fits.csv",
          "figure1.csv")
FIGURES = ("escape_vs_anisotropy.png", "escape_vs_lr.png", "escape_vs_beta2.png", "speedup_vs_anisotropy.png",
           "speedup_heatmap.png", "kaplan_meier_escape.png", "figure1_loss_traces.png")


def saddle(optimizer, lr, anisotropy, **hp):
    return {"problem": {"name": "quadratic_saddle", "dim": 2, "anisotropy": anisotropy},
            "optimizer": {"name": optimizer, "lr": lr, **hp}, "seeds": 64, "budget": 5000}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """16 quadratic-saddle cells (4 optimizers x 2 lr x 2 anisotropies; sgd at lr 1e-3 is censored),
    2 more rmsprop beta2 values, and 3 staib_toy cells run to the budget with traces."""
    root = tmp_path_factory.mktemp("results") / "tiny"
    root.mkdir()
    cells = [saddle(o, lr, k) for o in ("sgd", "rmsprop", "adam", "precond_sgd") for lr in (1e-3, 1e-2)
             for k in (10, 100)]
    cells += [saddle("rmsprop", 1e-2, 10, beta2=b) for b in (0.9, float(paper_beta2(1e-2)))]
    rows = [simulate_cell(cell) for cell in cells]
    traces = []
    for optimizer in ({"name": "sgd", "lr": 1e-2}, {"name": "sgd", "lr": 3e-2},
                      {"name": "rmsprop", "lr": 1e-3, "beta2": float(paper_beta2(1e-3))}):
        result = simulate({"problem": {"name": "staib_toy"}, "optimizer": optimizer, "seeds": 32, "budget": 5000,
                           "run_to_budget": True, "trace_points": 25, "tail_steps": 500})
        rows.append(result.rows)
        traces.append(result.trace)
    rows = pd.concat(rows, ignore_index=True)
    rows.to_parquet(root / "rows.parquet")
    pd.concat(traces, ignore_index=True).to_parquet(root / "traces.parquet")
    status = rows.drop_duplicates("cell_id")[["cell_id", "problem.name", "optimizer.name"]]
    status = status.assign(status="ok", error="")
    failed = pd.DataFrame([{"cell_id": "deadbeef", "problem.name": "staib_toy", "optimizer.name": "adam",
                            "status": "failed", "error": "RuntimeError: injected fault"}])
    pd.concat([status, failed]).to_parquet(root / "cells.parquet")
    (root / "meta.json").write_text(json.dumps({
        "sweep": "tiny", "description": "engine output for the analysis test", "yaml": "tiny:\n  seeds: 64\n",
        "hash": "0", "versions": {"torch": "x"}, "git_commit": "abc1234", "started": "s", "finished": "f",
        "cells": {"total": len(cells) + 4, "computed": len(cells) + 3, "reused": 0, "failed": 1}}))
    return root, analyze(root)


def test_every_table_and_figure_is_written(results):
    root, report = results
    assert report == root / "analysis" / "report.md" and report.is_file()
    for table in TABLES:
        assert len(pd.read_csv(root / "analysis" / table)) > 0, table
    for figure in FIGURES:
        path = root / "analysis" / "figures" / figure
        assert path.read_bytes()[:4] == b"\x89PNG", figure
        assert path.with_suffix(".pdf").read_bytes()[:4] == b"%PDF", figure


def test_report_says_what_was_run_and_links_every_figure(results):
    root, report = results
    text = report.read_text()
    assert "# Saddle escape analysis: tiny" in text and "engine output for the analysis test" in text
    assert "1 cells failed" in text and "injected fault" in text
    assert "right-censored" in text and "restricted mean" in text
    for figure in FIGURES:
        assert f"](figures/{figure})" in text, figure
    for heading in ("## Sanity flags", "## Findings", "## Scaling laws", "## Pairwise comparisons",
                    "## The paper's Figure 1"):
        assert heading in text
    assert "../shared" not in text and "THEORY.md" not in text


def test_censored_cells_are_reported_as_censored(results):
    root, _ = results
    cells = pd.read_csv(root / "analysis" / "cells.csv")
    slow = cells[(cells["optimizer"] == "sgd") & (cells["optimizer.lr"] == 1e-3)
                 & (cells["problem.anisotropy"] == 100)]
    assert len(slow) == 1 and slow["escaped_fraction"].iloc[0] < 0.5
    assert slow["escape_kind"].iloc[0] == "restricted mean <= budget"
    assert slow["escape_time"].iloc[0] <= 5000


def test_sgd_cells_agree_with_their_closed_form(results):
    """The engine's SGD matches THEORY.md (tests/test_engine.py); so the comparison, if it compares
    like with like, finds measured/predicted near 1 for every SGD cell."""
    root, _ = results
    comparison = pd.read_csv(root / "analysis" / "comparison.csv")
    sgd = comparison[comparison["optimizer"] == "sgd"]
    assert len(sgd) >= 5
    assert sgd["ratio"].between(0.85, 1.15).all(), sgd[["measure", "measured", "predicted"]]


def test_a_sweep_with_nothing_to_plot_still_gets_a_report(tmp_path):
    simulate_cell(saddle("sgd", 1e-2, 10)).to_parquet(tmp_path / "rows.parquet")
    report = analyze(tmp_path / "rows.parquet", out_dir=tmp_path / "out")
    text = report.read_text()
    assert (tmp_path / "out" / "figures" / "kaplan_meier_escape.png").is_file()
    assert not list((tmp_path / "out" / "figures").glob("escape_vs_*"))
    assert "only one optimizer variant" in text or "Which method is faster" not in text


def test_analysis_imports_neither_torch_nor_ray_nor_the_engine():
    """The analysis reads the declared row schema (workflows.core.rows, torch-free) and nothing else of
    the producer."""
    code = ("import sys, analysis, analysis.figures, analysis.report, analysis.pipeline; "
            "print(sorted(m for m in ('torch', 'ray', 'workflows.engine', 'workflows.cell', 'problems', "
            "'optimizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
