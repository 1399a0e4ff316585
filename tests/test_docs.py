"""The README is the user's manual: every column the engine writes is documented there, and
every documented sweep/command exists."""
import re
from pathlib import Path

import pandas as pd

from workflows import simulate_cell

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented_columns() -> set[str]:
    section = README.split("### rows.parquet columns", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_every_rows_column_is_documented():
    rows = pd.concat([
        simulate_cell({"problem": {"name": "quadratic_saddle", "dim": 2}, "optimizer": {"name": "adam"},
                       "seeds": 2, "budget": 5, "tail_steps": 2}),
        simulate_cell({"problem": {"name": "staib_toy"}, "optimizer": {"name": "sgd"}, "seeds": 2, "budget": 5}),
    ])
    documented = documented_columns()
    patterns = {d.split("<")[0] for d in documented if "<" in d}
    missing = [c for c in rows.columns if c not in documented and not any(c.startswith(p) for p in patterns)]
    assert not missing, f"columns not documented in README.md: {missing}"


def test_documented_problems_and_optimizers_exist():
    from optimizers import OPTIMIZERS
    from problems import PROBLEMS

    for name in [*PROBLEMS, *OPTIMIZERS]:
        assert f"| `{name}` |" in README, name
