"""report.md: what was run, what was measured, what the theory said, and which predictions hold."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .compare import CLOSE_EXPONENT, CLOSE_RATIO

MAX_TABLE_ROWS = 40
MAX_SENTENCES = 30           # past this many exponents, the findings summarise them
HOW_MEASURED = """\
Each run starts at the saddle and its *escape step* is the first step at which its distance from
the saddle reaches the escape radius r. A run that has not escaped by the budget (or that
diverged first) is **right-censored**: it says only "escape takes longer than this", so it stays in
the risk set of a Kaplan-Meier (KM) estimate and is never counted as escaping at the budget.
Per cell the headline is the KM **median** with its 95% interval (exponential Greenwood band, as
lifelines computes it). Where more than half of the runs are censored the median is undefined:
the **restricted mean** E[min(tau, budget)] is reported instead, labelled as such; it is a lower
bound on the mean. The closed forms of THEORY.md section 3 predict the mean, the median and the
restricted mean, so cells are compared like with like: fully escaped cells on the mean
(t interval), censored cells on the KM median, cells censored past half on the restricted mean.
Verdicts: **holds** = the prediction lies inside the measured 95% interval; **close** = within
{ratio:.0%} (exponents: within {exponent:g}) but outside the interval; **fails** = neither.
""".format(ratio=CLOSE_RATIO, exponent=CLOSE_EXPONENT)


def _format(value):
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else ("inf" if np.isinf(value) else f"{value:.4g}")
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS, full_table: str | None = None) -> str:
    if frame is None or frame.empty:
        return "_(none)_\n"
    shown = frame.head(max_rows)
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(_format(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    if len(frame) > max_rows:
        where = f"; all in `{full_table}`" if full_table else ""
        lines.append(f"\n_{max_rows} of {len(frame)} rows shown{where}._")
    return "\n".join(lines) + "\n"


def _interval(value, lo, hi):
    return f"{value:.4g} [{lo:.4g}, {hi:.4g}]"


def what_was_run(rows: pd.DataFrame, cells: pd.DataFrame, meta: dict | None, cell_status: pd.DataFrame | None,
                 source: Path) -> str:
    runs = cells["runs"]
    lines = [f"- Source: `{source}`: {len(rows):,} runs in {len(cells):,} cells "
             f"({runs.min()}-{runs.max()} runs per cell).",
             f"- Problems: {', '.join(sorted(cells['problem'].unique()))}; optimizers: "
             f"{', '.join(sorted(cells['optimizer'].unique()))}.",
             f"- Budgets: {', '.join(f'{b:,}' for b in sorted(cells['budget'].unique()))} steps; "
             f"{(1 - rows['escaped'].mean()):.1%} of all runs censored."]
    varying = []
    for column in cells.columns:
        if column.startswith(("problem.", "optimizer.")) and column not in ("problem.name", "optimizer.name") \
                and cells[column].dropna().astype(str).nunique() > 1:
            values = sorted(cells[column].dropna().unique(), key=str)
            shown = ", ".join(_format(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            varying.append(f"`{column}` ({shown})")
    lines.append("- Varied: " + ("; ".join(varying) if varying else "nothing besides the method") + ".")
    if meta:
        counts = meta.get("cells", {})
        lines.insert(0, f"- Sweep `{meta.get('sweep', '?')}`: {meta.get('description', '')}".rstrip(": "))
        counted = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append(f"- Run from {meta.get('started', '?')} to {meta.get('finished', '?')}, git commit "
                     f"`{meta.get('git_commit', '?')}`; cells: {counted}.")
        if meta.get("versions"):
            lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    text = "\n".join(lines) + "\n"
    if cell_status is not None and "status" in cell_status and (cell_status["status"] == "failed").any():
        failed = cell_status[cell_status["status"] == "failed"]
        text += f"\n**{len(failed)} cells failed** and have no rows:\n\n" + markdown_table(
            failed[[c for c in ("cell_id", "problem.name", "optimizer.name", "error") if c in failed]])
    if meta and meta.get("yaml"):
        text += ("\n<details><summary>Sweep definition</summary>\n\n```yaml\n" + meta["yaml"].strip()
                 + "\n```\n</details>\n")
    return text


def cell_verdicts(summary: pd.DataFrame, no_prediction: pd.Series) -> list[str]:
    sentences = []
    for row in summary.itertuples(index=False):
        if row.fails == 0:     # inside the interval in most cells, or only within 10% of it
            overall = "holds" if row.holds >= row.close else f"holds within {CLOSE_RATIO:.0%}"
        else:
            overall = "fails" if row.fails > row.cells / 2 else "holds only in part"
        sentences.append(
            f"**{row.optimizer} on {row.problem}** ({row.theory_model}): the prediction **{overall}**: inside "
            f"the measured 95% interval in {row.holds} of {row.cells} cells, within {CLOSE_RATIO:.0%} in "
            f"{row.close} more, off in {row.fails}; measured/predicted {row.ratio_min:.3g}-{row.ratio_max:.3g} "
            f"(median {row.ratio_median:.3g})"
            + (f"; sd measured/predicted median {row.sd_ratio_median:.3g}"
               if np.isfinite(row.sd_ratio_median) else "") + ".")
    for reason, count in no_prediction.items():
        sentences.append(f"No closed form for {count} cells: {reason}.")
    return sentences


def exponent_verdicts(check: pd.DataFrame) -> list[str]:
    if len(check) > MAX_SENTENCES:
        return exponent_summary(check)
    sentences = []
    for row in check.itertuples(index=False):
        what = row.group if row.duration == "escape" else f"{row.group} [{row.duration}]"
        reference = row.theory if np.isfinite(row.theory) else row.theory_local
        source = f"over {row.theory_cells} cells" if np.isfinite(row.theory) else f"local, {row.theory_regime}"
        if not np.isfinite(reference):
            sentences.append(f"{what}: exponent of {row.covariate} {_interval(row.exponent, row.lo, row.hi)}; "
                             "no theory to compare.")
            continue
        sentences.append(f"{what}: exponent of {row.covariate} {_interval(row.exponent, row.lo, row.hi)} "
                         f"against the theory's {reference:.3g} ({source}): **{row.verdict}**.")
    return sentences


def exponent_summary(check: pd.DataFrame) -> list[str]:
    """Too many groups for a sentence each: one per (problem, optimizer, duration, covariate)."""
    sentences = []
    for (problem, optimizer, duration, covariate), part in check.groupby(
            ["problem", "optimizer", "duration", "covariate"], sort=True):
        counts = part["verdict"].value_counts() if "verdict" in part else pd.Series(dtype=int)
        reference = part["theory"].fillna(part["theory_local"]) if "theory" in part else pd.Series(np.nan)
        theory = (f"theory {reference.min():.3g} to {reference.max():.3g}; " if reference.notna().any()
                  else "no theory; ")
        sentences.append(
            f"{optimizer} on {problem}{'' if duration == 'escape' else f' [{duration}]'}, exponent of {covariate} "
            f"over {len(part)} groups: fitted {part['exponent'].min():.3g} to {part['exponent'].max():.3g}; {theory}"
            + ", ".join(f"{v} in {counts.get(v, 0)}" for v in ("holds", "close", "fails")) + ".")
    return sentences


def sgd_slope_verdict(check: dict | None) -> list[str]:
    if not check:
        return []
    return [f"SGD (prediction 1): lr*curvature*mean escape step against ln(curvature r^2/(lr sigma1^2)) has slope "
            f"{_interval(check['slope'], check['lo'], check['hi'])} over {check['cells']} fully escaped cells "
            f"(theory: 1/2): **{check['verdict']}**."]


def speedup_verdicts(speedups: pd.DataFrame) -> list[str]:
    if speedups.empty:
        return []
    sentences = []
    for (problem, optimizer), part in speedups.groupby(["problem", "optimizer"]):
        exact = part[part["bound"] == "="]
        text = (f"Speed-up of {optimizer} over sgd on {problem}: {part['speedup'].min():.3g} to "
                f"{part['speedup'].max():.3g} measured (theory: {part['predicted_speedup'].min():.3g} to "
                f"{part['predicted_speedup'].max():.3g})")
        if len(exact) >= 3 and exact["predicted_speedup"].notna().all():
            corr = np.corrcoef(np.log(exact["speedup"]), np.log(exact["predicted_speedup"]))[0, 1]
            text += f"; log measured vs log predicted correlate at {corr:.2f} over {len(exact)} uncensored points"
        if part["anisotropy"].nunique() > 1:
            trend = part.groupby("anisotropy")["speedup"].apply(lambda v: np.exp(np.log(v).mean()))
            text += f"; it {'grows' if trend.iloc[-1] > trend.iloc[0] else 'does not grow'} with anisotropy " \
                    f"({trend.iloc[0]:.3g} at {trend.index[0]:g} to {trend.iloc[-1]:.3g} at {trend.index[-1]:g})"
        sentences.append(text + ".")
    return sentences


def figure1_verdicts(check: pd.DataFrame) -> list[str]:
    sentences = []
    for row in check.itertuples(index=False):
        if not np.isfinite(row.lr_ratio):
            sentences.append(f"Figure 1: {row.optimizer} (lr {row.lr:g}) escapes in {row.median_escape:.4g} "
                             "steps, outside the range of the SGD step sizes run: no matching SGD step size.")
            continue
        holds = 10 / 3 <= row.lr_ratio <= 30
        text = (f"Figure 1: SGD needs lr {row.sgd_lr_as_fast:.3g}, **{row.lr_ratio:.3g}x** {row.optimizer}'s "
                f"{row.lr:g}, to escape as fast ({row.median_escape:.4g} steps; paper: about 10x): "
                f"**{'holds' if holds else 'fails'}** (counted as holding within a factor 3 of 10).")
        if hasattr(row, "sgd_loss") and np.isfinite(row.sgd_loss):
            wider = row.sgd_loss > row.adaptive_loss
            text += (f" Afterwards SGD (lr {row.sgd_lr_nearest:g}) sits at {row.loss_measure} {row.sgd_loss:.4g} "
                     f"against {row.optimizer}'s {row.adaptive_loss:.4g}: SGD settles in a "
                     f"{'wider' if wider else 'no wider'} neighbourhood: **{'holds' if wider else 'fails'}**.")
        sentences.append(text)
    return sentences


def cells_preview(comparison: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    varying = [c for c in ("optimizer.lr", "problem.anisotropy", "sigma_escape", "optimizer.beta2", "problem.dim",
                           "curvature") if c in cells and cells[c].nunique() > 1]
    preview = cells[["problem", "optimizer", *varying, "runs", "escaped_fraction", "escape_kind", "escape_time",
                     "escape_time_lo", "escape_time_hi", "predicted_median"]]
    short = {c: c.split(".", 1)[-1] for c in varying}
    return preview.rename(columns=short).sort_values(["problem", "optimizer", *short.values()])


def write_report(path: Path, *, source, rows, cells, meta, cell_status, comparison, summary, exponent_check,
                 fits, speedups, figure1, sgd_slope, figures, skipped_figures, notes) -> Path:
    no_prediction = cells.loc[cells["predicted_mean"].isna(), "theory_note"].value_counts()
    fit_columns = [c for c in ("group", "duration", "covariates", "dropped", "cells", "runs", "events",
                               "fit_rows", "bin_width", "log_likelihood", "AIC", "sigma", "rms_factor",
                               "worst_factor", "status") if c in fits]
    exponent_columns = [c for c in ("group", "covariate", "exponent", "lo", "hi", "theory", "theory_cells",
                                    "theory_local", "theory_regime", "verdict") if c in exponent_check]
    worst = comparison.assign(off=np.abs(np.log(comparison["ratio"]))).sort_values("off", ascending=False)
    sections = [
        f"# Saddle escape analysis: {meta.get('sweep') if meta else Path(source).name}\n",
        "## What was run\n\n" + what_was_run(rows, cells, meta, cell_status, source),
        "## How escape is measured\n\n" + HOW_MEASURED,
        "## Findings\n\n" + "".join(
            f"### {title}\n\n" + "\n".join(f"- {s}" for s in sentences) + "\n\n"
            for title, sentences in (
                ("Escape times against the closed forms", cell_verdicts(summary, no_prediction)
                 + sgd_slope_verdict(sgd_slope)),
                ("Scaling exponents against the theory", exponent_verdicts(exponent_check)),
                ("Speed-up of adaptive methods over SGD", speedup_verdicts(speedups)),
                ("The paper's Figure 1", figure1_verdicts(figure1)))
            if sentences),
        "## Escape time per cell\n\n" + markdown_table(cells_preview(comparison, cells), full_table="cells.csv"),
        "## Theory against measurement, cell by cell\n\n"
        + markdown_table(summary, full_table="comparison_summary.csv")
        + "\nThe cells farthest from the prediction:\n\n" + markdown_table(
            worst.drop(columns=["off", "cell_id"]), max_rows=10, full_table="comparison.csv"),
        "## Scaling laws (censored log-normal AFT fits)\n\n"
        "log tau = c + sum_j a_j log x_j + sigma * noise, fitted with the censored runs in it; "
        "`theory` is the closed form's slope over the same cells, `theory_local` THEORY.md's table at the "
        "group's centre. For beta1/beta2 the covariate is 1 - beta.\n\n"
        + markdown_table(exponent_check[exponent_columns] if len(exponent_check) else exponent_check,
                         full_table="exponents.csv")
        + "\nFit quality (`rms_factor`/`worst_factor`: fitted against measured KM median per cell, as a factor; "
          "`bin_width` > 0: event times were rounded on a log grid of that relative width to fit in time):\n\n"
        + markdown_table(fits[fit_columns] if len(fits) else fits, full_table="fits.csv"),
    ]
    if len(speedups):
        sections.append("## Speed-up of adaptive methods over SGD\n\n"
                        + markdown_table(speedups, full_table="speedup.csv"))
    if len(figure1):
        sections.append("## The paper's Figure 1\n\n" + markdown_table(figure1, full_table="figure1.csv"))
    sections.append("## Figures\n\n" + "\n\n".join(
        f"![{caption}](figures/{Path(file).name})\n\n_{caption}_" for file, caption in figures) + "\n")
    extra = [f"Figure `{name}` not drawn: {why}." for name, why in skipped_figures] + notes
    if extra:
        sections.append("## Notes\n\n" + "\n".join(f"- {n}" for n in extra) + "\n")
    path.write_text("\n".join(sections))
    return path

