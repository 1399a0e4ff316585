"""The notebook under docs/ runs, top to bottom, and answers its question (so it cannot rot)."""
import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra: pip install -e '.[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra: pip install -e '.[notebook]'")

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "adam_vs_sgd.ipynb"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec for this interpreter (the venv's python, with saddlescape installed), found
    through JUPYTER_PATH, whatever kernels the machine has."""
    spec = tmp_path / "jupyter" / "kernels" / "saddlescape-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "saddlescape tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "saddlescape-test"


@pytest.mark.slow
def test_the_notebook_runs_and_answers_its_question(kernel, tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    started = time.perf_counter()
    # Raises CellExecutionError, with the cell and its traceback, if any cell fails.
    nbclient.NotebookClient(notebook, kernel_name=kernel, timeout=600,
                            resources={"metadata": {"path": str(work)}}).execute()
    print(f"notebook executed in {time.perf_counter() - started:.1f} s")

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code[1:]), "every cell after the imports shows something"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    outputs = [o for cell in code for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the escape-time figure"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "6 cells stored, 6 computed now" in text
    answer = [line for line in text.splitlines() if line.startswith("anisotropy ")]
    assert [line.split(":")[0] for line in answer] == ["anisotropy 1", "anisotropy 10", "anisotropy 100"]
    assert "From anisotropy 1 to 100 the speed-up " in text and "Predictions: measured KM medians within" in text
    # It ran where it was started: the results are in ./results, as run_sweep stores them.
    assert (work / "results" / "adam_vs_sgd" / "rows.parquet").is_file()
