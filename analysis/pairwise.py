"""Is A faster than B? Pairwise comparisons of optimizer variants on the same problem and settings.

Which pairs: the sweep may name a reference (`analysis: {reference: rmsprop}` in sweeps.yaml,
stored in meta.json; an optimizer name matches all its variants, a label one variant, a list
several); without one, every pair where there are at most FEW_VARIANTS variants, else every
variant against sgd (or, without sgd, the first variant in sorted order). `choose_pairs` says which.

Same settings: two cells are compared when they agree on every varied parameter that both
have (problem, its parameters, the run settings, and the hyperparameters both optimizers take:
lr, and beta2 where both have one); a parameter only one side takes (adam's beta2 against sgd)
is listed with the row, not matched.

Per pair of cells:
- speed-up = τ_B / τ_A, the ratio of Kaplan–Meier medians (A is `variant`, B is `reference`: above 1,
  A escapes sooner);
- its 95% interval by the bootstrap over runs: each cell's runs are resampled BOOTSTRAP times
  (independently; seeded by the cell id, so reruns agree), the KM median recomputed, and the
  interval is the 2.5% and 97.5% quantiles of the resampled ratios. Where no run of a cell is
  censored its resampled median is drawn exactly as the ⌈n/2⌉-th order statistic of n uniforms
  (a Beta(k, n−k+1) quantile of the sorted times); otherwise the resample's KM median is computed;
- the log-rank test of equal escape-time distributions (scipy.stats.logrank, the same statistic
  and p-value as lifelines.statistics.logrank_test, about 20× faster: tests check they agree),
  with Benjamini–Hochberg q-values over all the report's comparisons (scipy.stats.false_discovery_control);
- where a side's median is undefined (censored past half) the speed-up is a bound (`bound` is
  ">=" or "<=", "?" when both are), computed with that side's last observed step.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from scipy import stats

from .palette import split_label

BOOTSTRAP = 400
FEW_VARIANTS = 3
ALPHA = 0.05
MAX_COMPARISONS = 5000          # past this many rows, the report says how many were left out


def _matches(reference: str, label: str) -> bool:
    return label == reference or split_label(label)[0] == reference


def check_reference(reference, variants) -> None:
    """ValueError, in one line, where a reference asked for (`analyze(..., reference=...)`,
    `saddlescape analyze --reference`) matches no variant of the results."""
    variants = sorted(set(map(str, variants)))
    for wanted in reference if isinstance(reference, (list, tuple)) else [reference]:
        if not isinstance(wanted, str) or not any(_matches(wanted, v) for v in variants):
            raise ValueError(f"reference {wanted!r} matches no optimizer variant of these results; allowed: an "
                             f"optimizer name (all its variants) or a variant label among {', '.join(variants)}")


SWEEPS_REFERENCE = "the sweep's reference"
ASKED_REFERENCE = "the reference asked for"


def choose_pairs(variants, reference=None, origin: str = SWEEPS_REFERENCE) -> tuple[list[tuple[str, str]], str,
                                                                                    list[str]]:
    """([(variant, reference)], a sentence saying how they were chosen, notes). `origin`: where the
    reference came from, SWEEPS_REFERENCE (meta.json) or ASKED_REFERENCE (analyze's argument)."""
    variants = sorted(set(map(str, variants)), key=lambda v: (split_label(v)[0] != "sgd", v))
    notes = []
    if reference is not None:
        wanted = list(reference) if isinstance(reference, (list, tuple)) else [reference]
        references = [v for v in variants if any(_matches(r, v) for r in wanted)]
        unknown = [r for r in wanted if not any(_matches(r, v) for v in variants)]
        if unknown:
            notes.append(f"analysis.reference {', '.join(map(repr, unknown))} matches no variant of this sweep "
                         f"(variants: {', '.join(variants)})")
        if references:
            pairs = [(v, r) for r in references for v in variants if v != r
                     and not (v in references and references.index(v) < references.index(r))]
            where = "from `analysis.reference`" if origin == SWEEPS_REFERENCE else "`--reference` / `reference=`"
            return pairs, f"against {origin} ({', '.join(references)}, {where})", notes
    if len(variants) < 2:
        return [], "only one optimizer variant: nothing to compare", notes
    if len(variants) <= FEW_VARIANTS:
        pairs = [(b, a) for i, a in enumerate(variants) for b in variants[i + 1:]]
        return pairs, f"every pair of the {len(variants)} variants (no `analysis.reference` in the sweep)", notes
    sgd = [v for v in variants if split_label(v)[0] == "sgd"]
    base = sgd or variants[:1]
    pairs = [(v, r) for r in base for v in variants if v not in base]
    why = "sgd" if sgd else f"the first variant in sorted order, {base[0]}"
    return pairs, (f"every variant against {', '.join(base)} ({why}; {len(variants)} variants are too many for every "
                   "pair, and the sweep names no `analysis.reference`)"), notes


def _seed(cell_id) -> int:
    return int(hashlib.md5(str(cell_id).encode()).hexdigest()[:8], 16)


def bootstrap_medians(duration: np.ndarray, event: np.ndarray, size: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """KM medians of `size` bootstrap resamples of one cell's runs (inf where a resample's survival
    stays above ½)."""
    rng = np.random.default_rng(seed)
    duration, event = np.asarray(duration, float), np.asarray(event, bool)
    n = len(duration)
    if event.all():
        # The k-th smallest of n draws from the sorted times is x_(⌈n U_(k)⌉), U_(k) ~ Beta(k, n − k + 1);
        # the KM median without censoring is the k = ⌈n/2⌉-th smallest.
        k = int(np.ceil(n / 2))
        u = rng.beta(k, n - k + 1, size)
        return np.sort(duration)[np.clip(np.ceil(n * u).astype(int) - 1, 0, n - 1)]
    order = np.lexsort((~event, duration))            # events before censorings at a tied time
    d, e = duration[order], event[order]
    # In blocks: bounded memory at large n. Sorted indices into the sorted runs are sorted resamples.
    return np.concatenate([km_medians(d, e, np.sort(rng.integers(0, n, size=(min(100, size - start), n)), axis=1))
                           for start in range(0, size, 100)])


def km_medians(duration: np.ndarray, event: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The Kaplan–Meier median of each row of `index` [B, n], a sample of positions into runs sorted by
    duration (events before censorings at a tie), each row itself sorted: the first time at which
    S = Π (1 − d_j/n_j) drops to ½ or below, inf where it never does. Taken one run at a time the
    product's factors are (1 − e_j/(n − j)); over a tied time they telescope to KM's (1 − d/n)."""
    e = event[index].astype(float)
    n = index.shape[1]
    with np.errstate(divide="ignore"):              # the last run an event: S = 0, log S = -inf
        log_s = np.cumsum(np.log1p(-e / (n - np.arange(n))), axis=1)
    below = log_s <= np.log(0.5) + 1e-12
    return np.where(below.any(axis=1), duration[index][np.arange(len(index)), below.argmax(axis=1)], np.inf)


def _ratio_interval(reference: np.ndarray, variant: np.ndarray) -> tuple[float, float]:
    with np.errstate(all="ignore"):
        ratio = reference / variant
    if np.isnan(ratio).mean() > ALPHA / 2:
        return np.nan, np.nan
    ratio = ratio[~np.isnan(ratio)]
    lo, hi = np.quantile(ratio, [ALPHA / 2, 1 - ALPHA / 2], method="inverted_cdf")
    return float(lo), float(hi)


def setting_columns(cells: pd.DataFrame, varied: list[str], variant_columns: list[str]) -> list[str]:
    """The varied parameters two cells must agree on to be compared (all but the variant's identity)."""
    return [c for c in varied if c not in variant_columns and c != "optimizer.name"]


def compare_pairs(rows: pd.DataFrame, cells: pd.DataFrame, pairs, settings: list[str],
                  artefacts: set = frozenset(), own_settings: dict | None = None) -> pd.DataFrame:
    """One row per matched pair of cells; see the module docstring for every column. `own_settings`:
    {variant label: 'lr=0.01'}, each side's parameters set per variant (analysis.design.variant_settings)."""
    own_settings = own_settings or {}
    out = []
    duration = rows.groupby("cell_id", observed=True, sort=False).indices
    steps, escaped = rows["escape_step"].to_numpy(float), rows["escaped"].to_numpy(bool)
    boot = {}

    def medians(cell):
        if cell not in boot:
            at = duration[cell]
            boot[cell] = bootstrap_medians(steps[at], escaped[at], seed=_seed(cell))
        return boot[cell]

    for variant, reference in pairs:
        a, b = cells[cells["optimizer"] == variant], cells[cells["optimizer"] == reference]
        # Matched on every setting both sides have somewhere; a missing value matches a missing one
        # (pandas merges NaN keys with each other): staib_toy cells have no anisotropy on either side.
        key = [c for c in settings if a[c].notna().any() and b[c].notna().any()] if len(a) and len(b) else []
        own = [c for c in settings if c not in key and (a[c].notna().any() or b[c].notna().any())]
        left, right = (f.reset_index(drop=True).assign(**{c: f[c].astype(object).to_numpy() for c in key})
                       for f in (a, b))
        if key:
            matched = left.merge(right, on=key, suffixes=("_a", "_b"))
        else:
            matched = left.merge(right, how="cross", suffixes=("_a", "_b"))
        for _, pair in matched.iterrows():
            cell_a, cell_b = pair["cell_id_a"], pair["cell_id_b"]
            at_a, at_b = duration[cell_a], duration[cell_b]
            tau_a, tau_b = pair["escape_median_a"], pair["escape_median_b"]
            last_a, last_b = steps[at_a].max(), steps[at_b].max()
            bound = "?" if np.isinf(tau_a) and np.isinf(tau_b) else ">=" if np.isinf(tau_b) else \
                "<=" if np.isinf(tau_a) else "="
            speedup = (last_b if np.isinf(tau_b) else tau_b) / (last_a if np.isinf(tau_a) else tau_a)
            lo, hi = _ratio_interval(medians(cell_b), medians(cell_a)) if bound == "=" else (np.nan, np.nan)
            with np.errstate(all="ignore"):          # no event on either side: no test (NaN)
                test = stats.logrank(_censored(steps[at_a], escaped[at_a]), _censored(steps[at_b], escaped[at_b]))
            record = {"problem": pair.get("problem_a", pair.get("problem")), "variant": variant, "reference": reference}
            record.update({c: pair[c] for c in key})
            for c in own:
                record[c] = _own_value(pair, c)
            record.update({
                "variant_median": tau_a, "reference_median": tau_b, "speedup": speedup, "speedup_lo": lo,
                "speedup_hi": hi, "bound": bound, "logrank_p": float(test.pvalue),
                "predicted_speedup": pair.get("predicted_median_b", np.nan) / pair.get("predicted_median_a", np.nan)
                if "predicted_median_a" in pair else np.nan,
                "variant_runs": len(at_a), "reference_runs": len(at_b),
                "variant_settings": own_settings.get(variant, ""), "reference_settings": own_settings.get(reference, ""),
                "flag": "artefact" if cell_a in artefacts or cell_b in artefacts else "",
                "variant_cell": cell_a, "reference_cell": cell_b})
            out.append(record)
            if len(out) >= MAX_COMPARISONS:
                break
    table = pd.DataFrame(out)
    if table.empty:
        return table
    # A test without events on either side has no p-value; it takes no part in the correction.
    tested = table["logrank_p"].notna()
    table["logrank_q"] = np.nan
    if tested.any():
        table.loc[tested, "logrank_q"] = stats.false_discovery_control(table.loc[tested, "logrank_p"].clip(1e-300, 1))
    table["finding"] = [_finding(r) for r in table.itertuples(index=False)]
    return table


def _own_value(pair, column):
    a, b = pair.get(column + "_a", np.nan), pair.get(column + "_b", np.nan)
    return a if pd.notna(a) else b


def _censored(duration, event) -> stats.CensoredData:
    return stats.CensoredData(uncensored=duration[event], right=duration[~event])


# The findings of a speed-up the tests stand behind (what a figure may colour).
SIGNIFICANT = ("faster", "slower", "faster (reference censored past half)", "slower (variant censored past half)")


def _finding(row) -> str:
    if row.flag:
        return "artefact (see Sanity flags)"
    if not np.isfinite(row.logrank_q):
        return "no test (no run escaped on either side)"
    different = row.logrank_q < ALPHA
    if row.bound == "=" and np.isfinite(row.speedup_lo):
        if row.speedup_lo > 1 and different:
            return "faster"
        if row.speedup_hi < 1 and different:
            return "slower"
        if different:
            return "distributions differ; medians within error"
        return "no difference detected"
    if not different:
        return "no difference detected"
    if row.bound == ">=":
        return "faster (reference censored past half)"
    if row.bound == "<=":
        return "slower (variant censored past half)"
    return "distributions differ (both censored past half)"


__all__ = ["ALPHA", "BOOTSTRAP", "FEW_VARIANTS", "SIGNIFICANT", "bootstrap_medians", "check_reference",
           "choose_pairs", "compare_pairs", "km_medians",
           "setting_columns"]
