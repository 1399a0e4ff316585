"""The numbers quoted in docs/study/README.md, question by question, from the study's results.

    .venv/bin/python docs/study/answers.py > docs/study/answers.md

Reads results/study/<sweep>/ (rows.parquet, and analysis/cells.csv and exponents.csv written by
`saddlescape analyze`); computes nothing the sweeps did not measure, except the closed forms of
analysis.theory where a question compares against them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from analysis.theory import ideal_escape_time, sgd_escape_time, sign_regime_escape_time, two_regime_escape  # noqa: E402

RESULTS = ROOT / "results" / "study"


def cells(sweep: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / sweep / "analysis" / "cells.csv")


def exponents(sweep: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / sweep / "analysis" / "exponents.csv")


def show(frame: pd.DataFrame, digits: int = 3) -> str:
    def fmt(v):
        return f"{v:.{digits}g}" if isinstance(v, (float, np.floating)) else str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def headline(c: pd.DataFrame) -> pd.Series:
    """The mean where every run escaped (what the closed forms predict), else the KM median."""
    return c["escape_mean"].where(c["escape_mean"].notna(), c["escape_median"])


def q1():
    c = cells("stepsize")
    sgd = c[c.optimizer == "sgd"].copy()
    sgd["lr*curvature"] = sgd["optimizer.lr"] * sgd["curvature"]
    full = sgd[sgd.escape_mean.notna()]
    sgd["measured"] = headline(sgd)
    sgd["predicted"] = sgd.predicted_mean.where(sgd.escape_mean.notna(), sgd.predicted_median)
    sgd["ratio"] = sgd.measured / sgd.predicted
    sgd["kind"] = np.where(sgd.escape_mean.notna(), "mean", sgd.escape_kind)
    x = np.log(full.curvature * full.escape_radius**2 / (full["optimizer.lr"] * full.sigma_escape**2))
    y = full["optimizer.lr"] * full.curvature * full.escape_mean
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(x) - 2) * fit.stderr
    print("## Q1. SGD's closed form\n")
    print(f"lr·γ·E[τ] against ln(γr²/(lr·σ₁²)) over {len(full)} fully escaped SGD cells: slope "
          f"{fit.slope:.3f} [{fit.slope - half:.3f}, {fit.slope + half:.3f}] (theory 0.5), intercept "
          f"{fit.intercept:.3f}.\n")
    by = (sgd.groupby("lr*curvature").agg(cells=("ratio", "size"), ratio_min=("ratio", "min"),
                                          ratio_max=("ratio", "max"), kind=("kind", "first"),
                                          escaped=("escaped_fraction", "min")).reset_index())
    print(show(by))
    print()


def q2():
    c = cells("ideal_precond")
    pre = c[(c.optimizer == "precond_sgd") & c.escape_mean.notna()]
    X = np.column_stack([np.ones(len(pre)), np.log(pre.sigma_escape), np.log(pre["problem.noise_scale"])])
    y = np.log(pre.escape_mean)
    coef, res, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(y) - X.shape[1]
    s2 = float(((y - X @ coef) ** 2).sum() / dof)
    se = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    t = stats.t.ppf(0.975, dof)
    print("## Q2. The ideal preconditioner\n")
    print(f"OLS of ln E[τ] on ln σ₁ and ln noise_scale over {len(pre)} fully escaped precond_sgd cells "
          f"(lr 1e-4): exponent of σ₁ {coef[1]:.3f} [{coef[1] - t * se[1]:.3f}, {coef[1] + t * se[1]:.3f}], "
          f"of noise_scale {coef[2]:.3f} [{coef[2] - t * se[2]:.3f}, {coef[2] + t * se[2]:.3f}].\n")
    lam = np.log(7.1 * pre.curvature * pre.escape_radius**2 / (pre["optimizer.lr"] * pre.sigma_escape))
    print(f"THEORY.md's local exponent 1 − 1/Λ' over these cells: {(1 - 1 / lam).min():.3f} to {(1 - 1 / lam).max():.3f}.\n")
    pre = pre.assign(ratio=pre.escape_mean / pre.predicted_mean)
    print(f"measured/predicted mean per cell: {pre.ratio.min():.3f} to {pre.ratio.max():.3f}.\n")
    iso = c[c["problem.anisotropy"] == 1].pivot_table(index="problem.noise_scale", columns="optimizer",
                                                        values="escape_time")
    print("Isotropic noise (anisotropy 1), escape time by optimizer:\n")
    print(show(iso.reset_index()))
    print()


def regime_position(c: pd.DataFrame) -> pd.Series:
    """0 in the sign regime (τ = r/lr), 1 at the ideal preconditioner's τ: where between the two
    the measured escape time sits, on a log scale."""
    ideal = ideal_escape_time(c["optimizer.lr"], c.curvature, c.sigma_escape, c.escape_radius)
    sign = sign_regime_escape_time(c["optimizer.lr"], c.escape_radius)
    return np.log(headline(c) / sign) / np.log(ideal / sign)


def q3():
    c = cells("anisotropy")
    adaptive = c[c["optimizer.name"].isin(["rmsprop", "adam"])].copy()
    adaptive["gamma*r/sigma1"] = adaptive.curvature * adaptive.escape_radius / adaptive.sigma_escape
    adaptive["position"] = regime_position(adaptive)
    adaptive["variant"] = adaptive.optimizer              # the analysis's label: "adam (beta1=0.9)"
    print("## Q3. RMSProp and Adam: ideal preconditioner, then the sign regime\n")
    print("Position between the regimes (1: the ideal preconditioner's escape time, 0: r/lr), median over "
          "lr and noise_scale, by γr/σ₁:\n")
    table = adaptive.pivot_table(index="gamma*r/sigma1", columns="variant", values="position", aggfunc="median")
    print(show(table.reset_index()))
    print()
    crossings = []
    for (variant, lr, noise), part in adaptive.groupby(["variant", "optimizer.lr", "problem.noise_scale"]):
        part = part.sort_values("gamma*r/sigma1")
        p, g = part.position.to_numpy(), np.log(part["gamma*r/sigma1"].to_numpy())
        below = np.flatnonzero((p[:-1] >= 0.5) & (p[1:] < 0.5))
        if len(below):
            i = below[0]
            crossings.append(np.exp(g[i] + (0.5 - p[i]) * (g[i + 1] - g[i]) / (p[i + 1] - p[i])))
    if crossings:
        print(f"γr/σ₁ where the position crosses ½ (log-interpolated), over {len(crossings)} "
              f"(optimizer, lr, noise_scale) series: median {np.median(crossings):.3g}, range "
              f"{min(crossings):.3g} to {max(crossings):.3g}.\n")
    sign = adaptive[adaptive["gamma*r/sigma1"] >= 100]
    ratio = headline(sign) / sign_regime_escape_time(sign["optimizer.lr"], sign.escape_radius)
    print("Deep in the sign regime (γr/σ₁ ≥ 100), measured/(r/lr):\n")
    print(show(sign.assign(ratio=ratio).groupby(["variant", "optimizer.lr"]).ratio.median().reset_index()))
    print()
    adam = adaptive[adaptive["optimizer.name"] == "adam"]
    key = ["problem.anisotropy", "problem.noise_scale", "optimizer.lr"]
    pair = adam.pivot_table(index=key, columns="variant", values="escape_time")
    effect = (pair["adam (beta1=0.9)"] / pair["adam (beta1=0)"]).rename("beta1_0.9_over_beta1_0").reset_index()
    effect["gamma*r/sigma1"] = 1.0 * effect["problem.noise_scale"].rdiv(1) * effect["problem.anisotropy"]
    print("β1 = 0.9 against β1 = 0 (escape-time ratio), by γr/σ₁ (median over lr):\n")
    print(show(effect.groupby("gamma*r/sigma1")["beta1_0.9_over_beta1_0"].median().reset_index()))
    print()
    sgd = c[c.optimizer == "sgd"].set_index(key)["escape_time"]
    speed = adaptive.assign(speedup=sgd.reindex(pd.MultiIndex.from_frame(adaptive[key])).to_numpy()
                            / adaptive.escape_time.to_numpy())
    print("Speed-up over SGD at the same lr (escape-time ratio), by noise_scale and anisotropy, median over "
          "lr. (At the same lr an adaptive method's step along the escape direction is lr/σ₁, so with "
          "noise_scale 0.1 it is 10x SGD's even for isotropic noise.)\n")
    print(show(speed.pivot_table(index=["problem.noise_scale", "problem.anisotropy"], columns="variant",
                                 values="speedup", aggfunc="median").reset_index()))
    print()


def q4():
    c = cells("beta2")
    c["rule"] = np.isclose(c["optimizer.beta2"], 1 - c["optimizer.lr"] ** (2 / 3))
    c["beta2"] = np.where(c.rule, "rule", c["optimizer.beta2"].map(lambda b: f"{b:g}"))
    print("## Q4. β2\n")
    for measure, label in (("escape_time", "escape time (steps)"), ("median_tail_gap", "median tail gap f − f_min")):
        if measure == "median_tail_gap":
            r = pd.read_parquet(RESULTS / "beta2" / "rows.parquet", columns=["cell_id", "tail_gap_mean"])
            c[measure] = c.cell_id.map(r.groupby("cell_id").tail_gap_mean.median())
        table = c.pivot_table(index=["optimizer", "problem.anisotropy", "optimizer.lr"], columns="beta2",
                              values=measure)
        print(f"{label}:\n")
        print(show(table.reset_index()))
        print()
    for lr in sorted(c["optimizer.lr"].unique()):
        print(f"- lr {lr:g}: the rule gives β2 = {1 - lr ** (2 / 3):.4f}")
    print()


def q5():
    c = cells("staib2019")
    print("## Q5. The paper's Figure 1\n")
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
    print("Speed-up over SGD at anisotropy 1000 (by lr):\n")
    table = c[c["problem.anisotropy"] == 1000].pivot_table(index=["alignment", "optimizer.lr"], columns="method",
                                                          values="speedup")
    print(show(table.reset_index()))
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
    print("## Q7. Heavy-tailed noise\n")
    print("Escape time relative to Gaussian noise of the same covariance (median over lr):\n")
    print(show(c[c.noise != "gaussian"].pivot_table(index=["noise", "problem.anisotropy"], columns="optimizer",
                                                    values="vs_gaussian", aggfunc="median").reset_index()))
    print()
    sgd = c[(c.optimizer == "sgd") & c.escape_mean.notna()]
    print("SGD's closed form (measured mean / predicted mean) by noise:\n")
    print(show(sgd.assign(ratio=sgd.escape_mean / sgd.predicted_mean).groupby("noise").ratio
               .agg(["min", "median", "max"]).reset_index()))
    print()
    fits = exponents("heavy_tails")
    if len(fits):
        print(show(fits[["group", "covariate", "exponent", "lo", "hi"]]))
        print()


DATA_SWEEPS = ("mf_batch", "pca_gap", "tensor_precond", "phase_batch", "deep_linear_depth", "mlp_offset")


def q8():
    print("## Q8. The data-driven problems\n")
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
            for _, a in part[part["optimizer.name"].isin(["adam", "rmsprop"])].iterrows():
                label = a.optimizer
                with np.errstate(all="ignore"):
                    sgd_pred = float(sgd_escape_time(lr_s, gamma, sigma, r)) if sigma > 0 else np.inf
                    ada_pred = float(two_regime_escape(a["optimizer.lr"], gamma, sigma, r).mean) if sigma > 0 else np.nan
                out.append({"sweep": sweep, "config": ", ".join(f"{k.split('.')[-1]}={v}" for k, v in
                                                                   zip(varying, config if isinstance(config, tuple) else (config,)))
                            if varying else "", "adaptive": label,
                            "noise_anisotropy": s.noise_anisotropy, "cnc": s.cnc_constant, "sigma_escape": sigma,
                            "sgd_escaped": s.escaped_fraction, "sgd_time": s.escape_time, "sgd_pred": sgd_pred,
                            "adaptive_time": a.escape_time, "adaptive_pred": ada_pred,
                            "speedup": s.escape_time / a.escape_time, "speedup_pred": sgd_pred / ada_pred})
    table = pd.DataFrame(out)
    print(show(table))
    print()
    ok = table[np.isfinite(table.speedup_pred) & np.isfinite(table.speedup) & (table.speedup_pred > 0)]
    if len(ok) > 2:
        rho = stats.spearmanr(np.log(ok.speedup), np.log(ok.noise_anisotropy))
        rho_pred = stats.spearmanr(np.log(ok.speedup), np.log(ok.speedup_pred))
        print(f"Spearman correlation over {len(ok)} (problem, adaptive) pairs: measured speed-up against noise "
              f"anisotropy {rho.statistic:.2f} (p = {rho.pvalue:.2g}); against the quadratic prediction "
              f"{rho_pred.statistic:.2f} (p = {rho_pred.pvalue:.2g}); median measured/predicted speed-up "
              f"{np.median(ok.speedup / ok.speedup_pred):.2f}.\n")
    logistic = RESULTS / "logistic_beta"
    if logistic.exists():
        c = cells("logistic_beta")
        c["rule"] = np.isclose(c["optimizer.beta2"], 1 - c["optimizer.lr"] ** (2 / 3))
        print("logistic_beta (the paper's β experiment on digits):\n")
        print(show(c[["optimizer.lr", "optimizer.beta2", "rule", "escaped_fraction", "escape_time",
                      "median_tail_loss_mean"]].sort_values(["optimizer.lr", "optimizer.beta2"])))
        print()


if __name__ == "__main__":
    for question in (q1, q2, q3, q4, q5, q6, q7, q8):
        try:
            question()
        except FileNotFoundError as e:
            print(f"## {question.__name__}: results missing ({e.filename})\n")
