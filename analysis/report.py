"""report.md: what was run, what to distrust, what was measured, what the theory said, which
predictions hold, and which method is faster than which.

Every verdict sentence says what was tested, on which measure, at which settings and over how
many cells; cells that cannot test anything (all censored, artefacts) are counted apart and never
as agreement. Values are listed in their natural (numeric) order.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import (
    ARTEFACT,
    CLOSE_EXPONENT,
    CLOSE_FRACTION,
    CLOSE_RATIO,
    NO_VERDICT,
    UNINFORMATIVE,
)
from .computed import Analysis
from .design import format_value, is_numeric, short_name, sort_values, variant_settings
from .pairwise import ALPHA, BOOTSTRAP
from .sanity import FEW_STEPS
from .scaling import MAX_EXPONENT_WIDTH

MAX_TABLE_ROWS = 40
MAX_CELL_ROWS = 60           # the per-cell table: settings combinations, each with every variant
MAX_VARIANT_COLUMNS = 6      # more variants than this: one row per cell instead of a column each
MAX_SENTENCES = 30           # past this many exponents, the findings summarise them
THEORY_DOC = Path(__file__).resolve().parent.parent / "docs" / "theory.md"
# The folder names Ray gives a job's uploaded working directory (`ray job submit --working-dir`),
# under the cluster's temporary directory; Ray deletes it when no job uses it any more.
RAY_PACKAGE_PREFIX = "_ray_pkg_"


def theory_link(report_dir: Path) -> str:
    """A link from the report to docs/theory.md: relative, to this repository's copy; where that copy
    lies in a Ray job's uploaded working directory (which Ray deletes), theory.md is copied beside
    the report (it links only within itself) and linked there."""
    if not THEORY_DOC.is_file():
        return "docs/theory.md"
    if any(part.startswith(RAY_PACKAGE_PREFIX) for part in THEORY_DOC.parts):
        shutil.copyfile(THEORY_DOC, Path(report_dir) / THEORY_DOC.name)
        return THEORY_DOC.name
    return os.path.relpath(THEORY_DOC, Path(report_dir).resolve())


def how_measured(link: str) -> str:
    return f"""\
Each run starts at the saddle (or at `start_offset` from it) and its *escape step* is the first
step at which its distance from the saddle reaches the escape radius r. A run that has not escaped
by the budget (or that diverged first) is **right-censored**: it says only "escape takes longer
than this", so it stays in the risk set of a Kaplan-Meier (KM) estimate and is never counted as
escaping at the budget. Per cell the headline is the KM **median** with its 95% interval (the
log-log band inverted at one half, as lifelines computes it). Where more than half of the runs
are censored the median is undefined: the **restricted mean** E[min(tau, budget)] is shown
instead, labelled as such; it is a lower bound on the mean.

The closed forms ([docs/theory.md]({link})) predict the mean, the median, the restricted mean and
the fraction escaped by the budget, in whole steps. Cells are compared like with like: fully
escaped cells on the mean (t interval), censored cells on the KM median, cells censored past half
on the fraction that escaped (Wilson interval). Verdicts per cell: **holds** = the prediction lies
inside the measured 95% interval; **close** = outside it but within {CLOSE_RATIO:.0%} (a fraction:
within {CLOSE_FRACTION:g}); **fails** = neither; **{UNINFORMATIVE}** = no run escaped and the theory
expected most not to either (both say only "longer than the budget": no evidence either way);
**{ARTEFACT}** = the cell's escape time is an artefact of its set-up (Sanity flags).

Scaling exponents: **holds** = the theory's exponent lies inside the fitted 95% interval; **close**
= outside it but within {CLOSE_EXPONENT:.0%} of the theory's exponent (relative, as for escape times:
0.22 against 0.156 is 41% off and fails); **fails** = neither. **{NO_VERDICT}** where the fit cannot
carry one: fewer cells with an escape than the fit's location parameters (intercept and exponents;
a cell where no run escaped only bounds the law from one side), a warning from lifelines during
the fit (quoted with the fit), or a 95% interval wider than {MAX_EXPONENT_WIDTH:g} (it cannot tell
exponents half a unit apart).
"""


def _format(value):
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else ("inf" if np.isinf(value) else f"{value:.4g}")
    return str(value).replace("|", "/").replace("\n", " ")


# Below this a p-value (or q-value) says nothing more: the log-rank's chi-squared tail is an
# approximation long before, and 1 - p is already 1 in double precision (1.167e-300 is not a finding).
P_FLOOR = 1e-16


def is_p_value(column) -> bool:
    name = str(column)
    return name in ("p", "q") or name.endswith(("_p", "_q", "p_value", "q_value"))


def format_p(value) -> str:
    """'< 1e-16' below P_FLOOR, else 2 significant digits: 0.00017, 0.43, 1."""
    if not isinstance(value, (float, np.floating, int, np.integer)) or not np.isfinite(value):
        return _format(value)
    return f"< {P_FLOOR:g}" if value < P_FLOOR else f"{value:.2g}"


def markdown_table(frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS, full_table: str | None = None) -> str:
    """p- and q-value columns (`logrank_q`, `..._p`) print as format_p does; everything else as `_format`."""
    if frame is None or frame.empty:
        return "_(none)_\n"
    shown = frame.head(max_rows)
    formats = [format_p if is_p_value(c) else _format for c in shown.columns]
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(f(v) for f, v in zip(formats, row)) + " |" for row in shown.itertuples(index=False)]
    if len(frame) > max_rows:
        where = f"; all in `{full_table}`" if full_table else ""
        lines.append(f"\n_{max_rows} of {len(frame)} rows shown{where}._")
    return "\n".join(lines) + "\n"


def _interval(value, lo, hi):
    return f"{value:.4g} [{lo:.4g}, {hi:.4g}]"


def _values(series: pd.Series, limit: int = 10) -> str:
    values = sort_values(series)
    shown = ", ".join(format_value(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def sort_cells(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Sorted by `columns`, each numerically where it is numeric (never '1, 10, 100, 3')."""
    keys = [c for c in columns if c in frame]
    if not keys:
        return frame
    key = {c: (pd.to_numeric(frame[c], errors="coerce") if is_numeric(frame[c]) else frame[c].astype(str))
           for c in keys}
    order = pd.DataFrame(key, index=frame.index).sort_values(keys, kind="stable", na_position="last").index
    return frame.loc[order]


def _ranges(part: pd.DataFrame, varied: list[str]) -> str:
    """'lr 0.001-0.01 (3 values), anisotropy 1-1000 (7 values)': the settings a group spans."""
    out = []
    for column in varied:
        if column not in part or column in ("problem.name",) or part[column].notna().sum() == 0:
            continue
        values = sort_values(part[column])
        if len(values) == 1:
            out.append(f"{short_name(column)} {format_value(values[0])}")
        elif is_numeric(part[column]):
            out.append(f"{short_name(column)} {format_value(values[0])}-{format_value(values[-1])} "
                       f"({len(values)} values)")
        else:
            out.append(f"{short_name(column)} " + "/".join(format_value(v) for v in values))
    return ", ".join(out)


def what_was_run(rows, cells, meta, cell_status, source, design, notes) -> str:
    runs = cells["runs"]
    per_cell = f"{runs.min()} runs per cell" if runs.min() == runs.max() else f"{runs.min()}-{runs.max()} runs per cell"
    lines = [f"- Source: `{source}`: {len(rows):,} runs in {len(cells):,} cells ({per_cell}).",
             f"- Problems: {', '.join(map(str, sort_values(cells['problem'])))}; optimizer variants: "
             f"{', '.join(map(str, sort_values(cells['optimizer'])))}."]
    if "budget" in cells:
        lines.append(f"- Budgets: {', '.join(f'{b:,}' for b in sort_values(cells['budget']))} steps; "
                     f"{(1 - rows['escaped'].mean()):.1%} of all runs censored.")
    varied = [f"`{c}` ({_values(cells[c])}" + (f"; {design.determined[c]}" if c in design.determined else "") + ")"
              for c in design.varied]
    lines.append("- Varied: " + ("; ".join(varied) if varied else "nothing besides the method") + ".")
    fixed = {c: v for c, v in design.fixed.items() if c != "cell_id" and c not in design.not_applicable}
    # A hyperparameter only some variants take (adam's beta1) is theirs, not the sweep's.
    own_only = [c for c in fixed if c.startswith("optimizer.") and c in cells and cells[c].isna().any()]
    if design.per_variant or own_only:
        own = variant_settings(cells, sorted(design.per_variant + own_only, key=short_name))
        lines.append("- Set per optimizer variant (each variant has one value; variants are compared at their own): "
                     + "; ".join(f"{label}: {text}" for label, text in sorted(own.items()) if text) + ".")
    shared = [c for c in fixed if c not in own_only]
    if shared:
        # Grouped by where each applies: every cell first, then a problem's own parameters under its name.
        groups: dict[str, list[str]] = {}
        for c in shared:
            groups.setdefault(_only_on(cells, c), []).append(f"`{short_name(c)}` = {format_value(fixed[c])}")
        lines.append("- Fixed: " + "; ".join((f"{where}: " if where else "") + ", ".join(items)
                                            for where, items in sorted(groups.items())) + ".")
    if design.not_applicable:
        reasons: dict[str, list[str]] = {}
        for column, why in design.not_applicable.items():
            reasons.setdefault(why, []).append(f"`{short_name(column)}`")
        groups = [f"{', '.join(columns)} ({'switched off' if why == 'off' else why})" for why, columns in reasons.items()]
        lines.append("- Not listed as fixed, having no effect on these cells (`cells.csv` has their values): "
                     + "; ".join(groups) + ".")
    if meta:
        counts = meta.get("cells", {})
        lines.insert(0, f"- Sweep `{meta.get('sweep', '?')}`: {meta.get('description', '')}".rstrip(": "))
        counted = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append(f"- Run from {meta.get('started', '?')} to {meta.get('finished', '?')}, git commit "
                     f"`{meta.get('git_commit', '?')}`; cells: {counted}.")
        if meta.get("versions"):
            lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    lines += [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    if cell_status is not None and "status" in cell_status and (cell_status["status"] == "failed").any():
        failed = cell_status[cell_status["status"] == "failed"]
        text += f"\n**{len(failed)} cells failed** and have no rows:\n\n" + markdown_table(
            failed[[c for c in ("cell_id", "problem.name", "optimizer.name", "error") if c in failed]])
    if meta and meta.get("yaml"):
        text += ("\n<details><summary>Sweep definition</summary>\n\n```yaml\n" + meta["yaml"].strip()
                 + "\n```\n</details>\n")
    return text


def _only_on(cells: pd.DataFrame, column: str) -> str:
    """'on quadratic_saddle only' for a problem parameter another problem of the sweep does not take, else ''."""
    if column not in cells or not cells[column].isna().any() or "problem" not in cells:
        return ""
    return f"on {', '.join(map(str, sort_values(cells.loc[cells[column].notna(), 'problem'])))} only"


def _settings(varied: list[str]) -> list[str]:
    """The flag table's setting columns, each once: 'problem' and 'optimizer' are labels of their
    own, and a sweep that varies the problem or optimizer lists them among the varied too."""
    return list(dict.fromkeys(["problem", "optimizer"] + [short_name(c) for c in varied]))


def _cell_settings(cells: pd.DataFrame, varied: list[str]) -> pd.DataFrame:
    columns = list(dict.fromkeys(["problem", "optimizer"] + [c for c in varied if c in cells]))
    frame = cells[columns].rename(columns=short_name)
    return frame.loc[:, ~frame.columns.duplicated()]


def sanity_section(flags: pd.DataFrame, cells: pd.DataFrame, varied: list[str]) -> str:
    if flags.empty:
        return ("No cell was flagged: no run starts at or beyond r, no cell has half its runs escaping at step 1, "
                f"no median escape is within {FEW_STEPS} steps, no run diverged"
                + (", no SOSP test passes at step 0" if "sosp_n_events" in cells else "") + ".\n")
    lines = []
    for (flag, severity, affects), part in flags.groupby(["flag", "severity", "affects"], sort=False):
        variants = ", ".join(sort_values(cells.loc[part["cell_id"], "optimizer"]))
        action = ("kept (a caution)" if severity != ARTEFACT else
                  "left out of the theory verdicts and the scaling fits, marked in the comparisons"
                  if affects == "escape" else f"left out of the {affects} fits (their escape times are kept)")
        lines.append(f"- **{flag}** ({severity}): {_count(len(part), 'cell')} ({variants}); {action}. For example: "
                     f"{part['why'].iloc[0]}.")
    table = flags.join(_cell_settings(cells, varied), on="cell_id")
    table = sort_cells(table, ["severity", "flag"] + _settings(varied))
    columns = [c for c in _settings(varied) if c in table] + ["flag", "severity", "why"]
    return "\n".join(lines) + "\n\n" + markdown_table(table[columns], full_table="sanity.csv")


def cell_verdicts(summary: pd.DataFrame, comparison: pd.DataFrame, cells: pd.DataFrame, varied,
                  no_prediction: pd.Series) -> list[str]:
    sentences = []
    for row in summary.itertuples(index=False):
        part = comparison[(comparison["problem"] == row.problem) & (comparison["optimizer"] == row.optimizer)
                          & (comparison["theory_model"] == row.theory_model)]
        holds, close, fails = row.holds, row.close, row.fails
        uninformative = int((part["verdict"] == UNINFORMATIVE).sum())
        artefact = int((part["verdict"] == ARTEFACT).sum())
        informative = holds + close + fails
        settings = _ranges(cells.loc[part["cell_id"]], [c for c in varied if c != "problem.name"])
        measures = part.loc[part["verdict"].isin(["holds", "close", "fails"]), "measure"].value_counts()
        measured_on = ", ".join(f"the {'escaped fraction' if m == 'restricted mean' else m} in {n}"
                                for m, n in measures.items())
        if informative == 0:
            overall = "**no evidence** either way"
        elif fails == 0 and close == 0:
            overall = "the prediction **holds**"
        elif fails == 0 and holds >= close:
            overall = (f"the prediction **holds** in {holds} of {informative} cells and is within {CLOSE_RATIO:.0%} "
                       f"in the other {close}")
        elif fails == 0:
            overall = (f"the prediction is **within {CLOSE_RATIO:.0%}, but outside the measured 95% interval** in "
                       f"{close} of {informative} cells (an offset larger than the sampling error)")
        elif fails > informative / 2:
            overall = "the prediction **fails**"
        else:
            overall = "the prediction **holds only in part**"
        # Each assumption once, in order, whichever cells state it.
        items = part["theory_assumptions"].dropna().str.split("; ").explode() if "theory_assumptions" in part \
            else pd.Series(dtype=object)
        assumptions = "; ".join(items[items.astype(bool)].drop_duplicates())
        model = row.theory_model + (f"; assumes {assumptions}" if assumptions else "")
        text = (f"**{row.optimizer} on {row.problem}** ({model}), {_count(row.cells, 'cell')}"
                + (f" at {settings}" if settings else "") + f": {overall}")
        if informative:
            text += (f". Compared on {measured_on}: inside the measured 95% interval in {holds}, within "
                     f"{CLOSE_RATIO:.0%} in {close} more, off in {fails}; measured/predicted "
                     f"{row.ratio_min:.3g}-{row.ratio_max:.3g} (median {row.ratio_median:.3g})")
            if np.isfinite(row.sd_ratio_median):
                text += f"; sd measured/predicted median {row.sd_ratio_median:.3g}"
            elif "predicted_sd" in part and (part.loc[part["verdict"].isin(["holds", "close", "fails"]),
                                                      "predicted_sd"] < 1).all():
                text += "; no sd ratio (the model's spread is below one step here: its quantiles escape at the same step)"
        if uninformative:
            text += (f". {_count(uninformative, 'cell')} {'is' if uninformative == 1 else 'are'} {UNINFORMATIVE}: no "
                     "run escaped within the budget and the theory expected most not to")
        if artefact:
            text += f". {_count(artefact, 'artefact cell')} left out (Sanity flags)"
        sentences.append(text + ".")
    for reason, count in no_prediction.items():
        sentences.append(f"No prediction for {_count(count, 'cell')}: {reason}.")
    return sentences


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def exponent_verdicts(check: pd.DataFrame) -> list[str]:
    if len(check) > MAX_SENTENCES:
        return exponent_summary(check)
    sentences = []
    for row in check.itertuples(index=False):
        what = row.group if row.duration == "escape" else f"{row.group} [{row.duration}]"
        reference = row.theory if np.isfinite(row.theory) else row.theory_local
        source = f"the closed form's slope over {row.theory_cells} cells" if np.isfinite(row.theory) else \
            f"the local exponent, {row.theory_regime}"
        why_not = getattr(row, "no_verdict", "")
        why_not = why_not if isinstance(why_not, str) else ""
        if not np.isfinite(reference):
            sentences.append(f"{what}: exponent of {row.covariate} {_interval(row.exponent, row.lo, row.hi)}; "
                             "no theory to compare" + (f" (and {why_not})" if why_not else "") + ".")
            continue
        if row.verdict.startswith("not tested"):
            sentences.append(f"{what}: exponent of {row.covariate} {_interval(row.exponent, row.lo, row.hi)}; the "
                             f"quadratic saddle's local exponent would be {reference:.3g} ({row.theory_regime}), but this "
                             "problem has no closed form: **not tested**" + (f" (and {why_not})" if why_not else "")
                             + ".")
            continue
        if row.verdict == NO_VERDICT:
            sentences.append(f"{what}: exponent of {row.covariate} {_interval(row.exponent, row.lo, row.hi)}: "
                             f"**{NO_VERDICT}**, since {why_not} ({source} would be {reference:.3g}).")
            continue
        sentences.append(f"{what}: exponent of {row.covariate} {_interval(row.exponent, row.lo, row.hi)} "
                         f"against {source}, {reference:.3g}: **{row.verdict}**.")
    return sentences


def fit_failures(fits: pd.DataFrame) -> list[str]:
    """A sentence per scaling fit that failed or had nothing to fit, with what lifelines said."""
    if fits.empty or "status" not in fits:
        return []
    sentences = []
    for row in fits[fits["status"].str.startswith(("failed", "skipped: no run"))].itertuples(index=False):
        what = row.group if row.duration == "escape" else f"{row.group} [{row.duration}]"
        said = getattr(row, "warnings", "")
        how = (f"the fit failed ({row.status.removeprefix('failed: ')})" if row.status.startswith("failed")
               else f"the fit was {row.status}")
        sentences.append(f"{what}: no exponents, {how}"
                         + (f"; lifelines warned: {said}" if isinstance(said, str) and said else "") + ".")
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
            + ", ".join(f"{v} in {counts.get(v, 0)}" for v in ("holds", "close", "fails", NO_VERDICT)) + ".")
    return sentences


def sgd_slope_verdict(check: dict | None) -> list[str]:
    if not check:
        return []
    return [f"SGD (prediction 1): lr*curvature*(mean escape step - 1/2) against ln(curvature r^2/(lr sigma1^2)) has "
            f"slope {_interval(check['slope'], check['lo'], check['hi'])} over {check['cells']} SGD cells with a closed "
            f"form, every run escaped and no sanity flag (lr*curvature {check['lr_curvature'][0]:.3g} to "
            f"{check['lr_curvature'][1]:.3g}; the logarithm from {check['log_range'][0]:.3g} to "
            f"{check['log_range'][1]:.3g}); theory 1/2: **{check['verdict']}**."]


def pairwise_verdicts(comparisons: pd.DataFrame, how: str, varied) -> list[str]:
    if comparisons.empty:
        return []
    sentences = [f"Pairs compared: {how}. Each is the ratio of KM median escape steps (reference/variant: above 1 "
                 f"the variant is faster) with a 95% bootstrap interval over runs ({BOOTSTRAP} resamples per cell), "
                 f"and a log-rank test with Benjamini-Hochberg q-values over all {len(comparisons)} comparisons "
                 f"(significant: q < {ALPHA:g})."]
    for (problem, variant, reference), part in comparisons.groupby(["problem", "variant", "reference"], sort=True):
        ok = part[part["flag"] == ""]
        counts = ok["finding"].value_counts()
        described = ", ".join(f"{k} in {v}" for k, v in counts.items())
        exact = ok[ok["bound"] == "="]
        text = f"**{variant} vs {reference}** on {problem}"
        own = [f"{who} at {where}" for who, where in ((variant, _own_text(part["variant_settings"].iloc[0])),
                                                      (reference, _own_text(part["reference_settings"].iloc[0])))
               if where]
        text += f" ({'; '.join(own)})" if own else ""
        text += f", {_count(len(part), 'matched setting')}"
        settings = _ranges(part, [c for c in varied if c in part and c != "problem.name"])
        text += f" ({settings})" if settings else ""
        text += f": {described}" if described else ""
        if len(exact):
            best = exact.loc[exact["speedup"].idxmax()]
            worst = exact.loc[exact["speedup"].idxmin()]
            at = lambda r: ", ".join(f"{short_name(c)} {format_value(r[c])}" for c in varied
                                     if c in r and pd.notna(r[c]) and c != "problem.name")
            text += (f"; speed-up {worst['speedup']:.3g} [{worst['speedup_lo']:.3g}, {worst['speedup_hi']:.3g}]"
                     + (f" (at {at(worst)})" if at(worst) else "")
                     + (f" to {best['speedup']:.3g} [{best['speedup_lo']:.3g}, {best['speedup_hi']:.3g}]"
                        + (f" (at {at(best)})" if at(best) else "") if len(exact) > 1 else ""))
        if len(part) - len(ok):
            text += f"; {len(part) - len(ok)} comparisons involve an artefact cell (Sanity flags)"
        sentences.append(text + ".")
    return sentences


def _own_text(settings: str) -> str:
    """A variant's own numeric settings for a sentence ('lr=0.01'): not eps, not flags (they are in the table)."""
    return ", ".join(p for p in settings.split(", ") if p and not p.startswith("eps=")
                     and not p.endswith(("=true", "=false")))


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


def _time_text(cell: pd.Series, predicted: bool, flagged: str) -> str:
    """A cell's escape time as the per-cell table shows it: '4383 [4317, 4468]', 'RM 1.52e+04 (31%
    escaped)', with ', theory 4197' and ' (flagged)' where they apply."""
    time = cell["escape_time"]
    if not np.isfinite(time):
        return "not recorded"
    if cell["escape_kind"] == "median":
        text = f"{_steps(time)} [{_steps(cell['escape_time_lo'])}, {_steps(cell['escape_time_hi'])}]"
    else:
        text = f"RM {_steps(time)}"
    if cell["escaped_fraction"] < 1:
        text += f" ({cell['escaped_fraction']:.0%} escaped)"
    if predicted and np.isfinite(cell.get("predicted_median", np.nan)):
        text += f", theory {_steps(cell['predicted_median'])}"
    return text + (" (flagged)" if flagged else "")


def _steps(value: float) -> str:
    """A step count as a whole number (11090, not 1.109e+04); anything else to 4 digits."""
    if np.isfinite(value) and value == round(value) and abs(value) < 1e15:
        return str(int(value))
    return "inf" if np.isinf(value) else f"{value:.4g}"


def cells_preview(cells: pd.DataFrame, varied: list[str], flags: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(the per-cell table, a sentence saying how it is laid out). One row per combination of the
    varied settings (sorted by them, numerically) and one column per optimizer variant, so that
    every variant is seen at every setting; where the variants are too many for columns, or a
    setting and a variant do not pick one cell, one row per cell, sorted by the settings first."""
    settings = [c for c in varied if c in cells and c != "problem.name"]
    keys = (["problem"] if cells["problem"].nunique() > 1 else []) + settings
    predicted = "predicted_median" in cells and cells["predicted_median"].notna().any()
    flagged = (flags.groupby("cell_id")["flag"].agg("; ".join).reindex(cells.index).fillna("")
               if len(flags) else pd.Series("", index=cells.index))
    text = pd.Series([_time_text(cell, predicted, flagged[i]) for i, cell in cells.iterrows()], index=cells.index)
    variants = sort_values(cells["optimizer"])
    frame = cells[keys].astype(object).copy()
    frame["optimizer"], frame["time"] = cells["optimizer"], text
    unique = not frame.duplicated(keys + ["optimizer"]).any()
    if keys and unique and len(variants) <= MAX_VARIANT_COLUMNS:
        lines = []
        for _, part in frame.groupby([frame[k].astype(str) for k in keys], sort=False, dropna=False):
            lines.append({**{k: part[k].iloc[0] for k in keys}, **dict(zip(part["optimizer"], part["time"]))})
        table = pd.DataFrame(lines, columns=keys + variants).fillna({v: "not run" for v in variants})
        table = sort_cells(table, keys).rename(columns={c: short_name(c) for c in keys})
        layout = (f"One row per {', '.join(short_name(c) for c in keys)} (sorted by them) and one column per "
                  f"optimizer variant")
        return table, layout
    frame = sort_cells(frame, keys + ["optimizer"])
    table = frame[["optimizer", *keys, "time"]].rename(columns={c: short_name(c) for c in keys})
    if "problem" not in keys:
        table.insert(0, "problem", cells.loc[frame.index, "problem"])
    layout = "One row per cell, sorted by " + ", ".join(short_name(c) for c in keys + ["optimizer"])
    return table, layout


def per_run_preview(cells: pd.DataFrame, varied: list[str], per_run: list) -> pd.DataFrame:
    """`median [q10, q90]` over each cell's runs, for every per-run column with values; columns equal
    on every run (a tuple in `per_run`) share one column, named 'a = b'. Sorted by the settings."""
    groups = [g if isinstance(g, tuple) else (g,) for g in per_run]
    shown = [g for g in groups if cells[f"median_{g[0]}"].notna().any()]
    if not shown:
        return pd.DataFrame()
    columns = [c for c in varied if c in cells and c != "problem.name"]
    table = cells[["problem", "optimizer", *columns]].copy()
    for group in shown:
        c = group[0]
        table[f"{' = '.join(group)} (median [q10, q90] over runs)"] = [
            "" if not np.isfinite(m) else f"{m:.4g} [{lo:.4g}, {hi:.4g}]"
            for m, lo, hi in zip(cells[f"median_{c}"], cells[f"q10_{c}"], cells[f"q90_{c}"])]
    table = sort_cells(table, ["problem", *columns, "optimizer"])
    return table.rename(columns={c: short_name(c) for c in columns})


def _speedup_text(row) -> str:
    """'2.69 [2.63, 2.74] faster (q < 1e-16; theory 2.81)', '>= 12.4 faster ... (q 0.0021)'."""
    if row["bound"] == "=" and np.isfinite(row["speedup_lo"]):
        text = f"{row['speedup']:.3g} [{row['speedup_lo']:.3g}, {row['speedup_hi']:.3g}]"
    elif row["bound"] == "?":
        text = f"{row['speedup']:.3g} (both censored past half: no bound)"
    else:
        text = ("" if row["bound"] == "=" else f"{row['bound']} ") + f"{row['speedup']:.3g}"
    q = format_p(row["logrank_q"])
    text += f" {row['finding']} (q {q if q.startswith('<') else '= ' + q}"
    predicted = row.get("predicted_speedup", np.nan)
    return text + (f"; theory {predicted:.3g})" if np.isfinite(predicted) else ")")


def comparisons_preview(comparisons: pd.DataFrame, varied: list[str]) -> tuple[pd.DataFrame, str]:
    """(the pairwise table, a sentence on its layout): one row per combination of the settings the
    pairs were matched on (sorted by them) and one column per pair, every pair seen at every
    setting; where the pairs are too many for columns, one row per comparison, sorted by the
    settings first."""
    if comparisons.empty:
        return comparisons, ""
    settings = [c for c in varied if c in comparisons and c != "problem.name" and comparisons[c].notna().any()]
    keys = (["problem"] if comparisons["problem"].nunique() > 1 else []) + settings
    frame = comparisons[keys].astype(object).copy()
    frame["pair"] = comparisons["variant"].astype(str) + " vs " + comparisons["reference"].astype(str)
    frame["speed-up"] = [_speedup_text(row) for _, row in comparisons.iterrows()]
    pairs = list(dict.fromkeys(sort_cells(frame, ["pair"])["pair"]))
    if keys and len(pairs) <= MAX_VARIANT_COLUMNS and not frame.duplicated(keys + ["pair"]).any():
        lines = []
        for _, part in frame.groupby([frame[k].astype(str) for k in keys], sort=False, dropna=False):
            lines.append({**{k: part[k].iloc[0] for k in keys}, **dict(zip(part["pair"], part["speed-up"]))})
        table = pd.DataFrame(lines, columns=keys + pairs).fillna({p: "not compared" for p in pairs})
        table = sort_cells(table, keys).rename(columns={c: short_name(c) for c in keys})
        return table, f"One row per {', '.join(short_name(c) for c in keys)} (sorted by them), one column per pair"
    frame = sort_cells(frame, keys + ["pair"])
    table = frame[["pair", *keys, "speed-up"]].rename(columns={c: short_name(c) for c in keys})
    if "problem" not in keys:
        table.insert(0, "problem", comparisons.loc[frame.index, "problem"])
    return table, "One row per comparison, sorted by " + ", ".join(short_name(c) for c in keys + ["pair"])


def write_report(path: Path, analysis: Analysis) -> Path:
    """report.md of `analysis` (analysis/computed.py) at `path`, its sections in the order a reader
    needs them; returns the path."""
    a = analysis
    link = theory_link(path.parent)
    sections = [
        f"# Saddle escape analysis: {_title(a)}\n",
        "## What was run\n\n" + what_was_run(a.rows, a.cells, a.meta, a.cell_status, a.source, a.design, a.load_notes),
        "## Sanity flags\n\nCells whose escape time measures the set-up rather than the saddle, and cautions "
        "(analysis/sanity.py says how each is detected).\n\n" + sanity_section(a.flags, a.cells, a.design.varied),
        "## How escape is measured\n\n" + how_measured(link),
        "## Findings\n\n" + "".join(f"### {heading}\n\n" + "\n".join(f"- {s}" for s in sentences) + "\n\n"
                                    for heading, sentences in findings(a) if sentences),
        *(f"## {heading}\n\n{table}" for heading, _, table in (*a.lead, *a.questions)),
        pairwise_section(a),
        cells_section(a),
        per_run_section(a),
        theory_section(a),
        scaling_section(a),
        "## The paper's Figure 1\n\n" + markdown_table(a.figure1, full_table="figure1.csv") if len(a.figure1) else None,
        "## Figures\n\nEach figure is also saved as PDF next to its PNG.\n\n" + "\n\n".join(
            f"![{Path(file).stem}](figures/{Path(file).name})\n\n_{caption}_" for file, caption in a.figures) + "\n",
        notes_section(a),
    ]
    path.write_text("\n".join(section for section in sections if section is not None))
    return path


def _title(a: Analysis) -> str:
    if a.meta:
        return a.meta.get("sweep")
    return Path(str(a.source)).name if not str(a.source).startswith("<") else "rows"


def findings(a: Analysis) -> list[tuple[str, list[str]]]:
    """(heading, sentences) of the Findings, in order; a heading without sentences is left out."""
    no_prediction = a.cells.loc[a.cells["predicted_mean"].isna(), "theory_note"].value_counts() \
        if "predicted_mean" in a.cells else pd.Series(dtype=int)
    independent = a.design.independent
    return [*((heading, found) for heading, found, _ in a.lead),
            ("Escape times against the predictions",
             cell_verdicts(a.summary, a.comparison, a.cells, independent, no_prediction) + sgd_slope_verdict(a.sgd_slope)),
            ("Which method is faster", pairwise_verdicts(a.comparisons, a.pair_how, independent)),
            ("Scaling exponents against the theory", exponent_verdicts(a.exponent_check) + fit_failures(a.fits)),
            ("The paper's Figure 1", figure1_verdicts(a.figure1)),
            *((heading, found) for heading, found, _ in a.questions)]


def pairwise_section(a: Analysis) -> str | None:
    if not len(a.comparisons):
        return None
    pair_table, pair_layout = comparisons_preview(a.comparisons, a.design.independent)
    return ("## Pairwise comparisons\n\n" + f"{a.pair_how[0].upper() + a.pair_how[1:]}. {pair_layout}. "
            "Each entry: the speed-up, reference median / variant median (above 1 the variant is faster), "
            "[its 95% bootstrap interval over runs], or `>=`/`<=` a bound where one side is censored past "
            "half; the finding; q: the Benjamini-Hochberg q-value of the log-rank test (`< "
            f"{P_FLOOR:g}`: smaller than any value the test resolves); theory: the predictions' ratio. "
            "Both medians, the settings set per variant and the p-values are in `comparisons.csv`.\n\n"
            + markdown_table(pair_table, max_rows=MAX_CELL_ROWS, full_table="comparisons.csv"))


def cells_section(a: Analysis) -> str:
    cells, design = a.cells, a.design
    cell_table_, layout = cells_preview(cells, design.independent, a.flags)
    follows = [f"{short_name(c)} {design.determined[c]}" for c in design.varied if c in design.determined]
    return ("## Escape time per cell\n\n" + layout + (f"; {'; '.join(follows)}" if follows else "")
            + ". Each entry: the KM median escape step [95% interval], or `RM`, the restricted mean "
            "E[min(tau, budget)] (a lower bound on the mean) where more than half the runs are censored; the share of runs that "
            "escaped where not all did"
            + (", and the closed form's median (`theory`) where one applies" if "predicted_median" in cells
               and cells["predicted_median"].notna().any() else "")
            + "; `(flagged)`: see Sanity flags. Every column of every cell is in `cells.csv`.\n\n"
            + markdown_table(cell_table_, max_rows=MAX_CELL_ROWS, full_table="cells.csv"))


def per_run_section(a: Analysis) -> str | None:
    run_table = per_run_preview(a.cells, a.design.varied, a.per_run)
    if not len(run_table):
        return None
    return ("## Per-run values\n\nOne value per run, summarised per cell as the median over its runs "
            "with the 10%-90% range (never one run's value standing for the cell).\n\n"
            + markdown_table(run_table, full_table="cells.csv (median_/q10_/q90_ columns)"))


def theory_section(a: Analysis) -> str:
    return ("## Theory against measurement, cell by cell\n\n"
            + markdown_table(a.summary, full_table="comparison_summary.csv")
            + "\nThe informative cells farthest from the prediction:\n\n" + markdown_table(
                farthest_from_theory(a.comparison, a.cells, a.design), max_rows=10, full_table="comparison.csv"))


def farthest_from_theory(comparison: pd.DataFrame, cells: pd.DataFrame, design) -> pd.DataFrame:
    """The informative cells of `comparison` (holds, close, fails), farthest from the prediction (by
    |log ratio|) first, with the settings that tell them apart after their problem and variant."""
    informative = comparison[comparison["verdict"].isin(["holds", "close", "fails"])] if len(comparison) else comparison
    if not len(informative):
        return informative
    settings = [c for c in design.independent if c in cells and c != "problem.name"]
    worst = (informative.assign(off=np.abs(np.log(informative["ratio"])))
             .sort_values("off", ascending=False).drop(columns=["off"])
             .join(cells[settings].rename(columns=short_name), on="cell_id"))
    first = ["problem", "optimizer", *[short_name(c) for c in settings]]
    return worst[first + [c for c in worst.columns if c not in first and c not in ("cell_id", "theory_note")]
                 + ["theory_note"]]


FIT_COLUMNS = ("group", "duration", "covariates", "dropped", "cells", "runs", "events", "cells_with_events", "fit_rows",
               "bin_width", "log_likelihood", "AIC", "sigma", "rms_factor", "worst_factor", "status", "warnings")
EXPONENT_COLUMNS = ("group", "covariate", "exponent", "lo", "hi", "theory", "theory_cells", "theory_local",
                    "theory_regime", "verdict", "no_verdict")


def scaling_section(a: Analysis) -> str:
    fits, exponent_check = a.fits, a.exponent_check
    # the warnings and reasons for no verdict only where there are some
    fit_columns = [c for c in FIT_COLUMNS if c in fits and (c != "warnings" or fits[c].fillna("").ne("").any())]
    exponent_columns = [c for c in EXPONENT_COLUMNS if c in exponent_check
                        and (c != "no_verdict" or exponent_check[c].fillna("").ne("").any())]
    return ("## Scaling laws (censored log-normal AFT fits)\n\n"
            "log tau = c + sum_j a_j log x_j + sigma * noise, fitted with the censored runs in it, per problem "
            "and optimizer variant (artefact cells left out); `theory` is the closed form's slope over the "
            "same cells, `theory_local` the local exponent of docs/theory.md at the group's centre. For "
            "beta1/beta2 the covariate is 1 - beta.\n\n"
            + markdown_table(exponent_check[exponent_columns] if len(exponent_check) else exponent_check,
                             full_table="exponents.csv")
            + "\nFit quality (`rms_factor`/`worst_factor`: fitted against measured KM median per cell, as a "
              "factor; `bin_width` > 0: event times were rounded on a log grid of that relative width to fit in "
              "time):\n\n" + markdown_table(fits[fit_columns] if len(fits) else fits, full_table="fits.csv"))


def notes_section(a: Analysis) -> str | None:
    extra = [f"Figure `{name}` not drawn: {why}." for name, why in a.skipped_figures] + a.notes
    if not extra:
        return None
    return "## Notes\n\n" + "\n".join(f"- {n}" for n in extra) + "\n"
