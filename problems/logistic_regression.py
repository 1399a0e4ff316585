"""Multinomial logistic regression on scikit-learn's bundled digits (8×8 images, 10 classes,
1797 samples; `load_digits`, no download): the problem on which Staib et al. test their
β₂ = 1 − η^{2/3} rule (they used MNIST).

    f(W) = (1/n) Σ_i [logsumexp(W x̃_i) − (W x̃_i)_{y_i}] + (l2/2) ‖W‖²,   x̃ = (pixels/16, 1),

x = vec(W), d = 65·10 = 650. Minibatches of `batch_size` samples drawn with replacement. With
n_samples < 1797 a random subset (fixed by the cell's seed) is used.

There is no saddle: f is convex (strongly, through l2 > 0, which also keeps the minimum attained:
the digits are linearly separable). The runs start at W = 0 (f = ln 10). What the saddle
vocabulary means here:
- escape is reaching the neighbourhood f(x) − f_min ≤ target_gap: escape_distance(x) is the
  loss decrease f(0) − f(x) and escape_radius = f(0) − f_min − target_gap. (It costs one pass
  over the data per step; `divergence_radius` does not apply, non-finite losses still count
  as divergence.)
- f_min is computed once per data set and l2, by L-BFGS in float64 to ‖∇f‖ ≤ 1e-6 (an error
  in f_min below (1e-6)²/(2·l2)).
- curvature is −λ_min(∇²f(0)) = −l2 ≤ 0 (the softmax is invariant to adding one vector to every
  class, and the constant-zero pixels carry no curvature: both leave only the ridge), and
  escape_direction is the descent direction −∇f(0)/‖∇f(0)‖, not an eigenvector, so that
  sigma_escape is the minibatch noise along the first steps' direction (and the engine's
  cnc_constant E[(vᵀg)²] = ‖∇f(0)‖² + sigma_escape², the start not being stationary).
"""
from __future__ import annotations

import functools
import math

import torch

from workflows.core.params import Param, positive
from workflows.core.shapes import Shape

from .sampled import FiniteSum, batch_size_param, data_matmul, data_tmatmul

N_DIGITS, N_CLASSES, N_FEATURES = 1797, 10, 65


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    data = load_digits()
    X = torch.tensor(data.data, dtype=torch.float64) / 16
    return torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], 1), torch.tensor(data.target)


_MINIMIZERS: dict = {}      # (l2, subset) -> the minimiser: the same data give the same f_min


def minimizer(problem: "LogisticRegression", key) -> torch.Tensor:
    if key not in _MINIMIZERS:
        _MINIMIZERS[key] = _lbfgs(problem)
    return _MINIMIZERS[key]


def _lbfgs(problem) -> torch.Tensor:
    x = torch.zeros(problem.dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=5000, tolerance_grad=1e-7, tolerance_change=0,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = problem.loss(x[None])[0]
        loss.backward()
        return loss

    for _ in range(10):
        opt.step(closure)
        if torch.linalg.vector_norm(problem.grad(x.detach()[None])) <= 1e-6:
            break
    return x.detach()


class LogisticRegression(FiniteSum):
    name = "logistic_regression"
    SCHEMA = {
        "n_samples": Param(N_DIGITS, int, f"1 <= n_samples <= {N_DIGITS}",
                           lambda v: 1 <= v <= N_DIGITS, "a random subset of the digits; all by default"),
        "l2": Param(1e-3, float, "> 0", positive, "ridge penalty (l2/2)‖W‖²"),
        "batch_size": batch_size_param(100),
        "target_gap": Param(0.1, float, "> 0", positive, "escape when f − f_min ≤ target_gap"),
    }

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        p = self.params = params
        X, y = digits()
        n = p["n_samples"]
        subset = torch.randperm(N_DIGITS, generator=generator)[:n].sort().values if n < N_DIGITS else None
        self.X, self.y = (X, y) if subset is None else (X[subset], y[subset])
        self.dim, self.n_examples, self.batch_size, self.l2 = N_FEATURES * N_CLASSES, n, p["batch_size"], p["l2"]
        self.shapes = (Shape("W", (N_FEATURES, N_CLASSES)),)
        self.saddle = torch.zeros(self.dim, dtype=torch.float64)
        key = (p["l2"], None if subset is None else tuple(subset.tolist()))
        x_min = minimizer(self, key)
        self.minimum_loss = float(self.loss(x_min[None])[0])
        g0 = self.grad(self.saddle[None])[0]
        self.finish(dtype, device, minimizers=x_min[None], curvature=-self.l2,
                    escape_direction=-g0 / torch.linalg.vector_norm(g0))
        self.escape_radius = math.log(N_CLASSES) - self.minimum_loss - p["target_gap"]
        if self.escape_radius <= 0:
            raise ValueError(f"problem logistic_regression: target_gap={p['target_gap']} is out of range; "
                             f"allowed: < f(0) − f_min = {math.log(N_CLASSES) - self.minimum_loss:.4g}")

    def _logits(self, x, X):
        return data_matmul(X, x.reshape(x.shape[0], N_FEATURES, N_CLASSES))     # [R, B, 10]

    def loss(self, x):
        logits = self._logits(x, self.X)
        picked = logits.gather(-1, self.y.expand(x.shape[0], -1)[..., None])[..., 0]
        data = (torch.logsumexp(logits, -1) - picked).mean(-1)
        return data + 0.5 * self.l2 * x.square().sum(-1)

    def _grad(self, x, X, y):
        probabilities = torch.softmax(self._logits(x, X), -1)
        residual = probabilities - torch.nn.functional.one_hot(y, N_CLASSES).to(x.dtype)
        return (data_tmatmul(X, residual) / X.shape[-2]).reshape(x.shape) + self.l2 * x

    def grad(self, x):
        return self._grad(x, self.X, self.y)

    def hvp(self, x, v):
        # ∇²f v = Xᵀ[P ⊙ (Z − Σ_c P_c Z_c)]/n + l2 v with Z = X V, P the softmax: the softmax's
        # Jacobian diag(p) − ppᵀ applied to each sample's logit direction.
        probabilities = torch.softmax(self._logits(x, self.X), -1)
        Z = self._logits(v, self.X)
        weighted = probabilities * (Z - (probabilities * Z).sum(-1, keepdim=True))
        return (data_tmatmul(self.X, weighted) / self.n_examples).reshape(x.shape) + self.l2 * v

    def stochastic_grad(self, x, drawn):
        return self._grad(x, self.X[drawn], self.y[drawn])

    def escape_distance(self, x):
        decrease = self.saddle_loss - self.loss(x)
        return torch.where(torch.isfinite(decrease), decrease, torch.full_like(decrease, math.nan))
