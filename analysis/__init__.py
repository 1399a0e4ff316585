"""Analysis of a sweep's results: censored escape times, theory, scaling fits, figures, report.

    analyze(results_dir) -> results_dir/analysis/report.md

Imports pandas, numpy/scipy, lifelines, seaborn/matplotlib; never torch or ray, and never the engine.
"""
from .load import check_rows, load_results
from .prediction import predict, predictions


def analyze(path, out_dir=None):
    """Analyse a results directory (or a rows.parquet) into `out_dir` (default <results>/analysis):
    tables as CSV, figures/*.png and report.md. Returns the report's path."""
    from .pipeline import analyze as run          # plotting and fitting libraries load only here
    return run(path, out_dir)


__all__ = ["analyze", "check_rows", "load_results", "predict", "predictions"]
