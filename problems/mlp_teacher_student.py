"""A two-layer tanh network (a soft committee machine, Saad & Solla 1995) fitted to a teacher of
the same form on a finite synthetic data set:

    f(W, w) = (1/2n) Σ_i (wᵀ tanh(W x_i) − y_i)²,    W: h×p, w: h,  x = (vec W, w),
    x_i ~ N(0, I_p),   y_i = Σ_{j≤h♮} tanh(w♮_jᵀ x_i) + σ ε_i,   w♮_j ~ N(0, I_p/p),

σ = label_noise. Minibatches of `batch_size` samples drawn with replacement.

The runs start at the origin, a strict saddle: there tanh(Wx) ≈ Wx, so f ≈ const − wᵀW c with
c = (1/n) Σ y_i x_i, whose Hessian has eigenvalues ±‖c‖ (h-fold) and zeros: curvature ‖c‖
(nonzero because the teacher's output has a linear part). Beware: every per-sample gradient
vanishes at the origin (w = 0 and tanh(0) = 0: the noise is multiplicative), so SGD started
exactly there never moves; use the cell's `start_offset`.

When h ≥ h♮ and σ = 0 the teacher (padded with zero units) is a global minimum with f = 0, so
minimum_loss = 0; otherwise it is not known (None). Escape radius by default: half the norm of
the teacher's parameters (its distance from the origin, padded or truncated to h units).
"""
from __future__ import annotations

import torch

from workflows.core.params import Param, at_least, non_negative
from workflows.core.shapes import Shape

from .sampled import (
    FiniteSum,
    batch_size_param,
    data_matmul,
    data_tmatmul,
    escape_params,
)


class MLPTeacherStudent(FiniteSum):
    name = "mlp_teacher_student"
    SCHEMA = {
        "input_dim": Param(8, int, ">= 1", at_least(1), "p"),
        "hidden": Param(4, int, ">= 1", at_least(1), "h, the student's hidden units"),
        "teacher_hidden": Param(2, int, ">= 1", at_least(1), "h♮, the teacher's hidden units"),
        "n_samples": Param(256, int, ">= 1", at_least(1), "n"),
        "label_noise": Param(0.0, float, ">= 0", non_negative, "σ"),
        "batch_size": batch_size_param(10),
        **escape_params(),
    }

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        pr = self.params = params
        p, h, ht, n = pr["input_dim"], pr["hidden"], pr["teacher_hidden"], pr["n_samples"]
        self.input_dim, self.hidden = p, h
        self.dim, self.n_examples, self.batch_size = h * (p + 1), n, pr["batch_size"]
        self.shapes = (Shape("W", (h, p)), Shape("w", (h,)))
        f64 = dict(generator=generator, dtype=torch.float64)
        W_teacher = torch.randn(ht, p, **f64) / p**0.5
        self.X = torch.randn(n, p, **f64)
        self.y = torch.tanh(self.X @ W_teacher.T).sum(-1) + pr["label_noise"] * torch.randn(n, **f64)
        self.saddle = torch.zeros(self.dim, dtype=torch.float64)
        W, w = torch.zeros(h, p, dtype=torch.float64), torch.zeros(h, dtype=torch.float64)
        units = min(h, ht)
        W[:units], w[:units] = W_teacher[:units], 1.0
        self.teacher = torch.cat([W.reshape(-1), w])
        self.minimum_loss = 0.0 if (h >= ht and pr["label_noise"] == 0) else None
        self.finish(dtype, device, minimizers=self.teacher[None])

    def _split(self, x):
        h, p = self.hidden, self.input_dim
        return x[:, : h * p].reshape(-1, h, p), x[:, h * p:]

    def _forward(self, x, X, y):
        W, w = self._split(x)
        hidden = torch.tanh(data_matmul(X, W.transpose(1, 2)))      # [R, B, h]
        return W, w, hidden, (hidden @ w[:, :, None])[..., 0] - y   # residual [R, B]

    def loss(self, x):
        return 0.5 * self._forward(x, self.X, self.y)[3].square().mean(-1)

    def _grad(self, x, X, y):
        W, w, hidden, residual = self._forward(x, X, y)
        B = X.shape[-2]
        grad_w = (residual[:, None, :] @ hidden)[:, 0] / B          # [R, h]
        back = residual[..., None] * w[:, None, :] * (1 - hidden.square())   # [R, B, h]
        grad_W = data_tmatmul(X, back).transpose(1, 2) / B          # [R, h, p]
        return torch.cat([grad_W.reshape(x.shape[0], -1), grad_w], 1)

    def grad(self, x):
        return self._grad(x, self.X, self.y)

    def stochastic_grad(self, x, drawn):
        return self._grad(x, self.X[drawn], self.y[drawn])
