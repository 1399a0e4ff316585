"""analyze(results) -> report.md: load, summarise per cell, predict, compare, fit, draw, write.

Data only moves forward (DESIGN.md): this reads what the sweep wrote and never re-runs the engine.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .cells import cell_table
from .compare import compare_cells, compare_exponents, figure1_check, sgd_slope_check, speedup_table, \
    summarize_cell_verdicts, with_predictions
from .figures import draw_figures
from .load import load_results
from .report import write_report
from .scaling import fit_scaling
from .survival import duration_pairs


def analyze(path, out_dir=None) -> Path:
    """Analyse a results directory (or a rows.parquet) into `out_dir` (default: <results>/analysis):
    tables as CSV, figures/*.png and report.md. Returns the report's path."""
    started = time.perf_counter()
    results = load_results(path)
    out = Path(out_dir) if out_dir is not None else results.root / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    rows = results.rows
    cells = with_predictions(cell_table(rows))
    comparison = compare_cells(cells)
    summary = summarize_cell_verdicts(comparison) if len(comparison) else pd.DataFrame(
        columns=["problem", "optimizer", "theory_model", "cells", "holds", "close", "fails"])
    fitted = [fit_scaling(rows, cells, name) for name in duration_pairs(rows)]
    exponents = pd.concat([e for e, _ in fitted], ignore_index=True)
    fits = pd.concat([q for _, q in fitted], ignore_index=True)
    escape_exponents = exponents[exponents["duration"] == "escape"] if len(exponents) else exponents
    exponent_check = compare_exponents(escape_exponents, cells)
    if len(exponents):     # exponents of other durations (no theory) are kept alongside
        other_durations = exponents[exponents["duration"] != "escape"]
        exponent_check = pd.concat([exponent_check, other_durations], ignore_index=True)
    speedups, figure1 = speedup_table(cells), figure1_check(cells)

    tables = {"cells.csv": cells, "comparison.csv": comparison, "comparison_summary.csv": summary,
              "exponents.csv": exponent_check, "fits.csv": fits, "speedup.csv": speedups, "figure1.csv": figure1}
    for name, table in tables.items():
        if len(table):
            table.to_csv(out / name, index=False)
    figures, skipped = draw_figures(rows, cells, results.traces, speedups, out / "figures")
    notes = [f"Analysis took {time.perf_counter() - started:.1f} s; tables: "
             + ", ".join(f"`{n}`" for n, t in tables.items() if len(t)) + "."]
    over_budget = fits["status"].str.contains("time budget").sum() if len(fits) else 0
    if over_budget:
        notes.append(f"{over_budget} scaling fits were skipped to keep within the time budget (their groups are "
                     "listed in `fits.csv` with that status).")
    if len(fits) and "bin_width" in fits and (fits["bin_width"] > 0).any():
        notes.append("Some fits rounded event times on a log grid (`bin_width` in the fit table) to stay fast; "
                     "censoring times were kept exact.")
    return write_report(out / "report.md", source=path, rows=rows, cells=cells, meta=results.meta,
                        cell_status=results.cells, comparison=comparison, summary=summary,
                        exponent_check=exponent_check, fits=fits, speedups=speedups, figure1=figure1,
                        sgd_slope=sgd_slope_check(cells), figures=figures, skipped_figures=skipped, notes=notes)
