"""The numbers quoted in docs/study/README.md, question by question, from the study's results.

    .venv/bin/python docs/study/answers.py > docs/study/answers.md

Reads results/study/<sweep>/ (rows.parquet, and the tables `saddlescape analyze` writes under
analysis/: cells.csv, exponents.csv, tracking*.csv, matched_*.csv); computes nothing the sweeps
did not measure, except the closed forms of analysis.theory where a question compares against
them. Every question first says what it tests; statistics are compared like with like (a
Kaplan-Meier median with a predicted median, a mean only where every run escaped, so that it is
a mean), and cells where the measured statistic is censored are counted apart, never as agreeing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from analysis.lag_cells import lag_case, setting  # noqa: E402
from analysis.theory import (lambda_prime, noise_preconditioner_escape_time, sgd_escape_median,  # noqa: E402
                             sign_regime_escape_time)

RESULTS = ROOT / "results" / "study"


def quadratic_lag_median(cell: pd.Series, curvature: float, sigma: float, radius: float) -> float:
    """The lag model's median for a quadratic saddle with this cell's γ, σ₁, r and optimizer (escape
    along the escape direction): what the quadratic theory would say about a data problem."""
    quadratic = cell.copy()
    quadratic["problem.name"], quadratic["problem.escape_measure"] = "quadratic_saddle", "projection"
    for key in ("problem.n_negative", "problem.rotate_hessian", "problem.noise_model", "problem.noise_dist",
                "problem.quartic", "start_offset"):
        quadratic[key] = np.nan
    quadratic["curvature"], quadratic["sigma_escape"], quadratic["escape_radius"] = curvature, sigma, radius
    case, _ = setting(quadratic)
    law = lag_case(case)[0] if case is not None else None
    return law.median if law is not None else np.nan


def cells(sweep: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / sweep / "analysis" / "cells.csv")


def table(sweep: str, name: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / sweep / "analysis" / name)


def rows(sweep: str, columns: list[str]) -> pd.DataFrame:
    return pd.read_parquet(RESULTS / sweep / "rows.parquet", columns=columns)


def show(frame: pd.DataFrame, digits: int = 3) -> str:
    def fmt(v):
        if isinstance(v, (bool, np.bool_)):
            return str(v)
        return f"{v:.{digits}g}" if isinstance(v, (float, np.floating)) else str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def tests(text: str):
    print(f"*What this tests:* {text}\n")


def measured_vs_predicted(c: pd.DataFrame) -> pd.DataFrame:
    """Like with like: the mean against the predicted mean where every run escaped, the KM median
    against the predicted median where some runs were censored but the median was reached, and
    nothing where the median itself is censored (`compared` = 'censored': excluded from counts)."""
    full = c.escape_mean.notna()
    median = ~full & np.isfinite(c.escape_median)            # a censored median is stored as inf
    out = c.assign(
        compared=np.select([full, median], ["mean", "median"], "censored"),
        measured=np.select([full, median], [c.escape_mean, c.escape_median], np.nan),
        predicted=np.select([full, median], [c.predicted_mean, c.predicted_median], np.nan))
    return out.assign(ratio=out.measured / out.predicted)


def interval(row, prefix: str = "escape_time") -> str:
    v, lo, hi = row[prefix], row[f"{prefix}_lo"], row[f"{prefix}_hi"]
    if not np.isfinite(v):
        return f"> {row['budget']:g} (censored)" if "budget" in row else "censored"
    return f"{v:.4g} [{lo:.4g}, {hi:.4g}]"


def median_interval(values: np.ndarray) -> tuple[float, float, float]:
    """The sample median with its distribution-free 95% interval (order statistics, scipy's
    quantile_test)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    ci = stats.quantile_test(values, q=np.median(values), p=0.5).confidence_interval(0.95)
    return float(np.median(values)), float(ci.low), float(ci.high)


# --------------------------------------------------------------------------------------------------

def q1():
    c = measured_vs_predicted(cells("stepsize"))
    sgd = c[c.optimizer == "sgd"].copy()
    sgd["lr*curvature"] = (sgd["optimizer.lr"] * sgd["curvature"]).map(lambda v: float(f"{v:.6g}"))
    print("## Q1. SGD's closed form\n")
    tests("SGD's escape time on quadratic_saddle against the linear-recursion closed form with the "
          "whole-step correction (docs/theory.md §2-3), over lr·γ from 1e-5 to 1; each cell's mean against "
          "the predicted mean where every run escaped, its KM median against the predicted median where "
          "some were censored; cells whose median is censored test nothing and are counted apart.")
    full = sgd[sgd.compared == "mean"]
    x = np.log(full.curvature * full.escape_radius**2 / (full["optimizer.lr"] * full.sigma_escape**2))
    y = full["optimizer.lr"] * full.curvature * full.escape_mean
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(x) - 2) * fit.stderr
    print(f"lr·γ·E[τ] against ln(γr²/(lr·σ₁²)) over {len(full)} fully escaped SGD cells: slope "
          f"{fit.slope:.3f} [{fit.slope - half:.3f}, {fit.slope + half:.3f}] (theory 0.5), intercept "
          f"{fit.intercept:.3f}.\n")
    compared = sgd[sgd.compared != "censored"]
    within = lambda tol: int((abs(compared.ratio - 1) <= tol).sum())  # noqa: E731
    print(f"Cells: {len(sgd)}; compared {len(compared)} ({(sgd.compared == 'mean').sum()} on the mean, "
          f"{(sgd.compared == 'median').sum()} on the median); excluded {int((sgd.compared == 'censored').sum())} "
          f"whose median is censored (lr·γ "
          f"{', '.join(f'{v:g}' for v in sorted(sgd[sgd.compared == 'censored']['lr*curvature'].unique()))}). "
          f"Of the compared: {within(0.01)} within 1%, {within(0.02)} within 2%, {within(0.05)} within 5%; "
          f"measured/predicted {compared.ratio.min():.3f} to {compared.ratio.max():.3f}.\n")
    by = (compared.groupby(["lr*curvature", "compared"]).agg(cells=("ratio", "size"), ratio_min=("ratio", "min"),
                                                              ratio_max=("ratio", "max"),
                                                              escaped=("escaped_fraction", "min")).reset_index())
    print(show(by))
    print()


def q2():
    c = cells("noise_precond")
    pre = c[(c.optimizer == "precond_sgd") & c.escape_mean.notna()]
    X = np.column_stack([np.ones(len(pre)), np.log(pre.sigma_escape), np.log(pre["problem.noise_scale"])])
    y = np.log(pre.escape_mean)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(y) - X.shape[1]
    s2 = float(((y - X @ coef) ** 2).sum() / dof)
    se = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    t = stats.t.ppf(0.975, dof)
    print("## Q2. The ideal preconditioner\n")
    tests("precond_sgd with A = Σ^(-1/2) on quadratic_saddle: the exponent of σ₁ in E[τ] and that of the "
          "other directions' noise (which the ideal preconditioner should not see), by least squares over "
          "the fully escaped cells; each cell's mean against its closed form.")
    print(f"OLS of ln E[τ] on ln σ₁ and ln noise_scale over {len(pre)} fully escaped precond_sgd cells "
          f"(lr 1e-4): exponent of σ₁ {coef[1]:.3f} [{coef[1] - t * se[1]:.3f}, {coef[1] + t * se[1]:.3f}], "
          f"of noise_scale {coef[2]:.3f} [{coef[2] - t * se[2]:.3f}, {coef[2] + t * se[2]:.3f}].\n")
    lam = lambda_prime(pre["optimizer.lr"], pre.curvature, pre.sigma_escape, pre.escape_radius)
    print(f"The closed form's local exponent 1 − 1/Λ′ (docs/theory.md §5) over these cells: "
          f"{(1 - 1 / lam).min():.3f} to {(1 - 1 / lam).max():.3f}.\n")
    pre = pre.assign(ratio=pre.escape_mean / pre.predicted_mean)
    print(f"measured/predicted mean per cell: {pre.ratio.min():.3f} to {pre.ratio.max():.3f}.\n")
    iso = c[c["problem.anisotropy"] == 1].copy()
    iso["escape time [95%]"] = iso.apply(interval, axis=1)
    print("Isotropic noise (anisotropy 1), escape time by optimizer:\n")
    print(show(iso[["problem.noise_scale", "optimizer", "escaped_fraction", "escape_kind", "escape time [95%]",
                    "predicted_mean"]].sort_values(["problem.noise_scale", "optimizer"])))
    print()


def regime_position(c: pd.DataFrame) -> pd.Series:
    """0 in the sign regime (τ = r/lr), 1 at the ideal preconditioner's τ: where between the two
    the measured escape time sits, on a log scale."""
    ideal = noise_preconditioner_escape_time(c["optimizer.lr"], c.curvature, c.sigma_escape, c.escape_radius)
    sign = sign_regime_escape_time(c["optimizer.lr"], c.escape_radius)
    return np.log(c.escape_time / sign) / np.log(ideal / sign)


def predicted_crossing(lr: float, curvature: float, radius: float, floor: float) -> float:
    """u = γr/σ₁ where the ideal preconditioner's time σ₁Λ′/(2ηγ) meets a floor of `floor`·r/η:
    u = Λ′(u)/(2·floor), Λ′ = ln(7.1 γ r²/(η σ₁)) = ln(7.1 r u/η) (fixed point)."""
    u = 5.0
    for _ in range(100):
        u = float(lambda_prime(lr, curvature, curvature * radius / u, radius)) / (2 * floor)
    return u


def q3():
    c = cells("anisotropy")
    adaptive = c[c["optimizer.name"].isin(["rmsprop", "adam"]) & c.escape_time.notna()].copy()
    adaptive["gamma*r/sigma1"] = adaptive.curvature * adaptive.escape_radius / adaptive.sigma_escape
    adaptive["position"] = regime_position(adaptive)
    adaptive["variant"] = adaptive.optimizer              # the analysis's label: "adam (beta1=0.9)"
    print("## Q3. RMSProp and Adam: ideal preconditioner, then the sign regime\n")
    tests("where RMSProp/Adam's escape time leaves the ideal preconditioner's closed form for the sign "
          "regime's r/η, against the crossing of the two curves, γr/σ₁ = Λ′/(2f) with f = 1 (the nominal "
          "floor r/η) and with f the measured floor; and the floor itself. All at equal nominal lr.")
    print("Position between the regimes (1: the ideal preconditioner's escape time, 0: r/lr), median over "
          "lr and noise_scale, by γr/σ₁:\n")
    pivot = adaptive.pivot_table(index="gamma*r/sigma1", columns="variant", values="position", aggfunc="median")
    print(show(pivot.reset_index()))
    print()
    sign = adaptive[adaptive["gamma*r/sigma1"] >= 100]
    floors = (sign.assign(floor=sign.escape_time / sign_regime_escape_time(sign["optimizer.lr"], sign.escape_radius))
              .groupby(["variant", "optimizer.lr"]).floor.agg(["min", "median", "max"]))
    print("The floor: measured/(r/lr) deep in the sign regime (γr/σ₁ ≥ 100):\n")
    print(show(floors.reset_index()))
    print()
    series = []
    for (variant, lr, noise), part in adaptive.groupby(["variant", "optimizer.lr", "problem.noise_scale"]):
        part = part.sort_values("gamma*r/sigma1")
        p, g = part.position.to_numpy(), np.log(part["gamma*r/sigma1"].to_numpy())
        below = np.flatnonzero((p[:-1] >= 0.5) & (p[1:] < 0.5))
        if not len(below):
            continue
        i = below[0]
        measured = np.exp(g[i] + (0.5 - p[i]) * (g[i + 1] - g[i]) / (p[i + 1] - p[i]))
        gamma, r = part.curvature.iloc[0], part.escape_radius.iloc[0]
        floor = floors.loc[(variant, lr), "median"]
        series.append({"variant": variant, "lr": lr, "noise_scale": noise, "measured crossing": measured,
                       "Λ′/2 (floor 1)": predicted_crossing(lr, gamma, r, 1.0), "measured floor": floor,
                       "Λ′/(2·floor)": predicted_crossing(lr, gamma, r, floor)})
    series = pd.DataFrame(series)
    inside = ((series["measured crossing"] >= series["Λ′/2 (floor 1)"])
              & (series["measured crossing"] <= series["Λ′/(2·floor)"]))
    print(f"Where the position crosses ½ (log-interpolated), per (variant, lr, noise_scale) series, against the "
          f"predicted crossings; {int(inside.sum())} of {len(series)} measured crossings lie between the two "
          f"predictions; measured/(Λ′/(2·floor)) {np.min(series['measured crossing'] / series['Λ′/(2·floor)']):.2f} "
          f"to {np.max(series['measured crossing'] / series['Λ′/(2·floor)']):.2f}:\n")
    print(show(series))
    print()
    adam = adaptive[adaptive["optimizer.name"] == "adam"]
    key = ["problem.anisotropy", "problem.noise_scale", "optimizer.lr"]
    pair = adam.pivot_table(index=key, columns="variant", values="escape_time")
    effect = (pair["adam (beta1=0.9)"] / pair["adam (beta1=0)"]).rename("beta1_0.9_over_beta1_0").reset_index()
    effect["gamma*r/sigma1"] = effect["problem.anisotropy"] / effect["problem.noise_scale"]
    print("β1 = 0.9 against β1 = 0 (escape-time ratio), by γr/σ₁ (median over lr):\n")
    print(show(effect.groupby("gamma*r/sigma1")["beta1_0.9_over_beta1_0"].median().reset_index()))
    print()
    sgd = c[c.optimizer == "sgd"].set_index(key)
    matched = sgd.reindex(pd.MultiIndex.from_frame(adaptive[key]))
    speed = adaptive.assign(speedup=matched.escape_time.to_numpy() / adaptive.escape_time.to_numpy(),
                            sgd_censored=matched.escape_time.isna().to_numpy())
    print("Speed-up over SGD **at the same nominal lr** (escape-time ratio), by noise_scale and anisotropy, "
          "median over lr. At the same lr an adaptive step along the escape direction is about lr/σ₁, so this "
          "mixes rescaling the step with whitening the noise (Q10 compares each at its own best lr). "
          f"{int(speed.sgd_censored.sum())} adaptive cells whose SGD partner is censored are left out.\n")
    print(show(speed[~speed.sgd_censored].pivot_table(index=["problem.noise_scale", "problem.anisotropy"],
                                                      columns="variant", values="speedup",
                                                      aggfunc="median").reset_index()))
    print()


def q4():
    c = cells("beta2")
    c["rule"] = np.isclose(c["optimizer.beta2"], 1 - c["optimizer.lr"] ** (2 / 3))
    c["beta2"] = np.where(c.rule, "rule", c["optimizer.beta2"].map(lambda b: f"{b:g}"))
    print("## Q4. β2 at a constant step\n")
    tests("at a *constant* lr the rule β2 = 1 − lr^(2/3) is one fixed β2 (0.99 at lr 1e-3, 0.954 at 1e-2), so "
          "this asks only how that value compares with other fixed values, on escape time and on the "
          "neighbourhood reached (median over runs of the mean gap f − f_min over the last steps), each with "
          "its 95% interval. The paper's rule under a decaying step, what it was derived for, is Q9.")
    gaps = rows("beta2", ["cell_id", "tail_gap_mean"]).groupby("cell_id").tail_gap_mean.apply(
        lambda v: median_interval(v.to_numpy()))
    c["escape time [95%]"] = c.apply(interval, axis=1)
    c["median tail gap [95%]"] = c.cell_id.map(lambda i: "{:.4g} [{:.4g}, {:.4g}]".format(*gaps[i]))
    for measure in ("escape time [95%]", "median tail gap [95%]"):
        pivot = c.pivot_table(index=["optimizer", "problem.anisotropy", "optimizer.lr"], columns="beta2",
                              values=measure, aggfunc="first").fillna("(the rule)")
        print(f"{measure}:\n")
        print(show(pivot.reset_index()))
        print()
    # Can the rule be told apart from its neighbours on the gap? Disjoint 95% intervals only.
    c["gap"], c["gap_lo"], c["gap_hi"] = zip(*c.cell_id.map(gaps))
    verdicts = {"rule lower": 0, "rule higher": 0, "overlap": 0}
    for _, part in c.groupby(["optimizer", "problem.anisotropy", "optimizer.lr"]):
        rule = part[part.rule]
        if rule.empty:
            continue
        rule = rule.iloc[0]
        for _, other in part[~part.rule].iterrows():
            if rule.gap_hi < other.gap_lo:
                verdicts["rule lower"] += 1
            elif rule.gap_lo > other.gap_hi:
                verdicts["rule higher"] += 1
            else:
                verdicts["overlap"] += 1
    print(f"The rule's median tail gap against each fixed β2 in the same cell: lower with disjoint intervals "
          f"{verdicts['rule lower']}, higher with disjoint intervals {verdicts['rule higher']}, intervals "
          f"overlapping {verdicts['overlap']}.\n")
    for lr in sorted(c["optimizer.lr"].unique()):
        print(f"- lr {lr:g}: the rule gives β2 = {1 - lr ** (2 / 3):.4f}")
    print()


def q5():
    c = cells("staib2019")
    print("## Q5. The paper's Figure 1\n")
    tests("the paper's staib_toy set-up (RMSProp against SGD over step sizes): escape time and the loss "
          "afterwards.")
    print(show(c[["optimizer", "optimizer.lr", "escaped_fraction", "escape_kind", "escape_time", "escape_time_lo",
                  "escape_time_hi", "median_tail_loss_mean"]].sort_values(["optimizer", "optimizer.lr"])))
    print()
    figure1 = RESULTS / "staib2019" / "analysis" / "figure1.csv"
    if figure1.exists():
        print(show(pd.read_csv(figure1)))
        print()


def q6():
    c = cells("alignment")
    c["alignment"] = np.where(c["problem.rotate_hessian"].astype(str) == "True", "rotated with H (off-axis)",
                              np.where(c["problem.noise_alignment"] == "rotated", "rotated independently",
                                       "aligned with the axes"))
    c["method"] = c.optimizer                 # the analysis labels variants: "precond_sgd (form=full)"
    key = ["alignment", "problem.anisotropy", "optimizer.lr"]
    sgd = c[c.optimizer == "sgd"].set_index(key)["escape_time"]
    c["speedup"] = sgd.reindex(pd.MultiIndex.from_frame(c[key])).to_numpy() / c.escape_time.to_numpy()
    print("## Q6. Noise alignment\n")
    tests("the speed-up over SGD at the same nominal lr when the noise's eigenbasis is the coordinate axes, "
          "is rotated together with the Hessian, or is rotated independently of it.")
    print("Speed-up over SGD at anisotropy 1000 (by lr):\n")
    pivot = c[c["problem.anisotropy"] == 1000].pivot_table(index=["alignment", "optimizer.lr"], columns="method",
                                                          values="speedup")
    print(show(pivot.reset_index()))
    print()
    print("sigma_escape by alignment at anisotropy 1000 (noise_scale 1):\n")
    print(show(c[c["problem.anisotropy"] == 1000].groupby("alignment").sigma_escape.first().reset_index()))
    print()


def q7():
    c = cells("heavy_tails")
    c["noise"] = np.where(c["problem.noise_dist"] == "gaussian", "gaussian", "t, df " + c["problem.df"].astype(str))
    key = ["optimizer", "problem.anisotropy", "optimizer.lr"]
    gauss = c[c.noise == "gaussian"].set_index(key)["escape_time"]
    c["vs_gaussian"] = c.escape_time.to_numpy() / gauss.reindex(pd.MultiIndex.from_frame(c[key])).to_numpy()
    print("## Q7. Noise beyond the Gaussian\n")
    tests("(a) Student-t noise with df 3 and 5, scaled to the Gaussian's covariance (finite variance: "
          "what a central-limit argument covers); (b) symmetric α-stable noise, α < 2 (infinite variance: "
          "what it does not), against the α-stable closed form; (c) noise whose scale vanishes at the "
          "saddle and grows with the distance from it (no closed form).")
    print("(a) Student-t: escape time relative to Gaussian noise of the same covariance (median over lr):\n")
    print(show(c[c.noise != "gaussian"].pivot_table(index=["noise", "problem.anisotropy"], columns="optimizer",
                                                    values="vs_gaussian", aggfunc="median").reset_index()))
    print()
    sgd = measured_vs_predicted(c[c.optimizer == "sgd"])
    sgd = sgd[sgd.compared != "censored"]
    print("SGD's closed form (measured/predicted, like with like) by noise:\n")
    print(show(sgd.groupby("noise").ratio.agg(["size", "min", "median", "max"]).reset_index()))
    print()
    fits = table("heavy_tails", "exponents.csv")
    if len(fits):
        print(show(fits[["group", "covariate", "exponent", "lo", "hi"]]))
        print()
    try:
        s = measured_vs_predicted(cells("noise_stable"))
    except FileNotFoundError:
        print("(b) noise_stable: results missing\n")
    else:
        gauss = s[s["problem.stable_alpha"] == 2].set_index(["optimizer", "problem.anisotropy"]).escape_time
        s["vs α=2"] = s.escape_time.to_numpy() / gauss.reindex(
            pd.MultiIndex.from_frame(s[["optimizer", "problem.anisotropy"]])).to_numpy()
        s["escape time [95%]"] = s.apply(interval, axis=1)
        print("(b) α-stable noise (α = 2 is the Gaussian of the same scale); measured/predicted compares like "
              "with like (mean or median); no closed form for RMSProp/Adam:\n")
        print(show(s[["optimizer", "problem.anisotropy", "problem.stable_alpha", "escaped_fraction",
                      "escape time [95%]", "vs α=2", "compared", "ratio"]]
                   .sort_values(["optimizer", "problem.anisotropy", "problem.stable_alpha"])))
        print()
    try:
        p = cells("noise_proportional")
    except FileNotFoundError:
        print("(c) noise_proportional: results missing\n")
    else:
        p["escape time [95%]"] = p.apply(interval, axis=1)
        print("(c) Noise proportional to ‖x − x*‖/l (vanishing at the saddle), start offset 0.01 (no closed form):\n")
        print(show(p[["optimizer", "optimizer.lr", "problem.anisotropy", "problem.noise_length", "escaped_fraction",
                      "escape time [95%]"]].sort_values(["problem.noise_length", "problem.anisotropy", "optimizer"])))
        print()


DATA_SWEEPS = ("mf_batch", "pca_gap", "tensor_precond", "phase_batch", "deep_linear_depth", "mlp_offset")


def q8():
    print("## Q8. The data-driven problems\n")
    tests("whether the quadratic closed forms, evaluated at each data problem's measured σ₁ and curvature, "
          "rank the measured SGD-over-adaptive speed-ups (KM median against KM median; predicted medians), "
          "against a naive predictor that knows only the step sizes and σ₁, lr_adaptive/(lr_SGD·σ₁), "
          "and against the noise anisotropy alone. Pairs whose escape times repeat another pair's exactly "
          "(the same runs under two labels) are counted once.")
    out = []
    for sweep in DATA_SWEEPS:
        if not (RESULTS / sweep).exists():
            continue
        c = cells(sweep)
        varying = [k for k in c.columns if k.startswith("problem.") and c[k].nunique(dropna=False) > 1]
        varying += [k for k in ("start_offset",) if c[k].nunique() > 1]
        for config, part in c.groupby(varying or (lambda _: 0), dropna=False):
            sgd = part[part.optimizer == "sgd"]
            if sgd.empty:
                continue
            s = sgd.iloc[0]
            lr_s, gamma, sigma, r = s["optimizer.lr"], s.curvature, s.sigma_escape, s.escape_radius
            values = config if isinstance(config, tuple) else (config,)
            for _, a in part[part["optimizer.name"].isin(["adam", "rmsprop"])].iterrows():
                with np.errstate(all="ignore"):
                    sgd_pred = float(sgd_escape_median(lr_s, gamma, sigma, r)) if sigma > 0 else np.inf
                    ada_pred = quadratic_lag_median(a, gamma, sigma, r) if sigma > 0 else np.nan
                sgd_censored = not np.isfinite(s.escape_median)
                sgd_time = s.budget if sgd_censored else s.escape_median
                out.append({"sweep": sweep, "config": ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(varying, values))
                            if varying else "", "adaptive": a.optimizer,
                            "noise_anisotropy": s.noise_anisotropy, "sigma_escape": sigma,
                            "sgd_median": sgd_time, "sgd_censored": sgd_censored, "sgd_pred": sgd_pred,
                            "adaptive_median": a.escape_median, "adaptive_pred": ada_pred,
                            "speedup": sgd_time / a.escape_median, "speedup_pred": sgd_pred / ada_pred,
                            "naive": a["optimizer.lr"] / (lr_s * sigma) if sigma > 0 else np.nan})
    pairs = pd.DataFrame(out)
    duplicated = pairs.duplicated(["sweep", "config", "sgd_median", "adaptive_median", "speedup_pred"])
    dropped = ", ".join(f"{p.sweep} {p.config} {p.adaptive}" for p in pairs[duplicated].itertuples()) or "none"
    print(f"{len(pairs)} (problem, adaptive) pairs; {int(duplicated.sum())} repeat another pair's numbers exactly "
          f"and are dropped ({dropped}).\n")
    pairs = pairs[~duplicated]
    shown = pairs.assign(speedup=[(">" if cen else "") + f"{v:.3g}" for v, cen in zip(pairs.speedup, pairs.sgd_censored)])
    print(show(shown.drop(columns=["sgd_censored"])))
    print()
    ok = pairs[np.isfinite(pairs.speedup_pred) & np.isfinite(pairs.speedup) & (pairs.speedup_pred > 0)
               & ~pairs.sgd_censored & np.isfinite(pairs.naive)]
    if len(ok) > 2:
        rho_pred = stats.spearmanr(ok.speedup, ok.speedup_pred)
        rho_naive = stats.spearmanr(ok.speedup, ok.naive)
        rho_aniso = stats.spearmanr(ok.speedup, ok.noise_anisotropy)
        ratio = ok.speedup / ok.speedup_pred
        sgd_ratio = ok.drop_duplicates(["sweep", "config"]).pipe(lambda f: f.sgd_median / f.sgd_pred)
        print(f"Over {len(ok)} pairs with noise at the saddle and SGD's median reached: Spearman correlation of the "
              f"measured speed-up with the quadratic prediction {rho_pred.statistic:.2f} (p = {rho_pred.pvalue:.2g}), "
              f"with the naive lr_adaptive/(lr_SGD·σ₁) {rho_naive.statistic:.2f} (p = {rho_naive.pvalue:.2g}), with the "
              f"noise anisotropy {rho_aniso.statistic:.2f} (p = {rho_aniso.pvalue:.2g}). Measured/predicted speed-up: "
              f"median {np.median(ratio):.2f}, range {ratio.min():.2f} to {ratio.max():.2f}. SGD's KM median against "
              f"its predicted median over {len(sgd_ratio)} configurations: {sgd_ratio.min():.2f} to {sgd_ratio.max():.2f} "
              f"(median {np.median(sgd_ratio):.2f}; {int((sgd_ratio < 1).sum())} below 1).\n")
        print(f"Speed-ups where SGD's median is censored are lower bounds (>): "
              f"{', '.join(pairs[pairs.sgd_censored].apply(lambda p: f'{p.sweep} {p.config} {p.adaptive}: >{p.speedup:.3g}', axis=1)) or 'none'}.\n")
    if (RESULTS / "logistic_beta").exists():
        c = cells("logistic_beta")
        c["rule"] = np.isclose(c["optimizer.beta2"], 1 - c["optimizer.lr"] ** (2 / 3))
        c["time to gap 0.1 [95%]"] = c.apply(interval, axis=1)
        print("logistic_beta (constant lr, β2 against the rule's value, digits):\n")
        print(show(c[["optimizer.lr", "optimizer.beta2", "rule", "escaped_fraction", "time to gap 0.1 [95%]",
                      "median_tail_loss_mean"]].sort_values(["optimizer.lr", "optimizer.beta2"])))
        print()


def q9():
    print("## Q9. The β2 rule under a decaying step, and the tracking error\n")
    tests("(a) SGD under step-size schedules against the time-varying recursion's escape time (docs/theory.md "
          "§9); (b) the paper's Experiment 2 on scikit-learn's digits (the offline stand-in for MNIST): RMSProp, "
          "batch 100, η_t = η₁/√t, β2_t = 1 − η_t^(2/3) at every step against fixed β2, by the training loss "
          "and the censored time to f − f_min ≤ 0.1; (c) the β2 minimising the preconditioner's tracking error "
          "‖v − E[g²|x]‖/‖E[g²|x]‖ over the escape phase at each lr, and its power law in lr against the "
          "rule's 1 − β2 = lr^(2/3) (docs/theory.md §10).")
    try:
        s = measured_vs_predicted(cells("lr_schedules"))
    except FileNotFoundError:
        print("(a) lr_schedules: results missing\n")
    else:
        s["escape time [95%]"] = s.apply(interval, axis=1)
        sgd = s[s["optimizer.name"] == "sgd"]
        compared = sgd[sgd.compared != "censored"]
        print(f"(a) SGD under schedules: {len(compared)} of {len(sgd)} cells compared (the rest censored), "
              f"measured/predicted {compared.ratio.min():.3f} to {compared.ratio.max():.3f}:\n")
        print(show(sgd[["optimizer.lr_schedule", "optimizer.lr", "escaped_fraction", "escape time [95%]", "compared",
                        "measured", "predicted", "ratio"]].sort_values(["optimizer.lr_schedule", "optimizer.lr"])))
        print()
        print("Adaptive methods (β2 from the rule at every step) under the same schedules:\n")
        print(show(s[s["optimizer.name"] != "sgd"].pivot_table(index=["optimizer.lr"], columns=["optimizer.name", "optimizer.lr_schedule"],
                                                               values="escape time [95%]", aggfunc="first").T.reset_index()))
        print()
    try:
        e = cells("experiment2")
    except FileNotFoundError:
        print("(b) experiment2: results missing\n")
    else:
        r = rows("experiment2", ["cell_id", "tail_loss_mean", "final_loss"])
        e["beta2"] = np.where(e.get("optimizer.beta2_rule", "none").astype(str) == "paper", "rule",
                              e["optimizer.beta2"].map(lambda b: f"{b:g}"))
        tail = r.groupby("cell_id").tail_loss_mean.apply(lambda v: "{:.4g} [{:.4g}, {:.4g}]".format(*median_interval(v)))
        e["time to f − f_min ≤ 0.1 [95%]"] = e.apply(interval, axis=1)
        e["median loss, last 500 steps [95%]"] = e.cell_id.map(tail)
        print("(b) Experiment 2, RMSProp, η_t = lr/√t, 5000 steps, 8 seeds per cell:\n")
        print(show(e[["optimizer.lr", "beta2", "escaped_fraction", "time to f − f_min ≤ 0.1 [95%]",
                      "median loss, last 500 steps [95%]"]].sort_values(["optimizer.lr", "beta2"])))
        print()
    try:
        best, scaling = table("tracking", "tracking.csv"), table("tracking", "tracking_scaling.csv")
    except FileNotFoundError:
        print("(c) tracking: results missing\n")
    else:
        print("(c) The best 1 − β2 per lr (quadratic_saddle, dim 10, anisotropy 10; `determined`: its bootstrap "
              "interval spans at most a factor 3, used in the fit):\n")
        print(show(best[["optimizer.name", "optimizer.lr", "best_1-beta2", "best_lo", "best_hi", "at_edge",
                         "determined", "min_error", "rule_1-beta2", "error_at_rule"]]))
        print()
        print("The power law 1 − β2* = c·lr^p (95% bootstrap intervals over runs):\n")
        print(show(scaling))
        print()


def q10():
    print("## Q10. Comparisons at matched accuracy\n")
    tests("each optimizer at its own best step size (the smallest KM median among six) for each accuracy ε: "
          "the time to f − f_min ≤ ε on the confined quadratic saddle, and to an (ε, √(ρε))-SOSP there and on "
          "matrix factorization at a non-top saddle; a best step size at an end of the six is flagged.")
    for name, sweep in (("gap", "matched_gap"), ("sosp", "matched_sosp")):
        try:
            t = table(sweep, f"matched_{name}.csv")
        except FileNotFoundError:
            print(f"{sweep}: results missing\n")
            continue
        t["median [95%]"] = ["censored (fewer than half reached ε)" if cen else f"{m:.4g} [{lo:.4g}, {hi:.4g}]"
                             for m, lo, hi, cen in zip(t["median"], t.median_lo, t.median_hi, t.censored)]
        print(f"{sweep}:\n")
        print(show(t[["problem", "epsilon", "optimizer", "best_lr", "best_at_edge", "reached", "median [95%]"]]
                   .sort_values(["problem", "epsilon", "optimizer"], ascending=[True, False, True])))
        print()
        ratios = []
        for (problem, eps), part in t.groupby(["problem", "epsilon"]):
            by = part.set_index("optimizer")
            sgd = by.loc[by.index.str.startswith("sgd")]
            for label in by.index[~by.index.str.startswith("sgd")]:
                if len(sgd) and not sgd.censored.iloc[0] and not by.loc[label, "censored"]:
                    ratios.append({"problem": problem, "epsilon": eps, "adaptive": label,
                                   "SGD / adaptive": sgd["median"].iloc[0] / by.loc[label, "median"],
                                   "intervals disjoint": bool(sgd.median_hi.iloc[0] < by.loc[label, "median_lo"]
                                                              or by.loc[label, "median_hi"] < sgd.median_lo.iloc[0])})
        if ratios:
            print(f"{sweep}, SGD's time over each adaptive method's, each at its best lr:\n")
            print(show(pd.DataFrame(ratios)))
            print()


if __name__ == "__main__":
    for question in (q1, q2, q3, q4, q5, q6, q7, q8, q9, q10):
        try:
            question()
        except FileNotFoundError as e:
            print(f"## {question.__name__}: results missing ({e.filename})\n")
