"""The toy problem of Staib et al. (ICML 2019), Figure 1 (docs/theory.md):

    f(x) = (1/n) Σ_i ½ xᵀHx + b_iᵀx + ‖x‖₁₀¹⁰,    H = diag(1, −0.1),

with the b_i of mean exactly 0 and covariance exactly diag(1, 0.01): a saddle at the origin
whose escape direction e₂ carries a tenth of the noise std of the other one. One b_i is drawn
uniformly per step and run. The minima lie at (0, ±0.01^{1/8}) ≈ (0, ±0.562) with
f ≈ −0.0126, so escape is measured along e₂: the first step with |x₂| ≥ escape_radius
(default 0.3, a bit over half-way to the minimum, where the quartic is still negligible:
10·0.3⁹ ≈ 2e-4 against the linear pull 0.1·0.3 = 0.03).
"""
from __future__ import annotations

import math

import torch

from workflows.core.params import Param, at_least, positive

from .base import Problem

CURVATURES = (1.0, -0.1)
NOISE_STD = (1.0, 0.1)


class StaibToy(Problem):
    name = "staib_toy"
    SCHEMA = {
        "n": Param(100, int, ">= 3", at_least(3), "number of b_i in the finite sum"),
        "escape_radius": Param(0.3, float, "> 0", positive, "escape when |x₂| reaches this"),
    }

    def __init__(self, params: dict, generator: torch.Generator, dtype=torch.float32, device="cpu"):
        self.params = params
        n = params["n"]
        self.dim, self.escape_radius = 2, params["escape_radius"]
        # Centre, then whiten with the sample covariance's inverse square root, then scale:
        # the n vectors then have mean exactly 0 and (1/n-normalised) covariance exactly
        # diag(1, 0.01), as the paper specifies.
        b = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        b = b - b.mean(0)
        evals, evecs = torch.linalg.eigh(b.T @ b / n)
        b = b @ (evecs * evals.rsqrt()) @ evecs.T * torch.tensor(NOISE_STD, dtype=torch.float64)
        to = dict(dtype=dtype, device=device)
        self.b = b.to(**to)
        self.h = torch.tensor(CURVATURES, **to)
        self.saddle = torch.zeros(2, **to)
        self.saddle_loss = 0.0
        self.escape_direction = torch.tensor([0.0, 1.0], **to)
        x2 = 0.01 ** (1 / 8)                                  # −0.1 x₂ + 10 x₂⁹ = 0
        self.minimum_loss = -0.05 * x2**2 + x2**10
        self.minima = torch.tensor([[0.0, x2], [0.0, -x2]], **to)

    def loss(self, x):
        return 0.5 * (self.h * x.square()).sum(-1) + x.pow(10).sum(-1)

    def grad(self, x):
        return self.h * x + 10 * x.pow(9)

    def hessian(self, x):
        return torch.diag_embed(self.h + 90 * x.pow(8))

    def hvp(self, x, v):
        return (self.h + 90 * x.pow(8)) * v

    def draw(self, generator, steps, runs):
        return torch.randint(0, self.b.shape[0], (steps, runs), generator=generator,
                             device=self.b.device)

    def stochastic_grad(self, x, drawn):
        return self.grad(x).add_(self.b[drawn])

    def noise_cov(self, x=None):
        return self.b.T @ self.b / self.b.shape[0]

    def derived(self):
        # Exact by construction (the whitening above): γ = 0.1 and σ₁ = 0.1 along e₂.
        return {"curvature": -CURVATURES[1], "sigma_escape": NOISE_STD[1],
                "escape_radius": self.escape_radius,
                "noise_anisotropy": math.sqrt((NOISE_STD[0]**2 + NOISE_STD[1]**2) / 2) / NOISE_STD[1]}

    def escape_distance(self, x):
        return (x[:, 1] - self.saddle[1]).abs()
