"""Streaming PCA with an Oja-type objective on a spiked covariance:

    f(w) = E_a[ −½ (aᵀw)² + ¼ ‖w‖⁴ ] = −½ wᵀΣw + ¼ ‖w‖⁴,    a ~ N(0, Σ),
    Σ = I + θ₁ u₁u₁ᵀ + θ₂ u₂u₂ᵀ   (u₁ ⊥ u₂ random, fixed by the cell's seed),

so the eigenvalues are λ₁ = 1 + θ₁ > λ₂ = 1 + θ₂ > 1 (the bulk). Each step draws fresh samples
(streaming: the data are the population, so the objective and its stationary points are exact):
the minibatch gradient is −(1/B) Σ_b a_b a_bᵀ w + ‖w‖² w, the gradient form of Oja's rule.

Stationary points: 0 (a local maximum) and ±√λ_i u_i. The minima are ±√λ₁ u₁ (f = −λ₁²/4); the
runs start at the strict saddle w* = √λ₂ u₂ (f = −λ₂²/4), whose Hessian −Σ + λ₂ I + 2λ₂ u₂u₂ᵀ has
the single negative eigenvalue λ₂ − λ₁ along u₁: the curvature is the spectral gap θ₁ − θ₂.
(The bulk saddles √1·u, u ⊥ u₁, u₂, form a sphere of non-isolated saddles: not used.)

For Gaussian a, Isserlis' theorem gives the per-sample noise covariance exactly,
Cov[aaᵀw] = (wᵀΣw) Σ + Σwwᵀ Σ; at w* along u₁ that is λ₁ λ₂², so sigma_escape = λ₂ √(λ₁/B).
Escape is measured along u₁ by default (`escape_measure: projection`, |u₁ᵀ(w − w*)|): with
single-sample noise the bulk directions alone spread ‖w − w*‖ to about the radius. The radius
defaults to half the minimum's, ½√λ₁ (with `norm`: ½‖√λ₁u₁ − w*‖ = ½√(λ₁ + λ₂)).
"""
from __future__ import annotations

import torch

from workflows.core.params import Param, at_least, positive

from .noise import random_rotation
from .sampled import SampledProblem, batch_size_param, escape_params


class StreamingPCA(SampledProblem):
    name = "pca"
    SCHEMA = {
        "dim": Param(20, int, ">= 3", at_least(3), "d"),
        "spike": Param(1.0, float, "> spike2", positive, "θ₁: λ₁ = 1 + θ₁"),
        "spike2": Param(0.5, float, "> 0 and < spike", positive, "θ₂: λ₂ = 1 + θ₂, the saddle's eigenvalue"),
        "batch_size": batch_size_param(1),
        **escape_params("projection"),
    }

    LIMITS = (("spike2", lambda p: p["spike2"] < p["spike"], lambda p: f"> 0 and < spike (spike={p['spike']})"),)

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        p = self.params = params
        d = self.dim = p["dim"]
        self.batch_size = p["batch_size"]
        Q = random_rotation(d, generator, torch.float64)
        self.eigenvalues = torch.cat([torch.tensor([1 + p["spike"], 1 + p["spike2"]], dtype=torch.float64),
                                      torch.ones(d - 2, dtype=torch.float64)])
        self.Sigma = (Q * self.eigenvalues) @ Q.T
        self.sqrt_sigma = (Q * self.eigenvalues.sqrt()) @ Q.T        # a = Σ^½ z
        lam1, lam2 = 1 + p["spike"], 1 + p["spike2"]
        self.saddle = lam2**0.5 * Q[:, 1]
        self.minimum_loss = -lam1**2 / 4
        self.finish(dtype, device, minimizers=torch.stack([lam1**0.5 * Q[:, 0], -lam1**0.5 * Q[:, 0]]))

    @property
    def draw_size(self):
        return self.batch_size * self.dim

    def loss(self, x):
        return -0.5 * ((x @ self.Sigma) * x).sum(-1) + 0.25 * x.square().sum(-1).square()

    def grad(self, x):
        return -(x @ self.Sigma) + x.square().sum(-1, keepdim=True) * x

    def draw(self, generator, steps, runs):
        z = torch.randn(steps, runs, self.batch_size, self.dim, generator=generator,
                        dtype=self.Sigma.dtype, device=self.Sigma.device)
        return z @ self.sqrt_sigma                                   # samples a, [steps, R, B, d]

    def stochastic_grad(self, x, drawn):
        projections = (drawn @ x[:, :, None])                        # [R, B, 1]
        return -(projections * drawn).mean(1) + x.square().sum(-1, keepdim=True) * x

    def sample_noise_variance(self, x, v):
        return float(v @ self.sample_noise_cov(x) @ v)

    def sample_noise_cov(self, x):
        Sx = self.Sigma @ x
        return (x @ Sx) * self.Sigma + torch.outer(Sx, Sx)
