"""The full-matrix adaptive method Staib et al. analyse (their RMSProp, full-matrix form):

    G_t = β G_{t−1} + (1 − β) g gᵀ,     A_t = (G_t + εI)^(−α/2),     x ← x − η A_t g.

G_t estimates E[g gᵀ] online; at a saddle that is Σ, so A_t g has (nearly) isotropic noise
whichever way Σ is rotated, which no diagonal method achieves. Optional bias correction divides
G_t by 1 − βᵗ (without it the first steps are about η/√(1 − β)). One float64 eigh per step and
run: for small d.
"""
from typing import NamedTuple

import torch

from workflows.core.params import Param, non_negative, unit_closed, unit_open

from .base import Optimizer, full_precondition, lr_param, sgd_step

NAME = "adaptive_full"
SCHEMA = {
    "lr": lr_param(1e-3),
    "beta2": Param(0.99, float, "in [0, 1)", unit_open, "β, the memory of G_t"),
    "alpha": Param(1.0, float, "in [0, 1]", unit_closed, "preconditioner exponent α"),
    "eps": Param(1e-8, float, ">= 0", non_negative, "added to G_t's eigenvalues"),
    "bias_correction": Param(False, bool, "true or false"),
}


class FullState(NamedTuple):
    G: torch.Tensor          # [R, d, d]
    count: int
    beta_power: float        # Π_s β_s, for the bias correction


def build(hp: dict, problem=None) -> Optimizer:
    power = -hp["alpha"] / 2

    def init(x):
        return FullState(x.new_zeros(x.shape[0], x.shape[1], x.shape[1]), 0, 1.0)

    def update(grad, state, x):
        t, beta = state.count + 1, hp["beta2"]      # live: the β2 rule under a schedule moves it
        G = state.G.mul_(beta).add_(grad[:, :, None] * grad[:, None, :], alpha=1 - beta)
        # Bias correction 1 − Π_s β_s: the weights of a moving average whose β varies still sum to
        # it (1 − βᵗ for a fixed β).
        beta_power = state.beta_power * beta
        G_hat = G / (1 - beta_power) if hp["bias_correction"] else G
        preconditioned = full_precondition(G_hat, grad, power, hp["eps"])
        return sgd_step(preconditioned, hp["lr"]), FullState(G, t, beta_power)

    return Optimizer(init, update)
