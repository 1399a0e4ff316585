"""The lag model: escape times of diagonal adaptive methods (RMSProp, Adam, AMSGrad, AdaGrad, the
second-moment preconditioner) at a quadratic saddle with additive noise (docs/theory.md, section 4b).

A diagonal method on a saddle whose Hessian and noise are diagonal in the coordinate axes treats
every coordinate on its own. Along the escape coordinate (eigenvalue −γ, noise std σ₁) write
y = γx/σ₁ (signal over noise) and q_t = y_{t−1} − ξ_t (minus the gradient, in units of σ₁). Every
method here is

    u_t = a_t u_{t−1} + b_t q_t²                 second moment, in units of σ₁²
    m_t = β₁ m_{t−1} + (1 − β₁) q_t              (β₁ = 0: m_t = q_t)
    y_t = y_{t−1} + η_t γ (m_t / B1_t) / D_t      D_t = σ₁ √(u_t / B2_t) + eps

with (a_t, b_t) = (β₂,t, 1 − β₂,t) for RMSProp and Adam, (1, 1) for AdaGrad; B1_t = 1 − β₁ᵗ and
B2_t = 1 − Π_{s≤t} β₂,s with Adam's bias correction, 1 without; AMSGrad divides by the running
maximum of u. The paper's second-moment preconditioner G(x)^(−1/2) has u_t = y_{t−1}² + 1 exactly
(no average, no lag) and D_t = (σ₁² u_t + eps)^(α/2).

The model keeps the lag and drops the noise once it has set the run's amplitude:

1. **Noise phase.** While y ≪ 1, u_t is its noise-only mean u⁰_t (a_t u⁰_{t−1} + b_t), so the
   recursion is linear in (y, m) with gains κ_t = η_t γ / (B1_t (σ₁ √(u⁰_t / B2_t) + eps)). Its
   solution grows along one mode: y_t → W · N_t, where N_t is the growth of the deterministic
   recursion and W = ℓ₁·z₁ + Σ_{s≥2} (ℓ_s·B_s) ξ_s is the run's amplitude (ℓ_s the growing mode's
   adjoint, computed backwards from the end of the transient). The first step is kept exact:
   RMSProp's first step is a sign step of η/√(1 − β₂) (v₀ = 0), Adam's of η, so W is a Gaussian
   around ±(first step)·ℓ₁, and its law is integrated over ξ₁ (and over a start offset's share
   along the escape direction).
2. **Lag phase.** From y₁ = |W| the run follows the deterministic mean-field map (the noise enters
   only through E q² = y² + 1): u_t = a_t u_{t−1} + b_t (y_{t−1}² + 1), m_t = β₁ m_{t−1} +
   (1 − β₁) y_{t−1}, y_t as above. In the noise phase this is the linear growth of step 1, so the two
   phases join without a seam; later u lags a geometrically growing y², the steps exceed η, and the
   run escapes faster than the paper's tracking preconditioner.
3. **Escape.** At the first t with y_t ≥ Y_t = (γ/σ₁) √(r² − V_⊥(t)), where V_⊥(t) is the summed
   variance of the stable coordinates (the same method on curvature λ_i > 0, noise σ_i, linear and
   exact in second moments) for the norm escape measure, and 0 for the projection.

The escape step is a decreasing function of |W|, so over N quantiles of |W| the map gives the law
of τ: its mean, median, sd, the fraction escaped by a budget and the restricted mean.

Its continuum limit is solved by modified Bessel functions (`bessel_time`, `floor`); the Debye
(ν → ∞, tracking) and small-ν (sign with lag) limits and the small-R limit are checked against the
map in tests/test_analysis_lag.py, and the whole law against a direct Monte Carlo of the scalar
recursion (`monte_carlo`) and the engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy import special

QUANTILES = 1000
# Gauss–Legendre nodes in probability, for the first step's noise ξ₁ on each side of the sign change
# and for a start offset's share along the escape direction.
FIRST_STEP_NODES = np.polynomial.legendre.leggauss(48)
OFFSET_NODES = np.polynomial.legendre.leggauss(16)


@dataclass(frozen=True)
class Rule:
    """One coordinate's update for steps t = 1 … T (arrays of length T).

    lrs: η_t. decay, fresh: a_t and b_t of u_t = a_t u_{t−1} + b_t g_t² (β₂,t and 1 − β₂,t for an
    exponential average; 1 and 1 for AdaGrad's sum). exact: u is E[g²|x] itself (the second-moment
    preconditioner, no average). alpha: the preconditioner's power, D = (σ²u + eps)^(α/2) for the
    exact second moment (1 for the adaptive methods, whose D is σ√u + eps). initial: the
    accumulator before step 1 in gradient² units (AdaGrad's initial_accumulator)."""
    lrs: np.ndarray
    decay: np.ndarray
    fresh: np.ndarray
    beta1: float = 0.0
    bias_correction: bool = False
    eps: float = 0.0
    initial: float = 0.0
    running_max: bool = False
    exact: bool = False
    alpha: float = 1.0

    @property
    def steps(self) -> int:
        return len(self.lrs)

    @cached_property
    def bias1(self) -> np.ndarray:
        return _bias1(self.beta1, self.steps) if (self.bias_correction and self.beta1) else np.ones(self.steps)

    @cached_property
    def bias2(self) -> np.ndarray:
        if not self.bias_correction:
            return np.ones(self.steps)
        return -np.expm1(np.cumsum(np.log(self.decay)))          # 1 − Π β₂,s, accurate for β₂ near 1

    def denominator(self, u, sigma, t):
        """D_t for the scaled second moment u (units of σ²) at step t (1-based)."""
        if self.exact:
            return (sigma**2 * u + self.eps) ** (self.alpha / 2)
        return sigma * np.sqrt(u / self.bias2[t - 1]) + self.eps

    @cached_property
    def _noise_u(self) -> dict:
        return {}

    def noise_second_moment(self, sigma: float) -> np.ndarray:
        """u⁰_t: the second moment of pure noise (E g² = σ²), in units of σ², t = 1 … T."""
        if self.exact:
            return np.ones(self.steps)
        key = float(sigma)
        if key not in self._noise_u:
            u = np.empty(self.steps)
            previous = self.initial / sigma**2
            if np.all(self.decay == self.decay[0]) and np.all(self.fresh == self.fresh[0]) and self.decay[0] < 1:
                a, b = self.decay[0], self.fresh[0]
                t = np.arange(1, self.steps + 1)
                u = a**t * previous + b * (1 - a**t) / (1 - a)
            elif np.all(self.decay == 1):
                u = previous + np.cumsum(self.fresh)
            else:
                for t in range(self.steps):
                    previous = self.decay[t] * previous + self.fresh[t]
                    u[t] = previous
            self._noise_u[key] = u
        return self._noise_u[key]

    def gains(self, curvature: float, sigma: float) -> np.ndarray:
        """κ_t = η_t γ / (B1_t D_t(u⁰_t)): the noise phase's gain of the escape coordinate (in y per
        unit of m), or of a stable one (γ → its λ)."""
        t = np.arange(1, self.steps + 1)
        return self.lrs * curvature / (self.bias1 * self.denominator(self.noise_second_moment(sigma), sigma, t))


@lru_cache(maxsize=64)
def _bias1(beta1: float, steps: int) -> np.ndarray:
    """1 − β₁ᵗ for t = 1 … steps: shared by every cell with the same β₁ and horizon (a power per step
    is most of a rule's set-up); read-only, being shared."""
    out = 1 - beta1 ** np.arange(1, steps + 1)
    out.flags.writeable = False
    return out


def exponential_rule(lrs, beta2s, **kw) -> Rule:
    beta2s = np.broadcast_to(np.asarray(beta2s, float), np.shape(lrs)).copy()
    return Rule(np.asarray(lrs, float), beta2s, 1 - beta2s, **kw)


def sum_rule(lrs, **kw) -> Rule:
    n = len(lrs)
    return Rule(np.asarray(lrs, float), np.ones(n), np.ones(n), **kw)


def exact_rule(lrs, alpha=1.0, eps=0.0) -> Rule:
    n = len(lrs)
    return Rule(np.asarray(lrs, float), np.zeros(n), np.ones(n), exact=True, alpha=alpha, eps=eps)


# -- the first step, exactly ------------------------------------------------------------------------

def _first_step(rule: Rule, y0, xi, curvature, sigma):
    """(y₁, m₁) after the exact first step from y₀ with noise ξ₁ (broadcast arrays)."""
    q = y0 - xi
    if rule.exact:
        u = y0**2 + 1
    else:
        u = rule.decay[0] * rule.initial / sigma**2 + rule.fresh[0] * q**2
    m = (1 - rule.beta1) * q
    with np.errstate(divide="ignore", invalid="ignore"):
        step = rule.lrs[0] * curvature * m / (rule.bias1[0] * rule.denominator(u, sigma, 1))
    return y0 + np.nan_to_num(step), m


# -- the noise phase: growth, adjoint, amplitude ---------------------------------------------------

@dataclass(frozen=True)
class NoisePhase:
    """The linear noise phase of the escape coordinate: the amplitude W = ℓ₁·z₁ + N(0, S²) in units
    of the map's own growth from z₁ = (1, start_m)."""
    ell_y: float
    ell_m: float
    spread: float            # S
    start_m: float           # the map's m₁ per unit y₁ (the growing mode's direction)


def noise_phase(rule: Rule, curvature: float, sigma: float) -> NoisePhase:
    """Backwards from the end of the transient (where the gains are constant, or the last step),
    ℓ_{s−1} = ℓ_s A_s with A_s the noise-phase matrix of (y, m); the noise after that point sums as a
    geometric series. β₁ = 0 reduces to ℓ_s = N₁/N_s."""
    kappa = rule.gains(curvature, sigma)
    b1 = rule.beta1
    if b1 == 0:
        growth = np.log1p(kappa[1:])                             # y_s = (1 + κ_s) y_{s−1} − κ_s ξ_s
        log_n = np.concatenate([[0.0], np.cumsum(growth)])       # ln N_s, N₁ = 1
        variance = np.sum((kappa[1:] * np.exp(-log_n[1:])) ** 2)
        if len(kappa) > 1 and kappa[-1] > 0 and np.isclose(kappa[-1], kappa[-2], rtol=1e-12, atol=0):
            # The tail beyond T at constant gains: Σ_j κ² N_T⁻² (1 + κ)^(−2j) = κ N_T⁻²/(2 + κ), written
            # so that a vanishing gain (a schedule decayed to ~0) gives ~0, not 0/0.
            variance += kappa[-1] * np.exp(-2 * log_n[-1]) / (2 + kappa[-1])
        return NoisePhase(1.0, 0.0, float(np.sqrt(variance)), 0.0)

    def matrix(k):
        return np.array([[1 + k * (1 - b1), k * b1], [1 - b1, b1]])

    def noise(k):
        return -(1 - b1) * np.array([k, 1.0])

    # Past the transient (β₁ᵗ, Π β₂ gone) the gains are constant: start there, and sum the rest of
    # the noise as a geometric series.
    moving = np.flatnonzero(np.abs(kappa - kappa[-1]) > 1e-12 * abs(kappa[-1]))
    end = int(moving[-1]) + 2 if len(moving) else 1
    end = min(max(end, 2), len(kappa))
    tail = matrix(kappa[-1])
    values, left = np.linalg.eig(tail.T)
    top = int(np.argmax(values.real))
    lam, ell = float(values[top].real), left[:, top].real        # ℓ A = λ ℓ
    values_r, right = np.linalg.eig(tail)
    direction = right[:, int(np.argmax(values_r.real))].real
    start_m = float(direction[1] / direction[0])
    # The noise beyond the last step at its gains; a vanishing gain adds nothing (and λ² − 1 would be 0).
    variance = float(ell @ noise(kappa[-1])) ** 2 / (lam**2 - 1) if lam - 1 > 1e-9 else 0.0
    # ℓ_s for s = end … 2 (the adjoint of step s), accumulating the noise each step feeds in.
    for s in range(end, 1, -1):
        k = kappa[s - 1]
        variance += float(ell @ noise(k)) ** 2
        ell = ell @ matrix(k)
        scale = np.abs(ell).max()                                 # keep the numbers finite
        ell, variance = ell / scale, variance / scale**2
    norm = float(ell[0] + ell[1] * start_m)
    return NoisePhase(float(ell[0] / norm), float(ell[1] / norm), float(np.sqrt(variance) / abs(norm)), start_m)


@dataclass(frozen=True)
class Amplitude:
    """|W| = |μ_j + S Z| with probability w_j: a mixture over the first step's noise (and a start
    offset's share along the escape direction)."""
    centres: np.ndarray
    weights: np.ndarray
    spread: float

    def cdf(self, w):
        w = np.asarray(w, float)[..., None]
        s = max(self.spread, 1e-300)
        return np.sum(self.weights * (special.ndtr((w - self.centres) / s) - special.ndtr((-w - self.centres) / s)),
                      axis=-1)

    def quantiles(self, probabilities) -> np.ndarray:
        """Inverse of the cdf on a dense grid in ln w (monotone interpolation)."""
        top = np.abs(self.centres).max() + 12 * self.spread
        bottom = max(self.spread, 1e-12 * top) * 1e-9
        # Where the spread is small against a centre (a large first step), the cdf steps there.
        steps = np.unique(np.abs(self.centres)) if len(self.centres) <= 64 else np.zeros(0)
        near = (steps[:, None] + self.spread * np.linspace(-8, 8, 33)).ravel()
        grid = np.unique(np.concatenate([np.geomspace(bottom, top, 6000), near[near > bottom]]))
        c = np.maximum.accumulate(self.cdf(grid))
        return np.exp(np.interp(probabilities, c, np.log(grid)))


def _noise_nodes(split: float):
    """Quadrature nodes and weights for E over ξ ~ N(0, 1), in pieces that end at 0 and at `split`
    (where the first step changes sign): the tails in the probability of the nearer tail (so that no
    node rounds to probability 1 however far the split), the middle in ξ itself."""
    nodes, w = FIRST_STEP_NODES
    u = (nodes + 1) / 2
    a, b = min(0.0, split), max(0.0, split)
    pieces = []
    lower_p, upper_p = special.ndtr(a), special.ndtr(-b)
    if lower_p > 0:                                              # (−∞, a]: p = Φ(ξ) ≤ ½
        pieces.append((special.ndtri(u * lower_p), w / 2 * lower_p))
    if upper_p > 0:                                              # [b, ∞): c = Φ(−ξ) ≤ ½
        pieces.append((-special.ndtri(u * upper_p), w / 2 * upper_p))
    if b > a:                                                    # (a, b): the density itself
        xi = a + u * (b - a)
        pieces.append((xi, w / 2 * (b - a) * np.exp(-xi**2 / 2) / np.sqrt(2 * np.pi)))
    return pieces


def amplitude(rule: Rule, phase: NoisePhase, curvature: float, sigma: float, start_y=None, start_weights=None
              ) -> Amplitude:
    """The law of |W| from the first step's exact nonlinear response to ξ₁ (and start offsets y₀
    with weights: the offset's share along the escape direction)."""
    starts = np.atleast_1d(np.asarray(0.0 if start_y is None else start_y, float))
    weights0 = np.ones(1) if start_weights is None else np.asarray(start_weights, float)
    centres, weights = [], []
    for y0, w0 in zip(starts, weights0):
        for xi, w_xi in _noise_nodes(y0):                          # q₁ = y₀ − ξ₁ changes sign at ξ₁ = y₀
            y1, m1 = _first_step(rule, y0, xi, curvature, sigma)
            centres.append(phase.ell_y * y1 + phase.ell_m * m1)
            weights.append(w0 * w_xi)
    centres, weights = np.concatenate(centres), np.concatenate(weights)
    # Equal centres (a sign step) need not be kept apart.
    rounded = np.round(centres, 12)
    unique, inverse = np.unique(rounded, return_inverse=True)
    return Amplitude(unique, np.bincount(inverse, weights), phase.spread)


def offset_shares(start_offset: float, dim: float, curvature: float, sigma: float):
    """y₀ = (γ/σ₁)·offset·|u₁| for a uniformly random direction u in `dim` dimensions
    (u₁² ~ Beta(½, (d − 1)/2)): nodes and weights."""
    from scipy import stats

    if not start_offset:
        return np.zeros(1), np.ones(1)
    if dim <= 1:
        return np.array([curvature * start_offset / sigma]), np.ones(1)
    nodes, w = OFFSET_NODES
    share = np.sqrt(stats.beta.ppf((nodes + 1) / 2, 0.5, (dim - 1) / 2))
    return curvature * start_offset * share / sigma, w / 2


# -- the stable coordinates (norm escape measure) ---------------------------------------------------

@dataclass(frozen=True)
class Stable:
    """The stable coordinates: curvatures λ_i > 0, noise stds σ_i and how many share each pair."""
    curvatures: np.ndarray
    sigmas: np.ndarray
    counts: np.ndarray
    start_variance: float = 0.0          # E x₀,ᵢ² of a start offset, per coordinate

    @staticmethod
    def none():
        return Stable(np.zeros(0), np.zeros(0), np.zeros(0))


def _stable_first_moments(rule: Rule, curvature, sigma):
    """E[x₁²], E[x₁ m₁], E[m₁²] after the exact first step from x₀ = 0 (m in gradient units):
    g₁ = σξ, x₁ = −η₁ (1 − β₁) g₁ / (B1₁ D₁), m₁ = (1 − β₁) g₁. Gauss–Legendre in probability over
    ξ > 0 (every integrand is even in ξ)."""
    nodes, w = FIRST_STEP_NODES
    xi = special.ndtri(0.5 + (nodes + 1) / 4)[:, None]
    weight = (w / 2)[:, None]
    g = sigma * xi
    u = np.full_like(g, 1.0) if rule.exact else rule.decay[0] * rule.initial / sigma**2 + rule.fresh[0] * xi**2
    m = (1 - rule.beta1) * g
    x = -rule.lrs[0] * m / (rule.bias1[0] * rule.denominator(u, sigma, 1))
    return (weight * x**2).sum(0), (weight * x * m).sum(0), (weight * m**2).sum(0)


class StableSpread:
    """V_⊥(t): Σ_i count_i E[x_i,t²], each stable coordinate's second moments propagated exactly
    through its linear noise-phase recursion (its gradient λx is small against σ). Computed lazily,
    as far as the map asks (`upto`), and held constant once stationary."""

    def __init__(self, rule: Rule, stable: Stable):
        self.rule, self.stable = rule, stable
        self.values = np.zeros(0)
        if not len(stable.counts):
            self.values = np.zeros(rule.steps)
            return
        self.gains = np.array([rule.gains(1.0, s) for s in stable.sigmas])   # k_t = η_t / (B1_t D_t)
        xx, xm, mm = _stable_first_moments(rule, stable.curvatures, stable.sigmas)
        self.state = (xx + stable.start_variance, xm, mm)
        self.values = np.array([float((stable.counts * self.state[0]).sum())])
        self.settled = 0

    def upto(self, steps: int) -> np.ndarray:
        """V_⊥(1 … steps) (steps ≤ the rule's)."""
        steps = min(steps, self.rule.steps)
        if len(self.values) < steps:
            more = self._scalar(steps) if self.rule.beta1 == 0 else self._with_momentum(steps)
            self.values = np.concatenate([self.values, more])
        return self.values[:steps]

    def _scalar(self, steps: int) -> np.ndarray:
        """β₁ = 0: V_t = c_t V_{t−1} + d_t with c_t = (1 − k_t λ)², d_t = (k_t σ)², per coordinate, solved
        in blocks by cumulative sums in logs (a block ends before the decay passes e^−650)."""
        start = len(self.values)
        lam, sig = self.stable.curvatures[:, None], self.stable.sigmas[:, None]
        k = self.gains[:, start:steps]
        log_c = np.maximum(np.log(np.maximum((1 - k * lam) ** 2, 1e-300)), -600.0)
        d = (k * sig) ** 2
        v, parts, i = self.state[0], [], 0
        while i < k.shape[1]:
            level = np.cumsum(log_c[:, i:], axis=1)
            too_far = np.flatnonzero((level < -650).any(axis=0))
            j = k.shape[1] - i if not len(too_far) else max(int(too_far[0]), 1)
            level = level[:, :j]
            block = np.exp(level) * (v[:, None] + np.cumsum(d[:, i:i + j] * np.exp(-level), axis=1))
            parts.append(block)
            v, i = block[:, -1], i + j
        self.state = (v, self.state[1], self.state[2])
        return (self.stable.counts[:, None] * np.concatenate(parts, axis=1)).sum(0)

    def _with_momentum(self, steps: int) -> np.ndarray:
        """β₁ > 0: the (x, m) second moments step by step, held constant once stationary. Compiled
        (analysis._lag_kernel, the same operations) where the coordinates' pairs are few enough for
        numpy's sum over them to be a plain sum in order (below 8); else the numpy loop."""
        if len(self.stable.curvatures) < 8:
            try:
                from ._lag_kernel import stable_moments
            except ImportError:
                stable_moments = None
            if stable_moments is not None:
                xx, xm, mm = (np.array(a, float) for a in self.state)
                b1 = self.rule.beta1
                out, self.settled = stable_moments(
                    xx, xm, mm, np.ascontiguousarray(self.gains, float), np.asarray(self.stable.curvatures, float),
                    np.asarray(self.stable.sigmas, float), np.asarray(self.stable.counts, float), float(b1),
                    float(b1**2), int(self.settled), float(self.values[-1]), len(self.values), int(steps))
                self.state = (xx, xm, mm)
                return out
        return self._with_momentum_numpy(steps)

    def _with_momentum_numpy(self, steps: int) -> np.ndarray:
        lam, sig, count, b1 = self.stable.curvatures, self.stable.sigmas, self.stable.counts, self.rule.beta1
        xx, xm, mm = self.state
        out = [self.values[-1]]
        for t in range(len(self.values), steps):
            if self.settled > 8:                      # stationary: constant gains, constant V
                out.extend([out[-1]] * (steps - t))
                break
            k = self.gains[:, t]
            # x_t = x − k m_t,  m_t = β₁ m + (1 − β₁)(λx + σξ)
            a11, a12 = 1 - k * (1 - b1) * lam, -k * b1
            a21, a22 = (1 - b1) * lam, b1
            n1, n2 = -k * (1 - b1) * sig, (1 - b1) * sig
            xx, xm, mm = (a11**2 * xx + 2 * a11 * a12 * xm + a12**2 * mm + n1**2,
                          a11 * a21 * xx + (a11 * a22 + a12 * a21) * xm + a12 * a22 * mm + n1 * n2,
                          a21**2 * xx + 2 * a21 * a22 * xm + a22**2 * mm + n2**2)
            total = float((count * xx).sum())
            still = abs(total - out[-1]) <= 1e-13 * max(total, 1e-300) and \
                np.allclose(k, self.gains[:, -1], rtol=1e-13, atol=0)
            self.settled = self.settled + 1 if still else 0
            out.append(total)
        self.state = (xx, xm, mm)
        return np.array(out[1:])


# -- the map ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LagEscape:
    """The escape-step law over quantile nodes: steps[i] at probability mass weights[i]. The map ran
    to `horizon` steps (a node that has not escaped by then has step horizon + 1); the cell's own
    `budget` censors the measured runs, so the escaped fraction and the restricted mean are taken
    at the budget, the mean, median and sd over the whole horizon."""
    steps: np.ndarray
    weights: np.ndarray
    budget: int
    median_step: float
    spread_max: float = 0.0          # the largest V_⊥ over the steps the map ran (norm measure)
    horizon: int | None = None

    @property
    def _horizon(self) -> int:
        return self.budget if self.horizon is None else self.horizon

    @property
    def _complete(self) -> bool:
        return float(self.weights[self.steps <= self._horizon].sum()) >= 0.999

    @property
    def escape_fraction(self) -> float:
        return float(self.weights[self.steps <= self.budget].sum())

    @property
    def restricted_mean(self) -> float:
        return float((self.weights * np.minimum(self.steps, self.budget)).sum())

    @property
    def mean(self) -> float:
        """E[τ], where the horizon holds (nearly) every escape; NaN where more than 0.1% of the mass
        lies past it."""
        return float((self.weights * self.steps).sum()) if self._complete else np.nan

    @property
    def median(self) -> float:
        return self.median_step if self.median_step <= self._horizon else np.nan

    @property
    def sd(self) -> float:
        if not self._complete:
            return np.nan
        mean = (self.weights * self.steps).sum()
        return float(np.sqrt((self.weights * (self.steps - mean) ** 2).sum()))


def run_map(rule: Rule, curvature: float, sigma: float, thresholds, y1: np.ndarray, m1: np.ndarray,
            u1: float, chunk: int = 512, quartic: float = 0.0, spread=None) -> np.ndarray:
    """The deterministic lag map from (y₁, m₁, u₁) at step 1; per node the first step t with
    y_t ≥ thresholds(t)[t − 1] (steps + 1 where never). y in units of σ₁/γ, u of σ₁². `thresholds(n)`
    gives the escape level for steps 1 … n (asked for in chunks, as far as some node is left).
    quartic: λ of a confining (λ/4)‖x‖⁴, whose gradient λ‖x‖²x turns minus the escape coordinate's
    gradient into y (1 − (λ/γ)(x² + V_⊥)); `spread(n)` gives V_⊥ for steps 1 … n (0 without it).

    The steps run compiled (analysis._lag_kernel, the same operations in the same order); the exact
    preconditioner with α ≠ 1, whose power numpy rounds its own way, and a machine without numba run
    `run_map_numpy`, the reference loop. Both give the same steps (tests/test_lag_speed.py)."""
    if rule.exact and rule.alpha != 1:
        return run_map_numpy(rule, curvature, sigma, thresholds, y1, m1, u1, chunk, quartic, spread)
    try:
        from ._lag_kernel import advance
    except ImportError:                       # numba missing: the reference loop
        return run_map_numpy(rule, curvature, sigma, thresholds, y1, m1, u1, chunk, quartic, spread)
    y, m = np.array(y1, float), np.array(m1, float)
    out = np.full(y.shape, rule.steps + 1)
    level = thresholds(min(chunk, rule.steps))
    alive = y < level[0]
    out[~alive] = 1
    index = np.flatnonzero(alive)
    y, m = y[index], m[index]
    u = np.full_like(y, u1)
    top = u.copy()
    n, done = len(index), 1
    sigma2 = sigma**2
    while n:
        extra = spread(len(level)) if (quartic and spread is not None) else np.zeros(len(level))
        n = advance(index, y, m, u, top, n, out, done + 1, level, np.ascontiguousarray(extra, float), rule.lrs,
                    rule.decay, rule.fresh, rule.bias1, rule.bias2, float(rule.beta1), bool(rule.exact),
                    bool(rule.running_max), float(rule.eps), float(sigma), float(sigma2), float(curvature),
                    float(quartic))
        done = len(level)
        if not n or done >= rule.steps:
            break
        level = thresholds(min(len(level) + chunk, rule.steps))
    return out


def run_map_numpy(rule: Rule, curvature: float, sigma: float, thresholds, y1: np.ndarray, m1: np.ndarray,
                  u1: float, chunk: int = 512, quartic: float = 0.0, spread=None) -> np.ndarray:
    """run_map's reference loop in numpy, step by step over the nodes still below their level."""
    y, m = np.array(y1, float), np.array(m1, float)
    u = np.full_like(y, u1)
    top = u.copy()
    out = np.full(y.shape, rule.steps + 1)
    level = thresholds(min(chunk, rule.steps))
    alive = y < level[0]
    out[~alive] = 1
    b1 = rule.beta1
    index = np.flatnonzero(alive)
    y, m, u, top = y[index], m[index], u[index], top[index]
    for t in range(2, rule.steps + 1):
        if not len(index):
            break
        if t > len(level):
            level = thresholds(min(len(level) + chunk, rule.steps))
        drift = y
        if quartic:
            others = spread(t - 1)[t - 2] if spread is not None else 0.0
            drift = y * (1 - quartic / curvature * ((sigma * y / curvature) ** 2 + others))
        square = drift * drift + 1
        u = square if rule.exact else rule.decay[t - 1] * u + rule.fresh[t - 1] * square
        if rule.running_max:
            top = np.maximum(top, u)
        m = drift if b1 == 0 else b1 * m + (1 - b1) * drift
        y = y + rule.lrs[t - 1] * curvature * m / (rule.bias1[t - 1] *
                                                   rule.denominator(top if rule.running_max else u, sigma, t))
        hit = y >= level[t - 1]
        if hit.any():
            out[index[hit]] = t
            keep = ~hit
            index, y, m, u, top = index[keep], y[keep], m[keep], u[keep], top[keep]
    return out


def lag_escape(rule: Rule, curvature: float, sigma: float, radius: float, stable: Stable | None = None,
               start_offset: float = 0.0, dim: float = 1.0, quantiles: int = QUANTILES,
               budget: int | None = None, quartic: float = 0.0) -> LagEscape:
    """The lag model's escape-step law for one cell (docstring of this module). The map runs for
    the rule's length; `budget` (default: that length) is the cell's, which censors the runs.
    stable: the other coordinates, for the norm measure (None: projection). quartic: λ of a confining
    (λ/4)‖x‖⁴ (in the lag map's drift; negligible in the noise phase, ignored for the stable ones)."""
    phase = noise_phase(rule, curvature, sigma)
    starts, start_weights = offset_shares(start_offset, dim, curvature, sigma)
    law = amplitude(rule, phase, curvature, sigma, starts, start_weights)
    probabilities = np.concatenate([(np.arange(quantiles) + 0.5) / quantiles, [0.5]])
    w = law.quantiles(probabilities)
    if not np.isfinite(w).all():
        raise ValueError(f"lag_escape: the amplitude's law is not finite (spread {phase.spread}, centres "
                         f"{law.centres[:4]}...); allowed: positive gains and noise")
    spread = StableSpread(rule, stable if stable is not None else Stable.none())

    def thresholds(steps):
        return curvature / sigma * np.sqrt(np.maximum(radius**2 - spread.upto(steps), 0.0))
    u1 = 1.0 if rule.exact else rule.decay[0] * rule.initial / sigma**2 + rule.fresh[0] * (1 + np.sum(
        start_weights * starts**2))
    steps = run_map(rule, curvature, sigma, thresholds, w, w * phase.start_m, u1, quartic=quartic,
                    spread=spread.upto if stable is not None else None)
    weights = np.full(quantiles, 1.0 / quantiles)
    used = spread.upto(int(min(steps.max(), rule.steps)))
    return LagEscape(steps[:-1].astype(float), weights, rule.steps if budget is None else int(budget),
                     float(steps[-1]), float(used.max()), rule.steps)


# -- closed forms of the continuum limit -----------------------------------------------------------

def log_bessel_i(order, z):
    """ln I_ν(z), stable for large z (scipy's exponentially scaled ive)."""
    z = np.asarray(z, float)
    return np.log(special.ive(order, z)) + z


def bessel_time(x_from, x_to, lr, curvature, sigma_escape, beta2):
    """The continuum lag ODE dx/dt = ηγx/√v, dv/dt = (1 − β₂)(γ²x² + σ₁² − v) on its regular branch
    (√v → σ₁ as x → 0): t = (2/(1 − β₂)) ln[I_ν(z_b)/I_ν(z_a)], ν = σ₁(1 − β₂)/(2ηγ),
    z = x(1 − β₂)/(2η)."""
    one_minus = 1 - np.asarray(beta2, float)
    nu = np.asarray(sigma_escape, float) * one_minus / (2 * np.asarray(lr, float) * np.asarray(curvature, float))
    z = lambda x: np.asarray(x, float) * one_minus / (2 * np.asarray(lr, float))
    return 2 / one_minus * (log_bessel_i(nu, z(x_to)) - log_bessel_i(nu, z(x_from)))


def floor(ratio):
    """f = (2/R) ln I₀(R/2): the deep sign regime's escape time in units of r/η, a function of
    R = r(1 − β₂)/η alone (ν → 0 of bessel_time from the saddle)."""
    ratio = np.asarray(ratio, float)
    return 2 / ratio * log_bessel_i(0, ratio / 2)


def floor_ratio(lr, beta2, escape_radius=1.0):
    """R = r(1 − β₂)/η: the escape radius over the average's displacement η/(1 − β₂)."""
    return np.asarray(escape_radius, float) * (1 - np.asarray(beta2, float)) / np.asarray(lr, float)


def debye_time(y_from, y_to, lr, curvature, sigma_escape):
    """ν → ∞ (the estimate tracks E[g²|x]): dy/dt = ε y/√(1 + y²), ε = ηγ/σ₁, so
    t = [F(y_to) − F(y_from)]/ε with F(y) = √(1 + y²) − ln((1 + √(1 + y²))/y): the paper's
    second-moment preconditioner G(x)^(−1/2) without noise."""
    def big_f(y):
        y = np.asarray(y, float)
        root = np.sqrt(1 + y**2)
        return root - np.log((1 + root) / y)
    epsilon = np.asarray(lr, float) * np.asarray(curvature, float) / np.asarray(sigma_escape, float)
    return (big_f(y_to) - big_f(y_from)) / epsilon


def small_ratio_time(lr, beta2, escape_radius=1.0):
    """R ≪ 1 (escape inside the average's memory): ln I₀(z) ≈ z²/4 gives T ≈ r²(1 − β₂)/(8η²)."""
    return np.asarray(escape_radius, float) ** 2 * (1 - np.asarray(beta2, float)) / (8 * np.asarray(lr, float) ** 2)


# -- the model's two limits and where they meet --------------------------------------------------

def noise_led_time(rule: Rule, curvature: float, sigma: float, radius: float, quantiles: int = QUANTILES) -> float:
    """The model's noise-led limit: E τ if the estimate kept tracking the noise alone all the way to
    r (no lag, no signal in v): the first t with |W| N_t ≥ Y = γr/σ₁, over the quantiles of |W|.
    NaN where some quantile does not get there within the rule's steps."""
    phase = noise_phase(rule, curvature, sigma)
    w = amplitude(rule, phase, curvature, sigma).quantiles((np.arange(quantiles) + 0.5) / quantiles)
    log_growth = np.concatenate([[0.0], np.cumsum(np.log1p(rule.gains(curvature, sigma)[1:]))])
    if phase.ell_m:            # with momentum the noise phase grows along its mode (N_t from the map itself)
        kappa = rule.gains(curvature, sigma)
        y, m, log_growth = 1.0, phase.start_m, [0.0]
        for t in range(2, rule.steps + 1):
            m = rule.beta1 * m + (1 - rule.beta1) * y
            y_new = y + kappa[t - 1] * m
            log_growth.append(log_growth[-1] + np.log(y_new / y))
            m, y = m / y_new, 1.0
        log_growth = np.array(log_growth)
    steps = np.searchsorted(log_growth, np.log(curvature * radius / (sigma * w))) + 1
    return float(np.mean(steps)) if steps.max() <= rule.steps else np.nan


def floor_led_time(rule: Rule, radius: float, sigma_small: float = 1e-9) -> float:
    """The model's floor-led limit: the lag map's escape time as σ₁ → 0 (the discrete counterpart of
    (r/η) f(R)), along the escape direction."""
    return lag_escape(rule, 1.0, sigma_small, radius, quantiles=8).mean


def crossover(rule: Rule, curvature: float, radius: float, low: float = 1e-7, high: float = 1e3) -> float:
    """γr/σ₁ at which the model's two limits meet: the noise-led time equals the floor-led one. Above
    it (less noise along the escape direction) escape is floor-led. Bisection in ln σ₁; NaN where the
    limits do not cross between σ₁ = low and high."""
    floor_time = floor_led_time(rule, radius)

    def gap(log_sigma):                 # a noise-led time beyond the rule's steps counts as longer
        noise = noise_led_time(rule, curvature, np.exp(log_sigma), radius, 400)
        return np.log(noise) - np.log(floor_time) if np.isfinite(noise) else np.inf

    lo, hi = np.log(low), np.log(high)
    if not gap(lo) < 0 < gap(hi):
        return np.nan
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    return float(curvature * radius / np.exp((lo + hi) / 2))


# -- the check: a direct Monte Carlo of the scalar recursion ---------------------------------------

def monte_carlo(rule: Rule, curvature: float, sigma: float, radius: float, stable: Stable | None = None,
                runs: int = 20_000, seed: int = 0, start_y: float = 0.0, quartic: float = 0.0) -> np.ndarray:
    """Escape steps of the exact recursion (float64): the escape coordinate x (g = −γx + σ₁ξ) and,
    for the norm measure, every stable coordinate (g = λx + σξ); censored runs get T + 1. What the
    map is checked against (tests/test_analysis_lag.py); the engine is the same recursion in d
    dimensions."""
    rng = np.random.default_rng(seed)
    curv = np.concatenate([[-curvature], np.repeat(stable.curvatures, stable.counts.astype(int))]) \
        if stable is not None else np.array([-curvature])
    sig = np.concatenate([[sigma], np.repeat(stable.sigmas, stable.counts.astype(int))]) \
        if stable is not None else np.array([sigma])
    x = np.zeros((runs, len(curv)))
    x[:, 0] = start_y * sigma / curvature
    u = np.full_like(x, rule.initial)
    top = np.zeros_like(x)
    m = np.zeros_like(x)
    steps = np.full(runs, rule.steps + 1)
    index = np.arange(runs)
    for t in range(1, rule.steps + 1):
        full = curv * x + (quartic * (x * x).sum(1, keepdims=True) * x if quartic else 0.0)
        g = full + sig * rng.standard_normal(x.shape)
        if rule.exact:
            u = full**2 / sig**2 + 1
            denominator = (sig**2 * u + rule.eps) ** (rule.alpha / 2)
        else:
            u = rule.decay[t - 1] * u + rule.fresh[t - 1] * g * g
            top = np.maximum(top, u) if rule.running_max else u
            denominator = np.sqrt(top / rule.bias2[t - 1]) + rule.eps
        m = g if rule.beta1 == 0 else rule.beta1 * m + (1 - rule.beta1) * g
        x = x - rule.lrs[t - 1] * m / (rule.bias1[t - 1] * denominator)
        out = np.sqrt((x * x).sum(1)) >= radius
        if out.any():
            steps[index[out]] = t
            keep = ~out
            index, x, u, top, m = index[keep], x[keep], u[keep], top[keep], m[keep]
            if not len(index):
                break
    return steps


__all__ = ["LagEscape", "Rule", "Stable", "amplitude", "bessel_time", "crossover", "debye_time", "exact_rule",
           "exponential_rule", "floor", "floor_led_time", "floor_ratio", "lag_escape", "log_bessel_i",
           "monte_carlo", "noise_led_time",
           "noise_phase", "run_map", "small_ratio_time", "StableSpread", "sum_rule"]
