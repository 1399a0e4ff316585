"""Orthogonal 4th-order tensor decomposition (Ge, Huang, Jin, Yuan 2015), unconstrained:

    f(u) = −¼ T(u, u, u, u) + (λ/4)(‖u‖² − 1)²,    T = Σ_{i≤d} a_i^{⊗4},  A = [a_i] orthogonal,

the sphere constraint of Ge et al.'s max T(u,u,u,u) replaced by a quartic penalty λ = `penalty`.
The tensor comes from data as in their setting: x = A z with z uniform in {±1}^d, for which
E[(uᵀx)⁴] = 3‖u‖⁴ − 2 T(u,u,u,u), so the per-sample loss

    f_z(u) = ⅛ (uᵀx)⁴ − ⅜ ‖u‖⁴ + (λ/4)(‖u‖² − 1)²

has mean f exactly. Each step draws fresh sign vectors (streaming), B per run.

Stationary points, in coordinates y = Aᵀu: y_i = ±s on a support S of size k, 0 elsewhere, with
s² = λ/(λk − 1) (λ > 1 makes every k ≥ 1 exist), f = −¼ λ/(λk − 1). k = 1: the minima ±√(λ/(λ−1)) a_i.
k ≥ 2: strict saddles, Hessian eigenvalue −2s² on the k − 1 directions within S orthogonal to
u (the escape subspace), positive elsewhere. The runs start at u* = s Σ_{i≤k} a_i,
k = `saddle_support`.

Beware k = 2: for sign vectors (z₁+z₂)(z₁−z₂) = 0, so every per-sample gradient is orthogonal to
the escape direction (a₁ − a₂)/√2 (zero noise along it, noise elsewhere): SGD started exactly
there does not escape. k ≥ 3 (the default, 3) has noise along the escape subspace.

The noise covariance is exact (all 2^d sign vectors enumerated) for d ≤ 16; above that
sigma_escape is a Monte Carlo estimate from 2^16 samples of the construction generator and
`noise_cov` is None. Escape radius by default: half the distance to the nearest minimum.
"""
from __future__ import annotations

import torch

from workflows.core.params import Param, at_least

from .noise import random_rotation
from .sampled import SampledProblem, batch_size_param, escape_params

MAX_ENUMERATED_DIM = 16
MONTE_CARLO_SAMPLES = 1 << 16


def sign_vectors(dim: int) -> torch.Tensor:
    """All 2^dim vectors of ±1, [2^dim, dim] (int8)."""
    bits = (torch.arange(1 << dim)[:, None] >> torch.arange(dim)) & 1
    return (2 * bits - 1).to(torch.int8)


class TensorDecomposition(SampledProblem):
    name = "tensor_decomposition"
    SCHEMA = {
        "dim": Param(8, int, ">= 2", at_least(2), "d: components and dimension"),
        "penalty": Param(2.0, float, "> 1", lambda v: v > 1, "λ of (λ/4)(‖u‖² − 1)²"),
        "saddle_support": Param(3, int, "2 <= saddle_support <= dim", at_least(2),
                                "k: the saddle is an equal mix of k components"),
        "rotate": Param(True, bool, "true or false", None, "random orthogonal components (else the axes)"),
        "batch_size": batch_size_param(10),
        **escape_params(),
    }

    LIMITS = (("saddle_support", lambda p: p["saddle_support"] <= p["dim"],
               lambda p: f"2 <= saddle_support <= dim (dim={p['dim']})"),)

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        p = self.params = params
        d, k, lam = p["dim"], p["saddle_support"], p["penalty"]
        self.dim, self.batch_size, self.penalty = d, p["batch_size"], lam
        self.A = random_rotation(d, generator, torch.float64) if p["rotate"] else torch.eye(d, dtype=torch.float64)
        s = (lam / (lam * k - 1)) ** 0.5
        self.saddle = s * self.A[:, :k].sum(1)
        self.minimum_loss = -0.25 * lam / (lam - 1)
        m = (lam / (lam - 1)) ** 0.5
        if d <= MAX_ENUMERATED_DIM:
            self.population = sign_vectors(d)
        else:
            z = torch.randint(0, 2, (MONTE_CARLO_SAMPLES, d), generator=generator, dtype=torch.int8)
            self.population = 2 * z - 1
        self.finish(dtype, device, minimizers=torch.cat([m * self.A.T, -m * self.A.T]))

    @property
    def draw_size(self):
        return self.batch_size * self.dim

    def loss(self, x):
        y = x @ self.A
        return -0.25 * y.pow(4).sum(-1) + 0.25 * self.penalty * (x.square().sum(-1) - 1).square()

    def grad(self, x):
        y = x @ self.A
        return -(y.pow(3) @ self.A.T) + self.penalty * (x.square().sum(-1, keepdim=True) - 1) * x

    def draw(self, generator, steps, runs):
        z = torch.randint(0, 2, (steps, runs, self.batch_size, self.dim), generator=generator,
                          dtype=torch.int8, device=self.A.device)
        return z.mul_(2).sub_(1)

    def stochastic_grad(self, x, drawn):
        samples = drawn.to(self.A.dtype) @ self.A.T                  # x = A z, [R, B, d]
        projections = samples @ x[:, :, None]                        # [R, B, 1]
        sq = x.square().sum(-1, keepdim=True)
        return (0.5 * (projections.pow(3) * samples).mean(1) - 1.5 * sq * x
                + self.penalty * (sq - 1) * x)

    def example_gradients(self, x):
        grads = self.stochastic_grad(x.expand(len(self.population), -1), self.population[:, None, :])
        return grads, torch.full((len(grads),), 1.0 / len(grads), dtype=x.dtype, device=x.device)

    def noise_cov(self, x=None):
        # A Monte Carlo estimate is not "known": precond_sgd must not treat it as exact.
        return super().noise_cov(x) if self.dim <= MAX_ENUMERATED_DIM else None
