"""Analysis of a sweep's results: censored escape times, theory, sanity flags, scaling fits,
pairwise comparisons, figures, report.

    analyze(results_dir_or_rows) -> <results>/analysis/report.md

Imports pandas, numpy/scipy, lifelines, seaborn/matplotlib and the producer's declared row schema
(workflows.core.rows, torch-free); never torch or ray, and never the engine.
"""
from .load import check_rows, load_results
from .prediction import predict, predictions


def analyze(path_or_rows, out_dir=None, *, dpi: int = 150, formats=("png", "pdf"), reference=None):
    """Analyse results into `out_dir`: tables as CSV, figures (PNG at `dpi`, and PDF) and report.md.
    Returns the report's path.

    path_or_rows: a results directory (holding rows.parquet, and optionally cells.parquet,
        traces.parquet, meta.json), a rows.parquet file, or a pandas DataFrame of rows (one per run;
        it needs `escaped`, `escape_step` and the parameter columns; see analysis.load).
    out_dir: default <results>/analysis; for a DataFrame, ./analysis in the working directory.
    dpi: the PNGs' resolution; formats: the files each figure is saved as ("png", "pdf", "svg").
    reference: optimizer name(s) or variant label(s) for the pairwise comparisons (default: the
        sweep's `analysis: {reference: ...}` from meta.json, else every pair of up to three variants,
        else every variant against sgd); a name or label that matches no variant is a ValueError.
    Raises FileNotFoundError (no such results) or ValueError (a table that cannot be analysed,
    naming the column and what is allowed).
    """
    from .pipeline import analyze as run  # plotting and fitting libraries load only here
    return run(path_or_rows, out_dir, dpi=dpi, formats=formats, reference=reference)


__all__ = ["analyze", "check_rows", "load_results", "predict", "predictions"]
