"""Which figures a sweep gets, and how each lays out its cells: plain data that analysis.figures draws.

What the sweep varied (analysis.design) decides:
- `escape_vs_<parameter>` for each numeric parameter the sweep varied (`sosp_vs_`, `gap_vs_`
  likewise for the other durations with events): a line per variant against it, every other varied
  parameter a facet (a panel per combination that occurs, at most MAX_PANELS), else a marker shape,
  else averaged (geometric mean) and said so; a parameter that follows the others is named, never
  drawn as an axis (`NotDrawn`, with why);
- `speedup_vs_<parameter>` along the numeric setting that puts most comparisons on lines, or
  `speedup_forest` where no numeric setting varies; `speedup_heatmap` over the two numeric settings
  that leave the fewest panels;
- `kaplan_meier_<duration>` for each duration the rows record; `figure1_loss_traces` where the sweep
  recorded traces.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workflows.core.survival import DURATION_TITLES, DURATIONS, RESTRICTED

from .design import (
    axis_label,
    axis_values,
    format_value,
    independent,
    is_function_of,
    short_name,
    sorted_groups,
    variant_settings,
    varies,
)
from .palette import MARKERS
from .theory import follows_paper_rule

MAX_PANELS = 12
TITLE_PARAMETERS = ("problem.name", "problem.dim", "problem.curvature", "problem.noise_scale", "problem.anisotropy",
                    "problem.n_negative", "problem.escape_radius", "problem.escape_measure", "optimizer.lr",
                    "optimizer.beta1", "optimizer.beta2", "start_offset", "budget", "seeds")


@dataclass
class LinePlan:
    """How one figure lays out the cells that have x: one line per (variant, marker value),
    panels per facet combination, `averaged` parameters pooled by geometric mean (and said so)."""
    x: str
    data: pd.DataFrame
    facets: list = field(default_factory=list)
    marker: str | None = None
    averaged: list = field(default_factory=list)
    follows: list = field(default_factory=list)
    determined: dict = field(default_factory=dict)     # parameters that follow the shown ones (for the title)


def plan_axis(frame: pd.DataFrame, varied: list[str], x: str, y: str, numeric: set) -> tuple[LinePlan | None, str]:
    """(the plan, '') or (None, why this figure is not drawn). `frame` has an `optimizer` column
    (the variant label), `y`, and the varied parameters."""
    data = frame[frame[x].notna() & np.isfinite(frame[y].astype(float)) & (frame[y].astype(float) > 0)]
    values = axis_values(data, x)
    data = data[np.isfinite(values)]
    if data[x].nunique() < 2:
        return None, f"{axis_label(x)} takes {data[x].nunique()} value(s) among the cells with a {y.split('_')[0]} time"
    others = [c for c in varied if c != x and c in data and varies(data[c])]
    follows = [c for c in others if is_function_of(data, c, [x, "optimizer"])]
    for c in list(follows):        # x and c determine each other: one figure, along the preferred of the two
        if c in numeric and is_function_of(data, x, [c, "optimizer"]) and varied.index(c) < varied.index(x):
            rule = " (beta2 = 1 - lr^(2/3), the paper's rule)" if paper_rule(data, c, x) else ""
            return None, f"{axis_label(x)} follows {axis_label(c)} one to one{rule}: see escape_vs_{_stem(c)}"
    leaders = [c for c in others if data[c].notna().all() and is_function_of(data, x, [c, "optimizer"])]
    others = [c for c in others if c not in follows]
    others, determined = independent(data, others)
    follows += determined
    series = data.groupby(["optimizer"] + [data[c].astype(str) for c in others], dropna=False)[x].nunique()
    if series.max() < 2:
        if leaders:
            return None, (f"{axis_label(x)} follows {', '.join(axis_label(c) for c in leaders)} (one value of "
                          f"{axis_label(x)} per value of {axis_label(leaders[0])}): no line has two values of it")
        return None, (f"no line has two values of {axis_label(x)} once "
                      f"{', '.join(axis_label(c) for c in others)} are fixed")
    categorical = [c for c in others if c not in numeric]
    ordered = categorical + sorted((c for c in others if c in numeric), key=lambda c: -data[c].nunique())
    facets, rest = [], []
    for c in ordered:
        combos = data.groupby([data[f].astype(str) for f in facets + [c]]).ngroups
        (facets if combos <= MAX_PANELS else rest).append(c)
    marker = next((c for c in rest if data[c].nunique() <= len(MARKERS)), None)
    averaged = [c for c in rest if c != marker]
    return LinePlan(x, data, facets, marker, averaged, follows), ""


def paper_rule(data, a, b) -> bool:
    """Whether columns `a` and `b` are lr and beta2 (either way round) and beta2 = 1 - lr^(2/3) in
    every row that has a beta2."""
    columns = {short_name(a): a, short_name(b): b}
    if set(columns) != {"lr", "beta2"}:
        return False
    part = data[data[columns["beta2"]].notna()]
    return bool(follows_paper_rule(part[columns["lr"]].astype(float), part[columns["beta2"]].astype(float)).all())


def _stem(column: str) -> str:
    return short_name(column).replace("[", "").replace("]", "").replace(".", "_")


def fixed_title(frame: pd.DataFrame, fixed: dict, exclude=()) -> str:
    """'fixed: problem=quadratic_saddle, dim=10, ...': the title-worthy parameters with one value in
    every cell drawn (a hyperparameter only some of the methods take is left out)."""
    items = {}
    for column in TITLE_PARAMETERS:
        if column in exclude:
            continue
        if column in frame and frame[column].notna().all() and not varies(frame[column]):
            items[column] = frame[column].iloc[0]
        elif column in fixed and column not in frame and not column.startswith("optimizer."):
            items[column] = fixed[column]
    if not items:
        return ""
    text = "fixed: " + ", ".join(("problem" if c == "problem.name" else short_name(c)) + f"={format_value(v)}"
                                 for c, v in items.items())
    return text


@dataclass
class Measure:
    """What a line figure draws: the y column (+ _lo/_hi), which points are lower bounds, the theory."""
    y: str
    label: str
    lo: str | None = None
    hi: str | None = None
    bound: str | None = None            # a boolean column: the point is a bound (hollow marker)
    bound_label: str = ""
    theory: str | None = None
    reference_line: float | None = None


def escape_measure(name: str = "escape") -> Measure:
    event = DURATIONS[name][1]
    return Measure(y=f"{name}_time", lo=f"{name}_time_lo", hi=f"{name}_time_hi", bound=f"{name}_bound",
                   label=f"{'escape' if name == 'escape' else name} step (KM median)",
                   bound_label=f"hollow: more than half not {event}:\nrestricted mean (a lower bound)",
                   theory="predicted_median" if name == "escape" else None)


def speedup_measure() -> Measure:
    return Measure(y="speedup", lo="speedup_lo", hi="speedup_hi", bound="is_bound",
                   label="speed-up over reference (tau_ref / tau)",
                   bound_label="hollow: one side censored past half:\na bound", theory="predicted_speedup",
                   reference_line=1.0)


# --- the figures a sweep gets: each chosen figure is one of these ------------------------------------

@dataclass(frozen=True)
class NotDrawn:
    stem: str
    why: str


@dataclass(frozen=True)
class LineFigure:
    """`measure` against `x` over `frame` (one row per cell or comparison, with an `optimizer` column),
    laid out by plan_axis when drawn. `varied`: the parameters that vary on their own; `fixed`: the
    sweep's fixed parameters (for the title); `own`: each variant's own settings (for the legend);
    `determined`: {parameter: 'follows ...'} for those that follow the varied ones."""
    stem: str
    frame: pd.DataFrame
    varied: list
    x: str
    measure: Measure
    numeric: set
    title: str
    fixed: dict
    own: dict | None = None
    determined: dict | None = None

    def plan(self) -> tuple[LinePlan | None, str]:
        """(the layout, '') or (None, why not drawn); the determined parameters are named in the title
        where they vary among the cells drawn (never a facet or an axis)."""
        plan, why = plan_axis(self.frame, self.varied, self.x, self.measure.y, self.numeric)
        if plan is None:
            return None, why
        plan.determined = {c: text for c, text in (self.determined or {}).items()
                           if c in plan.data and varies(plan.data[c]) and c not in plan.follows}
        return plan, ""


@dataclass(frozen=True)
class SpeedupForest:
    """Each comparison of `table` a row (where no numeric setting varies)."""
    table: pd.DataFrame
    settings: list
    stem: str = "speedup_forest"


@dataclass(frozen=True)
class SpeedupHeatmap:
    """Speed-ups over two numeric settings (analysis.figure_choice.heatmap_axes chooses them)."""
    comparisons: pd.DataFrame
    settings: list
    numeric: set
    stem: str = "speedup_heatmap"


@dataclass(frozen=True)
class KaplanMeier:
    duration: str                       # a name of workflows.core.survival.DURATIONS
    stem: str


@dataclass(frozen=True)
class LossTraces:
    stem: str = "figure1_loss_traces"


def choose_figures(rows, cells, traces, comparisons, design, settings=(), artefacts=None) -> list:
    """Every figure that applies, in the report's order: a LineFigure per duration and numeric
    parameter (NotDrawn where the parameter follows others), the speed-ups, a KaplanMeier per
    duration, LossTraces. `artefacts`: {duration: its artefact cells} (analysis.sanity), marked."""
    numeric = set(design.numeric)
    artefacts = artefacts or {}          # duration -> its artefact cells (analysis.sanity)
    frame = cells.copy()
    for name in DURATIONS:
        if f"{name}_kind" in frame:
            frame[f"{name}_bound"] = frame[f"{name}_kind"].eq(RESTRICTED)
    own = variant_settings(cells, design.per_variant)
    chosen = []
    for name in [n for n in DURATIONS if f"{n}_time" in frame]:
        if name != "escape" and not (frame[f"{name}_n_events"] > 0).any():
            continue
        for x in design.numeric:
            stem = f"{name}_vs_{_stem(x)}"
            if x in design.determined:
                chosen.append(NotDrawn(stem, f"{axis_label(x)} {design.determined[x]}: no line has two values of it "
                                             "once that is fixed"))
                continue
            marked = frame.assign(artefact=frame["cell_id"].isin(list(artefacts.get(name, ()))))
            chosen.append(LineFigure(stem, marked, design.independent, x, escape_measure(name), numeric,
                                     f"{DURATION_TITLES.get(name, name)} against {axis_label(x)}", design.fixed, own,
                                     design.determined))
    chosen += speedup_figures(comparisons, [c for c in settings if c not in design.determined], numeric,
                              design.fixed, own)
    chosen += [KaplanMeier(name, f"kaplan_meier_{name}") for name, pair in DURATIONS.items()
               if set(pair) <= set(rows.columns)]
    if traces is not None and len(traces):
        chosen.append(LossTraces())
    return chosen


def speedup_figures(comparisons, settings, numeric, fixed, own) -> list:
    """The speed-ups (analysis.pairwise's comparisons, artefact cells left out): along the numeric
    setting that shows most of them on lines, else a forest plot; and the heatmap."""
    if not len(comparisons):
        return []
    table = comparisons.assign(optimizer=comparisons["variant"], is_bound=comparisons["bound"] != "=")
    table = table[table["flag"] == ""]
    varied = list(settings) + (["reference"] if table["reference"].nunique() > 1 else [])
    lines = [x for x in settings if x in numeric and x in table and table[x].nunique() > 1]
    if lines:
        x = max(lines, key=lambda c: _points_on_lines(table, varied, c, numeric))
        chosen = LineFigure(f"speedup_vs_{_stem(x)}", table, varied, x, speedup_measure(), numeric,
                            f"Speed-up over {' / '.join(sorted(table['reference'].unique()))} against {axis_label(x)}",
                            fixed, own)
    else:
        chosen = SpeedupForest(table, list(settings))
    return [chosen, SpeedupHeatmap(comparisons, list(settings), numeric)]


def _points_on_lines(frame, varied, x, numeric) -> int:
    """How many points of `frame` lie on lines of two or more points when x is `x`: the x that shows
    the most of the table as lines (the first of equals)."""
    plan, _ = plan_axis(frame, varied, x, "speedup", numeric)
    if plan is None:
        return 0
    keys = ["optimizer"] + [plan.data[c].astype(str) for c in plan.facets + ([plan.marker] if plan.marker else [])]
    sizes = plan.data.groupby(keys)[x].transform("nunique")
    return int((sizes >= 2).sum())


def heatmap_axes(table: pd.DataFrame, settings: list[str], numeric: set) -> tuple[str, str, list[str]] | None:
    """(x, y, the settings that make panels besides variant and reference): the two numeric settings
    that vary together and leave the fewest panels (each panel a grid over them; of equals, the
    larger grid), or None where no two vary together."""
    candidates = [c for c in settings if c in numeric and c in table and table[c].nunique() > 1]
    choices = []
    for i, x in enumerate(candidates):
        for y in candidates[i + 1:]:
            part = table.dropna(subset=[x, y])
            if part[x].nunique() < 2 or part[y].nunique() < 2:
                continue
            others = [c for c in settings if c in part and c not in (x, y) and varies(part[c])]
            rest = [c for c in independent(part.assign(optimizer=part["variant"]), [x, y] + others)[0]
                    if c not in (x, y)]
            count = len(sorted_groups(part, ["variant", "reference"] + rest))
            choices.append((count, -part[x].nunique() * part[y].nunique(), x, y, rest))
    if not choices:
        return None
    _, _, x, y, rest = min(choices, key=lambda c: c[:2])
    return x, y, rest
