"""Tuned comparisons (issue 23): each optimizer variant tuned for the question, then compared on
fresh seeds, with intervals that include the tuning's own uncertainty.

A tuned sweep (workflows/tuned_design.py) stores, beside its rows, tuning.parquet: for each group
(a variant in a setting) the points its search tried (role `tune`, on the tuning seed) and the
cells re-run on a disjoint base seed (role `fresh`: the chosen point and its neighbours on each
tuned axis). Per group this reads:

    the tuning curve      the score of every point tried (workflows/core/tuning.score: the KM
                          median of the target time, or the restricted mean; a point where fewer
                          than half the runs reached the target is censored, ranked after the rest)
    the choice            the best point, flagged where it lies at an end of its range (a better
                          one may lie beyond), and the theory's prediction for its fresh cell where
                          the target is escape and a closed form or the lag model applies
    the verdict           the statistic on the fresh runs only

Speed-up of a variant over the reference (the sweep's `analysis.reference`, else sgd, else the
first variant) in one setting: T_reference / T_variant, each on its own fresh runs at its own
chosen point (above 1: the variant reaches the target sooner). Its 95% interval is a percentile
bootstrap that redoes the selection: each replicate resamples the runs of every tuning cell
(the same run indices for every cell of the setting: the cells of one seed share their noise
stream, so resampling them together keeps that pairing), re-selects each variant's best point
with the search's own score, and resamples the fresh runs of the point re-selected. Re-selection
is among the points that have fresh cells (the chosen one and its neighbours); `outside` is the
share of replicates whose best tuning point lay elsewhere (then the re-selection is restricted to
the fresh points, and the interval understates the selection's spread by that share). The interval
with the chosen points held fixed (`fixed_lo`, `fixed_hi`) shows what the selection adds. Where a
side's fresh median is undefined (fewer than half its runs reached the target) its time counts as
the budget, a lower bound, and the speed-up is a bound (`censored`).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workflows.core.survival import DURATION_TITLES
from workflows.core.tuning import TuneSpec, scores, target_times

from .palette import palette, split_label
from .report import markdown_table
from .sanity import ARTEFACT, FEW_STEPS

BOOTSTRAP = 1000
SEED = 23                    # the bootstrap's generator: reruns of an analysis agree
TABLES = ("tuned_trials.csv", "tuned_best.csv", "tuned_speedups.csv")
STATISTIC_TITLES = {"km_median": "KM median", "restricted_mean": "restricted mean"}


@dataclass(frozen=True)
class Tuned:
    """A tuned sweep's analysis: `trials` (every point tried, and the fresh cells), `best` (one row
    per group: the choice and its fresh verdict), `speedups` (one row per setting and variant
    against the reference); empty tables for a sweep that is not tuned."""
    spec: TuneSpec | None
    trials: pd.DataFrame
    best: pd.DataFrame
    speedups: pd.DataFrame
    reference: str | None = None

    @classmethod
    def of(cls, root: Path | None, rows: pd.DataFrame, cells: pd.DataFrame, meta: dict | None,
           reference=None, flags: pd.DataFrame | None = None) -> Tuned:
        """`flags`: the report's sanity flags (analysis/sanity.py), one row per (cell, flag); a chosen
        cell whose target time they call an artefact of the set-up is flagged in the verdict."""
        path = None if root is None else Path(root) / "tuning.parquet"
        if path is None or not path.is_file() or not (meta or {}).get("tuning"):
            return cls(None, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
        spec = TuneSpec.from_dict(meta["tuning"])
        table = pd.read_parquet(path)
        table = table[table["cell_id"].isin(set(rows["cell_id"].astype(str)))]
        runs = _runs(rows, spec.target, set(table["cell_id"]))
        trials = _trials(table, runs, spec)
        best, speedups, ref = _verdicts(trials, runs, cells, spec, reference or (meta.get("analysis") or {}).get("reference"),
                                        _artefacts(flags, spec.target))
        return cls(spec, trials, best, speedups, ref)

    def tables(self) -> dict[str, pd.DataFrame]:
        return dict(zip(TABLES, (self.trials, self.best, self.speedups)))

    def figure_jobs(self, save) -> list:
        if self.spec is None or not len(self.trials):
            return []
        return [("tuned_curves", lambda p: (tuning_figure(self.trials, self.best, self.spec, p, save), ""))]

    def pair_how(self, how: str) -> str:
        """How the report's pairwise comparisons were chosen, and in a tuned sweep what they are not:
        they pair the points the searches happened to try at the same nominal settings (tuning and
        fresh seeds alike, on escape time), so they are not the sweep's verdict."""
        if self.spec is None:
            return how
        return (f"{how}; in this tuned sweep they pair the cells the searches tried at equal nominal settings (any "
                "lr both variants tried, tuning and fresh seeds alike) on escape time: not the sweep's verdict, "
                "which is the tuned comparison (each variant at its own tuned point, fresh seeds only)")

    def sections(self) -> list[tuple[str, list[str], str]]:
        if self.spec is None:
            return []
        what = DURATION_TITLES[self.spec.target].lower()
        return [(f"Tuned comparison: {what}, each variant at its own tuned setting", verdicts(self),
                 f"Each variant was tuned for the {STATISTIC_TITLES[self.spec.statistic]} of the {what} "
                 f"({self.spec.trials} points per variant and setting, coarse-to-fine over "
                 + ", ".join(f"{a.key} {a.low:g} to {a.high:g} ({'log' if a.log else 'linear'})" for a in self.spec.axes)
                 + "), then re-run at its best point and that point's neighbours on a disjoint base seed; the "
                 "verdict uses only those fresh runs. Intervals are 95% percentile bootstraps that redo the "
                 "selection (analysis/tuned.py says how); `fixed_lo`/`fixed_hi` hold the chosen points fixed.\n\n"
                 "Speed-ups over the reference (above 1: the variant is faster):\n\n"
                 + markdown_table(self.speedups, full_table="tuned_speedups.csv")
                 + "\nThe choices and their fresh-seed times (`reselected`: the share of bootstrap replicates that "
                 "choose the same point; `predicted`: the theory's median escape time for the fresh cell):\n\n"
                 + markdown_table(self.best, full_table="tuned_best.csv")
                 + "\nEvery point tried is in `tuned_trials.csv` (the tuning curves: figure `tuned_curves`).\n")]


def _runs(rows: pd.DataFrame, target: str, ids: set) -> dict[str, tuple]:
    """cell_id -> (times, reached, budget), runs in seed order (the order the bootstrap pairs)."""
    part = rows[rows["cell_id"].astype(str).isin(ids)].sort_values(["cell_id", "seed"])
    out = {}
    for cell, own in part.groupby(part["cell_id"].astype(str), sort=False):
        budget = float(own["budget"].iloc[0])
        out[cell] = (*target_times(own, target, budget), budget)
    return out


def _trials(table: pd.DataFrame, runs: dict, spec: TuneSpec) -> pd.DataFrame:
    """tuning.parquet with each cell's score recomputed from its rows, the fraction reaching the
    target and whether its statistic is defined."""
    out = table.copy()
    values = [scores(runs[c][0][None], runs[c][1][None], runs[c][2], spec.statistic)[0] for c in out["cell_id"]]
    out["statistic"] = values
    out["reached"] = [runs[c][1].mean() for c in out["cell_id"]]
    out["runs"] = [len(runs[c][0]) for c in out["cell_id"]]
    out["defined"] = [v <= runs[c][2] for v, c in zip(values, out["cell_id"])]
    out["budget"] = [runs[c][2] for c in out["cell_id"]]
    return out


def _point(part: pd.DataFrame, keys: list[str]) -> list[tuple]:
    return [tuple(r) for r in part[keys].itertuples(index=False)]


def _text(point: tuple, keys: list[str]) -> str:
    return ", ".join(f"{k.split('.', 1)[1]}={v:g}" for k, v in zip(keys, point))


def _artefacts(flags: pd.DataFrame | None, target: str) -> dict[str, str]:
    """cell_id -> why its `target` time is an artefact of the set-up (the escape flags for escape,
    the SOSP flags for sosp; none concern the time to f - f_min)."""
    if flags is None or not len(flags):
        return {}
    own = flags[(flags["severity"] == ARTEFACT) & (flags["affects"] == target)]
    return {cell: "; ".join(f"{r.flag}: {r.why}" for r in part.itertuples(index=False))
            for cell, part in own.groupby("cell_id", sort=False)}


def _verdicts(trials, runs, cells, spec: TuneSpec, reference, artefacts=None) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    keys = spec.keys
    rng = np.random.default_rng(SEED)
    best_rows, draws = [], {}
    for setting, in_setting in trials.groupby("setting", sort=False):
        tune_cells = in_setting[in_setting["role"] == "tune"]
        fresh_cells = in_setting[in_setting["role"] == "fresh"]
        if not len(fresh_cells):
            continue
        n_tune = len(runs[tune_cells["cell_id"].iloc[0]][0])
        n_fresh = len(runs[fresh_cells["cell_id"].iloc[0]][0])
        pick_tune = rng.integers(0, n_tune, (BOOTSTRAP, n_tune))
        pick_fresh = rng.integers(0, n_fresh, (BOOTSTRAP, n_fresh))
        for group, part in in_setting.groupby("group", sort=True):
            row, drawn = _group(part, runs, cells, spec, pick_tune, pick_fresh, artefacts or {})
            if row is not None:
                best_rows.append({"setting": setting, **row})
                draws[(setting, row["variant"])] = drawn
    best = pd.DataFrame(best_rows)
    if not len(best):
        return best, pd.DataFrame(), None
    reference = _reference(best["variant"].unique(), reference)
    speedups = []
    for setting, part in best.groupby("setting", sort=False):
        ref = part[part["variant"] == reference]
        if not len(ref):
            continue
        ref = ref.iloc[0]
        for _, r in part[part["variant"] != reference].iterrows():
            speedups.append(_speedup(setting, r, ref, draws[(setting, r["variant"])], draws[(setting, reference)], keys))
    return best, pd.DataFrame(speedups), reference


def _reference(variants, asked) -> str:
    """The asked variant (label or optimizer name), else sgd's, else the first in order."""
    variants = list(variants)
    for wanted in ([asked] if isinstance(asked, str) else list(asked or [])) + ["sgd"]:
        found = [v for v in variants if v == wanted or split_label(v)[0] == wanted]
        if found:
            return found[0]
    return min(variants)


def _group(part, runs, cells, spec, pick_tune, pick_fresh, artefacts: dict) -> tuple[dict | None, dict]:
    """The group's choice and fresh verdict, and its bootstrap draws {stat, fixed, censored}."""
    keys = spec.keys
    tuned = part[part["role"] == "tune"].sort_values(keys)         # ascending: ties go to the smallest point
    fresh = part[part["role"] == "fresh"]
    chosen = part[(part["role"] == "tune") & part["best"]]
    if not len(fresh) or not len(chosen):
        return None, {}
    best_point = _point(chosen, keys)[0]
    points, fresh_points = _point(tuned, keys), _point(fresh, keys)
    fresh_of = dict(zip(fresh_points, fresh["cell_id"]))
    budget = float(fresh["budget"].iloc[0])
    # The tuning scores of every replicate: [points, B], each point's runs resampled alike.
    replicate = lambda cell, pick: scores(runs[cell][0][pick], runs[cell][1][pick], runs[cell][2], spec.statistic)
    tuning = np.stack([replicate(c, pick_tune) for c in tuned["cell_id"]])
    candidates = np.array([i for i, p in enumerate(points) if p in fresh_of])
    anywhere = tuning.argmin(axis=0)
    chosen_index = candidates[tuning[candidates].argmin(axis=0)]
    fresh_values = {p: replicate(fresh_of[p], pick_fresh) for p in fresh_points}
    selected = np.array([fresh_values[points[i]][b] for b, i in enumerate(chosen_index)])
    fixed = fresh_values[best_point]
    times, reached, _ = runs[fresh_of[best_point]]
    value = float(scores(times[None], reached[None], budget, spec.statistic)[0])
    lo, hi = np.percentile(np.minimum(selected, budget), [2.5, 97.5])
    cell = cells.loc[fresh_of[best_point]] if fresh_of[best_point] in cells.index else None
    predicted = cell.get("predicted_median", np.nan) if cell is not None and spec.target == "escape" else np.nan
    row = {"variant": part["variant"].iloc[0], **{k: v for k, v in zip(keys, best_point)},
           "at_edge": chosen["at_edge"].iloc[0] or "", "trials": len(tuned),
           "tuning_statistic": float(chosen["statistic"].iloc[0]), "fresh_runs": len(times),
           "fresh_statistic": value if value <= budget else np.nan, "fresh_lo": lo, "fresh_hi": hi,
           "fresh_reached": float(reached.mean()),
           "reselected": float(np.mean(chosen_index == points.index(best_point))),
           "outside": float(np.mean(~np.isin(anywhere, candidates))),
           "predicted": predicted,
           # the chosen cell's time measures the set-up (a first step that reaches r), not the target
           "artefact": artefacts.get(fresh_of[best_point]) or artefacts.get(chosen["cell_id"].iloc[0], ""),
           "theory_note": "" if spec.target == "escape" else "the theory predicts escape times only"}
    if spec.target == "escape" and cell is not None and not np.isfinite(predicted):
        row["theory_note"] = str(cell.get("theory_note", "") or "no prediction")
    drawn = {"stat": np.minimum(selected, budget), "fixed": np.minimum(fixed, budget),
             "censored": selected > budget, "value": min(value, budget), "undefined": value > budget,
             "point": best_point}
    return row, drawn


def _speedup(setting: str, variant, reference, drawn: dict, ref_drawn: dict, keys: list[str]) -> dict:
    ratio = ref_drawn["stat"] / drawn["stat"]
    fixed = ref_drawn["fixed"] / drawn["fixed"]
    lo, hi = np.percentile(ratio, [2.5, 97.5])
    fixed_lo, fixed_hi = np.percentile(fixed, [2.5, 97.5])
    predicted = reference["predicted"] / variant["predicted"] if np.isfinite(variant["predicted"]) and \
        np.isfinite(reference["predicted"]) else np.nan
    bound = (">=" if ref_drawn["undefined"] and not drawn["undefined"] else
             "<=" if drawn["undefined"] and not ref_drawn["undefined"] else "?" if drawn["undefined"] else "")
    return {"setting": setting, "variant": variant["variant"], "reference": reference["variant"],
            "variant_at": _text(drawn["point"], keys), "reference_at": _text(ref_drawn["point"], keys),
            "speedup": ref_drawn["value"] / drawn["value"], "lo": lo, "hi": hi, "fixed_lo": fixed_lo,
            "fixed_hi": fixed_hi, "bound": bound,
            "artefact": ", ".join(side for side, r in (("variant", variant), ("reference", reference)) if r["artefact"]),
            # a side whose best lies at its range's edge may be faster beyond it: the reference's makes the
            # speed-up an upper bound on the tuned one, the variant's a lower bound, both: neither
            "edge": _edge_bound(variant["at_edge"], reference["at_edge"]),
            "censored_share": float(np.mean(drawn["censored"] | ref_drawn["censored"])),
            "predicted_speedup": predicted}


def _edge_bound(variant_edge: str, reference_edge: str) -> str:
    if variant_edge and reference_edge:
        return "both at their range's edge: no bound"
    if reference_edge:
        return "reference at its range's edge: an upper bound"
    return "variant at its range's edge: a lower bound" if variant_edge else ""


def verdicts(t: Tuned) -> list[str]:
    """One sentence per setting (the speed-ups with their chosen points), then one per choice at the
    edge of its range, then the bootstrap's caveat where re-selection left the fresh points."""
    if not len(t.best):
        return ["No group finished its search and fresh-seed cells: nothing to compare yet."]
    unit = STATISTIC_TITLES[t.spec.statistic]
    out = []
    for setting, part in t.best.groupby("setting", sort=False):
        chosen = "; ".join(
            f"{r['variant']} {_time(r)} at {_text(tuple(r[k] for k in t.spec.keys), t.spec.keys)}"
            for _, r in part.iterrows())
        ratios = t.speedups[t.speedups["setting"] == setting] if len(t.speedups) else pd.DataFrame()
        against = "; ".join(f"{r.variant} {r.bound + ' ' if r.bound else ''}{r.speedup:.3g}x [{r.lo:.3g}, {r.hi:.3g}]"
                            + (f" (theory {r.predicted_speedup:.3g})" if np.isfinite(r.predicted_speedup) else "")
                            + (f" (**{r.edge}**)" if r.edge else "")
                            for r in ratios.itertuples(index=False))
        where = f"{setting}: " if setting else ""
        out.append(f"{where}{unit} steps on the fresh seeds, each at its tuned point: {chosen}"
                   + (f". Speed-up over {t.reference} (selection included): {against}" if against else "") + ".")
    for _, r in t.best[t.best["artefact"] != ""].iterrows():
        out.append(f"**Measures the set-up, not the saddle:** {r['variant']}" + (f" ({r['setting']})" if r["setting"] else "")
                   + f" chose {_text(tuple(r[k] for k in t.spec.keys), t.spec.keys)}, a cell whose time is an "
                   f"artefact ({r['artefact']}): its time and speed-ups measure the first step, not the saddle.")
    few = t.best[t.best["fresh_statistic"] <= FEW_STEPS]
    if len(few):
        out.append(f"**One step is the resolution:** in {len(few)} of {len(t.best)} choices the fresh-seed "
                   f"{unit} is at most {FEW_STEPS} steps ("
                   + "; ".join(f"{r['variant']}" + (f" ({r['setting']})" if r['setting'] else "")
                               + f" {r['fresh_statistic']:g}" for _, r in few.iterrows())
                   + "): their speed-ups are ratios of small whole numbers, and each such choice is the step size "
                   "at which the first few steps already reach the target.")
    for r in t.best[t.best["at_edge"] != ""].itertuples(index=False):
        out.append(f"**At the edge of its range:** {r.variant}" + (f" ({r.setting})" if r.setting else "")
                   + f" chose {r.at_edge} at an end of the range searched; a better setting may lie beyond it.")
    wide = t.best[t.best["outside"] > 0.05]
    if len(wide):
        out.append(f"In {len(wide)} of {len(t.best)} choices more than 5% of the bootstrap's re-selections fell on a "
                   "tuning point without fresh runs (`outside`): their intervals understate the selection's spread.")
    return out


def _time(r) -> str:
    if not np.isfinite(r["fresh_statistic"]):
        return f"> {r['fresh_lo']:.4g} (fewer than half reached the target)"
    return f"{r['fresh_statistic']:.4g} [{r['fresh_lo']:.4g}, {r['fresh_hi']:.4g}]"


def tuning_figure(trials: pd.DataFrame, best: pd.DataFrame, spec: TuneSpec, path, save):
    """The tuning curve of every variant, one panel per setting: the statistic of each point tried
    against the first tuned key (on the tuning seed), censored points (fewer than half reached the
    target) drawn open at the budget; the chosen point ringed, its fresh-seed statistic with its
    interval (selection included) beside it."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    key, axis = spec.keys[0], spec.axes[0]
    settings = list(dict.fromkeys(trials["setting"]))
    columns = min(3, len(settings))
    rows_ = -(-len(settings) // columns)
    fig = Figure(figsize=(5.0 * columns + 1.8, 3.9 * rows_), layout="constrained")
    axes = fig.subplots(rows_, columns, squeeze=False).ravel()
    colors = palette(trials["variant"].unique())
    for ax, setting in zip(axes, settings):
        part = trials[(trials["setting"] == setting) & (trials["role"] == "tune")]
        for variant, own in part.groupby("variant", sort=True):
            own = _on_best_line(own, spec)
            color = colors[variant]
            done, censored = own[own["defined"]], own[~own["defined"]]
            chosen = best[(best["setting"] == setting) & (best["variant"] == variant)]
            edge = " (best at the range's edge)" if len(chosen) and chosen["at_edge"].iloc[0] else ""
            ax.plot(own[key], np.minimum(own["statistic"], own["budget"]), "-", color=color, alpha=0.5, lw=1)
            ax.plot(done[key], done["statistic"], "o", color=color, ms=4, label=variant + edge)
            ax.plot(censored[key], censored["budget"], "v", mfc="none", color=color, ms=6)
            if len(chosen):
                c = chosen.iloc[0]
                ax.plot([c[key]], [min(c["tuning_statistic"], own["budget"].max())], "o", mfc="none", mec=color,
                        ms=11, mew=1.5)
                y = c["fresh_statistic"] if np.isfinite(c["fresh_statistic"]) else c["fresh_lo"]
                ax.errorbar([c[key] * (1.12 if axis.log else 1.0)], [y], yerr=[[max(y - c["fresh_lo"], 0)],
                            [max(c["fresh_hi"] - y, 0)]], fmt="D", color=color, ms=5, capsize=3)
        ax.set(xscale="log" if axis.log else "linear", yscale="log", xlabel=key,
               ylabel=f"{STATISTIC_TITLES[spec.statistic]} steps")
        # A setting names up to several parameters: wrapped to the panel's width, not run into the next.
        ax.set_title("\n".join(textwrap.wrap(setting or "", 60)), fontsize=9)
        ax.axvspan(axis.low, axis.high, color="#f4f4f4", zorder=-1)
        marks = [Line2D([], [], ls="", marker="v", mfc="none", color="#555555", label="fewer than half reached"),
                 Line2D([], [], ls="", marker="o", mfc="none", mec="#555555", ms=9, label="chosen (tuning seed)"),
                 Line2D([], [], ls="", marker="D", color="#555555", ms=5, label="chosen, fresh seed [95%]")]
        ax.legend(handles=[*ax.get_legend_handles_labels()[0], *marks], fontsize=7, loc="best")
    for ax in axes[len(settings):]:
        ax.set_visible(False)
    what = DURATION_TITLES[spec.target]
    fig.suptitle(f"Tuning curves: {what.lower()} against {key} (tuning seed)")
    caption = (f"{what} ({STATISTIC_TITLES[spec.statistic]}, tuning seed) of every point the search tried, "
               f"against {key}; open triangles at the budget: fewer than half the runs reached the target "
               "(censored, ranked last); rings: the chosen points; diamonds with bars, just right of them: the "
               "chosen point's statistic on the fresh seed with its 95% interval (selection included). "
               "The shaded band is the range searched.")
    return save(fig, path, caption)


def _on_best_line(own: pd.DataFrame, spec: TuneSpec) -> pd.DataFrame:
    """The points along the first tuned key, the other keys at the best point's values."""
    own = own.sort_values(spec.keys[0])
    if len(spec.keys) == 1 or not own["best"].any():
        return own
    best = own[own["best"]].iloc[0]
    keep = np.logical_and.reduce([own[k] == best[k] for k in spec.keys[1:]])
    return own[keep]
