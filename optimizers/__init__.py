"""Batched update rules, registered by name. Each module reads like its equation: a
preconditioner estimate A_t followed by the SGD step x ← x − η A_t g."""
from __future__ import annotations

from problems.params import resolve

from . import (adagrad, adagrad_full, adam, adaptive_full, amsgrad, cnc_sgd, momentum, perturbed_sgd,
               precond_sgd, rmsprop, sgd)
from .base import Optimizer, select_runs

OPTIMIZERS = {m.NAME: m for m in (sgd, momentum, rmsprop, adam, adagrad, precond_sgd, adaptive_full,
                                  amsgrad, adagrad_full, perturbed_sgd, cnc_sgd)}


def optimizer_module(name):
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={name!r} is not a known optimizer; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def validate_optimizer(spec: dict) -> dict:
    params = dict(spec)
    module = optimizer_module(params.pop("name", None))
    return {"name": module.NAME, **resolve(f"optimizer {module.NAME}", module.SCHEMA, params)}


def make_optimizer(spec: dict, problem=None) -> Optimizer:
    hp = validate_optimizer(spec)
    return optimizer_module(hp["name"]).build(hp, problem)


__all__ = ["OPTIMIZERS", "Optimizer", "make_optimizer", "optimizer_module", "select_runs",
           "validate_optimizer"]
