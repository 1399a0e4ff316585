"""Adam (Kingma & Ba), as torch.optim.Adam computes it:

    m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
    A_t = diag(√(v / (1 − β₂ᵗ)) + ε)⁻¹                 the preconditioner estimate
    x ← x − η A_t m / (1 − β₁ᵗ)

With β₁ = 0 and no bias correction this is RMSProp. Staib et al. analyse β₁ = 0.
"""
from typing import NamedTuple

import torch

from workflows.core.compat import fused_adam
from workflows.core.params import Param, non_negative, unit_open

from .base import Optimizer, lr_param, sgd_step

NAME = "adam"
SCHEMA = {
    "lr": lr_param(1e-3),
    "beta1": Param(0.9, float, "in [0, 1)", unit_open, "β₁, momentum; 0: none"),
    "beta2": Param(0.999, float, "in [0, 1)", unit_open, "β₂, the second-moment memory"),
    "eps": Param(1e-8, float, ">= 0", non_negative),
    "bias_correction": Param(True, bool, "true or false"),
}


class AdamState(NamedTuple):
    m: torch.Tensor | None
    v: torch.Tensor
    count: int
    beta2_power: float = 1.0     # Π_s β₂ₛ: the bias correction is 1 − it (1 − β₂ᵗ for a fixed β₂)


class AMSGradState(NamedTuple):
    m: torch.Tensor | None
    v: torch.Tensor
    v_max: torch.Tensor
    count: int
    beta2_power: float = 1.0


def build(hp: dict, problem=None) -> Optimizer:
    return adam_family(hp, amsgrad=False)


def adam_family(hp: dict, amsgrad: bool) -> Optimizer:
    """Adam, or AMSGrad (Reddi et al. 2018: the preconditioner uses the running maximum of v).
    Hyperparameters are read at each step (a schedule may move lr, and the β₂ rule β₂)."""
    # torch.optim.Adam(fused=True)'s kernel: the whole step in one pass over x, g, m, v (about 3x
    # fewer memory passes than the unfused update below). It always bias-corrects, with 1 − β₂ᵗ:
    # right for a fixed β₂ only, so a β₂ that follows the step size takes the unfused update.
    varying_beta2 = hp.get("beta2_rule", "none") != "none"
    fused = fused_adam() if hp["bias_correction"] and not varying_beta2 else None

    def init(x):
        # β₁ = 0: m is g itself, so no buffer is kept (the fused kernel wants one regardless).
        m = torch.zeros_like(x) if hp["beta1"] or fused else None
        return AMSGradState(m, torch.zeros_like(x), torch.zeros_like(x), 0) if amsgrad \
            else AdamState(m, torch.zeros_like(x), 0)

    def update(grad, state, x):
        t, beta1, beta2, eps = state.count + 1, hp["beta1"], hp["beta2"], hp["eps"]
        v = state.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v_used = torch.maximum(state.v_max, v, out=state.v_max) if amsgrad else v
        beta2_power = state.beta2_power * beta2
        step_size, v_scale = hp["lr"], 1.0
        if hp["bias_correction"]:
            step_size /= 1 - beta1**t
            v_scale = (1 - beta2_power) ** 0.5
        # √v / √(1 − Πβ₂) + ε in two passes over memory, not three.
        denom = (torch.add(torch.tensor(eps), v_used.sqrt(), alpha=1 / v_scale) if v_scale != 1.0
                 else v_used.sqrt().add_(eps))
        if beta1:
            m = state.m.lerp_(grad, 1 - beta1)
            preconditioned = m / denom
        else:
            m, preconditioned = state.m, grad.div_(denom)
        new_state = (AMSGradState(m, v, v_used, t, beta2_power) if amsgrad
                     else AdamState(m, v, t, beta2_power))
        return sgd_step(preconditioned, step_size), new_state

    def apply(grad, state, x):
        t = state.count + 1
        fused([x], [grad], [state.m], [state.v], [state.v_max] if amsgrad else [],
              [torch.tensor(float(t))], lr=hp["lr"], beta1=hp["beta1"], beta2=hp["beta2"], weight_decay=0.0,
              eps=hp["eps"], amsgrad=amsgrad, maximize=False)
        return state._replace(count=t)

    return Optimizer(init, update, apply if fused else None)
