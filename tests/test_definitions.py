"""Two sweep definitions, one results folder (issue 15, item 7): the same definition resumes, an
extension proceeds with a note, anything that would drop stored cells out of the tables is
refused (exit 2, nothing written) unless --allow-changed; a report written for other tables is
marked out of date. Local backend: no Ray needed."""
import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from helpers import meta, stored_cells

from workflows import run_sweep
from workflows.cli import main
from workflows.spec import SweepError
from workflows.store import STALE_BANNER

SWEEP = """
defaults: {{problem.name: quadratic_saddle, problem.dim: 2, optimizer.name: sgd, seeds: 4, budget: 40, cnc_samples: 0}}
sweeps:
  s:
    description: {description}
    parameters:
      optimizer.lr: {{values: {lrs}}}
"""


def sweep_file(tmp_path, lrs="[0.1, 0.2]", description="first", name="sweeps.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(SWEEP.format(lrs=lrs, description=description)))
    return path


def run(path, storage, *extra) -> int:
    return main(["run", str(path), "--sweep", "s", "--backend", "local", "--no-analyze", "--storage", str(storage),
                 *extra])


def snapshot(storage) -> dict:
    return {p: p.stat().st_mtime_ns for p in (storage / "s").rglob("*") if p.is_file()}


def test_same_definition_says_nothing_and_an_extension_says_what_changed(tmp_path, capsys):
    storage = tmp_path / "r"
    assert run(sweep_file(tmp_path), storage) == 0
    first = meta(storage, "s")
    assert first["definition_hash"] and first["definition"]["parameters"] == {"optimizer.lr": {"values": [0.1, 0.2]}}
    capsys.readouterr()
    assert run(sweep_file(tmp_path), storage) == 0
    assert capsys.readouterr().err == ""
    assert run(sweep_file(tmp_path, "[0.1, 0.2, 0.3]", "longer"), storage) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: sweep 's': ")
    assert "description: 'first' -> 'longer'" in err and "parameters.optimizer.lr.values: [0.1, 0.2] -> [0.1, 0.2, 0.3]" in err
    assert "its 2 stored cells are all still in the grid" in err
    m = meta(storage, "s")
    assert m["cells"]["computed_this_run"] == 1 and m["cells"]["reused"] == 2 and m["definition_change"]


def test_a_shrunk_grid_is_refused_unless_allowed_and_keeps_what_is_still_in_it(tmp_path, capsys):
    storage = tmp_path / "r"
    assert run(sweep_file(tmp_path, "[0.1, 0.2, 0.3]"), storage) == 0
    before = snapshot(storage)
    capsys.readouterr()
    assert run(sweep_file(tmp_path, "[0.1, 0.4]"), storage) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: sweep 's': ")
    assert "parameters.optimizer.lr.values: [0.1, 0.2, 0.3] -> [0.1, 0.4]" in err
    assert "2 of its 3 stored cells are not in this grid" in err
    assert "--storage elsewhere" in err and "--allow-changed" in err and "keeps the 1 cell still in the grid" in err
    assert snapshot(storage) == before                                   # nothing written
    assert run(sweep_file(tmp_path, "[0.1, 0.4]"), storage, "--allow-changed") == 0
    cells = pd.read_parquet(storage / "s" / "cells.parquet")
    assert sorted(cells["optimizer.lr"]) == [0.1, 0.4] and (cells.status == "ok").all()
    assert meta(storage, "s")["cells"] == {"computed_this_run": 1, "attempted_this_run": 1, "reused": 1, "total": 2,
                                      "done": 2, "failed": 0, "missing": 0}
    assert len(stored_cells(storage / "s")) == 4                        # the dropped cells stay on disk
    # From now on the stored cells are the new tables' cells: the same definition again is quiet.
    capsys.readouterr()
    assert run(sweep_file(tmp_path, "[0.1, 0.4]"), storage) == 0 and capsys.readouterr().err == ""


def test_two_files_with_a_sweep_of_the_same_name_are_a_collision(tmp_path, capsys):
    storage = tmp_path / "r"
    assert run(sweep_file(tmp_path, "[0.1, 0.2]", name="a.yaml"), storage) == 0
    capsys.readouterr()
    other = tmp_path / "b.yaml"
    other.write_text(sweep_file(tmp_path, "[0.5]", name="b.yaml").read_text().replace("budget: 40", "budget: 30"))
    assert run(other, storage) == 2
    err = capsys.readouterr().err
    assert "none of its 2 stored cells is in this grid (another sweep of the same name?)" in err
    assert "defaults.budget: 40 -> 30" in err


def test_overrides_are_part_of_the_definition(tmp_path, capsys):
    storage = tmp_path / "r"
    assert run(sweep_file(tmp_path), storage, "seeds=3") == 0
    assert meta(storage, "s")["overrides"] == ["seeds=3"]
    capsys.readouterr()
    assert run(sweep_file(tmp_path), storage) == 2            # without it, every cell differs (4 seeds)
    assert "overrides removed (was ['seeds=3'])" in capsys.readouterr().err
    assert run(sweep_file(tmp_path), storage, "seeds=3", "optimizer.lr=0.1,0.2,0.7") == 0


def test_the_python_api_refuses_the_same_way_and_takes_allow_changed(tmp_path):
    block = {"parameters": {"problem.name": "quadratic_saddle", "problem.dim": 2, "optimizer.name": "sgd",
                            "optimizer.lr": {"values": [0.1, 0.2]}, "seeds": 4, "budget": 40}}
    first = run_sweep(block, "nb", storage=tmp_path, backend="local")
    assert first.counts["done"] == 2
    block["parameters"]["optimizer.lr"] = {"values": [0.3]}
    with pytest.raises(SweepError, match="allow_changed=True"):
        run_sweep(block, "nb", storage=tmp_path, backend="local")
    again = run_sweep(block, "nb", storage=tmp_path, backend="local", allow_changed=True)
    assert again.counts == {"total": 1, "done": 1, "failed": 0, "missing": 0}


def test_a_meta_json_from_before_definition_hashes_is_read_from_its_yaml(tmp_path, capsys):
    storage = tmp_path / "r"
    assert run(sweep_file(tmp_path), storage) == 0
    old = meta(storage, "s")
    for key in ("definition", "definition_hash"):
        del old[key]
    (storage / "s" / "meta.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert run(sweep_file(tmp_path), storage) == 0 and capsys.readouterr().err == ""


def test_a_report_for_other_tables_is_marked_out_of_date_and_rewritten_by_the_analysis(tmp_path, capsys):
    storage = tmp_path / "r"
    args = ["run", str(sweep_file(tmp_path)), "--sweep", "s", "--backend", "local", "--storage", str(storage)]
    assert main(args) == 0
    report = storage / "s" / "analysis" / "report.md"
    assert not report.read_text().startswith(STALE_BANNER)
    assert run(sweep_file(tmp_path, "[0.1, 0.2, 0.3]"), storage) == 0          # --no-analyze
    text = report.read_text()
    assert text.startswith(STALE_BANNER) and "3 of 3 cells with results now" in text
    assert f"saddlescape analyze {storage / 's'}" in text
    assert run(sweep_file(tmp_path, "[0.1, 0.2, 0.3]"), storage) == 0          # same tables: one banner
    assert report.read_text().count(STALE_BANNER) == 1
    assert main(["run", str(sweep_file(tmp_path, "[0.1, 0.2, 0.3]")), *args[2:]]) == 0
    assert not report.read_text().startswith(STALE_BANNER)
