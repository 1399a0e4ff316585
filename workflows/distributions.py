"""Distributions of a random sweep (`method: random`): checked up front, drawn exactly.

    {distribution: uniform, min: a, max: b}                 U(a, b)
    {distribution: log_uniform_values, min: a, max: b}      exp(U(ln a, ln b)), a > 0
    {distribution: log_uniform, min: a, max: b}             exp(U(a, b)): bounds are natural logs (W&B's)
    {distribution: int_uniform, min: a, max: b}             an integer in [a, b], a and b integers
    {distribution: q_uniform, min: a, max: b, q: q}         a multiple of q in [a, b]
    {distribution: q_log_uniform_values, min, max, q}       a multiple of q in [a, b], log-spread
    {distribution: q_log_uniform, min, max, q}              a multiple of q in [e^a, e^b], log-spread

The names and meanings are W&B's (docs.wandb.ai, sweep configuration). Two promises W&B's
`round(X / q) * q` does not keep:

- a quantised draw is the multiple of q nearest the continuous draw, moved inside [min, max]
  when rounding would leave it (min 0.12, max 0.28, q 0.1 draws only 0.2);
- it is the number q's decimal digits say: with q 0.1 the draw is 0.3, not
  3 * 0.1 = 0.30000000000000004, so it has the same cell (and cell_id) as a grid's 0.3.
  A q that is an integer draws integers.

Bounds that cannot be honoured are refused before anything runs, naming the distribution: no
multiple of q in [min, max], int_uniform with bounds that are not integers, log bounds <= 0,
and bounds outside the parameter's own range. An integer parameter (seeds, budget, dim, ...)
takes int_uniform, or a q_ distribution with an integer q: a real-valued draw is refused, never
silently rounded.
"""
from __future__ import annotations

import math
import random
from decimal import Decimal

from .core.suggest import did_you_mean

# distribution -> (what it draws, how its bounds are read)
DISTRIBUTIONS = {
    "uniform": "real", "log_uniform_values": "real", "log_uniform": "real",
    "int_uniform": "int",
    "q_uniform": "quantised", "q_log_uniform_values": "quantised", "q_log_uniform": "quantised",
}
FIELDS = ("min", "max", "q")
# Other libraries' spellings of a distribution, by what they mean (normalised: lower case, letters
# and digits only, a `distribution` suffix dropped), and what they are here. The bounds of Ray
# Tune's and Optuna's loguniform are the values; hyperopt's are natural logs (W&B's log_uniform).
FOREIGN = {
    "loguniform": ("log_uniform_values", "Ray Tune's and Optuna's loguniform (min and max are the values); "
                   "hyperopt's, whose bounds are natural logs, is log_uniform"),
    "reciprocal": ("log_uniform_values", "scipy's reciprocal/loguniform (min and max are the values)"),
    "qloguniform": ("q_log_uniform_values", "Ray Tune's qloguniform (min and max are the values); "
                    "hyperopt's, whose bounds are natural logs, is q_log_uniform"),
    "quniform": ("q_uniform", "Ray Tune's and hyperopt's quniform"),
    "discreteuniform": ("q_uniform", "Optuna's discrete_uniform (its step is q)"),
    "randint": ("int_uniform", "Ray Tune's randint (its upper bound is excluded: max here is upper - 1, "
                "both bounds included)"),
    "intuniform": ("int_uniform", "an integer drawn uniformly, both bounds included"),
    "uniformint": ("int_uniform", "an integer drawn uniformly, both bounds included"),
    "int": ("int_uniform", "Optuna's IntDistribution (with log: true, q_log_uniform_values with q: 1)"),
    "integer": ("int_uniform", "an integer drawn uniformly, both bounds included"),
    "qrandint": ("q_uniform", "Ray Tune's qrandint (an integer q; both bounds included)"),
    "lograndint": ("q_log_uniform_values", "Ray Tune's lograndint (q: 1; its upper bound is excluded)"),
    "qlograndint": ("q_log_uniform_values", "Ray Tune's qlograndint (an integer q)"),
    "float": ("uniform", "Optuna's FloatDistribution (with log: true, log_uniform_values)"),
    "intloguniform": ("q_log_uniform_values", "Optuna's IntLogUniformDistribution (q: 1)"),
}
# Not distributions here: a grid, or one value.
GRID_SPELLINGS = {"choice": "values", "categorical": "values", "gridsearch": "values", "constant": "value",
                  "fixed": "value"}
# W&B distributions this module does not draw.
UNSUPPORTED = ("normal", "q_normal", "log_normal", "q_log_normal", "inv_log_uniform", "inv_log_uniform_values",
               "beta")


class DistributionError(ValueError):
    """One line: the key, the distribution, the value and what is allowed."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _exact(v) -> Decimal:
    """The decimal a YAML number says: 0.1 is 0.1, not the binary float next to it."""
    return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)


def value_range(spec: dict) -> tuple[float, float]:
    """The smallest and largest value the distribution can draw (its bounds, after exp for
    log_uniform, after rounding to the multiples of q inside them)."""
    dist, lo, hi = spec["distribution"], spec["min"], spec["max"]
    if dist in ("log_uniform", "q_log_uniform"):
        lo, hi = math.exp(lo), math.exp(hi)
    if DISTRIBUTIONS[dist] == "quantised":
        k_lo, k_hi = _multiples(lo, hi, spec["q"])
        return _times(k_lo, spec["q"]), _times(k_hi, spec["q"])
    return lo, hi


def check(key: str, spec: dict) -> None:
    """Refuse a distribution that cannot be drawn as written. Raises DistributionError."""

    dist = spec.get("distribution")
    if not isinstance(dist, str) or dist not in DISTRIBUTIONS:
        hint = meaning(dist, spec) or did_you_mean(dist, DISTRIBUTIONS)
        raise DistributionError(f"{key}.distribution={dist!r} is not known{hint}; "
                                f"allowed: {', '.join(DISTRIBUTIONS)}")
    wanted = ("min", "max", "q") if DISTRIBUTIONS[dist] == "quantised" else ("min", "max")
    for bound in wanted:
        v = spec.get(bound)
        if not _is_number(v) or not math.isfinite(v):
            raise DistributionError(f"{key}: {dist} {bound}={v!r} is not a finite number; "
                                    f"allowed: a number (required by {dist}: {', '.join(wanted)})")
    extra = [f for f in spec if f != "distribution" and f not in wanted]
    if extra:
        raise DistributionError(f"{key}: {dist} has unknown field {extra[0]!r}; allowed: distribution, "
                                + ", ".join(wanted))
    lo, hi = spec["min"], spec["max"]
    if not lo < hi:
        raise DistributionError(f"{key}: {dist} has min={lo!r} >= max={hi!r}; allowed: min < max")
    if dist in ("log_uniform_values", "q_log_uniform_values") and lo <= 0:
        raise DistributionError(f"{key}: {dist} min={lo!r} is not positive; allowed: min > 0 for {dist} "
                                "(log_uniform takes the natural logs of the bounds instead)")
    if dist in ("log_uniform", "q_log_uniform") and hi > 700:
        raise DistributionError(f"{key}: {dist} max={hi!r} is e^{hi!r}, beyond floating point; allowed: "
                                f"max <= 700 (the bounds of {dist} are natural logs; log_uniform_values "
                                "takes the values themselves)")
    if dist == "int_uniform":
        for bound in ("min", "max"):
            if not float(spec[bound]).is_integer():
                raise DistributionError(f"{key}: int_uniform {bound}={spec[bound]!r} is not an integer; "
                                        "allowed: integer bounds")
    if DISTRIBUTIONS[dist] == "quantised":
        q = spec["q"]
        if q <= 0:
            raise DistributionError(f"{key}: {dist} q={q!r} is not allowed; allowed: q > 0")
        a, b = (math.exp(lo), math.exp(hi)) if dist == "q_log_uniform" else (lo, hi)
        k_lo, k_hi = _multiples(a, b, q)
        if k_lo > k_hi:
            raise DistributionError(f"{key}: {dist} has no multiple of q={q!r} in [{a!r}, {b!r}]; allowed: "
                                    "bounds that enclose at least one multiple of q")


def _normalised(name: str) -> str:
    text = "".join(ch for ch in name.lower().rpartition(".")[2] if ch.isalnum())
    text = text.removeprefix("suggest")
    return text.removesuffix("distribution") or text


def meaning(dist, spec: dict) -> str:
    """' (... is X here)' for another library's spelling of a distribution (FOREIGN), a grid or
    a value written as a distribution, or a W&B distribution not drawn here; '' for anything else.
    The bounds decide between the two readings of `loguniform`: bounds <= 0 can only be logs."""
    if not isinstance(dist, str):
        return ""
    if dist in UNSUPPORTED:
        return f" (W&B's {dist} is not drawn here)"
    word = _normalised(dist)
    if word in GRID_SPELLINGS:
        form = GRID_SPELLINGS[word]
        return (f" ({dist} is not a distribution here: write {{{form}: [...]}} for a grid of the listed values"
                if form == "values" else f" ({dist} is not a distribution here: write {{value: v}}") + ")"
    if word not in FOREIGN:
        return ""
    name, what = FOREIGN[word]
    lo = spec.get("min")
    if word in ("loguniform", "qloguniform") and _is_number(lo) and lo <= 0:
        name = name.replace("_values", "")          # bounds <= 0: natural logs, hyperopt's reading
        what = "hyperopt's " + word + " (bounds are natural logs)"
    return f" (did you mean {name!r}? {what})"


def looks_like_values(key: str, spec: dict) -> str:
    """A warning (one line) when a distribution whose bounds are natural logs (log_uniform,
    q_log_uniform) has bounds that look like the values themselves: both positive and a decade or
    more apart (min 0.001, max 0.1 draws e^0.001 .. e^0.1 = 1.001 .. 1.105); '' otherwise."""
    dist, lo, hi = spec.get("distribution"), spec.get("min"), spec.get("max")
    if dist not in ("log_uniform", "q_log_uniform") or not (_is_number(lo) and _is_number(hi)):
        return ""
    if not (0 < lo < hi <= 700) or hi / lo < 10:
        return ""
    return (f"{key}: {dist}'s bounds are natural logs: min {lo!r}, max {hi!r} draw e^{lo!r} .. e^{hi!r} = "
            f"{math.exp(lo):.4g} .. {math.exp(hi):.4g}; if {lo!r} and {hi!r} are the values, write "
            f"{dist}_values")


def check_for(key: str, spec: dict, param) -> None:
    """Refuse a distribution the parameter cannot take (`param`: its workflows.core.params.Param):
    a draw of the wrong type, or bounds outside the parameter's range."""
    dist = spec["distribution"]
    if param.kind in (bool, str):
        what = "true or false" if param.kind is bool else param.allowed
        raise DistributionError(f"{key}: {dist} draws numbers, but {key} is {what}; allowed: "
                                f"{key}: {{values: [...]}}")
    if param.kind is int:
        integral = (DISTRIBUTIONS[dist] == "int"
                    or DISTRIBUTIONS[dist] == "quantised" and float(spec["q"]).is_integer())
        if not integral:
            raise DistributionError(f"{key}: {dist} draws real numbers, but {key} is an integer; allowed: "
                                    "int_uniform, or a q_ distribution with an integer q")
    if param.check is not None:
        for end, v in zip(("min", "max"), value_range(spec)):
            if not param.check(v):
                raise DistributionError(f"{key}: {dist} can draw {v!r} ({end}), which is out of range "
                                        f"for {key}; allowed: {param.allowed}")


def draw(spec: dict, rng: random.Random):
    """One value of the distribution (checked by `check` first)."""
    dist, lo, hi = spec["distribution"], spec["min"], spec["max"]
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if dist in ("uniform", "q_uniform"):
        value = rng.uniform(lo, hi)
    elif dist in ("log_uniform", "q_log_uniform"):
        value = math.exp(rng.uniform(lo, hi))
        lo, hi = math.exp(lo), math.exp(hi)
    else:                                   # the _values forms: bounds are the values themselves
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if DISTRIBUTIONS[dist] == "real":
        return min(max(value, lo), hi)      # exp(log(x)) may round a hair outside the bounds
    q = spec["q"]
    k_lo, k_hi = _multiples(lo, hi, q)
    nearest = int((_exact(value) / _exact(q)).to_integral_value(rounding="ROUND_HALF_UP"))
    return _times(min(max(nearest, k_lo), k_hi), q)


def _multiples(lo, hi, q) -> tuple[int, int]:
    """The first and last k with k*q in [lo, hi], in exact decimal arithmetic (0.3 / 0.1 is 3)."""
    k_lo = (_exact(lo) / _exact(q)).to_integral_value(rounding="ROUND_CEILING")
    k_hi = (_exact(hi) / _exact(q)).to_integral_value(rounding="ROUND_FLOOR")
    return int(k_lo), int(k_hi)


def _times(k: int, q):
    """k * q as the decimal it is: an int for an integer q, else the float nearest k * q."""
    exact = k * _exact(q)
    return int(exact) if float(q).is_integer() else float(exact)
