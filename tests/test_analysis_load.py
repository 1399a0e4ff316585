"""Loading results: a directory or a rows.parquet; clear errors for a table that cannot be analysed."""
import json

import pandas as pd
import pytest

from analysis import analyze, load_results
from analysis.synthetic import synthetic_rows


def write(tmp_path, rows):
    rows.to_parquet(tmp_path / "rows.parquet")
    return tmp_path


def test_a_directory_and_its_rows_parquet_load_the_same(tmp_path):
    write(tmp_path, synthetic_rows(seeds=3))
    (tmp_path / "meta.json").write_text(json.dumps({"sweep": "tiny"}))
    from_dir, from_file = load_results(tmp_path), load_results(tmp_path / "rows.parquet")
    assert len(from_dir.rows) == len(from_file.rows) == 27
    assert from_dir.meta == {"sweep": "tiny"} and from_dir.traces is None and from_dir.cells is None


def test_missing_columns_are_named(tmp_path):
    """Only what survival needs is required (the theory's inputs may be missing: tests/test_analysis_faults.py)."""
    write(tmp_path, synthetic_rows(seeds=3).drop(columns=["escaped", "escape_step", "sigma_escape"]))
    with pytest.raises(ValueError, match="missing columns escaped, escape_step; required: escaped, escape_step"):
        analyze(tmp_path)


def test_a_dataframe_loads_like_its_parquet(tmp_path):
    rows = synthetic_rows(seeds=3)
    write(tmp_path, rows)
    from_frame, from_file = load_results(rows), load_results(tmp_path)
    assert from_frame.root is None and from_frame.meta is None
    assert from_frame.rows.shape == from_file.rows.shape


def test_sosp_columns_may_be_missing_where_sosp_is_not_tracked():
    rows = pd.concat([synthetic_rows(seeds=3, sosp_epsilon=0.1), synthetic_rows(seeds=3).assign(cell_id=lambda r: r["cell_id"] + "b")])
    assert rows["sosp_reached"].isna().any()
    load_results(rows)                                      # no error
    with pytest.raises(ValueError, match="column escaped has missing values"):
        load_results(rows.assign(escaped=rows["escaped"].where(rows["seed"] > 0)))


def test_no_rows_is_an_error(tmp_path):
    write(tmp_path, synthetic_rows(seeds=3).iloc[:0])
    with pytest.raises(ValueError, match="no rows"):
        analyze(tmp_path)


def test_a_missing_results_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="rows.parquet"):
        load_results(tmp_path / "nothing")


def test_a_cell_id_that_reads_as_a_number_is_still_text():
    """A cell id is a 16-digit hex hash; about 1 in 700 reads as a number ('28397295738916e1' did, in
    a 180-cell tuned sweep, and its analysis was refused as 'numbers written as text')."""
    rows = synthetic_rows(lrs=(1e-3,), sigmas=(0.1, 1.0), seeds=8)
    first = rows["cell_id"] == rows["cell_id"].iloc[0]
    rows["cell_id"] = rows["cell_id"].where(~first, "28397295738916e1").where(first, "1234567890123456")
    loaded = load_results(rows)
    assert set(loaded.rows["cell_id"].astype(str)) == {"28397295738916e1", "1234567890123456"}
    with pytest.raises(ValueError, match="column optimizer.lr holds numbers written as text"):
        load_results(rows.assign(**{"optimizer.lr": rows["optimizer.lr"].astype(str)}))
