"""Real phase retrieval from Gaussian measurements:

    f(w) = (1/n) Σ_i ((a_iᵀw)² − y_i)²,    a_i ~ N(0, I_d),  y_i = (a_iᵀw♮)² + σ ε_i,

w♮ a random unit vector, σ = measurement_noise. Minibatches of `batch_size` measurements drawn
with replacement; the per-measurement gradient is 4((aᵀw)² − y)(aᵀw) a.

In the population limit (n → ∞, σ = 0), f = 3‖w‖⁴ + 3‖w♮‖⁴ − 2‖w‖²‖w♮‖² − 4(wᵀw♮)²: minima
±w♮, a local maximum at 0, and strict saddles on the sphere {w ⊥ w♮, ‖w‖² = ‖w♮‖²/3}, where the
Hessian 24wwᵀ − 8w♮w♮ᵀ has curvature 8‖w♮‖² along w♮ and is flat along the sphere. With n
finite the sphere breaks up into isolated stationary points: the runs start at the one found by
eigenvector following (up along the most negative mode, down all others) from a random point
of the population sphere, to ‖∇f‖ ≤ 1e-11 in float64, so the declared saddle is a stationary point of the very objective being optimised.
The minimiser is found the same way from w♮ (exactly w♮ when σ = 0, f = 0; with σ > 0 it is the
local minimum near w♮, taken as the global one, which it is with high probability for n ≫ d).
Escape radius by default: half the distance from the saddle to the nearest of ±w_min.
"""
from __future__ import annotations

import torch

from workflows.core.params import Param, at_least, non_negative

from .sampled import (
    FiniteSum,
    batch_size_param,
    data_matmul,
    data_tmatmul,
    escape_params,
    find_saddle,
)


class PhaseRetrieval(FiniteSum):
    name = "phase_retrieval"
    SCHEMA = {
        "dim": Param(10, int, ">= 2", at_least(2), "d"),
        "n_samples": Param(500, int, ">= 4·dim", at_least(8), "n measurements"),
        "measurement_noise": Param(0.0, float, ">= 0", non_negative, "σ: y = (aᵀw♮)² + σε"),
        "batch_size": batch_size_param(10),
        **escape_params(),
    }

    LIMITS = (("n_samples", lambda p: p["n_samples"] >= 4 * p["dim"],
               lambda p: f">= 4·dim (dim={p['dim']}): fewer measurements do not determine w"),)

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        p = self.params = params
        d, n = p["dim"], p["n_samples"]
        self.dim, self.n_examples, self.batch_size = d, n, p["batch_size"]
        f64 = dict(generator=generator, dtype=torch.float64)
        self.a = torch.randn(n, d, **f64)
        signal = torch.randn(d, **f64)
        self.signal = signal / torch.linalg.vector_norm(signal)
        self.y = (self.a @ self.signal).square() + p["measurement_noise"] * torch.randn(n, **f64)
        start = torch.randn(d, **f64)
        start -= (start @ self.signal) * self.signal
        start *= 3**-0.5 / torch.linalg.vector_norm(start)
        self.saddle = find_saddle(self, start)
        w_min = find_saddle(self, self.signal.clone(), n_negative=0)
        self.minimum_loss = float(self.loss(w_min[None])[0])
        self.finish(dtype, device, minimizers=torch.stack([w_min, -w_min]))

    def _residual(self, x, a, y):
        projections = data_matmul(a, x[:, :, None])                  # [R, n or B, 1]
        return projections, projections.square() - y[..., None]

    def loss(self, x):
        _, residual = self._residual(x, self.a, self.y)
        return residual.square().mean((-2, -1))

    def _grad(self, x, a, y):
        projections, residual = self._residual(x, a, y)
        return 4 * data_tmatmul(a, residual * projections)[..., 0] / a.shape[-2]

    def grad(self, x):
        return self._grad(x, self.a, self.y)

    def _curvature_weights(self, x):
        """∇²f = (4/n) Σ_i (3(a_iᵀw)² − y_i) a_i a_iᵀ: the per-measurement weights, [R, n]."""
        return 4 * (3 * (x @ self.a.T).square() - self.y) / self.n_examples

    def hessian(self, x):
        return torch.einsum("rn,nd,ne->rde", self._curvature_weights(x), self.a, self.a)

    def hvp(self, x, v):
        return (self._curvature_weights(x) * (v @ self.a.T)) @ self.a

    def stochastic_grad(self, x, drawn):
        return self._grad(x, self.a[drawn], self.y[drawn])
