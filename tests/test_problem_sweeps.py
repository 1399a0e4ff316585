"""Every sweep of sweeps.yaml expands, and the sweeps of the data-driven problems run: each of
their cells, cut down to a few seeds and steps, goes through the engine."""
import pytest

from workflows import simulate_cell
from workflows.spec import load_sweeps

SWEEPS = load_sweeps("sweeps.yaml")
DATA_SWEEPS = [name for name, sweep in SWEEPS.items()
               if {c["problem"]["name"] for c in sweep.cells} - {"quadratic_saddle", "staib_toy"}]


def test_every_data_driven_problem_has_a_sweep():
    from workflows.registry import registry

    toys = {"quadratic_saddle", "staib_toy"}
    covered = {c["problem"]["name"] for name in DATA_SWEEPS for c in SWEEPS[name].cells} - toys
    assert covered == set(registry("problem").builtins()) - toys


@pytest.mark.parametrize("name", DATA_SWEEPS)
def test_each_data_driven_sweep_runs(name):
    for cell in SWEEPS[name].cells:
        rows = simulate_cell({**cell, "seeds": 2, "budget": 30, "tail_steps": min(cell["tail_steps"], 10),
                              "cnc_samples": 64})
        assert len(rows) == 2 and rows.escape_step.between(1, 30).all()
        if cell["sosp_epsilon"]:
            assert {"sosp_step", "sosp_reached"} <= set(rows.columns)
