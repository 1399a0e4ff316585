"""What one analysis computed: the pipeline (analysis/pipeline.py) fills it, the report
(analysis/report.py) reads it. Plain data: tables, sentences and file names, nothing to recompute."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .design import Design


@dataclass(frozen=True)
class Analysis:
    """One analysis of a sweep's results, every table as its CSV file holds it.

    What was read: `source` (the results' path, or "<DataFrame>"), `rows` (one per run), `meta`
    (meta.json, or None), `cell_status` (cells.parquet: each cell's status and error, or None),
    `load_notes` (what reading them noted).
    What was measured: `cells` (one row per cell: KM estimates and the closed forms' predictions,
    cells.csv), `design` (what the sweep varied, analysis.design), `flags` (sanity.csv),
    `per_run` (the per-run columns summarised per cell, analysis.cells.per_run_columns).
    Against the theory: `comparison` (per cell, comparison.csv), `summary` (its verdicts per problem,
    variant and model, comparison_summary.csv), `sgd_slope` (SGD's slope check, or None),
    `exponent_check` (fitted scaling exponents against the theory's, exponents.csv), `fits` (the
    scaling fits' quality, fits.csv), `figure1` (the paper's Figure 1, figure1.csv).
    Between variants: `comparisons` (comparisons.csv) and `pair_how` (how the pairs were chosen).
    The sweep's own questions: `questions`, [(heading, finding sentences, table section)]; `lead`: those
    that come first, before everything else the report finds (a tuned sweep's comparison: analysis/tuned.py).
    Drawn: `figures` [(file, caption)], `skipped_figures` [(file name, why not drawn)]; `notes`:
    what the report's Notes list besides them.
    """
    source: str
    rows: pd.DataFrame
    meta: dict | None
    cell_status: pd.DataFrame | None
    load_notes: tuple
    cells: pd.DataFrame
    design: Design
    flags: pd.DataFrame
    per_run: list
    comparison: pd.DataFrame
    summary: pd.DataFrame
    sgd_slope: dict | None
    exponent_check: pd.DataFrame
    fits: pd.DataFrame
    figure1: pd.DataFrame
    comparisons: pd.DataFrame
    pair_how: str
    questions: list
    figures: list
    skipped_figures: list
    notes: list
    lead: list = ()
