"""Loading results: a directory or a rows.parquet; clear errors for a table that cannot be analysed."""
import json

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
    write(tmp_path, synthetic_rows(seeds=3).drop(columns=["escaped", "sigma_escape"]))
    with pytest.raises(ValueError, match="missing columns sigma_escape, escaped"):
        analyze(tmp_path)


def test_no_rows_is_an_error(tmp_path):
    write(tmp_path, synthetic_rows(seeds=3).iloc[:0])
    with pytest.raises(ValueError, match="no rows"):
        analyze(tmp_path)


def test_a_missing_results_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="rows.parquet"):
        load_results(tmp_path / "nothing")
