"""Which cells the lag model (analysis.lag) covers, and its prediction for each.

Covered: a diagonal adaptive method on `quadratic_saddle` (H diagonal in the coordinate axes, one
escape direction, additive noise of finite variance) or on `staib_toy` (γ = σ₁ = 0.1, escape
measured along e₂):

    rmsprop, torch.optim.RMSprop                      β₂ (alpha), no bias correction
    adam, torch.optim.Adam / AdamW (weight decay 0)   any β₁, with or without bias correction
    adagrad, torch.optim.Adagrad (no lr decay)        the running sum
    precond_sgd, target second_moment, diagonal       G(x)^(−α/2) with G = (∇f)² + diag Σ, no lag

under any step-size schedule (η_t and, with the β₂ rule, β₂,t per step) and from a start offset.
Every other cell of these optimizers gets "no prediction: <why>". Each prediction carries its model
and the assumptions it rests on (`theory_model`, `theory_assumptions`).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from workflows.core.saddles import SYNTHETIC_SADDLES
from workflows.core.schedules import SCHEDULE_SCHEMA, beta2s, learning_rates, paper_beta2

from .lag import LagEscape, Stable, exact_rule, exponential_rule, lag_escape, sum_rule
from .theory import follows_paper_rule

TORCH_CLASSES = {"torch.optim.RMSprop": "rmsprop", "torch.optim.Adam": "adam", "torch.optim.AdamW": "adam",
                 "torch.optim.Adagrad": "adagrad"}
LAG_OPTIMIZERS = ("rmsprop", "adam", "adagrad", *TORCH_CLASSES)
# The stable coordinates' spread above which an escape by the norm measures them, not the saddle.
SPREAD_LIMIT = 0.25
COMMON = ("the escape coordinate alone (a diagonal method on a diagonal H); noise phase linear, its amplitude W "
          "from the exact first step; then the mean-field second moment E g^2 = (gamma x)^2 + sigma1^2 "
          "(v's own fluctuations dropped)")


def is_lag_cell(optimizer: pd.Series, target: pd.Series, amsgrad: pd.Series | None = None) -> np.ndarray:
    """The cells whose optimizer the lag model describes (whether or not it covers their set-up)."""
    family = optimizer.isin(LAG_OPTIMIZERS + ("amsgrad",)) | ((optimizer == "precond_sgd") & (target == "second_moment"))
    return np.asarray(family, bool)


def _value(cell: pd.Series, key: str, default):
    value = cell.get(key, default)
    # Missing where another problem of the table sets it: None, NaN, or pandas' NA in a nullable column.
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return default
    return value


def method(cell: pd.Series) -> tuple[dict | None, str]:
    """The update rule's settings for the lag model, or (None, why not)."""
    name = str(cell.get("optimizer.name", ""))
    get = lambda key, default: _value(cell, f"optimizer.{key}", default)  # noqa: E731
    if name in TORCH_CLASSES:
        unsupported = [f"{key}={get(key, 0)}" for key in ("momentum", "weight_decay", "lr_decay")
                       if float(get(key, 0) or 0) != 0] + \
                      [key for key in ("centered", "maximize", "amsgrad", "nesterov") if bool(get(key, False))]
        if unsupported:
            return None, f"{name} with {', '.join(unsupported)}: not in the lag model"
    kind = TORCH_CLASSES.get(name, name)
    if kind == "rmsprop":
        beta2 = float(get("alpha", 0.99)) if name in TORCH_CLASSES else float(get("beta2", 0.99))
        return {"kind": "ema", "beta1": 0.0, "beta2": beta2, "bias_correction": False,
                "eps": float(get("eps", 1e-8))}, ""
    if kind == "adam":
        if name in TORCH_CLASSES:
            beta1, beta2, bias = float(get("betas[0]", 0.9)), float(get("betas[1]", 0.999)), True
        else:
            beta1, beta2 = float(get("beta1", 0.9)), float(get("beta2", 0.999))
            bias = bool(get("bias_correction", True))
        return {"kind": "ema", "method": "adam", "beta1": beta1, "beta2": beta2, "bias_correction": bias,
                "eps": float(get("eps", 1e-8))}, ""
    if kind == "adagrad":
        return {"kind": "sum", "initial": float(get("initial_accumulator", get("initial_accumulator_value", 0.0))),
                "eps": float(get("eps", 1e-10))}, ""
    if kind == "amsgrad":
        return None, ("amsgrad: its running maximum of v keeps the largest noise fluctuation, which the mean-field "
                      "map (v at its mean) does not (a Monte Carlo of the scalar recursion escapes 10-16% later than "
                      "the map where the noise phase leads)")
    if kind == "precond_sgd":
        if get("form", "diagonal") != "diagonal":
            return None, ("full second-moment preconditioner: grad f grad f^T couples the coordinates; the lag model "
                          "is diagonal")
        return {"kind": "exact", "alpha": float(get("alpha", 1.0)), "eps": float(get("eps", 1e-12))}, ""
    return None, f"no lag model for optimizer {name}"


def setting(cell: pd.Series) -> tuple[tuple | None, str]:
    """The hashable inputs of lag_case for one cell, or (None, why the model does not cover it)."""
    rule, why = method(cell)
    if rule is None:
        return None, why
    problem = str(cell.get("problem.name", ""))
    get = lambda key, default: _value(cell, f"problem.{key}", default)  # noqa: E731
    if problem not in SYNTHETIC_SADDLES:
        return None, f"no lag model for problem {problem} (it covers quadratic_saddle and staib_toy)"
    if get("noise_model", "additive") == "proportional":
        return None, "proportional noise (it vanishes at the saddle): the lag map needs additive noise"
    if get("noise_dist", "gaussian") == "alpha_stable":
        return None, ("alpha-stable noise: infinite variance, so E g^2, which the second-moment estimate averages, "
                      "does not exist")
    if int(get("n_negative", 1)) > 1:
        return None, f"{int(get('n_negative', 1))} escape directions: the lag map follows one escape coordinate"
    if bool(get("rotate_hessian", False)):
        return None, "rotated Hessian: a diagonal preconditioner couples the escape direction with the others"
    gamma, sigma = float(cell.get("curvature", np.nan)), float(cell.get("sigma_escape", np.nan))
    radius, budget = float(cell.get("escape_radius", np.nan)), int(_value(cell, "budget", 0))
    lr = float(_value(cell, "optimizer.lr", np.nan))
    if not (lr > 0 and gamma > 0 and sigma > 0 and radius > 0 and budget > 0):
        return None, "needs lr, curvature, sigma_escape, escape_radius > 0 (sigma_escape = 0: never leaves the saddle)"
    offset = float(_value(cell, "start_offset", 0.0))
    if offset >= radius:
        return None, "start_offset >= escape_radius: every run starts escaped (escape at step 1 by construction)"
    quartic = float(get("quartic", 0.0)) if problem == "quadratic_saddle" else 0.0
    if quartic > 0 and radius >= np.sqrt(gamma / quartic):
        return None, "escape_radius beyond the minima at sqrt(curvature/quartic)"
    schedule = tuple(sorted((k.removeprefix("optimizer."), _value(cell, k, None)) for k in
                            ("optimizer.lr_schedule", "optimizer.final_lr", "optimizer.warmup_steps",
                             "optimizer.decay_factor", "optimizer.decay_every", "optimizer.beta2_rule")))
    if problem == "staib_toy":
        stable, dim, measure, rotated = None, 2.0, "projection", False
    else:
        dim = float(get("dim", 10))
        measure = str(get("escape_measure", "norm"))
        rotated = get("noise_alignment", "aligned") == "rotated"
        stable = None if measure == "projection" else _stable_coordinates(cell, sigma, offset, dim)
    return (tuple(sorted(rule.items())), schedule, lr, budget, gamma, sigma, radius, stable, offset, dim,
            problem, measure, rotated, quartic, str(get("noise_dist", "gaussian"))), ""


def _stable_coordinates(cell, sigma_escape, offset, dim) -> tuple:
    """(curvatures, sigmas, counts, start variance) of the d − 1 stable coordinates, as tuples.
    Rotated noise: each takes an equal share of tr Σ − Σ₁₁ (their own Σ_ii depend on the cell's
    random rotation, which the rows do not hold)."""
    get = lambda key, default: float(_value(cell, f"problem.{key}", default))  # noqa: E731
    n = int(dim) - 1
    curvatures = get("positive_curvature", 1.0) * np.logspace(0, -np.log10(get("condition", 1.0)), n)
    scale, anisotropy = get("noise_scale", 1.0), get("anisotropy", 1.0)
    if _value(cell, "problem.noise_alignment", "aligned") == "rotated":
        trace = scale**2 * (n + 1 / anisotropy**2)
        sigmas = np.full(n, np.sqrt(max(trace - sigma_escape**2, 0.0) / n))
    else:
        sigmas = np.full(n, scale)
    pairs = pd.Series(1, index=pd.MultiIndex.from_arrays([np.round(curvatures, 14), np.round(sigmas, 14)])) \
        .groupby(level=[0, 1]).sum()
    return (tuple(pairs.index.get_level_values(0)), tuple(pairs.index.get_level_values(1)),
            tuple(pairs.to_numpy(float)), offset**2 / dim)


def horizon(budget: int) -> int:
    """How far the map runs: past the budget, so that a mean exists where the runs all escaped just
    inside it (the escaped fraction and restricted mean are still taken at the budget)."""
    return int(min(3 * budget, budget + 100_000))


def _rule(settings: dict, schedule: tuple, lr: float, budget: int, steps: int | None = None):

    hp = {**{k: p.default for k, p in SCHEDULE_SCHEMA.items()}, "lr": lr,
          **{k: v for k, v in schedule if v is not None and not (isinstance(v, float) and np.isnan(v))}}
    lrs = learning_rates(hp, np.arange(1, (steps or budget) + 1), budget)
    kind = settings["kind"]
    if kind == "exact":
        return exact_rule(lrs, settings["alpha"], settings["eps"])
    if kind == "sum":
        return sum_rule(lrs, eps=settings["eps"], initial=settings["initial"])
    hp["beta2"] = settings["beta2"]
    return exponential_rule(lrs, beta2s(hp, lrs), beta1=settings["beta1"],
                            bias_correction=settings["bias_correction"], eps=settings["eps"])


def lag_case(case: tuple) -> tuple[LagEscape | None, str]:
    """The lag model's law for one `setting`, or (None, why) where the stable coordinates' spread
    alone approaches r (then an escape by the norm measures them, not the saddle)."""
    return _law(law_inputs(case))


def law_inputs(case: tuple) -> tuple:
    """What of a `setting` the law depends on: not the problem's name, the escape measure, the
    noise's alignment or law (they enter through the stable coordinates, or only the report's
    words), nor the dimension without a start offset (it enters through the stable coordinates).
    Cells that differ only in those share one computation."""
    rule_items, schedule, lr, budget, gamma, sigma, radius, stable, offset, dim = case[:10]
    return rule_items, schedule, lr, budget, gamma, sigma, radius, stable, offset, dim if offset else None, case[13]


@lru_cache(maxsize=4096)
def _law(inputs: tuple) -> tuple[LagEscape | None, str]:
    rule_items, schedule, lr, budget, gamma, sigma, radius, stable, offset, dim, quartic = inputs
    rule = _rule(dict(rule_items), schedule, lr, budget, horizon(budget))
    others = None if stable is None else Stable(np.array(stable[0]), np.array(stable[1]), np.array(stable[2]),
                                                 stable[3])
    law = lag_escape(rule, gamma, sigma, radius, others, offset, 1.0 if dim is None else dim, budget=budget,
                     quartic=quartic)
    if law.spread_max >= SPREAD_LIMIT * radius**2:
        return None, (f"the stable coordinates' spread sum E x_i^2 reaches {law.spread_max:.3g} >= r^2/4: an escape "
                      "by the norm then measures them, not the saddle (use escape_measure: projection)")
    return law, ""


def describe(settings: dict, case: tuple) -> tuple[str, str]:
    """(model, assumptions) in words, for the report."""
    kind = settings["kind"]
    if kind == "exact":
        model = f"lag map: second-moment preconditioner G(x)^(-{settings['alpha'] / 2:g}), no lag"
    elif kind == "sum":
        model = "lag map: adagrad (running sum)"
    elif settings.get("method") == "adam":
        model = (f"lag map: adam, beta1={settings['beta1']:g}, "
                 + ("bias-corrected" if settings["bias_correction"] else "no bias correction")
                 + (" (= rmsprop)" if not (settings["bias_correction"] or settings["beta1"]) else ""))
    else:
        model = "lag map: rmsprop (no bias correction)"
    schedule = dict(case[1])
    problem, measure, rotated, quartic, noise = case[10:]
    notes = [COMMON]
    if kind == "exact":
        notes = ["the escape coordinate alone; noise phase linear, then the deterministic map with G = (gamma x)^2 + "
                 "sigma1^2 (no average, no lag)"]
    if schedule.get("lr_schedule", "constant") != "constant":
        notes.append(f"step size per step ({schedule['lr_schedule']}"
                     + (", beta2 by the paper's rule per step" if schedule.get("beta2_rule") == "paper" else "") + ")")
    notes.append("escape by the norm, the stable coordinates' summed variance taken at its mean" if measure == "norm"
                 else "escape along the escape direction")
    if rotated:
        notes.append("rotated noise: the escape coordinate sees sigma_escape exactly"
                     + ("; the stable ones an equal share of the rest of tr Sigma" if measure == "norm" else ""))
    if case[8]:
        notes.append("start offset in a uniformly random direction (its stable share at its mean)")
    if problem == "staib_toy":
        notes.append("approximate: finite-sum noise (only its variance enters), the x^10 term ignored")
    if quartic:
        notes.append(f"the quartic (lambda r^2/gamma = {quartic * case[6]**2 / case[4]:.2g}) in the escape coordinate's "
                     "drift, at the stable coordinates' mean spread; ignored in the stable coordinates themselves")
    if noise == "student_t":
        notes.append("approximate: Student-t noise (only E g^2 enters; v fluctuates more than under Gaussian noise)")
    return model, "; ".join(notes)


def lag_predictions(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell: predicted mean, median, sd, escaped fraction and restricted mean, the model, its
    assumptions and, where it has no prediction, why (`reason`)."""
    rows = {}
    for index, cell in cells.iterrows():
        case, why = setting(cell)
        law, model, assumptions = None, "none", ""
        if case is not None:
            law, why = lag_case(case)
            model, assumptions = describe(dict(case[0]), case)
        if law is None:
            rows[index] = {"predicted_mean": np.nan, "predicted_median": np.nan, "predicted_sd": np.nan,
                           "predicted_escape_fraction": np.nan, "predicted_restricted_mean": np.nan,
                           "theory_model": "none", "theory_assumptions": "", "reason": why}
            continue
        rows[index] = {"predicted_mean": law.mean, "predicted_median": law.median, "predicted_sd": law.sd,
                       "predicted_escape_fraction": law.escape_fraction,
                       "predicted_restricted_mean": law.restricted_mean,
                       "theory_model": model, "theory_assumptions": assumptions, "reason": ""}
    return pd.DataFrame.from_dict(rows, orient="index").reindex(cells.index)


# The settings whose local exponent the lag model gives, and the columns each moves together.
LOCAL_KEYS = {"lr": ("optimizer.lr",), "curvature": ("curvature", "problem.curvature"),
              "sigma_escape": ("sigma_escape",), "escape_radius": ("escape_radius", "problem.escape_radius"),
              "noise_scale": ("sigma_escape", "problem.noise_scale"), "beta2": ()}


def _log_time(cell: pd.Series) -> float:
    case, _ = setting(cell)
    law = lag_case(case)[0] if case is not None else None
    if law is None or law.escape_fraction < 0.999:
        return np.nan
    return float((law.weights * np.log(law.steps)).sum())


def local_exponents(cell: pd.Series, step: float = 0.05) -> dict:
    """d E[ln τ] / d ln x of the lag model at one cell, by central differences (x·(1 ± step)): its
    local exponents in lr, curvature, sigma_escape (anisotropy: minus it), escape_radius, noise_scale
    (σ₁ and the stable coordinates' σ together) and 1 − β₂ (key 'beta2'). A cell whose β₂ follows
    the paper's rule keeps following it as lr moves. NaN where the model has no prediction."""
    beta2_column = next((c for c in ("optimizer.beta2", "optimizer.betas[1]", "optimizer.alpha")
                         if c in cell and pd.notna(cell[c])), None)
    if str(cell.get("optimizer.name")) == "torch.optim.RMSprop":
        beta2_column = "optimizer.alpha"
    rule = beta2_column is not None and bool(follows_paper_rule(float(cell["optimizer.lr"]), float(cell[beta2_column])))
    out = {}
    for key, columns in LOCAL_KEYS.items():
        times = []
        for factor in (1 - step, 1 + step):
            moved = cell.copy()
            if key == "beta2":
                if beta2_column is None:
                    break
                moved[beta2_column] = 1 - (1 - float(cell[beta2_column])) * factor
            for column in columns:
                if column in moved and pd.notna(moved[column]):
                    moved[column] = float(moved[column]) * factor
            if key == "lr" and rule:
                moved[beta2_column] = float(paper_beta2(moved["optimizer.lr"]))
            times.append(_log_time(moved))
        out[key] = (times[1] - times[0]) / np.log((1 + step) / (1 - step)) if len(times) == 2 else np.nan
    out["anisotropy"] = -out["sigma_escape"]
    out["dim"] = np.nan
    return out
