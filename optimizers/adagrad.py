"""AdaGrad (Duchi et al.), diagonal, as torch.optim.Adagrad computes it (no lr decay):

    s ← s + g²,    A_t = diag(√s + ε)⁻¹,    x ← x − η A_t g

The sum G_t = Σ g gᵀ of Staib et al., diagonal: the preconditioner shrinks like 1/√t.
"""
from typing import NamedTuple

import torch

from workflows.core.params import Param, non_negative

from .base import Optimizer, lr_param, sgd_step

NAME = "adagrad"
SCHEMA = {
    "lr": lr_param(1e-2),
    "eps": Param(1e-10, float, ">= 0", non_negative),
    "initial_accumulator": Param(0.0, float, ">= 0", non_negative),
}


class AdagradState(NamedTuple):
    sum_sq: torch.Tensor


def build(hp: dict, problem=None) -> Optimizer:
    def init(x):
        return AdagradState(torch.full_like(x, hp["initial_accumulator"]))

    def update(grad, state, x):
        sum_sq = state.sum_sq.addcmul_(grad, grad)
        preconditioned = grad.div_(sum_sq.sqrt().add_(hp["eps"]))
        return sgd_step(preconditioned, hp["lr"]), AdagradState(sum_sq)

    return Optimizer(init, update)
