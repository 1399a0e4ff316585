"""Muon (Jordan et al. 2024; "Muon is Scalable for LLM Training", Liu et al. 2025), batched over runs,
as torch.optim.Muon computes it, on each matrix the problem declares (workflows/core/shapes.py):

    B ← μ B + (1 − μ) G                           momentum (torch's lerp form)
    U = G + μ (B − G)  (Nesterov)  or  B
    O = NS₅(U) ≈ (U Uᵀ)^(−1/2) U                   the polar factor: a one-sided whitening of U
    W ← (1 − η λ) W − η √max(1, A/B) O             W: A×B, λ the decoupled weight decay

NS₅ is five steps of the quintic Newton–Schulz iteration X ← aX + (bXXᵀ + c(XXᵀ)²)X with
(a, b, c) = (3.4445, −4.7750, 2.0315), from X = U/‖U‖_F (transposed when A > B), in float32 by
default (`ns_dtype: bfloat16` is torch's choice, and then this reproduces torch.optim.Muon run for
run on float32 cells). Its singular values land in about [0.7, 1.2], not exactly 1: that is
Muon's design, kept here.

Tensors that are not matrices (biases, a vector problem's x) take AdamW's step with
`fallback_lr`, as Muon is configured in practice (torch's docs: "Other parameters, such as bias,
and embedding, should be optimized by a standard method such as AdamW").

Why it matters at a saddle: for a gradient matrix G = S + N with noise N, O whitens G's row
space: every singular direction moves at the same rate, whatever its share of the noise. Along an
escape direction with little noise that is the fixed noise preconditioner's effect, obtained from
the gradient itself (docs/theory.md, "Matrix whitening").
"""
from __future__ import annotations

import math

import torch

from workflows.core.params import Param, choice, non_negative, positive
from workflows.core.shapes import is_matrix, split, structure

from .base import Optimizer, lr_param, require_problem, update_from

NAME = "muon"
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
SCHEMA = {
    "lr": lr_param(1e-3),
    "momentum": Param(0.95, float, "in [0, 1)", lambda v: 0 <= v < 1, "μ"),
    "nesterov": Param(True, bool, "true or false"),
    # torch's default is 0.1; a saddle experiment measures the landscape's own escape, so none.
    "weight_decay": Param(0.0, float, ">= 0", non_negative, "λ, decoupled (W ← (1 − ηλ)W)"),
    "ns_steps": Param(5, int, "1 ... 99", lambda v: 1 <= v < 100, "Newton–Schulz steps"),
    "eps": Param(1e-7, float, "> 0", positive, "‖U‖_F is clamped to at least eps"),
    # torch.optim.Muon iterates in bfloat16 (a GPU's fast type); on a CPU bfloat16 matmuls are
    # emulated: 2.2x slower than float32 per step at R = 1024, U 10 x 2 (benchmarks/run.py).
    "ns_dtype": choice("float32", "bfloat16", "float32", "float64",
                       doc="the Newton–Schulz iteration's dtype (bfloat16: torch.optim.Muon's, run for run)"),
    "adjust_lr": choice("original", "original", "match_rms_adamw", "none",
                        doc="η·√max(1, A/B) (Keller), η·0.2·√max(A, B) (Moonshot), or η"),
    "fallback_lr": Param(1e-3, float, "> 0", positive, "AdamW's step size for tensors that are not matrices"),
}
# AdamW's defaults (torch.optim.AdamW) for the non-matrix tensors.
FALLBACK_BETAS, FALLBACK_EPS = (0.9, 0.999), 1e-8


def newton_schulz(update: torch.Tensor, steps: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """NS₅ of each matrix of update [R, A, B], in `dtype`, returned in that dtype (torch's
    _zeropower_via_newtonschulz, batched over the leading dimension)."""
    a, b, c = NS_COEFFICIENTS
    X = update.to(dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.transpose(-2, -1)
    X = X / torch.linalg.matrix_norm(X, keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = X @ X.transpose(-2, -1)
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        X = torch.baddbmm(X, gram_update, X, beta=a)
    return X.transpose(-2, -1) if tall else X


def adjusted_lr(lr: float, rule: str, shape: tuple[int, int]) -> float:
    rows, cols = shape
    if rule == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


class MuonState:
    """Per declared tensor: Muon's momentum buffer [R, A, B] (matrices) or AdamW's (m, v) [R, ...]
    (the rest); `count`, the steps taken (AdamW's bias correction)."""

    def __init__(self, buffers: list[tuple[torch.Tensor, ...]], count: int = 0):
        self.buffers, self.count = buffers, count

    def select(self, keep) -> "MuonState":
        return MuonState([tuple(b[keep] for b in buffer) for buffer in self.buffers], self.count)


def build(hp: dict, problem=None) -> Optimizer:
    require_problem(NAME, problem, "its parameter's shapes, to find the matrices")
    shapes = structure(problem)

    def init(x):
        return MuonState([(torch.zeros_like(v),) if is_matrix(s) else (torch.zeros_like(v), torch.zeros_like(v))
                          for s, v in zip(shapes, split(x, shapes))])

    def apply(grad, state, x):
        """In place, in torch's order of operations (decay, then the step)."""
        lr, mu, decay, t = hp["lr"], hp["momentum"], hp["weight_decay"], state.count + 1
        ns_dtype = getattr(torch, hp["ns_dtype"])
        for s, w, g, buffer in zip(shapes, split(x, shapes), split(grad, shapes), state.buffers):
            if is_matrix(s):
                (momentum,) = buffer
                momentum.lerp_(g, 1 - mu)
                update = g.lerp(momentum, mu) if hp["nesterov"] else momentum
                orthogonal = newton_schulz(update, hp["ns_steps"], hp["eps"], ns_dtype)
                w.mul_(1 - lr * decay)
                w.add_(orthogonal.to(w.dtype), alpha=-adjusted_lr(lr, hp["adjust_lr"], s.shape))
            else:
                adamw_step(w, g, *buffer, t, hp["fallback_lr"], decay)
        state.count = t
        return state

    return Optimizer(init, update_from(apply), apply)


def adamw_step(w, g, m, v, t: int, lr: float, decay: float):
    """torch.optim.AdamW's single-tensor step (amsgrad off), in place."""
    beta1, beta2 = FALLBACK_BETAS
    w.mul_(1 - lr * decay)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    step_size = lr / (1 - beta1**t)
    denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(FALLBACK_EPS)
    w.addcdiv_(m, denom, value=-step_size)
