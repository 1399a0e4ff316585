"""Issue 24, items 1-4: what the report and the analysis say. One test (or a few) per kind of
fault, each on a small input that the analysis got wrong before:

 1 a verdict from a fit with no information        3 figures that say more than the data
 2 rows that look right but are not                4 tables a reader cannot use
"""
import io
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from seaborn.external import husl

from analysis import analyze, load_results
from analysis.cells import cell_table, method_labels
from analysis.compare import _theory_slopes, compare_exponents, sgd_slope_check, with_predictions
from analysis.figures import kaplan_meier_curves, loss_traces, speedup_heatmap
from analysis.palette import palette
from analysis.report import markdown_table
from analysis.scaling import fit_scaling
from analysis.synthetic import synthetic_rows
from workflows import simulate, simulate_cell
from workflows.cli import main as cli

PNG = {"formats": ("png",), "dpi": 60}
ANISOTROPIES = (1, 3, 10, 30, 100, 300, 1000)


def capture(draw, *args):
    """The Figure a figure function draws and its caption, without saving it."""
    captured = {}
    draw(*args, None, lambda fig, path, caption: captured.update(fig=fig, caption=caption))
    return captured["fig"], captured["caption"]


def section(report: str, heading: str) -> str:
    return report.split(f"## {heading}")[1].split("\n## ")[0]


# --- 2. rows that look right but are not -----------------------------------------------------------------

@pytest.fixture(scope="module")
def none_escaped():
    """Two cells; in the first no run of 50 escapes (censored at the budget, 2000)."""
    rows = synthetic_rows(lrs=(1e-3,), sigmas=(0.1, 1.0), seeds=50, censored=0.0)
    first = rows["cell_id"] == rows["cell_id"].iloc[0]
    rows.loc[first, ["escaped", "escape_step", "final_step"]] = [False, 2000, 2000]
    rows["budget"] = 2000
    return rows


def test_booleans_read_back_as_text_are_refused_naming_the_column(none_escaped, tmp_path):
    """`escaped` read from a CSV as "True"/"False": bool("False") is True, and the cell where 0 of 50
    escaped was reported as escaped_fraction 1, median 2000."""
    back = pd.read_csv(io.StringIO(none_escaped.to_csv(index=False)), dtype={"escaped": str})
    with pytest.raises(ValueError, match=r"^rows: column escaped holds booleans written as text \('False', 'True'"):
        analyze(back, tmp_path / "out", **PNG)
    assert not (tmp_path / "out").exists()                              # nothing written


@pytest.mark.parametrize("column, values, why", [
    ("optimizer.lr", lambda r: r["optimizer.lr"].astype(str), "holds numbers written as text"),
    ("escape_step", lambda r: r["escape_step"] + 0.5, "holds values that are not whole numbers"),
    ("run_to_budget", lambda r: "False", "holds booleans written as text"),
    ("final_loss", lambda r: r["final_loss"].astype(object).where(r["seed"] > 0, "n/a"), "mixes text and numbers"),
    ("cell_id", lambda r: r["cell_id"].str.len() * 1000 + r["seed"] // 25, "holds numbers"),
    ("diverged", lambda r: 2 * r["diverged"].astype(int) + 2, "holds numbers other than 0 and 1"),
])
def test_every_column_is_read_as_its_declared_type(none_escaped, column, values, why):
    with pytest.raises(ValueError, match=f"^rows: column {column} {why}") as error:
        load_results(none_escaped.assign(**{column: values(none_escaped)}))
    assert "\n" not in str(error.value)


def test_values_that_can_be_read_exactly_are_kept(none_escaped):
    """0/1 for a boolean, whole floats for a step, a CSV read back with its types: all fine."""
    back = pd.read_csv(io.StringIO(none_escaped.to_csv(index=False)))
    rows = load_results(back.assign(escaped=back["escaped"].astype(int), escape_step=back["escape_step"] * 1.0)).rows
    assert rows.groupby("cell_id")["escaped"].mean().sort_values().tolist() == [0.0, 1.0]


def test_the_command_refuses_such_a_table_in_one_line(none_escaped, tmp_path, capsys):
    none_escaped.assign(escaped=none_escaped["escaped"].map({True: "True", False: "False"})).to_parquet(
        tmp_path / "rows.parquet")
    assert cli(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "column escaped" in err and "\n" not in err
    assert not (tmp_path / "analysis").exists()


