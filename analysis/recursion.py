"""The escape time of the linear recursion along the escape direction, step by step: any
step-size schedule, any start, exact in distribution up to the first-passage approximation.

SGD near a quadratic saddle, along the escape direction (eigenvalue −γ, noise std σ₁):

    x_t = (1 + η_t γ) x_{t−1} + η_t σ₁ ξ_t,      ξ_t ~ N(0, 1),  t = 1, 2, …

Dividing by P_t = Π_{u ≤ t} (1 + η_u γ) turns it into a sum:

    x_t = P_t (x_0 + W_t),    W_t = σ₁ Σ_{s ≤ t} η_s ξ_s / P_s ~ N(0, V_t),    V_t = σ₁² Σ_{s ≤ t} η_s² / P_s².

So |x_t| ≥ r exactly when |x_0 + W_t| ≥ r / P_t: a Gaussian tail, for every t. Once P_t grows,
|x_t| grows with it, and the first passage is the first t at which that marginal event holds;
we take P(τ ≤ t) = max_{s ≤ t} P(|x_s| ≥ r) (the marginal, made monotone). Then

    E[min(τ, B)] = Σ_{t=0}^{B−1} P(τ > t),    median = the first t with P(τ ≤ t) ≥ ½,

computed in O(B) with cumulative products and sums (float64, in logs where P_t overflows).

For a constant step this reproduces the closed form of docs/theory.md up to the integer step:
the continuous formula's τ = ln(r/|W|)/ln a is rounded up here, which adds about half a step
(the discrete-step correction that matters when escape takes a handful of steps, ηγ ≳ 0.3). With
η_t = η/√t, ln P_t ≈ 2ηγ√t: no closed form, and this sum is how saddlescape evaluates it.
With k escape directions (same γ and σ₁) and x_0 = 0, ‖x_t‖/ (P_t √V_t) is a χ_k variable.

Checked against a direct Monte Carlo of the scalar recursion and against the engine's SGD under
every schedule (tests/test_schedules.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class RecursionEscape:
    """P(τ ≤ t) for t = 0 … B (cdf[0] = P(τ ≤ 0) = 0 unless the start is already out)."""
    cdf: np.ndarray

    @property
    def budget(self) -> int:
        return len(self.cdf) - 1

    @property
    def restricted_mean(self) -> float:
        """E[min(τ, B)] = Σ_{t<B} P(τ > t)."""
        return float(np.sum(1 - self.cdf[:-1]))

    @property
    def escape_fraction(self) -> float:
        return float(self.cdf[-1])

    @property
    def mean(self) -> float:
        """E[τ], where the budget holds (nearly) every escape; NaN where more than 0.1% of the mass
        lies past it."""
        return self.restricted_mean if self.cdf[-1] >= 0.999 else np.nan

    def quantile(self, q: float) -> float:
        hit = np.flatnonzero(self.cdf >= q)
        return float(hit[0]) if len(hit) else np.inf

    @property
    def median(self) -> float:
        return self.quantile(0.5)


def recursion_escape(lrs, curvature: float, sigma_escape: float, escape_radius: float = 1.0,
                     start: float = 0.0, n_negative: int = 1) -> RecursionEscape:
    """The escape-time distribution of the recursion above for step sizes lrs[t−1] = η_t
    (t = 1 … B, a float array), started at x_0 = `start` along the escape direction.

    curvature γ > 0 and sigma_escape σ₁ ≥ 0 as in the rows of a sweep; escape at |x| ≥ r.
    n_negative > 1: k escape directions, each with γ and σ₁, escape at ‖x‖ ≥ r (start must be 0).
    """
    eta = np.asarray(lrs, dtype=np.float64)
    gamma, sigma, r = float(curvature), float(sigma_escape), float(escape_radius)
    log_p = np.cumsum(np.log1p(eta * gamma))                    # ln P_t, t = 1 … B
    # V_t = σ² Σ η_s² / P_s², accumulated stably.
    variance = sigma**2 * np.cumsum(eta**2 * np.exp(-2 * log_p))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        bound = r * np.exp(-log_p)                               # r / P_t
        if n_negative == 1:
            sd = np.sqrt(variance)
            if sigma == 0:
                out = (np.abs(start) >= bound).astype(float)
            else:
                out = (stats.norm.sf((bound - start) / sd) + stats.norm.cdf((-bound - start) / sd))
        else:
            if start:
                raise ValueError("recursion_escape: start must be 0 with n_negative > 1")
            out = stats.chi.sf(bound / np.sqrt(variance), n_negative)
    out = np.nan_to_num(out, nan=0.0)
    first = float(abs(start) >= r)
    return RecursionEscape(np.maximum.accumulate(np.concatenate([[first], out])))


def monte_carlo_escape(lrs, curvature: float, sigma_escape: float, escape_radius: float = 1.0,
                       start: float = 0.0, samples: int = 100_000, seed: int = 0) -> np.ndarray:
    """Escape steps of the scalar recursion itself, simulated (float64; censored runs get B + 1):
    the check on recursion_escape's first-passage approximation."""
    rng = np.random.default_rng(seed)
    x = np.full(samples, float(start))
    steps = np.full(samples, len(lrs) + 1)
    alive = np.abs(x) < escape_radius
    steps[~alive] = 0
    for t, eta in enumerate(np.asarray(lrs, dtype=np.float64), start=1):
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        x[idx] = (1 + eta * curvature) * x[idx] + eta * sigma_escape * rng.standard_normal(len(idx))
        out = np.abs(x[idx]) >= escape_radius
        steps[idx[out]] = t
        alive[idx[out]] = False
    return steps
