"""Full-matrix AdaGrad (Duchi, Hazan & Singer 2011), the sum form Staib et al. start from:

    G_t = δI + Σ_{s≤t} g_s g_sᵀ,     A_t = (G_t + εI)^(−1/2),     x ← x − η A_t g_t.

Where diagonal AdaGrad (`adagrad`) keeps diag(G_t), this whitens rotated noise too; A_t shrinks
like 1/√t, so the step decays (no forgetting, unlike `adaptive_full`'s moving average). One
float64 eigh per step and run: for small d.
"""
from typing import NamedTuple

import torch

from workflows.core.params import Param, non_negative

from .base import Optimizer, full_precondition, lr_param, sgd_step

NAME = "adagrad_full"
SCHEMA = {
    "lr": lr_param(1e-2),
    "eps": Param(1e-10, float, ">= 0", non_negative, "added to G_t's eigenvalues"),
    "initial_accumulator": Param(0.0, float, ">= 0", non_negative, "δ: G₀ = δI"),
}


class FullAdagradState(NamedTuple):
    G: torch.Tensor          # [R, d, d]


def build(hp: dict, problem=None) -> Optimizer:
    def init(x):
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        return FullAdagradState((hp["initial_accumulator"] * eye).expand(x.shape[0], -1, -1).clone())

    def update(grad, state, x):
        G = state.G.add_(grad[:, :, None] * grad[:, None, :])
        preconditioned = full_precondition(G, grad, -0.5, hp["eps"])
        return sgd_step(preconditioned, hp["lr"]), FullAdagradState(G)

    return Optimizer(init, update)
