"""Analysis of a sweep's results: censored escape times, theory, scaling fits, figures, report.

    analyze(results_dir) -> results_dir/analysis/report.md

Imports pandas, numpy/scipy, lifelines, seaborn/matplotlib; never torch or ray, and never the engine.
"""
from .load import check_rows, load_results
from .pipeline import analyze
from .prediction import predict, predictions

__all__ = ["analyze", "check_rows", "load_results", "predict", "predictions"]
