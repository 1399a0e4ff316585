"""The Python API (workflows.api.run_sweep): tables back, resume as the CLI does, specs given as
mappings, bad specs refused with one line. (The same rows through Ray: tests/test_run.py.)"""
import json
import textwrap

import pandas as pd
import pytest
from helpers import stored_files
import torch
from helpers import by_run

from problems.quadratic_saddle import QuadraticSaddle
from workflows.api import run_sweep
from workflows.registry import register_problem, unregister
from workflows.spec import SweepError

BLOCK = {
    "description": "sgd against adam on an anisotropic saddle",
    "parameters": {
        "problem": {"value": {"name": "quadratic_saddle", "dim": 4}},
        "problem.anisotropy": {"values": [1, 100]},
        "optimizer": {"values": [{"name": "sgd", "lr": 0.05}, {"name": "adam", "lr": 0.01, "beta1": 0.0}]},
        "seeds": 16, "budget": 1500},
}


def test_run_sweep_returns_its_tables_and_a_second_call_computes_nothing(tmp_path):
    result = run_sweep(BLOCK, storage=tmp_path, backend="local")
    assert result.path == str(tmp_path / "notebook")                # a single block is called "notebook"
    rows, cells = result.rows, result.cells
    assert len(rows) == 4 * 16 and rows.groupby("cell_id").seed.nunique().eq(16).all()
    assert len(cells) == 4 and (cells.status == "ok").all() and set(cells.cell_id) == set(rows.cell_id)
    assert result.counts == {"total": 4, "done": 4, "failed": 0, "missing": 0}
    assert result.meta["cells"]["computed_this_run"] == 4 and result.meta["run"]["backend"] == "local"
    stored = json.loads((tmp_path / "notebook" / "meta.json").read_text())
    assert stored["cells"]["computed_this_run"] == 4

    parts = stored_files(tmp_path / "notebook")
    again = run_sweep(BLOCK, storage=tmp_path, backend="local")
    assert again.meta["cells"]["computed_this_run"] == 0 and again.meta["cells"]["reused"] == 4
    assert parts == stored_files(tmp_path / "notebook")
    pd.testing.assert_frame_equal(by_run(again.rows), by_run(rows))


def test_a_whole_file_as_a_mapping_a_single_block_and_a_path_give_the_same_cells(tmp_path):
    whole = {"defaults": {"seeds": 16}, "sweeps": {"first": BLOCK, "second": {**BLOCK, "parameters": {
        **BLOCK["parameters"], "budget": 500}}}}
    first = run_sweep(whole, "first", storage=tmp_path / "whole", backend="local")
    assert first.path == str(tmp_path / "whole" / "first") and first.counts["done"] == 4
    block = run_sweep(BLOCK, "first", storage=tmp_path / "block", backend="local")
    assert block.path == str(tmp_path / "block" / "first")
    pd.testing.assert_frame_equal(by_run(first.rows), by_run(block.rows))
    path = tmp_path / "sweeps.yaml"
    path.write_text(textwrap.dedent("""\
        sweeps:
          first:
            parameters:
              problem: {value: {name: quadratic_saddle, dim: 4}}
              problem.anisotropy: {values: [1, 100]}
              optimizer: {values: [{name: sgd, lr: 0.05}, {name: adam, lr: 0.01, beta1: 0.0}]}
              seeds: 16
              budget: 1500
        """))
    from_file = run_sweep(path, storage=tmp_path / "file", backend="local")      # the only sweep: no name needed
    pd.testing.assert_frame_equal(by_run(from_file.rows), by_run(first.rows))
    with pytest.raises(SweepError, match="sweep=None but the file defines 2 sweeps; allowed: one of first, second"):
        run_sweep(whole, storage=tmp_path / "none", backend="local")


@pytest.mark.parametrize("change, message", [
    ({"problem": {"value": {"name": "quadratic_sadle"}}}, "problem.name='quadratic_sadle' is not a known problem"),
    ({"problem.anisotropy": {"values": [0.5]}}, "anisotropy=0.5 is out of range; allowed: >= 1"),
    ({"optimizer.betas": {"value": [0.9, 0.99]}}, "optimizer.betas is not a parameter of adam, sgd"),
    ({"seeds": 0}, "seeds=0 is out of range; allowed: >= 1"),
])
def test_a_bad_spec_is_one_line_and_writes_nothing(tmp_path, change, message):
    bad = {**BLOCK, "parameters": {**BLOCK["parameters"], **change}}
    with pytest.raises(SweepError) as error:
        run_sweep(bad, storage=tmp_path, backend="local")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())


def test_an_unknown_backend_is_one_line(tmp_path):
    with pytest.raises(SweepError, match="backend='dask' is not known; allowed: ray, local"):
        run_sweep(BLOCK, storage=tmp_path, backend="dask")
    assert not any(tmp_path.iterdir())



THREADS_SEEN: list[int] = []


class ThreadsSeenSaddle(QuadraticSaddle):
    """quadratic_saddle under another name, noting torch's intra-op threads as each cell builds it."""
    name = "threads_seen_saddle"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        THREADS_SEEN.append(torch.get_num_threads())


def test_the_local_backend_runs_its_cells_on_one_torch_thread_and_restores_the_callers(tmp_path):
    # As a Ray trial does (workflows/tune_runner.py): torch's default of a thread per core made a
    # loss-defined cell 6-9x slower on 2 busy cores. The conftest sets one thread for the tests;
    # a notebook has torch's default, here two.
    register_problem(ThreadsSeenSaddle)
    THREADS_SEEN.clear()
    torch.set_num_threads(2)
    try:
        spec = {"parameters": {"problem": {"value": {"name": "threads_seen_saddle", "dim": 2}},
                               "optimizer": {"values": [{"name": "sgd", "lr": 0.05}, {"name": "adam", "lr": 0.01}]},
                               "seeds": 4, "budget": 50}}
        assert run_sweep(spec, storage=tmp_path, backend="local").counts["done"] == 2
        assert THREADS_SEEN and set(THREADS_SEEN) == {1}
        assert torch.get_num_threads() == 2                  # the caller's setting, back
    finally:
        torch.set_num_threads(1)
        unregister("problem", ThreadsSeenSaddle.name)
