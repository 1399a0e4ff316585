"""The closed forms for a quadratic saddle (docs/theory.md, sections 2-5), vectorised over numpy arrays.

Escape coordinate, eigenvalue −γ, noise std σ₁ along it, escape at |x| = r. Plain SGD is
x_{t+1} = a x_t + η σ₁ ξ_t with a = 1 + ηγ, so x_t = aᵗ (x₀ + W_t) with W_t → W ~ N(0, s²),
s² = η σ₁² / (γ (2 + ηγ)), and the continuous escape time is τ = ln(r/|x₀ + W|) / ln a.

With k escape directions of the same γ and σ₁ (n_negative = k) the escape norm is s·ρ with ρ a
χ_k variable from the saddle (ChiLaw), or a non-central χ_k from a start offset x₀ (OffsetLaw).

The engine counts whole steps: the first integer t with |x_t| ≥ r is ⌈τ⌉. Its median is ⌈median τ⌉,
its mean E[τ] + ½ (the fractional part is close to uniform), its variance var τ + 1/12; this matters
where escape takes a handful of steps (ηγ ≳ 0.3: docs/theory.md section 3, "Whole steps").

These are the linear recursions: SGD and the fixed noise preconditioner Σ^(−α/2). RMSProp, Adam,
AdaGrad and the second-moment preconditioner G(x)^(−α/2) follow the lag model (analysis/lag.py, with
its continuum closed forms: the Bessel time and the floor (2/R) ln I₀(R/2); docs/theory.md section 4b).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import special, stats

from workflows.core.schedules import paper_beta2

# E[ln(1/|Z|)] for Z ~ N(0, 1) is (γ_Euler + ln 2)/2: the constant in E[τ].
EULER_C = (np.euler_gamma + np.log(2)) / 2
GAUSS_NODES, GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(64)
# Nodes on (0, 1) for averaging over a random start direction (the quantiles of its Beta law): the
# log-moments are smooth in it (24 nodes: 1e-5 relative), the CDF has a sharp step where the offset's
# component alone reaches the level (96 nodes: within 1e-3 of a 4·10⁵-sample Monte Carlo).
MOMENT_NODES = np.polynomial.legendre.leggauss(24)
CDF_NODES = np.polynomial.legendre.leggauss(96)
MIXTURE_LIMIT = 200.0


@dataclass(frozen=True)
class ChiLaw:
    """ρ = |W|/s from the saddle: a χ_k variable."""
    k: np.ndarray

    def mean_log(self):
        return (special.digamma(self.k / 2) + np.log(2)) / 2          # k = 1: −EULER_C

    def var_log(self):
        return special.polygamma(1, self.k / 2) / 4                     # k = 1: (π/√8)²

    def cdf(self, z):
        return stats.chi2.cdf(np.asarray(z, float) ** 2, self.k)

    def ppf(self, p):
        return np.sqrt(stats.chi2.ppf(p, self.k))

    def upper(self):
        """A z beyond which cdf(z) is 1 to double precision."""
        return 9.0 + np.sqrt(self.k)


@dataclass(frozen=True)
class OffsetLaw:
    """ρ = |x₀ + W|/s from a start at distance `offset` from the saddle in a uniformly random
    direction of `dim` dimensions: x₀'s squared length within the k escape directions is
    offset²·B with B ~ Beta(k/2, (d−k)/2) (B = 1 when d = k), and given B, ρ² is non-central χ²_k
    with non-centrality λ = offset²·B/s². Expectations over B use Gauss–Legendre nodes in B's
    quantiles; over ρ², its Poisson mixture of central χ² laws."""
    k: np.ndarray
    offset_over_s: np.ndarray
    dim: np.ndarray

    @property
    def shape(self):
        return np.broadcast(np.asarray(self.k), np.asarray(self.offset_over_s), np.asarray(self.dim)).shape

    @cached_property
    def _moment_nodes(self):
        return self._nodes(MOMENT_NODES)

    @cached_property
    def _cdf_nodes(self):
        return self._nodes(CDF_NODES)

    def _nodes(self, rule):
        """(k, λ, weight), each [nodes, *shape]: the non-centrality at each node of B's law."""
        shape = self.shape
        k, d, x = (np.broadcast_to(np.asarray(v, float), shape) for v in (self.k, self.dim, self.offset_over_s))
        nodes, weights = rule
        u = ((nodes + 1) / 2).reshape((-1,) + (1,) * len(shape))
        b = np.where(d > k, stats.beta.ppf(u, k / 2, np.maximum(d - k, 1e-9) / 2), 1.0)
        weight = np.broadcast_to((weights / 2).reshape(u.shape), b.shape)
        return np.broadcast_to(k, b.shape), x**2 * b, weight

    @cached_property
    def _log_moments(self):
        """E[ln ρ²] and E[(ln ρ²)²] at each node, from the Poisson mixture
        ρ² ~ Σ_j Pois(j; λ/2) χ²_{k+2j}; past λ/2 = MIXTURE_LIMIT the delta method to second order
        (E ln X ≈ ln E X − var X/(2 (E X)²): its next term is below 1e-4 there)."""
        k, lam, weight = self._moment_nodes
        mu = lam / 2
        width = int(np.ceil(12 * np.sqrt(min(float(mu.max()), MIXTURE_LIMIT)) + 20))
        j = np.floor(np.minimum(mu, MIXTURE_LIMIT))[..., None] + np.arange(-width, width + 1)
        pmf = np.where(j >= 0, stats.poisson.pmf(np.maximum(j, 0), mu[..., None]), 0.0)
        half_dof = k[..., None] / 2 + np.maximum(j, 0)
        psi = np.log(2) + special.digamma(half_dof)
        first = (pmf * psi).sum(-1)
        second = (pmf * (special.polygamma(1, half_dof) + psi**2)).sum(-1)
        mean, var = k + lam, 2 * (k + 2 * lam)
        big = mu > MIXTURE_LIMIT
        first = np.where(big, np.log(mean) - var / (2 * mean**2), first)
        second = np.where(big, first**2 + var / mean**2, second)
        return first, second, weight

    def mean_log(self):
        first, _, weight = self._log_moments
        return (weight * first).sum(0) / 2

    def var_log(self):
        first, second, weight = self._log_moments
        mean = (weight * first).sum(0)
        return ((weight * second).sum(0) - mean**2) / 4

    def cdf(self, z):
        k, lam, weight = self._cdf_nodes
        z = np.asarray(z, float)
        if np.all(k == 1):            # |x₀ + W|/s with one escape direction: a folded normal
            m = np.sqrt(lam)
            return (weight * (special.ndtr(z - m) - special.ndtr(-z - m))).sum(0)
        return (weight * stats.ncx2.cdf(z**2, k, lam)).sum(0)

    def ppf(self, p):
        """Bisection on ln z (45 halvings of a bracket 40 wide: 1e-12 relative)."""
        shape = np.broadcast(np.asarray(p), np.empty(self.shape)).shape
        lo, hi = np.full(shape, -30.0), np.broadcast_to(np.log(self.upper()), shape).astype(float)
        for _ in range(45):
            mid = (lo + hi) / 2
            below = self.cdf(np.exp(mid)) < p
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return np.exp((lo + hi) / 2)

    def upper(self):
        return 9.0 + np.sqrt(np.asarray(self.k, float)) + np.asarray(self.offset_over_s, float)


@dataclass(frozen=True)
class StableLaw:
    """ρ = |W|/C for symmetric α-stable noise (docs/theory.md, "Noise beyond the Gaussian"): the
    linear recursion's W = Σ_s η σ₁ S_s a^(−(s+1)) of α-stable steps S (the engine's: scaled so that
    α = 2 is N(0, 1), problems/noise.py) is α-stable itself, of scale C = (ησ₁/√2)/(a^α − 1)^(1/α);
    ρ is |X| for X of characteristic function exp(−|t|^α), whose log-moments are known exactly
    (Zolotarev): E ln|X| = γ_Euler (1/α − 1), var ln|X| = (π²/12)(1 + 2/α²). One escape direction."""
    alpha: np.ndarray
    k: np.ndarray = 1.0

    def mean_log(self):
        return np.euler_gamma * (1 / np.asarray(self.alpha, float) - 1)

    def var_log(self):
        return np.pi**2 / 12 * (1 + 2 / np.asarray(self.alpha, float) ** 2)

    def cdf(self, z):
        alpha, z = np.broadcast_arrays(np.asarray(self.alpha, float), np.asarray(z, float))
        return np.vectorize(lambda a, v: 2 * stats.levy_stable.cdf(v, a, 0.0) - 1 if v > 0 else 0.0)(alpha, z)

    def ppf(self, p):
        alpha, p = np.broadcast_arrays(np.asarray(self.alpha, float), np.asarray(p, float))
        return np.vectorize(lambda a, q: stats.levy_stable.ppf((1 + q) / 2, a, 0.0))(alpha, p)

    def upper(self):
        return np.nan                  # the tail is a power law: no z beyond which cdf is 1


def stable_scale(lr, curvature, sigma_escape, stable_alpha):
    """C = (η σ₁/√2) / (a^α − 1)^(1/α), a = 1 + ηγ: the scale of W under α-stable steps."""
    a = 1 + np.asarray(lr, float) * np.asarray(curvature, float)
    alpha = np.asarray(stable_alpha, float)
    return np.asarray(lr, float) * np.asarray(sigma_escape, float) / np.sqrt(2) / (a**alpha - 1) ** (1 / alpha)


@dataclass(frozen=True)
class EscapeTime:
    """τ = ln(radius/(s·ρ)) / log_a: the linear recursion's escape time to `radius`; ρ follows `law`
    (ChiLaw from the saddle, OffsetLaw from a start offset). `discrete`: the engine's whole-step
    count ⌈τ⌉ (mean + ½, median ⌈·⌉, variance + 1/12) rather than the continuous τ."""
    log_a: np.ndarray
    s: np.ndarray
    radius: np.ndarray
    law: ChiLaw | OffsetLaw
    discrete: bool = True

    @property
    def k(self):
        return self.law.k

    def _shifted(self, log_rho):
        return (np.log(self.radius / self.s) - log_rho) / self.log_a

    @property
    def mean(self):
        return self._shifted(self.law.mean_log()) + (0.5 if self.discrete else 0.0)

    def quantile(self, q):
        """τ decreases in ρ, so τ's q-quantile is at ρ's (1 − q)-quantile."""
        tau = self._shifted(np.log(self.law.ppf(1 - np.asarray(q))))
        return np.ceil(tau - 1e-9) if self.discrete else tau

    @property
    def median(self):
        return self.quantile(0.5)

    @property
    def sd(self):
        var = self.law.var_log() / self.log_a**2
        return np.sqrt(var + (1 / 12 if self.discrete else 0.0))

    def probability_by(self, budget):
        """P(τ ≤ budget) (the same for ⌈τ⌉ at a whole budget): the fraction expected to escape."""
        c = self.radius * np.exp(-np.asarray(budget, float) * self.log_a) / self.s
        return np.where(np.asarray(budget) >= 0, 1 - self.law.cdf(c), 0.0)

    def restricted_mean(self, budget):
        """E[min(τ, budget)], what a censored cell's restricted mean measures.
        E[(τ − B)⁺] = E[(ln(c/ρ))⁺]/ln a with c = r a^(−B)/s, and E[(ln(c/ρ))⁺] = ∫₀^c F(z)/z dz.
        Whole steps: Σ_{n<B} P(τ > n) ≈ ∫₀^B P(τ > t) dt + P(τ ≤ B)/2 (Euler–Maclaurin)."""
        budget = np.asarray(budget, dtype=float)
        left = budget
        c = self.radius * np.exp(-np.maximum(left, 0) * self.log_a) / self.s
        continuous_mean = self._shifted(self.law.mean_log())
        excess = _integral_cdf_over_z(c, self.law) / self.log_a
        extra = 0.5 * self.probability_by(budget) if self.discrete else 0.0
        return np.where(left > 0, continuous_mean - excess + extra, budget)


def _integral_cdf_over_z(c, law):
    """∫₀^c F(z)/z dz: Gauss–Legendre on [0, min(c, top)], plus ln(c/top) beyond `top`, where F is 1
    to double precision."""
    c = np.asarray(c, float)
    top = np.broadcast_to(law.upper(), c.shape) if np.ndim(law.upper()) else np.full(c.shape, law.upper())
    upper = np.minimum(c, top)
    z = (GAUSS_NODES.reshape((-1,) + (1,) * c.ndim) + 1) / 2 * upper           # [nodes, *shape]
    cdf = np.stack([law.cdf(z_i) for z_i in z]) if isinstance(law, OffsetLaw) else law.cdf(z)
    weights = GAUSS_WEIGHTS.reshape((-1,) + (1,) * c.ndim)
    inner = (weights * cdf / np.where(z > 0, z, 1)).sum(0) * upper / 2
    return inner + np.log(np.maximum(c, top) / top)


def linear_escape(lr, curvature, sigma_escape, escape_radius=1.0, n_negative=1, p_escape=1.0,
                  start_offset=0.0, dim=None, discrete=True, stable_alpha=None):
    """The escape time of x ← (1 + η p₁ γ) x + η p₁ σ₁ ξ: SGD (p₁ = 1) or a fixed preconditioner
    whose entry along the escape direction is p₁ (the noise std keeps σ₁, the step becomes η p₁).
    `start_offset` > 0: started at that distance in a uniformly random direction of `dim`
    dimensions (default: all of it along the escape directions). `stable_alpha`: ξ symmetric
    α-stable (σ₁ then a scale; one escape direction, from the saddle): StableLaw."""
    step = np.asarray(lr, dtype=float) * np.asarray(p_escape, dtype=float)
    gamma, sigma = np.asarray(curvature, dtype=float), np.asarray(sigma_escape, dtype=float)
    if stable_alpha is not None:
        return EscapeTime(np.log1p(step * gamma), stable_scale(step, gamma, sigma, stable_alpha),
                          np.asarray(escape_radius, float), StableLaw(np.asarray(stable_alpha, float)),
                          discrete=discrete)
    s = np.sqrt(step * sigma**2 / (gamma * (2 + step * gamma)))
    k = np.asarray(n_negative, float)
    offset = np.asarray(start_offset, float)
    if np.any(offset > 0):
        law = OffsetLaw(k * np.ones_like(s), offset / s, np.asarray(dim if dim is not None else k, float))
    else:
        law = ChiLaw(k)
    return EscapeTime(np.log1p(step * gamma), s, np.asarray(escape_radius, float), law, discrete=discrete)


def sgd_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, n_negative=1, discrete=True):
    """E[τ_SGD] = (ln(r/s) + C) / ln(1 + ηγ) (+ ½ for whole steps)   (docs/theory.md section 2)."""
    return linear_escape(lr, curvature, sigma_escape, escape_radius, n_negative, discrete=discrete).mean


def sgd_escape_median(lr, curvature, sigma_escape, escape_radius=1.0, n_negative=1, discrete=True):
    """median τ_SGD = ln(r/(s·z₀.₇₅)) / ln(1 + ηγ), z₀.₇₅ = Φ⁻¹(0.75) ≈ 0.674: |Z|'s median (⌈·⌉ in whole steps)."""
    return linear_escape(lr, curvature, sigma_escape, escape_radius, n_negative, discrete=discrete).median


def sgd_escape_sd(lr, curvature, discrete=True):
    """sd(τ_SGD) = (π/√8) / ln(1 + ηγ): the spread of ln|W|, independent of σ₁ (+1/12 variance in whole steps)."""
    sd = (np.pi / np.sqrt(8)) / np.log1p(np.asarray(lr) * np.asarray(curvature))
    return np.sqrt(sd**2 + (1 / 12 if discrete else 0.0))


def preconditioned_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, p_escape=1.0, discrete=True):
    """A fixed diagonal preconditioner with entry p₁ along the escape direction only scales the
    step there: E[τ_P] = E[τ_SGD](η → η p₁) with the noise std σ₁ unchanged."""
    return linear_escape(lr, curvature, sigma_escape, escape_radius, p_escape=p_escape, discrete=discrete).mean


def noise_preconditioner_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, alpha=1.0, discrete=True):
    """The fixed noise preconditioner A = Σ^(−α/2), built from the noise at the saddle alone
    (precond_sgd with target noise): p₁ = σ₁^(−α). Along the escape direction it is SGD with the
    step η σ₁^(−α), so its σ₁-exponent (≈ α) holds by construction. Not the paper's second-moment
    preconditioner G(x)^(−1/2) = (∇f∇fᵀ + Σ)^(−1/2), which follows x (analysis.lag: exact_rule)."""
    p_escape = np.asarray(sigma_escape, dtype=float) ** (-np.asarray(alpha))
    return preconditioned_escape_time(lr, curvature, sigma_escape, escape_radius, p_escape, discrete)


def sign_regime_escape_time(lr, escape_radius=1.0, n_negative=1):
    """r/(η√k): the time of steps of exactly η per escape coordinate (a sign step with no lag), the
    unit of the lag model's floor (analysis.lag.floor: RMSProp/Adam escape in f·r/η, f < 1)."""
    return np.asarray(escape_radius) / (np.asarray(lr) * np.sqrt(n_negative))


def lambda_prime(lr, curvature, sigma_escape, escape_radius=1.0):
    """Λ' = ln(7.1 γ r² / (η σ₁)): the fixed noise preconditioner's logarithm, α = 1 (7.1 = 2 e^(2C))."""
    return np.log(2 * np.exp(2 * EULER_C) * np.asarray(curvature) * np.asarray(escape_radius) ** 2
                  / (np.asarray(lr) * np.asarray(sigma_escape)))


def follows_paper_rule(lr, beta2):
    return np.isclose(np.asarray(beta2, dtype=float), paper_beta2(lr))


def local_exponents(lr, curvature, sigma_escape, escape_radius=1.0, alpha=0.0):
    """docs/theory.md's table: d ln E[τ] / d ln x for the fixed preconditioner p₁ = σ₁^(−α)
    (α = 0: SGD with Λ = ln(7.1γr²/(ησ₁²)); α = 1: the fixed noise preconditioner Σ^(−1/2) with
    Λ' = ln(7.1γr²/(ησ₁))). RMSProp, Adam and the second-moment preconditioner: analysis.lag_cells.
    In general E[τ] ≈ σ₁^α/(2ηγ) · Λ_α with Λ_α = ln(7.1 γ r² / (η σ₁^(2−α))).
    σ₁ = noise_scale/anisotropy, so anisotropy's exponent is minus σ₁'s."""
    lam = np.log(np.exp(2 * EULER_C) * 2 * np.asarray(curvature) * np.asarray(escape_radius) ** 2
                 / (np.asarray(lr) * np.asarray(sigma_escape) ** (2 - np.asarray(alpha))))
    sigma_exponent = alpha - (2 - alpha) / lam
    return {"lr": -1 - 1 / lam, "curvature": -1 + 1 / lam, "sigma_escape": sigma_exponent,
            "anisotropy": -sigma_exponent, "escape_radius": 2 / lam, "dim": 0.0, "noise_scale": 0.0, "beta2": 0.0}


def minimum_loss(problem: dict):
    """The local minima's loss where known in closed form (for the neighbourhood reached)."""
    if problem.get("name") == "staib_toy":
        x2 = 0.01 ** (1 / 8)                               # −0.1 x₂ + 10 x₂⁹ = 0
        return -0.05 * x2**2 + x2**10
    quartic = problem.get("quartic")
    if problem.get("name") == "quadratic_saddle" and quartic and quartic > 0:
        return -problem["curvature"] ** 2 / (4 * quartic)
    return np.nan


__all__ = [
    "EULER_C",
    "ChiLaw",
    "EscapeTime",
    "StableLaw",
    "stable_scale",
    "OffsetLaw",
    "follows_paper_rule",
    "lambda_prime",
    "linear_escape",
    "local_exponents",
    "minimum_loss",
    "noise_preconditioner_escape_time",
    "preconditioned_escape_time",
    "sgd_escape_median",
    "sgd_escape_sd",
    "sgd_escape_time",
    "sign_regime_escape_time",
]
