"""Saddle problems. The built-in classes are listed here; the registry (workflows/registry.py)
resolves a name, built-in or plugin, and `make_problem(spec, seed)` builds one from plain data."""
from __future__ import annotations

import torch

from .base import Problem
from .deep_linear import DeepLinear
from .logistic_regression import LogisticRegression
from .matrix_factorization import MatrixFactorization
from .mlp_teacher_student import MLPTeacherStudent
from .pca import StreamingPCA
from .phase_retrieval import PhaseRetrieval
from .quadratic_saddle import QuadraticSaddle
from .staib_toy import StaibToy
from .tensor_decomposition import TensorDecomposition

BUILTIN_PROBLEMS: tuple[type[Problem], ...] = (
    QuadraticSaddle, StaibToy, MatrixFactorization, StreamingPCA, TensorDecomposition, PhaseRetrieval,
    DeepLinear, MLPTeacherStudent, LogisticRegression)


def validate_problem(spec: dict) -> dict:
    """{'name': ..., **params} -> the same with every default filled in and every value checked."""
    from workflows.registry import get_problem

    params = dict(spec)
    component = get_problem(params.pop("name", None))
    return {"name": component.name, **component.validate(params)}


def make_problem(spec: dict, seed: int, dtype=torch.float32, device="cpu") -> Problem:
    """The problem's own randomness (rotations, data) comes from a generator seeded by the
    cell's seed, separate from the per-step noise: the same cell is the same problem."""
    from workflows.registry import get_problem

    params = validate_problem(spec)
    component = get_problem(params.pop("name"))
    generator = torch.Generator().manual_seed(seed)
    problem = component.factory(params, generator, dtype=dtype, device=device)
    problem.seed = seed          # what an optimizer that draws random numbers seeds its runs' streams from
    return problem


__all__ = ["BUILTIN_PROBLEMS", "Problem", "make_problem", "validate_problem"]
