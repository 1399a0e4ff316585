"""Drawing the figures analysis.figure_choice chooses; each is drawn only when it shows something.

- `escape_vs_<parameter>` (`line_figure`): the escape time (KM median per cell) against a varied
  numeric parameter; `sosp_vs_<parameter>` likewise for the time to a second-order stationary point.
- `speedup_vs_<parameter>` (or `speedup_forest` where nothing numeric varies besides the method):
  the pairwise comparisons' speed-ups with their bootstrap intervals; `speedup_heatmap` over two
  numeric parameters on one diverging scale, centred at 1, shared by every panel.
- `kaplan_meier_escape` (and `_sosp`): survival curves per variant, labelled by what was swept.
- `figure1_loss_traces`: loss against iteration where the sweep recorded traces.

The rules every figure keeps:
- one colour per optimizer variant, the same in every figure and report (analysis.palette);
  theory in that hue, lighter and dashed, and named so in the legend;
- every other varied parameter is a facet (panels: one per combination that occurs, none
  dropped), else a marker shape, else averaged (geometric mean) with the title saying so;
  a parameter that follows x (β₂ under the paper's rule when x is lr) is named in the title;
- no figure with fewer than two x values on a line; no zero or negative value on a log axis;
  panels share their axes; legends sit outside the data; titles name the fixed parameters;
- each figure as PNG (at `dpi`) and as PDF (vector), unless told otherwise.

Figures are matplotlib Figure objects (Agg), never pyplot: nothing global changes for the caller.
"""
from __future__ import annotations

import re
import textwrap
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from matplotlib.colors import TwoSlopeNorm, to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullLocator,
)
from PIL import Image

from workflows.core.survival import DURATIONS

from .design import (
    axis_label,
    axis_values,
    format_value,
    independent,
    is_beta,
    short_name,
    sort_values,
    sorted_groups,
)
from .figure_choice import (
    MAX_PANELS,
    KaplanMeier,
    LineFigure,
    LinePlan,
    LossTraces,
    Measure,
    NotDrawn,
    SpeedupForest,
    SpeedupHeatmap,
    choose_figures,
    fixed_title,
    heatmap_axes,
    paper_rule,
)
from .pairwise import ALPHA, SIGNIFICANT
from .palette import MARKERS, THEORY_STYLE, lighter, palette, split_label
from .theory import follows_paper_rule, minimum_loss

DEFAULT_DPI = 150
DEFAULT_FORMATS = ("png", "pdf")
MAX_HUES = 8           # Kaplan-Meier: colours a panel tells apart (values of one swept parameter)
MAX_STYLES = 4         # and line styles (combinations of the others)
TRACE_COLUMNS = 3      # loss-trace panels a row
MAX_FOREST_ROWS = 40
LOG_SPAN = 5            # an axis is logarithmic when its positive values span at least this factor


def figure_jobs(rows, cells, traces, comparisons, design, dpi: int = DEFAULT_DPI, formats=DEFAULT_FORMATS,
                settings=(), artefacts=None) -> list:
    """Every figure that applies (analysis.figure_choice.choose_figures), as jobs [(stem, draw)] for
    analysis.drawing.Drawing: draw(path) returns ((path, caption), "") or (None, why it was not drawn)."""
    save = Saver(dpi, formats)
    colors = palette(cells["optimizer"])
    if len(comparisons):
        colors.update({k: v for k, v in palette(pd.concat([comparisons["variant"], comparisons["reference"]])).items()
                       if k not in colors})
    return [(chosen.stem, partial(draw, chosen, rows, cells, traces, design.varied, colors, save))
            for chosen in choose_figures(rows, cells, traces, comparisons, design, settings, artefacts)]


def draw(chosen, rows, cells, traces, varied, colors, save, path: Path) -> tuple:
    """One chosen figure drawn at `path`: ((path, caption), "") or (None, why it was not drawn)."""
    if isinstance(chosen, NotDrawn):
        return None, chosen.why
    if isinstance(chosen, LineFigure):
        return _line_job(chosen, colors, path, save)
    if isinstance(chosen, SpeedupForest):
        return forest_plot(chosen.table, chosen.settings, colors, path, save)
    if isinstance(chosen, SpeedupHeatmap):
        return speedup_heatmap(chosen.comparisons, chosen.settings, chosen.numeric, colors, path, save)
    if isinstance(chosen, KaplanMeier):
        return kaplan_meier_curves(rows, cells, varied, colors, path, save, chosen.duration)
    if isinstance(chosen, LossTraces):
        return loss_traces(traces, cells, varied, colors, path, save)
    raise TypeError(f"{chosen!r} is not a figure of analysis.figure_choice")


def _line_job(chosen: LineFigure, colors: dict, path: Path, save) -> tuple:
    """A line figure laid out (LineFigure.plan) and drawn, or why it is not."""
    plan, why = chosen.plan()
    if plan is None:
        return None, why
    fixed = fixed_title(plan.data, chosen.fixed, exclude=[chosen.x])
    return line_figure(plan, chosen.measure, colors, chosen.title, fixed, path, save, chosen.own), ""


def _describe(columns, values) -> str:
    return ", ".join(f"{short_name(c)}={format_value(v)}" for c, v in zip(columns, values) if pd.notna(v))


def _grid(n: int) -> tuple[int, int]:
    columns = n if n <= 4 else 3 if n in (5, 6, 9) else 4
    return -(-n // columns), columns


def _log_axis(values) -> bool:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return len(values) > 0 and values.min() > 0 and values.max() / values.min() >= LOG_SPAN


def _value_ticks(ax, values, log):
    """Ticks at the values themselves where there are few (no overlapping minor labels)."""
    values = np.unique(np.asarray(values, float))
    values = values[np.isfinite(values)]
    crowded = log and len(values) > 1 and np.min(np.diff(np.log10(values))) < 0.4
    if len(values) <= 7 and not crowded:
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if log or len(values) > 4:
            for label in ax.get_xticklabels():
                label.set_rotation(30)
    elif log:
        _log_ticks(ax.xaxis, values.max() / values.min())


def _log_ticks(axis, span: float):
    """Labelled ticks at 1, 2, 5 x 10^k over less than two decades, else at the powers of ten (plain
    numbers); no labelled minor ticks."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if span < 100 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # No minor ticks: on shared log axes their artists were most of a figure's drawing time.
    axis.set_minor_locator(NullLocator())


# --- line figures ------------------------------------------------------------------------------------

def line_figure(plan: LinePlan, measure: Measure, colors: dict, title: str, fixed: str, path: Path, save,
                own_settings: dict | None = None) -> tuple:
    """Draw a LinePlan: a panel per facet combination, a line per (variant, marker value) with the
    measure's interval, bounds, artefacts, theory and the paper's rule marked; returns save()'s
    (path, caption). `fixed`: the title's line of fixed parameters; `own_settings`: each variant's
    own settings, for the legend."""
    data = _drawn_table(plan, measure)
    panels = sorted_groups(data, plan.facets)
    fig, axes = _shared_panels(len(panels))
    x_values = axis_values(data, plan.x)
    log_x = _log_axis(x_values)
    shapes = _Shapes.of(plan, data)
    y_span = _shared_scales(axes.flat[0], data, measure, x_values, log_x)
    used = set()                                  # the marks drawn, each to be explained in the legend
    for ax, (values, part) in zip(axes.flat, panels):
        for (optimizer, marker_value), line in _series(part, plan):
            used |= _draw_line(ax, line, plan, measure, colors[optimizer], shapes.shape(optimizer, marker_value))
        used |= _draw_guides(ax, part, measure)
        ax.set_title("\n".join(textwrap.wrap(_describe(plan.facets, values), 44)), fontsize=9)
        ax.grid(True, which="major", alpha=0.25)
        _log_ticks(ax.yaxis, y_span)
        _value_ticks(ax, x_values, log_x)
    _label_outer_axes(axes, axis_label(plan.x), measure.label)
    heading = _heading(plan, data, title)
    wrap = int(fig.get_figwidth() * 11)
    fig.suptitle("\n".join(textwrap.wrap(heading, wrap) + textwrap.wrap(fixed, wrap)), fontsize=10)
    handles = _variant_handles(data, plan, colors, shapes, own_settings) + _mark_handles(used, measure)
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    caption = (f"{heading}. " + (f"Panels: one per {', '.join(axis_label(c) for c in plan.facets)} that occurs. "
                                 if plan.facets else "")
               + (f"Marker shape: {axis_label(plan.marker)}. " if plan.marker else "")
               + (fixed + "." if fixed else ""))
    return save(fig, path, caption)


def _drawn_table(plan: LinePlan, measure: Measure) -> pd.DataFrame:
    """The columns a line figure draws (a lean table); where parameters are averaged, one row per
    (panel, line, x), pooled once."""
    needed = [plan.x, "optimizer", plan.marker, *plan.facets, *plan.averaged, *plan.follows, measure.y, measure.lo,
              measure.hi, measure.theory, measure.bound, "artefact", "optimizer.lr", "budget"]
    data = plan.data[list(dict.fromkeys(c for c in needed if c and c in plan.data))]
    if plan.averaged:
        data = _geometric_mean(data, ["optimizer", *([plan.marker] if plan.marker else []), *plan.facets, plan.x])
    return data


def _shared_panels(n: int):
    """(figure, axes): n panels sharing both axes, the grid's spare panels hidden."""
    rows, columns = _grid(n)
    fig = Figure(figsize=(max(3.4 * columns + 2.2, 7.5), 2.9 * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _shared_scales(first, data: pd.DataFrame, measure: Measure, x_values, log_x: bool) -> float:
    """Scales and limits once, on shared axes, before any panel draws (a panel with one point would
    otherwise give its shared partners identical limits); returns the span of the y values shown."""
    shown = np.concatenate([data[c].to_numpy(float) for c in (measure.y, measure.theory, measure.lo, measure.hi)
                            if c and c in data])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    first.set_yscale("log")
    if log_x:
        first.set_xscale("log")
    finite = x_values[np.isfinite(x_values)]
    low, high = finite.min(), finite.max()
    first.set_xlim(*((low / 1.25, high * 1.25) if log_x else (low - 0.06 * (high - low), high + 0.06 * (high - low))))
    first.set_ylim(shown.min() / 1.3, shown.max() * 1.3)
    return shown.max() / shown.min() if len(shown) else 10.0


@dataclass
class _Shapes:
    """Marker shapes: one per value of the plan's marker parameter; without one, the variants of one
    optimizer (two shades of a hue) also differ in shape."""
    values: list                # the marker parameter's values, in order
    by_value: dict              # str(value) -> shape
    by_variant: dict            # variant -> shape

    @classmethod
    def of(cls, plan: LinePlan, data: pd.DataFrame) -> _Shapes:
        values = sort_values(data[plan.marker]) if plan.marker else []
        return cls(values, {str(v): MARKERS[i] for i, v in enumerate(values)},
                   {} if plan.marker else sibling_markers(data["optimizer"].unique()))

    def shape(self, variant: str, marker_value) -> str:
        return self.by_value.get(str(marker_value), self.by_variant.get(variant, "o"))


def _draw_line(ax, line: pd.DataFrame, plan: LinePlan, measure: Measure, color: str, shape: str) -> set[str]:
    """One line, its points in x order, with what marks them: hollow where a bound, a red cross where
    an artefact, the interval (where nothing is averaged), the theory, a star where beta2 follows the
    paper's rule. Returns the marks drawn ({'bound', 'artefact', 'theory', 'rule'})."""
    xs, ys = axis_values(line, plan.x), line[measure.y].to_numpy(float)
    order = np.argsort(xs)
    xs, line, ys = xs[order], line.iloc[order], ys[order]
    ax.plot(xs, ys, color=color, marker=shape, markersize=5, linewidth=1.6, zorder=3)
    used = set()
    if measure.bound and line[measure.bound].any():
        hollow = line[measure.bound].to_numpy(bool)
        ax.plot(xs[hollow], ys[hollow], linestyle="", marker=shape, markersize=8, markerfacecolor="white",
                markeredgecolor=color, markeredgewidth=1.5, zorder=4)
        used.add("bound")
    if "artefact" in line and line["artefact"].any():
        bad = line["artefact"].to_numpy(bool)
        ax.plot(xs[bad], ys[bad], linestyle="", marker="x", markersize=10, color="#d62728", markeredgewidth=2,
                zorder=6)
        used.add("artefact")
    if measure.lo and not plan.averaged:
        lo, hi = line[measure.lo].to_numpy(float), line[measure.hi].to_numpy(float)
        ok = np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
        ax.errorbar(xs[ok], ys[ok], yerr=[ys[ok] - lo[ok], hi[ok] - ys[ok]], fmt="none", ecolor=color, alpha=0.6,
                    capsize=2, zorder=2)
    if measure.theory and measure.theory in line and _draw_theory(ax, xs, line[measure.theory], color):
        used.add("theory")
    if is_beta(plan.x) and short_name(plan.x) == "beta2" and "optimizer.lr" in line:
        rule = follows_paper_rule(line["optimizer.lr"].astype(float), line[plan.x].astype(float))
        if rule.any():
            ax.plot(xs[rule], ys[rule], linestyle="", marker="*", markersize=13, color=color,
                    markeredgecolor="black", zorder=5)
            used.add("rule")
    return used


def _draw_theory(ax, xs, theory: pd.Series, color: str) -> bool:
    """The prediction's values (closed forms, the lag model), lighter and dashed, on top (where theory and measurement agree, the
    dashes lie inside the line); False where it has none to draw."""
    theory = theory.to_numpy(float)
    ok = np.isfinite(theory) & (theory > 0)
    if ok.sum() < 1:
        return False
    ax.plot(xs[ok], theory[ok], color=lighter(color), zorder=5, marker="_" if ok.sum() == 1 else None,
            markersize=12, **THEORY_STYLE)
    return True


def _draw_guides(ax, part: pd.DataFrame, measure: Measure) -> set[str]:
    """A panel's horizontal guides: the measure's reference (a speed-up of 1) and the budget where the
    panel has bounds at one budget. Returns {'budget'} where that is drawn."""
    if measure.reference_line is not None:
        ax.axhline(measure.reference_line, color="0.4", linewidth=0.9, linestyle=":", zorder=0)
    if measure.bound and part[measure.bound].any() and "budget" in part and part["budget"].nunique() == 1:
        ax.axhline(float(part["budget"].iloc[0]), color="0.5", linewidth=0.9, linestyle=":", zorder=0)
        return {"budget"}
    return set()


def _label_outer_axes(axes, x_label: str, y_label: str):
    for ax in axes[-1]:
        ax.set_xlabel(x_label)
    for ax in axes[:, 0]:
        ax.set_ylabel(y_label)
    # the last visible panel of each column carries the x label when the bottom row is short
    rows, columns = axes.shape
    for column in range(columns):
        visible = [axes[r, column] for r in range(rows) if axes[r, column].get_visible()]
        if visible:
            visible[-1].set_xlabel(x_label)
            visible[-1].xaxis.set_tick_params(labelbottom=True)


def _heading(plan: LinePlan, data: pd.DataFrame, title: str) -> str:
    """The title with what the figure pools and what follows the parameters shown."""
    notes = []
    if plan.averaged:
        notes.append("averaged over " + ", ".join(axis_label(c) for c in plan.averaged) + " (geometric mean)")
    for column in plan.follows:
        if "optimizer.lr" in data and paper_rule(data, column, "optimizer.lr"):
            notes.append(f"{short_name(column)} follows lr (beta2 = 1 - lr^(2/3), the paper's rule)")
        else:
            notes.append(f"{short_name(column)} follows the parameters shown")
    notes += [f"{short_name(column)} {text}" for column, text in plan.determined.items()]
    return title + ("; " + "; ".join(notes) if notes else "")


def _variant_handles(data: pd.DataFrame, plan: LinePlan, colors: dict, shapes: _Shapes, own_settings: dict | None) -> list:
    """A legend entry per variant (with its own numeric settings: each optimizer's lr where each has its
    own; not flags or eps), then one per marker value."""
    own = {k: ", ".join(p for p in v.split(", ") if not p.startswith("eps=") and not p.endswith(("=true", "=false"))
                        and re.search(r"=-?[0-9.]", p))
           for k, v in (own_settings or {}).items()}
    handles = [Line2D([], [], color=colors[o], marker=shapes.by_variant.get(o, "o"), linewidth=1.6,
                      label=o + (f": {own[o]}" if own.get(o) else ""))
               for o in sorted(data["optimizer"].unique(), key=str)]
    if plan.marker:
        handles += [Line2D([], [], color="0.3", marker=shapes.by_value[str(v)], linestyle="",
                           label=f"{short_name(plan.marker)}={format_value(v)}") for v in shapes.values]
    return handles


def _mark_handles(used: set[str], measure: Measure) -> list:
    """A legend entry for each kind of mark drawn (_draw_line, _draw_guides)."""
    handles = []
    if "theory" in used:
        handles.append(Line2D([], [], color=lighter("#444444"), label="predicted (median), dashed, lighter\n"
                              "in each method's colour", **THEORY_STYLE))
    if "artefact" in used:
        handles.append(Line2D([], [], color="#d62728", marker="x", markeredgewidth=2, linestyle="",
                              label="artefact of the set-up\n(see Sanity flags)"))
    if "budget" in used:
        handles.append(Line2D([], [], color="0.5", linewidth=0.9, linestyle=":", label="the budget (censoring)"))
    if "bound" in used:
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="",
                              label=measure.bound_label))
    if "rule" in used:
        handles.append(Line2D([], [], color="0.3", marker="*", markersize=11, markeredgecolor="black", linestyle="",
                              label="beta2 = 1 - lr^(2/3) (paper's rule)"))
    return handles


def _series(part: pd.DataFrame, plan: LinePlan):
    """((optimizer, marker value), cells) per line (averaged parameters are already pooled)."""
    keys = ["optimizer"] + ([plan.marker] if plan.marker else [])
    for values, line in sorted_groups(part, keys):
        yield (values[0], values[1] if plan.marker else None), line


def _geometric_mean(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per combination of `keys`: numeric columns by their geometric mean (arithmetic where a
    value is not positive), flags by any, everything else from the first row."""
    group_keys = [frame[k].astype(str) for k in keys]
    groups = frame.groupby(group_keys, sort=False)
    out = groups.first().reset_index(drop=True)
    numeric = [c for c in frame.columns if c not in keys and pd.api.types.is_numeric_dtype(frame[c])
               and frame[c].dtype != bool]
    values = frame[numeric].astype(float)
    positive = (values > 0).groupby(group_keys, sort=False).all().reset_index(drop=True)
    with np.errstate(all="ignore"):
        geometric = np.exp(np.log(values.where(values > 0)).groupby(group_keys, sort=False).mean()).reset_index(drop=True)
    arithmetic = values.groupby(group_keys, sort=False).mean().reset_index(drop=True)
    out[numeric] = geometric.where(positive, arithmetic)
    flags = [c for c in frame.columns if c not in keys and frame[c].dtype == bool]
    if flags:
        out[flags] = frame[flags].groupby(group_keys, sort=False).any().reset_index(drop=True)
    return out


# --- the other figures ------------------------------------------------------------------------------

def speedup_heatmap(comparisons: pd.DataFrame, settings: list[str], numeric: set, colors, path: Path, save):
    """Speed-up over two numeric settings, a panel per (variant vs reference, other settings), one
    diverging colour scale for all panels centred at 1 (log scale: 2x and 0.5x equally far)."""
    table = comparisons[comparisons["flag"] == ""]
    # Only what the tests call a difference is coloured (analysis.pairwise's findings).
    table = table.assign(significant=table["finding"].isin(SIGNIFICANT) if "finding" in table else False)
    chosen = heatmap_axes(table, settings, numeric)
    if chosen is None:
        return None, "fewer than two numeric settings vary together among the comparisons"
    x, y, rest = chosen
    table = table.dropna(subset=[x, y])
    panels = sorted_groups(table, ["variant", "reference"] + rest)
    if len(panels) > MAX_PANELS:
        return None, (f"{len(panels)} panels (one per variant, reference and value of "
                      f"{', '.join(axis_label(c) for c in rest) or 'nothing else'}) are more than {MAX_PANELS}")
    rows, columns = _grid(len(panels))
    fig = Figure(figsize=(3.9 * columns + 1.2, 3.4 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    with np.errstate(divide="ignore"):
        logs = np.log10(table.loc[table["significant"], "speedup"].to_numpy(float))
    limit = max(np.log10(2), np.nanmax(np.abs(logs[np.isfinite(logs)])) if np.isfinite(logs).any() else 1)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    image = None
    for ax, (values, part) in zip(axes.flat, panels):
        xs, ys = sort_values(part[x]), sort_values(part[y])
        grid = np.full((len(ys), len(xs)), np.nan)
        for _, row in part.iterrows():
            i, j = ys.index(row[y]), xs.index(row[x])
            text = ("" if row["bound"] == "=" else row["bound"]) + _compact(row["speedup"])
            size = 7 if len(xs) <= 6 else 6
            if not row["significant"]:
                # Compared, no difference the tests stand behind: no colour, hatched, the ratio in grey.
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", edgecolor="0.75", hatch="///",
                                       linewidth=0, zorder=1))
                ax.text(j, i, text, ha="center", va="center", fontsize=size, color="0.4", zorder=3,
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
                continue
            grid[i, j] = np.log10(row["speedup"])
            # A significant slow-down is written in red even where its colour is pale next to large speed-ups.
            ax.text(j, i, text, ha="center", va="center", fontsize=size, zorder=3,
                    color="white" if abs(grid[i, j]) > 0.6 * limit else "#b2182b" if row["speedup"] < 1 else "black",
                    fontweight="bold" if row["speedup"] < 1 else "normal")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", norm=norm, aspect="auto", origin="lower", zorder=0)
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set_ylim(-0.5, len(ys) - 0.5)
        ax.set_facecolor("0.85")
        ax.set_xticks(range(len(xs)), [format_value(v) for v in xs], rotation=45, fontsize=8)
        ax.set_yticks(range(len(ys)), [format_value(v) for v in ys], fontsize=8)
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(axis_label(y))
        variant, reference = values[0], values[1]
        ax.set_title(f"{variant} vs {reference}" + ("\n" + _describe(rest, values[2:]) if rest else ""), fontsize=9,
                     color=colors.get(variant, "black"))
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85)
    steps = (-3, -2, -1, 0, 1, 2, 3) if limit > 1.2 else (-1, np.log10(0.5), 0, np.log10(2), 1)
    ticks = [t for t in steps if -limit <= t <= limit]
    bar.set_ticks(ticks, labels=[f"{10**t:g}" for t in ticks])
    bar.set_label("speed-up tau_ref / tau (blue: faster, red: slower)")
    title = f"Speed-up over the reference across {axis_label(x)} and {axis_label(y)}"
    fig.suptitle(title, fontsize=11)
    keys = [Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.6", hatch="///",
                      label=f"no significant difference (q >= {ALPHA:g}, or the interval holds 1)"),
            Rectangle((0, 0), 1, 1, facecolor="0.85", edgecolor="0.6", label="not compared")]
    fig.legend(handles=keys, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    caption = (f"{title}: ratio of KM medians, one diverging colour scale for every panel, centred at 1 (white), "
               "coloured only where the comparison is significant (log-rank q < 0.05 and a 95% bootstrap interval "
               "excluding 1, or a significant bound): blue where the variant escapes sooner, red where later "
               "(significant slow-downs also written in bold red); hatched white with the ratio in grey: no "
               "significant difference; >= / <=: one side censored past half (a bound); grey: not compared.")
    return save(fig, path, caption), ""


def _compact(value: float) -> str:
    """3 significant digits in at most 4 characters: 0.938, 12.4, 973, 1.4k, 14k."""
    if not np.isfinite(value):
        return "inf" if value > 0 else ""
    return f"{value / 1000:.2g}k" if value >= 1000 else f"{value:.3g}"


def forest_plot(comparisons: pd.DataFrame, settings: list[str], colors, path: Path, save):
    """Each comparison as a row: speed-up with its bootstrap interval, log scale, a line at 1."""
    table = comparisons.copy()
    if len(table) > MAX_FOREST_ROWS:
        return None, f"{len(table)} comparisons are too many rows for one forest plot (at most {MAX_FOREST_ROWS})"
    shown = [c for c in settings if c in table and table[c].notna().any()]       # where each comparison was made
    labels = [f"{r['variant']} vs {r['reference']}" + (": " + _describe(shown, [r[c] for c in shown]) if shown else "")
              for _, r in table.iterrows()]
    fig = Figure(figsize=(7.5, 0.38 * len(table) + 1.6), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    for yi, (_, row) in zip(y, table.iterrows()):
        color = colors.get(row["variant"], "black")
        if np.isfinite(row["speedup_lo"]):
            ax.plot([row["speedup_lo"], row["speedup_hi"]], [yi, yi], color=color, linewidth=2)
        hollow = row["bound"] != "="
        ax.plot([row["speedup"]], [yi], marker="o", color=color, markerfacecolor="white" if hollow else color,
                markersize=7)
        if np.isfinite(row.get("predicted_speedup", np.nan)) and row["predicted_speedup"] > 0:
            ax.plot([row["predicted_speedup"]], [yi], marker="|", markersize=12, color=lighter(color))
    ax.axvline(1.0, color="0.4", linestyle=":")
    ax.set_xscale("log")
    values = table[["speedup", "speedup_lo", "speedup_hi", "predicted_speedup"]].to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    _log_ticks(ax.xaxis, max(values.max(), 1) / min(values.min(), 1) if len(values) else 10)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("speed-up tau_ref / tau (KM medians; > 1: faster than the reference)")
    ax.set_title("Pairwise comparisons: speed-up with 95% bootstrap interval", fontsize=10)
    handles = [Line2D([], [], color="0.3", marker="o", linestyle="", label="measured (hollow: a bound)"),
               Line2D([], [], color="0.6", marker="|", markersize=12, linestyle="", label="predictions' ratio")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    caption = ("Pairwise comparisons: the ratio of KM median escape steps (reference / variant) with its 95% "
               "bootstrap interval over runs; hollow: one side censored past half (a bound); ticks: the closed "
               "forms' ratio where both have one.")
    return save(fig, path, caption), ""


def sibling_markers(labels) -> dict:
    """{label: marker}: 'o' for an optimizer's only variant; its variants, in sorted order, o s D ^ ..."""
    by_name = {}
    for label in sorted(map(str, labels)):
        by_name.setdefault(split_label(label)[0], []).append(label)
    return {label: MARKERS[i % len(MARKERS)] for group in by_name.values() for i, label in enumerate(group)}


def _label_columns(cells: pd.DataFrame, varied: list[str]) -> list[str]:
    """The swept parameters that tell these cells apart (one of two that determine each other)."""
    return independent(cells, [c for c in varied if c in cells], given=())[0]


def _evenly(values: list, limit: int) -> list:
    """At most `limit` of the (sorted) values, evenly spread, both ends kept."""
    if len(values) <= limit:
        return list(values)
    return [values[i] for i in np.unique(np.linspace(0, len(values) - 1, limit).round().astype(int))]


def _km_encoding(cells: pd.DataFrame, labels: list[str]) -> tuple[str | None, list[str]]:
    """(the swept parameter drawn as hue: the one with the most values, or None; those drawn as line style)."""
    if not labels:
        return None, []
    hue = max(labels, key=lambda c: (cells[c].nunique(), -labels.index(c)))
    return hue, [c for c in labels if c != hue]


def kaplan_meier_curves(rows, cells, varied, colors, path, save, name="escape"):
    """KM curves (fraction of runs not yet escaped), one panel per variant. Within a panel the swept
    parameter with the most values is the hue (light to dark in the variant's colour, in the
    values' order) and the others the line style, each legend in the values' order; at most
    MAX_HUES hues and MAX_STYLES styles, evenly spread over the values (all cells: cells.csv)."""
    import seaborn as sns

    duration, event = DURATIONS[name]
    variants = sorted(cells["optimizer"].unique(), key=str)
    n_rows, columns = (2, 2) if len(variants) == 4 else _grid(len(variants))
    fig = Figure(figsize=(5.6 * columns, 4.4 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, columns, squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    thinned = []
    positions = rows.groupby("cell_id", observed=True, sort=False).indices
    all_steps = rows[duration].to_numpy(float)
    log_x = all_steps.min() > 0 and all_steps.max() / max(all_steps.min(), 1) >= LOG_SPAN
    for ax, variant in zip(axes.flat, variants):
        own = cells[cells["optimizer"] == variant]
        hue, styles = _km_encoding(own, _label_columns(own, varied))
        hue_values = _evenly(sort_values(own[hue]), MAX_HUES) if hue else []
        style_key = own[styles].astype(object).apply(lambda r: _describe(styles, r.tolist()), axis=1) if styles \
            else pd.Series("", index=own.index)
        style_order = [k for k in dict.fromkeys(_labels_in_order(own, styles, style_key)) if k]
        style_values = _evenly(style_order, MAX_STYLES)
        keep = pd.Series(True, index=own.index)
        if hue:
            keep &= own[hue].isin(hue_values)
        if styles:
            keep &= style_key.isin(style_values)
        chosen = own[keep]
        if len(chosen) < len(own):
            thinned.append(f"{variant}: {len(chosen)} of {len(own)}")
        base = colors[variant]
        hue_texts = [format_value(v) for v in hue_values]
        palette_ = dict(zip(hue_texts, sequential(base, len(hue_texts))))
        dashes = dict(zip(style_values, STYLE_DASHES))
        curves, marks = [], []
        for cell_id, cell in chosen.iterrows():
            runs = rows.iloc[positions[cell["cell_id"]]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                km = KaplanMeierFitter().fit(runs[duration], runs[event])
            survival = km.survival_function_.iloc[:, 0]
            label = {"hue": format_value(cell[hue]) if hue else "", "style": style_key[cell_id]}
            curves.append(pd.DataFrame({"time": survival.index.to_numpy(float), "survival": survival.to_numpy(),
                                        "cell": str(cell_id), **label}))
            censored = runs.loc[~runs[event].astype(bool), duration].to_numpy(float)
            if len(censored):
                marks.append((censored, km.survival_function_at_times(censored).to_numpy(), label))
            if len(chosen) <= 4:                     # a band per curve only where they stay apart
                band = km.confidence_interval_survival_function_
                ax.fill_between(band.index.to_numpy(float), band.iloc[:, 0], band.iloc[:, 1], step="post",
                                alpha=0.12, color=palette_.get(label["hue"], base), linewidth=0)
        data = pd.concat(curves, ignore_index=True)
        sns.lineplot(data=data, x="time", y="survival", units="cell", estimator=None, drawstyle="steps-post",
                     hue="hue" if hue else None, hue_order=hue_texts if hue else None,
                     palette=palette_ if hue else None, style="style" if styles else None,
                     style_order=style_values if styles else None, dashes=dashes if styles else True,
                     color=None if hue else base, linewidth=1.4, ax=ax, legend=False)
        for times, levels, label in marks:
            ax.plot(times, levels, linestyle="", marker="|", markersize=6,
                    color=palette_.get(label["hue"], base) if hue else base)
        # One legend beside the panel, in the values' order: the colours (the hue parameter), then the
        # line styles (the others), each under its parameter's name.
        handles = []
        if hue:
            handles.append(Line2D([], [], linestyle="", label=f"{short_name(hue)}:"))
            handles += [Line2D([], [], color=palette_[t], linewidth=2, label=t) for t in hue_texts]
        if styles:
            one = len(styles) == 1
            handles.append(Line2D([], [], linestyle="", label=f"{', '.join(map(short_name, styles))}:"))
            handles += [Line2D([], [], color="0.25", linewidth=1.4, label=k.split("=", 1)[1] if one else k,
                               linestyle="-" if not dashes[k] else (0, dashes[k])) for k in style_values]
        if handles:
            ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False,
                      handlelength=2.6)
        if log_x:
            ax.set_xscale("log")
            _log_ticks(ax.xaxis, all_steps.max() / max(all_steps.min(), 1))
        ax.set_title(variant, fontsize=10, color=base)
        ax.set_xlabel(f"{duration}" + (" (log)" if log_x else ""))
        ax.set_ylabel(f"fraction of runs not yet {event}")
    for column in range(columns):                 # a column whose bottom panel is empty: x labels one higher
        visible = [axes[r, column] for r in range(n_rows) if axes[r, column].get_visible()]
        if visible:
            visible[-1].xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(f"Kaplan-Meier curves of {duration}, one panel per optimizer variant", fontsize=11)
    caption = (f"Kaplan-Meier curves of {duration}: the fraction of runs not yet {event}, one panel per variant; "
               "within a panel the swept parameter with the most values is the colour (lighter to darker in the "
               "variant's colour, in the values' order) and any other the line style, each legend in the values' "
               "order; ticks: censored runs; shaded: 95% band (where a panel has at most four curves)"
               + (f". Curves for {'; '.join(thinned)} cells (values spread evenly over their range; all cells are in "
                  "cells.csv)" if thinned else "") + ".")
    return save(fig, path, caption), ""


# Line styles for the values of the swept parameters a Kaplan-Meier panel does not colour by.
STYLE_DASHES = ("", (5, 2), (1.2, 1.6), (6, 1.5, 1.2, 1.5))


def sequential(color: str, n: int) -> list[str]:
    """n shades of one colour, lightest first and darkening monotonically (black: greys to black)."""
    import seaborn as sns

    if n <= 1:
        return [color] * n
    dark = tuple(0.45 * c for c in to_rgb(color))
    stops = [lighter(color, 0.55), color, dark] if max(to_rgb(color)) > 0.2 else [lighter(color, 0.6), color]
    return [to_hex(c) for c in sns.blend_palette(stops, n)]


def _labels_in_order(cells: pd.DataFrame, columns: list[str], text: pd.Series) -> list[str]:
    """`text` (one label per cell) in the order of the cells sorted by `columns`' values."""
    if not columns:
        return list(text)
    order = sorted_groups(cells.assign(_text=text), columns)
    return [part["_text"].iloc[0] for _, part in order]


def loss_traces(traces: pd.DataFrame, cells: pd.DataFrame, varied, colors, path: Path, save):
    """The paper's Figure 1: loss against iteration, one panel per (problem, variant), one line per
    cell. A run stops being recorded once it escapes (unless run_to_budget), so the runs behind a
    point thin out: the median (band 10-90%) is solid while it is over all the cell's runs (a fixed
    population) and dotted where over the runs still recorded only, and a strip under each panel
    shows the share of the cell's runs each point holds. Dotted black: the minimum's loss."""
    grouped = traces.groupby(["cell_id", "step"], observed=True)["loss"]
    quantiles = (grouped.quantile([0.1, 0.5, 0.9]).unstack()
                 .rename(columns={0.1: "q10", 0.5: "q50", 0.9: "q90"}).join(grouped.size().rename("recorded"))
                 .reset_index())
    quantiles["cell_id"] = quantiles["cell_id"].astype(str)
    known = cells.assign(cell_id=cells["cell_id"].astype(str))
    data = quantiles.merge(known[["cell_id", "problem", "optimizer", "runs"]], on="cell_id")
    if data.empty:
        return None, "no trace belongs to a cell of this table"
    data["share"] = data["recorded"] / data["runs"]
    traced = known[known["cell_id"].isin(data["cell_id"])]
    problems = [sorted_groups(part, ["problem", "optimizer"]) for _, part in sorted_groups(traced, ["problem"])]
    # Per problem its panels, up to TRACE_COLUMNS a row, each with a strip of the runs recorded under
    # it (losses of different problems are not comparable: y is shared within a problem only).
    columns = min(max(len(own) for own in problems), TRACE_COLUMNS)
    lines_of_panels = sum(-(-len(own) // columns) for own in problems)
    fig = Figure(figsize=(5.6 * columns, 4.6 * lines_of_panels), layout="constrained")
    grid = fig.add_gridspec(2 * lines_of_panels, columns, height_ratios=[3.2, 1] * lines_of_panels)
    panels, shared, line = [], None, 0
    for own_panels in problems:
        first = None
        for i, (key, cells_) in enumerate(own_panels):
            row, column = line + i // columns, i % columns
            ax = fig.add_subplot(grid[2 * row, column], sharex=shared, sharey=first)
            strip = fig.add_subplot(grid[2 * row + 1, column], sharex=ax)
            first, shared = first or ax, shared or ax
            panels.append((ax, strip, key, cells_))
        line += -(-len(own_panels) // columns)
    partial = False
    for ax, strip, (problem, variant), own in panels:
        labels = _label_columns(own, [c for c in varied if c != "problem.name"])
        ordered = sorted_groups(own, labels) if labels else [((), own)]
        shades = sequential(colors[variant], len(ordered)) if len(ordered) > 1 else [colors[variant]]
        for i, (color, (values, group)) in enumerate(zip(shades, ordered)):
            marker = MARKERS[i % len(MARKERS)]
            for cell in group["cell_id"]:
                line = data[data["cell_id"] == str(cell)].sort_values("step")
                full = line["recorded"].to_numpy() >= line["runs"].to_numpy()
                # The fixed population: every run of the cell still recorded (up to the first departure).
                cut = int(np.argmin(full)) if not full.all() else len(line)
                whole, rest = line.iloc[:cut], line.iloc[max(cut - 1, 0):]
                label = _describe(labels, values) or variant
                ax.plot(whole["step"], whole["q50"], color=color, label=label, marker=marker, markersize=4,
                        markevery=max(1, len(whole) // 6) if len(whole) else 1)
                ax.fill_between(whole["step"], whole["q10"], whole["q90"], color=color, alpha=0.10, linewidth=0)
                if cut < len(line):
                    partial = True
                    ax.plot(rest["step"], rest["q50"], color=color, linestyle=":", linewidth=1.2,
                            label=None if len(whole) else label)
                strip.plot(line["step"], 100 * line["share"], color=color, marker=marker, markersize=3,
                           markevery=max(1, len(line) // 6))
        floor = minimum_loss(_problem_params(own.iloc[0]))
        if np.isfinite(floor):
            ax.axhline(floor, color="k", linestyle=":", label="minimum loss")
        ax.set_xscale("log")
        ax.set_title(f"{problem}: {variant}", fontsize=10, color=colors[variant])
        ax.set_ylabel("loss")
        ax.tick_params(labelbottom=False)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        strip.set_ylim(-5, 105)
        strip.set_yticks([0, 50, 100])
        strip.set_ylabel("runs\nrecorded %", fontsize=8)
        strip.set_xlabel("iteration (log)")
        strip.grid(True, alpha=0.25)
    fig.suptitle("Loss against iteration: median over runs, band 10-90%"
                 + ("; dotted: over the runs still recorded only" if partial else ""), fontsize=11)
    caption = ("Loss against iteration (as the paper plots it), one panel per variant, one line per cell (darker: "
               "the larger value): the median over the cell's runs with its 10-90% band, solid while every run of "
               "the cell is still recorded (a fixed population), dotted where runs have stopped (they stop at their "
               "escape): the median of those left, which need not say how the cell's loss goes. The strip under "
               "each panel: the share of the cell's runs behind each point. Dotted black: the local minimum's loss.")
    return save(fig, path, caption), ""


def _problem_params(cell: pd.Series) -> dict:
    params = {k.split(".", 1)[1]: v for k, v in cell.items() if str(k).startswith("problem.")}
    return {**params, "curvature": cell.get("curvature")}


class Saver:
    """Saves a figure in every format at one dpi; remembers what it wrote."""

    def __init__(self, dpi: int = DEFAULT_DPI, formats=DEFAULT_FORMATS):
        self.dpi, self.formats = dpi, tuple(formats)

    def __call__(self, fig: Figure, path: Path, caption: str):
        for i, fmt in enumerate(self.formats):
            # constrained layout already fits titles and outside legends: no second, "tight" pass
            fig.savefig(path.with_suffix("." + fmt), dpi=self.dpi)
            if i == 0:              # the layout is settled: the other formats need not solve it again
                fig.set_layout_engine("none")
            if fmt == "png":
                _palette_png(path.with_suffix(".png"))
        return path.with_suffix("." + self.formats[0]), caption


def _palette_png(path: Path):
    """Rewrite a PNG with an adaptive 256-colour palette (no dithering): about a third of the size, and
    lines, markers and text unchanged to the eye (published reports are committed to git)."""
    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    quantized.save(path, optimize=True)
