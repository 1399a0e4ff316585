"""RMSProp (Tieleman & Hinton), as torch.optim.RMSprop computes it:

    v ← β₂ v + (1 − β₂) g²           the diagonal of G_t, Staib et al.'s moving average
    A_t = diag(√v + ε)⁻¹              the preconditioner estimate
    x ← x − η A_t g

No bias correction, so the first steps are about η/√(1 − β₂) (docs/theory.md).
"""
from typing import NamedTuple

import torch

from workflows.core.params import Param, non_negative, unit_open

from .base import Optimizer, lr_param, sgd_step

NAME = "rmsprop"
SCHEMA = {
    "lr": lr_param(1e-3),
    "beta2": Param(0.99, float, "in [0, 1)", unit_open, "β₂ (torch calls it alpha)"),
    "eps": Param(1e-8, float, ">= 0", non_negative),
}


class RMSPropState(NamedTuple):
    v: torch.Tensor


def build(hp: dict, problem=None) -> Optimizer:
    def init(x):
        return RMSPropState(torch.zeros_like(x))

    def update(grad, state, x):
        beta2 = hp["beta2"]                  # live: the β2 rule under a step-size schedule moves it
        v = state.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        preconditioned = grad.div_(v.sqrt().add_(hp["eps"]))
        return sgd_step(preconditioned, hp["lr"]), RMSPropState(v)

    return Optimizer(init, update)
