"""Heavy-ball momentum (optionally Nesterov), as torch.optim.SGD computes it (dampening 0):

    b ← μ b + g   (b₀ = 0, so b₁ = g exactly),    x ← x − η (g + μ b) if nesterov else x − η b.
"""
from typing import NamedTuple

import torch

from workflows.core.params import Param, unit_open

from .base import Optimizer, lr_param, sgd_step

NAME = "momentum"
SCHEMA = {
    "lr": lr_param(1e-2),
    "momentum": Param(0.9, float, "in [0, 1)", unit_open, "μ"),
    "nesterov": Param(False, bool, "true or false"),
}


class MomentumState(NamedTuple):
    buffer: torch.Tensor


def build(hp: dict, problem=None) -> Optimizer:
    mu = hp["momentum"]

    def init(x):
        return MomentumState(torch.zeros_like(x))

    def update(grad, state, x):
        buffer = state.buffer.mul_(mu).add_(grad)
        direction = grad.add_(buffer, alpha=mu) if hp["nesterov"] else buffer.clone()
        return sgd_step(direction, hp["lr"]), MomentumState(buffer)

    return Optimizer(init, update)
