"""Saddle problems, registered by name. `make_problem(spec, seed)` builds one from plain data."""
from __future__ import annotations

import torch

from .base import Problem
from .deep_linear import DeepLinear
from .logistic_regression import LogisticRegression
from .matrix_factorization import MatrixFactorization
from .mlp_teacher_student import MLPTeacherStudent
from .params import Param
from .pca import StreamingPCA
from .phase_retrieval import PhaseRetrieval
from .quadratic_saddle import QuadraticSaddle
from .staib_toy import StaibToy
from .tensor_decomposition import TensorDecomposition

PROBLEMS: dict[str, type[Problem]] = {cls.name: cls for cls in (
    QuadraticSaddle, StaibToy, MatrixFactorization, StreamingPCA, TensorDecomposition, PhaseRetrieval,
    DeepLinear, MLPTeacherStudent, LogisticRegression)}


def problem_class(name) -> type[Problem]:
    if name not in PROBLEMS:
        raise ValueError(f"problem.name={name!r} is not a known problem; allowed: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]


def validate_problem(spec: dict) -> dict:
    """{'name': ..., **params} -> the same with every default filled in and every value checked."""
    params = dict(spec)
    cls = problem_class(params.pop("name", None))
    return {"name": cls.name, **cls.validate(params)}


def make_problem(spec: dict, seed: int, dtype=torch.float32, device="cpu") -> Problem:
    """The problem's own randomness (rotations, data) comes from a generator seeded by the
    cell's seed, separate from the per-step noise: the same cell is the same problem."""
    spec = validate_problem(spec)
    params = dict(spec)
    cls = problem_class(params.pop("name"))
    generator = torch.Generator().manual_seed(seed)
    return cls(params, generator, dtype=dtype, device=device)


__all__ = ["PROBLEMS", "Problem", "Param", "make_problem", "problem_class", "validate_problem"]
