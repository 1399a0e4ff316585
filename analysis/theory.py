"""THEORY.md's closed forms for a quadratic saddle, vectorised over numpy arrays.

Escape coordinate, eigenvalue −γ, noise std σ₁ along it, started at the saddle, escape at |x| = r.
Plain SGD is x_{t+1} = a x_t + η σ₁ ξ_t with a = 1 + ηγ, so x_t ≈ aᵗ W with
W ~ N(0, s²), s² = η σ₁² / (γ (2 + ηγ)), and τ = ln(r/|W|) / ln a.

With k escape directions of the same γ and σ₁ (n_negative = k) the escape norm is s·χ_k, so
every formula below holds with |Z| replaced by a χ_k variable (k = 1: |Z|).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

# E[ln(1/|Z|)] for Z ~ N(0, 1) is (γ_Euler + ln 2)/2: the constant in E[τ].
EULER_C = (np.euler_gamma + np.log(2)) / 2
GAUSS_NODES, GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(64)


@dataclass(frozen=True)
class EscapeTime:
    """τ = delay + ln(radius/(s·χ_k)) / log_a: the linear recursion's escape time to `radius`,
    plus a deterministic `delay` (the sign-regime travel of the two-regime composite)."""
    log_a: np.ndarray
    s: np.ndarray
    radius: np.ndarray
    k: np.ndarray
    delay: np.ndarray = 0.0

    def _shifted(self, log_chi):
        return self.delay + (np.log(self.radius / self.s) - log_chi) / self.log_a

    @property
    def mean(self):
        # E[ln χ_k] = (ψ(k/2) + ln 2)/2; k = 1 gives −EULER_C.
        return self._shifted((special.digamma(self.k / 2) + np.log(2)) / 2)

    def quantile(self, q):
        """τ decreases in χ, so τ's q-quantile is at χ's (1 − q)-quantile."""
        return self._shifted(0.5 * np.log(stats.chi2.ppf(1 - np.asarray(q), self.k)))

    @property
    def median(self):
        return self.quantile(0.5)

    @property
    def sd(self):
        # var(ln χ_k) = ψ'(k/2)/4; k = 1 gives (π/√8)².
        return np.sqrt(special.polygamma(1, self.k / 2)) / 2 / self.log_a

    def probability_by(self, budget):
        """P(τ ≤ budget): the fraction expected to escape within the budget."""
        c = self.radius * np.exp(-(budget - self.delay) * self.log_a) / self.s
        return np.where(np.asarray(budget) >= self.delay, stats.chi2.sf(c**2, self.k), 0.0)

    def restricted_mean(self, budget):
        """E[min(τ, budget)], what a censored run's restricted mean measures.
        E[(τ − B)⁺] = E[(ln(c/χ))⁺]/ln a with c = r a^(−B)/s, and E[(ln(c/χ))⁺] = ∫₀^c F(z)/z dz."""
        budget = np.asarray(budget, dtype=float)
        left = budget - self.delay
        c = self.radius * np.exp(-np.maximum(left, 0) * self.log_a) / self.s
        excess = _integral_cdf_over_z(c, self.k) / self.log_a
        return np.where(left > 0, self.mean - excess, budget)


def _integral_cdf_over_z(c, k):
    """∫₀^c F_χk(z)/z dz: Gauss–Legendre on [0, min(c, top)], plus ln(c/top) beyond `top`,
    where F is 1 to double precision."""
    c, k = np.broadcast_arrays(np.asarray(c, float), np.asarray(k, float))
    top = 9.0 + np.sqrt(k)
    upper = np.minimum(c, top)
    z = (GAUSS_NODES[:, None] + 1) / 2 * upper.ravel()          # [nodes, n]
    cdf = stats.chi2.cdf(z**2, k.ravel())
    inner = (GAUSS_WEIGHTS[:, None] * cdf / np.where(z > 0, z, 1)).sum(0) * upper.ravel() / 2
    return (inner + np.log(np.maximum(c, top) / top).ravel()).reshape(c.shape)


def linear_escape(lr, curvature, sigma_escape, escape_radius=1.0, n_negative=1, p_escape=1.0):
    """The escape time of x ← (1 + η p₁ γ) x + η p₁ σ₁ ξ: SGD (p₁ = 1) or a fixed preconditioner
    whose entry along the escape direction is p₁ (the noise std keeps σ₁, the step becomes η p₁)."""
    step = np.asarray(lr, dtype=float) * np.asarray(p_escape, dtype=float)
    gamma, sigma = np.asarray(curvature, dtype=float), np.asarray(sigma_escape, dtype=float)
    s = np.sqrt(step * sigma**2 / (gamma * (2 + step * gamma)))
    return EscapeTime(np.log1p(step * gamma), s, np.asarray(escape_radius, float), np.asarray(n_negative, float))


def sgd_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, n_negative=1):
    """E[τ_SGD] = (ln(r/s) + C) / ln(1 + ηγ)   (THEORY.md §3, checked by Monte Carlo)."""
    return linear_escape(lr, curvature, sigma_escape, escape_radius, n_negative).mean


def sgd_escape_median(lr, curvature, sigma_escape, escape_radius=1.0, n_negative=1):
    """median τ_SGD = ln(r/(s·z₀.₇₅)) / ln(1 + ηγ), z₀.₇₅ = Φ⁻¹(0.75) ≈ 0.674: |Z|'s median."""
    return linear_escape(lr, curvature, sigma_escape, escape_radius, n_negative).median


def sgd_escape_sd(lr, curvature):
    """sd(τ_SGD) = (π/√8) / ln(1 + ηγ): the spread of ln|W|, independent of σ₁."""
    return (np.pi / np.sqrt(8)) / np.log1p(np.asarray(lr) * np.asarray(curvature))


def preconditioned_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, p_escape=1.0):
    """A fixed diagonal preconditioner with entry p₁ along the escape direction only scales the
    step there: E[τ_P] = E[τ_SGD](η → η p₁) with the noise std σ₁ unchanged."""
    return linear_escape(lr, curvature, sigma_escape, escape_radius, p_escape=p_escape).mean


def ideal_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, alpha=1.0):
    """The ideal preconditioner A = Σ^(−α/2) built from the noise alone: p₁ = σ₁^(−α)."""
    p_escape = np.asarray(sigma_escape, dtype=float) ** (-np.asarray(alpha))
    return preconditioned_escape_time(lr, curvature, sigma_escape, escape_radius, p_escape)


def sign_regime_escape_time(lr, escape_radius=1.0, n_negative=1):
    """Signal-dominated RMSProp/Adam: g/√v ≈ sign(g), every escape coordinate moves ≈ η per
    step, so the escape norm grows by η√k per step: τ ≈ r/(η√k)."""
    return np.asarray(escape_radius) / (np.asarray(lr) * np.sqrt(n_negative))


def two_regime_escape(lr, curvature, sigma_escape, escape_radius=1.0, n_negative=1, eps=0.0):
    """RMSProp/Adam as a two-regime COMPOSITE (a heuristic, not a theorem): while |γx| ≲ σ₁ the
    second-moment estimate is ≈ σ₁², the ideal preconditioner p₁ = 1/(σ₁ + ε), up to radius
    r₁ = min(r, σ₁/γ); from there the sign regime travels the rest, (r − r₁)/(η√k) steps.
    Noise-dominated cells (γ r ≤ σ₁) are the pure ideal preconditioner."""
    lr, gamma, sigma, r = (np.asarray(v, dtype=float) for v in (lr, curvature, sigma_escape, escape_radius))
    first_radius = np.minimum(r, sigma / gamma)
    phase1 = linear_escape(lr, gamma, sigma, first_radius, n_negative, p_escape=1 / (sigma + eps))
    travel = sign_regime_escape_time(lr, r - first_radius, n_negative)
    return EscapeTime(phase1.log_a, phase1.s, phase1.radius, phase1.k, travel)


def paper_beta2(lr):
    """Staib et al.'s recommended EMA parameter: β₂ = 1 − η^(2/3)."""
    return 1 - np.asarray(lr, dtype=float) ** (2 / 3)


def follows_paper_rule(lr, beta2):
    return np.isclose(np.asarray(beta2, dtype=float), paper_beta2(lr))


def local_exponents(lr, curvature, sigma_escape, escape_radius=1.0, alpha=0.0):
    """THEORY.md's table: d ln E[τ] / d ln x for the fixed preconditioner p₁ = σ₁^(−α)
    (α = 0: SGD with Λ = ln(7.1γr²/(ησ₁²)); α = 1: the ideal one with Λ' = ln(7.1γr²/(ησ₁))).
    In general E[τ] ≈ σ₁^α/(2ηγ) · Λ_α with Λ_α = ln(7.1 γ r² / (η σ₁^(2−α))).
    σ₁ = noise_scale/anisotropy, so anisotropy's exponent is minus σ₁'s."""
    lam = np.log(np.exp(2 * EULER_C) * 2 * np.asarray(curvature) * np.asarray(escape_radius) ** 2
                 / (np.asarray(lr) * np.asarray(sigma_escape) ** (2 - np.asarray(alpha))))
    sigma_exponent = alpha - (2 - alpha) / lam
    return {"lr": -1 - 1 / lam, "curvature": -1 + 1 / lam, "sigma_escape": sigma_exponent,
            "anisotropy": -sigma_exponent, "escape_radius": 2 / lam, "dim": 0.0, "noise_scale": 0.0, "beta2": 0.0}


SIGN_REGIME_EXPONENTS = {"lr": -1.0, "curvature": 0.0, "sigma_escape": 0.0, "anisotropy": 0.0,
                         "escape_radius": 1.0, "dim": 0.0, "noise_scale": 0.0, "beta2": 0.0}


def minimum_loss(problem: dict):
    """The local minima's loss where known in closed form (for the neighbourhood reached)."""
    if problem.get("name") == "staib_toy":
        x2 = 0.01 ** (1 / 8)                               # −0.1 x₂ + 10 x₂⁹ = 0
        return -0.05 * x2**2 + x2**10
    quartic = problem.get("quartic")
    if problem.get("name") == "quadratic_saddle" and quartic and quartic > 0:
        return -problem["curvature"] ** 2 / (4 * quartic)
    return np.nan


__all__ = ["EULER_C", "EscapeTime", "linear_escape", "sgd_escape_time", "sgd_escape_median",
           "sgd_escape_sd", "preconditioned_escape_time", "ideal_escape_time",
           "sign_regime_escape_time", "two_regime_escape", "paper_beta2", "follows_paper_rule",
           "local_exponents", "SIGN_REGIME_EXPONENTS", "minimum_loss"]
