"""The README is the user's manual: its column table is the declared row schema, the engine writes
exactly the declared columns, and every built-in problem and optimizer is documented."""
from pathlib import Path

import pandas as pd

from workflows import simulate_cell
from workflows.registry import registry
from workflows.core.rows import BY_NAME, COLUMNS, markdown_table
from workflows.core.settings import RUN_SCHEMA

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
FAMILIES = ("problem.", "optimizer.")


def engine_rows() -> pd.DataFrame:
    """Every optional column switched on, on two problems."""
    return pd.concat([
        simulate_cell({"problem": {"name": "quadratic_saddle", "dim": 2, "quartic": 1.0}, "optimizer": {"name": "adam"},
                       "seeds": 2, "budget": 5, "tail_steps": 2, "sosp_epsilon": 0.1, "gap_epsilon": 0.1}),
        simulate_cell({"problem": {"name": "quadratic_saddle", "dim": 2}, "optimizer": {"name": "rmsprop"},
                       "seeds": 2, "budget": 5, "tracking_error": True}),
        simulate_cell({"problem": {"name": "staib_toy"}, "optimizer": {"name": "sgd"}, "seeds": 2, "budget": 5}),
    ])


def test_the_readme_column_table_is_the_declared_schema():
    assert markdown_table() in README


def test_the_engine_writes_exactly_the_declared_columns():
    rows = engine_rows()
    run_settings = {"base_seed" if k == "seed" else k for k in RUN_SCHEMA}
    undeclared = [c for c in rows.columns
                  if c not in BY_NAME and not c.startswith(FAMILIES) and c not in run_settings]
    assert not undeclared, f"columns the engine writes that workflows/core/rows.py does not declare: {undeclared}"
    absent = [c.name for c in COLUMNS if "<" not in c.name and c.name not in rows]
    assert not absent, f"declared columns the engine did not write: {absent}"
    for column in COLUMNS:
        if column.scope == "cell" and column.name in rows:
            assert rows.groupby("cell_id")[column.name].nunique(dropna=False).eq(1).all(), column.name


def test_documented_problems_and_optimizers_exist():
    for kind in ("problem", "optimizer"):
        for name in registry(kind).builtins():
            assert f"| `{name}` |" in README, name
