"""Shampoo-style matrix whitening (Gupta, Koren & Singer 2018), batched over runs, on each matrix
the problem declares (workflows/core/shapes.py):

    L ← β₂ L + (1 − β₂) G Gᵀ,   R ← β₂ R + (1 − β₂) Gᵀ G       (β₂ = 1: the sums L += GGᵀ, Shampoo)
    L̂ = L / (1 − β₂ᵗ),  R̂ = R / (1 − β₂ᵗ)                       (bias correction, as Adam's; not for sums)
    both:   W ← W − η (L̂ + εI)^(−1/4) G (R̂ + εI)^(−1/4)            two-sided (Shampoo)
    left:   W ← W − η (L̂ + εI)^(−1/2) G                            one-sided: whitens G's row space
    right:  W ← W − η G (R̂ + εI)^(−1/2)

Without the bias correction the first steps are about (1 − β₂)^(−1/2) times larger, as RMSProp's are.

The inverse roots come from a float64 eigendecomposition (optimizers/base.py: matrix_power),
recomputed at each of the first `precondition_every` steps, then every `precondition_every` steps. A tensor that is not a matrix (a
vector x, a bias) gets the one-sided form with L = Σ g gᵀ over its own entries: full-matrix
AdaGrad/RMSProp (`adagrad_full`/`adaptive_full` on that tensor).

With β₂ = 1, sides both and precondition_every 1 this is pytorch_optimizer.Shampoo(momentum=0)
(its ε·I start of L and R is the εI here), checked run for run in tests/test_matrix_optimizers.py.

The three whitenings of a matrix gradient: Muon's polar factor (GGᵀ)^(−1/2)G of the current G,
this estimate of E[GGᵀ]^(−1/2)G from past gradients (sides: left), and the paper's full-matrix
second-moment preconditioner E[vec G vec Gᵀ]^(−1/2) vec G (`adaptive_full`), which the Kronecker
product R ⊗ L approximates (docs/theory.md, "Matrix whitening").
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from workflows.core.params import Param, at_least, choice, non_negative
from workflows.core.shapes import is_matrix, split, structure

from .base import Optimizer, lr_param, matrix_power, require_problem

NAME = "matrix_whitening"
SCHEMA = {
    "lr": lr_param(1e-3),
    "beta2": Param(0.999, float, "in [0, 1]", lambda v: 0 <= v <= 1,
                   "EMA of the statistics; 1: their sum (Shampoo, AdaGrad)"),
    "bias_correction": Param(True, bool, "true or false",
                             doc="divide the EMA statistics by 1 − β₂ᵗ before their roots, as Adam does"),
    "eps": Param(1e-6, float, ">= 0", non_negative, "ε added to L and R before their roots"),
    "sides": choice("both", "both", "left", "right",
                    doc="both: L^(−1/4) G R^(−1/4) (Shampoo); left: L^(−1/2) G; right: G R^(−1/2)"),
    # Shampoo's practice: the roots are costly (a float64 eigendecomposition per matrix and run)
    # and the statistics change slowly. pytorch_optimizer.Shampoo's default is 1.
    "precondition_every": Param(10, int, ">= 1", at_least(1), "steps between recomputed inverse roots"),
}


class Statistics(NamedTuple):
    """One tensor's: left [R, A, A] and right [R, B, B] statistics and their inverse roots (None
    where the side is not used)."""
    left: torch.Tensor | None
    right: torch.Tensor | None
    left_root: torch.Tensor | None
    right_root: torch.Tensor | None


class WhiteningState:
    def __init__(self, tensors: list[Statistics], count: int = 0):
        self.tensors, self.count = tensors, count

    def select(self, keep) -> "WhiteningState":
        return WhiteningState([Statistics(*(None if s is None else s[keep] for s in t)) for t in self.tensors],
                              self.count)


def sides_of(shape, sides: str) -> tuple[bool, bool]:
    """(left, right) used for a tensor: a vector is one-sided (full-matrix) whatever `sides` says."""
    if not is_matrix(shape):
        return True, False
    return sides in ("both", "left"), sides in ("both", "right")


def build(hp: dict, problem=None) -> Optimizer:
    require_problem(NAME, problem, "its parameter's shapes, to find the matrices")
    shapes = structure(problem)

    def init(x):
        out = []
        for s, w in zip(shapes, split(x, shapes)):
            left, right = sides_of(s, hp["sides"])
            rows = w.reshape(len(w), s.shape[0], -1)          # a vector as a column [R, d, 1]
            square = lambda n: torch.zeros(len(w), n, n, dtype=w.dtype)
            out.append(Statistics(square(rows.shape[1]) if left else None, square(rows.shape[2]) if right else None,
                                  None, None))
        return WhiteningState(out)

    def update(grad, state, x):
        t, beta2, eps = state.count + 1, hp["beta2"], hp["eps"]
        # Every step while the statistics are young (a root of L₁ = G₁G₁ᵀ + εI applied to G₂
        # amplifies G₂'s part outside G₁'s span by ε^(−1/2): runs jumped out at once), then every k.
        every = hp["precondition_every"]
        recompute = t <= every or (t - 1) % every == 0
        debias = 1 - beta2**t if hp["bias_correction"] and beta2 < 1 else 1.0
        steps, kept = [], []
        for s, g, stats in zip(shapes, split(grad, shapes), state.tensors):
            G = g.reshape(len(g), s.shape[0], -1)                  # a vector as a column [R, d, 1]
            power = -0.25 if stats.left is not None and stats.right is not None else -0.5
            left_root, right_root = stats.left_root, stats.right_root
            if stats.left is not None:
                accumulate(stats.left, G @ G.transpose(1, 2), beta2)
                left_root = matrix_power(stats.left / debias, power, eps) if recompute else left_root
            if stats.right is not None:
                accumulate(stats.right, G.transpose(1, 2) @ G, beta2)
                right_root = matrix_power(stats.right / debias, power, eps) if recompute else right_root
            whitened = G if left_root is None else left_root @ G
            whitened = whitened if right_root is None else whitened @ right_root
            steps.append(whitened.reshape(len(g), -1))
            kept.append(Statistics(stats.left, stats.right, left_root, right_root))
        state.tensors, state.count = kept, t
        return torch.cat(steps, dim=1).mul_(-hp["lr"]), state

    return Optimizer(init, update)


def accumulate(statistic: torch.Tensor, outer: torch.Tensor, beta2: float):
    if beta2 == 1.0:
        statistic.add_(outer)
    else:
        statistic.mul_(beta2).add_(outer, alpha=1 - beta2)
