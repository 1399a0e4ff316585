"""analyze(results) -> report.md: load, summarise per cell, flag, predict, compare, fit, draw, write.

Data only moves forward (docs/architecture.md): this reads what the sweep wrote and never re-runs the engine.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from workflows.core.survival import duration_pairs

from . import matched, tracking_error
from .cells import cell_table, labelled, per_run_columns
from .compare import (
    compare_cells,
    compare_exponents,
    figure1_check,
    sgd_slope_check,
    summarize_cell_verdicts,
    with_predictions,
)
from .computed import Analysis
from .design import sweep_design, variant_settings
from .drawing import Drawing
from .figures import DEFAULT_DPI, DEFAULT_FORMATS, Saver, figure_jobs
from .load import load_results
from .pairwise import ASKED_REFERENCE, SWEEPS_REFERENCE, check_reference, choose_pairs, compare_pairs, setting_columns
from .palette import palette
from .report import markdown_table, write_report
from .sanity import artefact_cells, sanity_flags
from .scaling import fit_scaling
from .schema import split_columns
from .tuned import TABLES as TUNED_TABLES
from .tuned import Tuned

TABLES = ("cells.csv", "sanity.csv", "comparison.csv", "comparison_summary.csv", "comparisons.csv", "exponents.csv",
          "fits.csv", "figure1.csv", "tracking.csv", "tracking_scaling.csv", "matched_gap.csv", "matched_sosp.csv",
          *TUNED_TABLES)
VERDICT_COUNTS = ["problem", "optimizer", "theory_model", "cells", "holds", "close", "fails"]


def analyze(path_or_rows, out_dir=None, *, dpi: int = DEFAULT_DPI, formats=DEFAULT_FORMATS, reference=None) -> Path:
    """Analyse a results directory, a rows.parquet or a DataFrame of rows into `out_dir`: tables as
    CSV, figures (PNG at `dpi` and PDF) and report.md. Returns the report's path.

    out_dir: default <results>/analysis; for a DataFrame, ./analysis in the working directory.
    reference: the optimizer name(s) or variant label(s) to compare against (default: the sweep's
        `analysis.reference` in meta.json, else analysis.pairwise's choice); one that matches no
        variant is a ValueError, raised before anything is written.
    """
    started = time.perf_counter()
    results = load_results(path_or_rows, lean=True)
    out = Path(out_dir) if out_dir is not None else (
        results.root / "analysis" if results.root is not None else Path("analysis").resolve())
    rows, lean = results.rows, results.lean
    # A file is read a group of cells at a time where it can be (analysis.lean): the cell table is
    # then made as it is read, and `rows` holds only the durations' columns.
    cells = with_predictions(cell_table(rows) if lean is None else labelled(lean.cells, len(lean.split[0])))
    described = (split_columns(rows) if lean is None else lean.split)[0]
    if reference is not None:                  # asked for by name: an unknown one is refused before anything is written
        check_reference(reference, cells["optimizer"].unique())
    clear_outputs(out)
    design = sweep_design(cells, described, (results.meta or {}).get("conditions"))
    flags = sanity_flags(rows, cells)
    artefacts = artefact_cells(flags)
    comparison = compare_cells(cells, artefacts)
    pairs = Pairs.of(rows, cells, design, artefacts, reference, results.meta)
    asked = Questions.of(rows, cells)
    # A tuned sweep's comparison (tuning.parquet beside its rows): its verdict leads the report.
    tuned = Tuned.of(results.root, rows, cells, results.meta, reference, flags)
    jobs = (tuned.figure_jobs(Saver(dpi, formats))
            + figure_jobs(rows, cells, results.traces, pairs.comparisons, design, dpi=dpi, formats=formats,
                          settings=pairs.settings,
                          artefacts={name: artefact_cells(flags, name) for name in duration_pairs(rows)})
            + asked.figure_jobs(rows, cells, Saver(dpi, formats)))
    # The figures are drawn (in parallel where the platform forks) while the scaling laws are fitted;
    # the loss traces and the survival curves take longest: they start first.
    with Drawing(jobs, out / "figures", first=("figure1_loss_traces", "kaplan_meier_")) as drawing:
        exponent_check, fits = fit_scaling_laws(rows, cells, flags, artefacts)
        figures, skipped = drawing.result()
    analysis = Analysis(
        source="<DataFrame>" if results.root is None else str(path_or_rows), rows=rows, meta=results.meta,
        cell_status=results.cells, load_notes=results.notes, cells=cells, design=design, flags=flags,
        per_run=per_run_columns(cells, rows) if lean is None else lean.per_run, comparison=comparison, summary=verdict_summary(comparison),
        sgd_slope=sgd_slope_check(cells, artefacts), exponent_check=exponent_check, fits=fits,
        figure1=figure1_check(cells), comparisons=pairs.comparisons, pair_how=tuned.pair_how(pairs.how),
        questions=asked.sections(), figures=figures, skipped_figures=skipped, notes=[], lead=tuned.sections())
    written = write_tables(out, {**analysis_tables(analysis), **asked.tables(), **tuned.tables()})
    notes = [*pairs.notes, f"Analysis took {time.perf_counter() - started:.1f} s; tables: "
             + ", ".join(f"`{name}`" for name in written) + ".", *fit_notes(fits)]
    return write_report(out / "report.md", replace(analysis, notes=notes))


def clear_outputs(out: Path):
    """The output folder made, without the figures and tables of an earlier analysis: one not made
    this time must not linger."""
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for stale in [*(out / "figures").glob("*.png"), *(out / "figures").glob("*.pdf"), *(out / t for t in TABLES)]:
        stale.unlink(missing_ok=True)


def verdict_summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """The per-cell verdicts counted per (problem, variant, model); empty, with its columns, where no
    cell was compared."""
    return summarize_cell_verdicts(comparison) if len(comparison) else pd.DataFrame(columns=VERDICT_COUNTS)


@dataclass(frozen=True)
class Pairs:
    """The pairwise comparisons: which pairs of variants (`pairs`, chosen `how`, with `notes`), the
    settings two cells must share to be compared, and the comparisons made (comparisons.csv)."""
    pairs: list
    how: str
    notes: list
    settings: list
    comparisons: pd.DataFrame

    @classmethod
    def of(cls, rows, cells, design, artefacts, reference, meta) -> Pairs:
        """Against `reference` (asked for), else the sweep's (meta.json's `analysis.reference`), else
        analysis.pairwise's choice."""
        origin = ASKED_REFERENCE if reference is not None else SWEEPS_REFERENCE
        if reference is None and meta:
            reference = (meta.get("analysis") or {}).get("reference")
        pairs, how, notes = choose_pairs(cells["optimizer"].unique(), reference, origin)
        settings = setting_columns(cells, design.varied, design.variant)
        comparisons = compare_pairs(rows, cells, pairs, settings, artefacts, variant_settings(cells, design.per_variant))
        if pairs and comparisons.empty:
            notes = [*notes, f"No pair of variants shares a setting ({how}): nothing was compared."]
        return cls(pairs, how, notes, settings, comparisons)


def fit_scaling_laws(rows, cells, flags, artefacts) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the fitted exponents against the theory's, the fits' quality) over every duration of the
    rows, artefact cells left out; exponents of durations other than escape (no theory) are kept
    after the escape ones."""
    fitted = [fit_scaling(rows, cells, name, exclude=artefact_cells(flags, name)) for name in duration_pairs(rows)]
    exponents = pd.concat([e for e, _ in fitted], ignore_index=True)
    fits = pd.concat([q for _, q in fitted], ignore_index=True)
    escape_exponents = exponents[exponents["duration"] == "escape"] if len(exponents) else exponents
    exponent_check = compare_exponents(escape_exponents, cells, exclude=artefacts)
    if len(exponents):
        other_durations = exponents[exponents["duration"] != "escape"]
        exponent_check = pd.concat([exponent_check, other_durations], ignore_index=True)
    return exponent_check, fits


def analysis_tables(a: Analysis) -> dict[str, pd.DataFrame]:
    """{file name: table} of the analysis's CSV files."""
    return {"cells.csv": a.cells, "sanity.csv": a.flags, "comparison.csv": with_parameters(a.comparison, a.cells, a.design),
            "comparison_summary.csv": a.summary, "comparisons.csv": a.comparisons, "exponents.csv": a.exponent_check,
            "fits.csv": a.fits, "figure1.csv": a.figure1}


def write_tables(out: Path, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Each table with rows as <out>/<name>; returns the names written."""
    written = [name for name, table in tables.items() if len(table)]
    for name in written:
        tables[name].to_csv(out / name, index=False)
    return written


def fit_notes(fits: pd.DataFrame) -> list[str]:
    """The report's notes on scaling fits skipped for time or fitted on rounded event times."""
    notes = []
    over_budget = fits["status"].str.contains("time budget").sum() if len(fits) else 0
    if over_budget:
        notes.append(f"{over_budget} scaling fits were skipped to keep within the time budget (their groups are "
                     "listed in `fits.csv` with that status).")
    if len(fits) and "bin_width" in fits and (fits["bin_width"] > 0).any():
        notes.append("Some fits rounded event times on a log grid (`bin_width` in the fit table) to stay fast; "
                     "censoring times were kept exact.")
    return notes


def with_parameters(table: pd.DataFrame, cells: pd.DataFrame, design) -> pd.DataFrame:
    """A per-cell table (indexed by cell id) with the parameters that tell its cells apart after its
    `optimizer` column: the varied ones, the hyperparameters in the variant labels and those set per
    variant, under their full names (cells.csv has every column)."""
    if table.empty:
        return table
    columns = [c for c in dict.fromkeys(design.varied + design.variant + design.per_variant)
               if c in cells and c not in table and c != "optimizer.name"]
    at = list(table.columns).index("optimizer") + 1 if "optimizer" in table else 0
    parameters = cells.loc[table["cell_id"], columns].set_axis(table.index)
    return pd.concat([table.iloc[:, :at], parameters, table.iloc[:, at:]], axis=1)


@dataclass(frozen=True)
class Questions:
    """Questions some sweeps ask: the beta2 that tracks E[g^2|x] best at each step size (`best`, and its
    power law in the step size, `scaling`: analysis.tracking_error), and each optimizer at its own
    best step size for a given accuracy (`matched_tables`: {duration: table}, gap_epsilon, sosp_epsilon)."""
    best: pd.DataFrame
    scaling: pd.DataFrame
    matched_tables: dict

    @classmethod
    def of(cls, rows, cells) -> Questions:
        best = tracking_error.best_beta2(rows) if tracking_error.has_tracking(rows) else pd.DataFrame()
        scaling = tracking_error.beta2_scaling(best) if len(best) else pd.DataFrame()
        return cls(best, scaling, {name: matched.matched_accuracy(cells, name)
                                   for name in matched.matched_durations(cells)})

    def figure_jobs(self, rows, cells, save) -> list:
        """Their figures, as analysis.drawing's jobs; colours by optimizer name and by variant."""
        colors = palette(cells["optimizer.name"].astype(str).unique())
        colors.update(palette(cells["optimizer"].unique()))
        jobs = []
        if len(self.best):
            jobs.append(("tracking_error", lambda p: (tracking_error.tracking_figure(rows, self.best, self.scaling,
                                                                                    colors, p, save), "")))
        jobs += [(f"matched_{name}", lambda p, name=name, table=table: (matched.matched_figure(table, name, colors, p,
                                                                                                save), ""))
                 for name, table in self.matched_tables.items() if len(table)]
        return jobs

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"tracking.csv": self.best.drop(columns=["replicates"], errors="ignore"),
                "tracking_scaling.csv": self.scaling,
                **{f"matched_{name}.csv": table for name, table in self.matched_tables.items()}}

    def sections(self) -> list[tuple[str, list[str], str]]:
        """(heading, finding sentences, table section) for the questions the sweep asks, if any."""
        return question_sections(self.best, self.scaling, self.matched_tables)


def question_sections(best, scaling, matched_tables) -> list[tuple[str, list[str], str]]:
    """(heading, finding sentences, table section) for the questions the sweep asks, if any."""
    out = []
    if len(best):
        shown = best[["optimizer.name", "optimizer.lr", "best_1-beta2", "best_lo", "best_hi", "at_edge", "determined",
                       "min_error", "rule_1-beta2", "error_at_rule"]]
        out.append(("The preconditioner's tracking error", tracking_error.verdicts(scaling),
                    "Per optimizer and step size: the 1 - beta2 minimising the mean tracking error over the escape "
                    "phase [95% bootstrap interval over runs] (`determined`: the interval spans at most a factor "
                    f"{tracking_error.DETERMINED:g}; where the error is flat in beta2 the minimiser is noise and is left out "
                    "of the power law), the error there and at the paper's rule 1 - beta2 = lr^(2/3).\n\n" + markdown_table(shown, full_table="tracking.csv")
                    + "\nThe power law 1 - beta2* = c lr^p:\n\n" + markdown_table(scaling, full_table="tracking_scaling.csv")))
    for name, table in matched_tables.items():
        title = "f - f_min <= eps" if name == "gap" else "an (eps, sqrt(rho eps))-SOSP"
        out.append((f"At matched accuracy: time to {title}", matched.verdicts(table, name),
                    "Each optimizer at the step size with the smallest KM median for each eps (`lrs_tried`: among "
                    "how many; choosing the best of several favours the winner a little).\n\n"
                    + markdown_table(table, full_table=f"matched_{name}.csv")))
    return out
