"""Saddle problems. The built-in classes are listed here; the registry (workflows/registry.py)
resolves a name, built-in or plugin, and its `make_problem(spec, seed)` builds one from plain data."""
from __future__ import annotations

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


__all__ = ["BUILTIN_PROBLEMS", "Problem"]
