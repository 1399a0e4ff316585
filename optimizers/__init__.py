"""Batched update rules. Each built-in module reads like its equation: a preconditioner estimate
A_t followed by the SGD step x ← x − η A_t g. The registry (workflows/registry.py) resolves a
name: a built-in, a plugin, or any torch.optim.Optimizer class by its path (the adapter)."""
from __future__ import annotations

from . import (
    adagrad,
    adagrad_full,
    adam,
    adaptive_full,
    amsgrad,
    cnc_sgd,
    matrix_whitening,
    momentum,
    muon,
    perturbed_sgd,
    precond_sgd,
    rmsprop,
    sgd,
)
from .base import Optimizer, select_runs

BUILTIN_OPTIMIZERS = (sgd, momentum, rmsprop, adam, adagrad, precond_sgd, adaptive_full, amsgrad, adagrad_full,
                      perturbed_sgd, cnc_sgd, muon, matrix_whitening)


def validate_optimizer(spec: dict) -> dict:
    """{'name': ..., **hyperparameters} -> the same with every default filled in and checked."""
    from workflows.registry import get_optimizer

    params = dict(spec)
    component = get_optimizer(params.pop("name", None))
    return {"name": component.name, **component.validate(params)}


def make_optimizer(spec: dict, problem=None) -> Optimizer:
    from workflows.registry import get_optimizer

    hp = validate_optimizer(spec)
    return get_optimizer(hp.pop("name")).factory(hp, problem)


__all__ = ["BUILTIN_OPTIMIZERS", "Optimizer", "make_optimizer", "select_runs", "validate_optimizer"]
