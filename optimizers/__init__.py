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


__all__ = ["BUILTIN_OPTIMIZERS", "Optimizer", "select_runs"]
