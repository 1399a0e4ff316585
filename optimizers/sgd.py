"""SGD: x ← x − η g. The baseline every adaptive method is a preconditioned version of."""

from workflows.core.params import Param

from .base import Empty, Optimizer, lr_param, sgd_step

NAME = "sgd"
SCHEMA: dict[str, Param] = {"lr": lr_param(1e-2)}


def build(hp: dict, problem=None) -> Optimizer:
    def init(x):
        return Empty()

    def update(grad, state, x):
        return sgd_step(grad, hp["lr"]), state

    return Optimizer(init, update)
