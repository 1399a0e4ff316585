"""CNC-SGD (Daneshmand, Kohler, Lucchi & Hofmann 2018, "Escaping saddles with stochastic
gradients"): SGD that every t_thres steps takes one larger step r > η along the stochastic
gradient, so that the noise's correlation with the negative-curvature direction (the CNC
constant E[(vᵀg)²]) does the escaping:

    x_{t+1} = x_t − r g_t    if t mod t_thres = 0   [and ‖∇f(x_t)‖ ≤ g_thres: CNC-PGD's test]
    x_{t+1} = x_t − η g_t    otherwise,               t = 1, 2, …

`g_thres: null` (the default) is CNC-SGD; a number gates the large step on the full gradient
being small (near a saddle), as CNC-PGD does. With r = η this is SGD exactly.
"""
from typing import NamedTuple

import torch

from workflows.core.params import Param, at_least, non_negative, positive

from .base import Optimizer, full_gradient_is_small, lr_param, require_problem, sgd_step

NAME = "cnc_sgd"
SCHEMA = {
    "lr": lr_param(1e-2),
    "large_lr": Param(0.1, float, "> 0", positive, "r, the periodic large step size"),
    "t_thres": Param(100, int, ">= 1", at_least(1), "a large step every t_thres steps"),
    "g_thres": Param(None, float, ">= 0, or null for no test", non_negative,
                     "take the large step only where ‖∇f‖ ≤ g_thres"),
}


class CNCState(NamedTuple):
    count: int


def build(hp: dict, problem=None) -> Optimizer:
    if hp["g_thres"] is not None:
        require_problem(NAME, problem, "g_thres tests the full gradient")

    def init(x):
        return CNCState(0)

    def update(grad, state, x):
        t = state.count + 1
        if t % hp["t_thres"]:
            return sgd_step(grad, hp["lr"]), CNCState(t)
        if hp["g_thres"] is None:
            return sgd_step(grad, hp["large_lr"]), CNCState(t)
        large = full_gradient_is_small(problem, x, hp["g_thres"])
        lr = torch.where(large, hp["large_lr"], hp["lr"]).to(grad.dtype)[:, None]
        return grad.mul_(-lr), CNCState(t)

    return Optimizer(init, update)
