"""A deep linear network on synthetic regression data:

    f(W₁, …, W_L) = (1/2n) ‖X W₁ ⋯ W_L − Y‖²_F,    W₁: p×h, W_l: h×h, W_L: h×q,  L = depth ∈ {2, 3},

x = the concatenated flattened W_l. X (n×p) is Gaussian, whitened so that XᵀX/n = I exactly;
Y = X W♮ + σE with a teacher W♮ = P diag(s) Qᵀ of rank m = min(p, q), s_k = signal·(m − k + 1)/m.
Minibatches of `batch_size` rows drawn with replacement.

With XᵀX/n = I, f = ½‖W₁⋯W_L − C‖² + const, C = XᵀY/n = Σ σ_i u_i v_iᵀ, so the stationary points
are balanced factorisations of C restricted to a set of singular triples (Baldi & Hornik 1989;
Kawaguchi 2016): W₁ = U_S Σ_S^{1/L}, W_l = Σ_S^{1/L}, W_L = Σ_S^{1/L} V_Sᵀ. The minimum keeps the
top h triples: f_min = ½ Σ_{i>h} σ_i² + const.

`saddle: zero`     all weights 0. For L = 2 a strict saddle, curvature σ₁(C). For L = 3 the
                   Hessian at 0 is exactly zero: a degenerate (third-order) saddle, curvature 0,
                   which an SOSP test accepts as a second-order stationary point. At 0 every
                   per-sample gradient vanishes (multiplicative noise): SGD started exactly there
                   never moves; use the cell's `start_offset`.
`saddle: non_top`  the balanced factorisation of triples h+1, 2, …, h (the top one swapped for the
                   (h+1)-th, needs h < min(p, q)): strict for both depths, with noise along the
                   escape direction.
Escape radius by default: half the distance to the balanced minimiser with the same factors
(for `zero`: the minimum-norm minimiser, ‖x‖² = L Σ_{i≤h} σ_i^{2/L}).
"""
from __future__ import annotations

import torch

from workflows.core.params import Param, at_least, choice, non_negative, positive
from workflows.core.shapes import Shape

from .noise import random_rotation
from .sampled import (
    FiniteSum,
    batch_size_param,
    data_matmul,
    data_tmatmul,
    escape_params,
)


class DeepLinear(FiniteSum):
    name = "deep_linear"
    SCHEMA = {
        "depth": Param(2, int, "2 or 3", lambda v: v in (2, 3), "L, the number of weight matrices"),
        "input_dim": Param(6, int, ">= 1", at_least(1), "p"),
        "hidden": Param(3, int, ">= 1", at_least(1), "h, the width of the hidden layers"),
        "output_dim": Param(4, int, ">= 1", at_least(1), "q"),
        "n_samples": Param(200, int, ">= input_dim", at_least(1), "n"),
        "signal": Param(1.0, float, "> 0", positive, "the teacher's largest singular value"),
        "label_noise": Param(0.1, float, ">= 0", non_negative, "σ: Y = XW♮ + σE"),
        "saddle": choice("zero", "zero", "non_top"),
        "batch_size": batch_size_param(10),
        **escape_params(),
    }

    LIMITS = (("n_samples", lambda p: p["n_samples"] >= p["input_dim"],
               lambda p: f">= input_dim (input_dim={p['input_dim']}), so that X can be whitened"),
              ("hidden", lambda p: p["saddle"] == "zero" or p["hidden"] < min(p["input_dim"], p["output_dim"]),
               lambda p: f"hidden < min(input_dim, output_dim) = {min(p['input_dim'], p['output_dim'])} "
                         "for saddle non_top"))

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        pr = self.params = params
        p, h, q, n, L = pr["input_dim"], pr["hidden"], pr["output_dim"], pr["n_samples"], pr["depth"]
        layers = [(p, h)] + [(h, h)] * (L - 2) + [(h, q)]
        self.shapes = tuple(Shape(f"W{l + 1}", shape) for l, shape in enumerate(layers))
        self.dim = sum(s.size for s in self.shapes)
        self.n_examples, self.batch_size = n, pr["batch_size"]
        f64 = dict(generator=generator, dtype=torch.float64)
        X = torch.randn(n, p, **f64)
        evals, evecs = torch.linalg.eigh(X.T @ X / n)
        self.X = X @ (evecs * evals.rsqrt()) @ evecs.T
        m = min(p, q)
        s = pr["signal"] * torch.arange(m, 0, -1, dtype=torch.float64) / m
        teacher = (random_rotation(p, generator, torch.float64)[:, :m] * s) @ random_rotation(q, generator, torch.float64)[:, :m].T
        self.Y = self.X @ teacher + pr["label_noise"] * torch.randn(n, q, **f64)
        U, sv, Vh = torch.linalg.svd(self.X.T @ self.Y / n, full_matrices=False)
        self.singular_values = sv

        def balanced(triples):
            root = sv[triples] ** (1 / L)
            factors = [U[:, triples] * root] + [torch.diag(root)] * (L - 2) + [root[:, None] * Vh[triples]]
            return torch.cat([f.reshape(-1) for f in factors])

        top = list(range(h))
        if pr["saddle"] == "zero":
            self.saddle = torch.zeros(self.dim, dtype=torch.float64)
        else:
            self.saddle = balanced([h] + top[1:])
        minimizer = balanced(top)
        self.minimum_loss = float(self.loss(minimizer[None])[0])
        self.finish(dtype, device, minimizers=minimizer[None])

    def factors(self, x):
        out, start = [], 0
        for _, (a, b) in self.shapes:
            out.append(x[:, start:start + a * b].reshape(-1, a, b))
            start += a * b
        return out

    def loss(self, x):
        return self._loss_grad(x, self.X, self.Y, need_grad=False)

    def grad(self, x):
        return self._loss_grad(x, self.X, self.Y)

    def stochastic_grad(self, x, drawn):
        return self._loss_grad(x, self.X[drawn], self.Y[drawn])

    def _loss_grad(self, x, X, Y, need_grad=True):
        """½ mean‖x_iᵀW − y_i‖² over the rows of X, or its gradient ∇W_l = (W₁⋯W_{l−1})ᵀ G (W_{l+1}⋯W_L)ᵀ
        with G = Xᵀ(XW − Y)/B."""
        Ws = self.factors(x)
        prefix = [Ws[0]]
        for W in Ws[1:]:
            prefix.append(prefix[-1] @ W)
        residual = data_matmul(X, prefix[-1]) - Y                                # [R, B, q]
        if not need_grad:
            return 0.5 * residual.square().sum(-1).mean(-1)
        G = data_tmatmul(X, residual) / X.shape[-2]                  # [R, p, q]
        suffix = [None] * len(Ws)                                    # W_{l+1}⋯W_L
        for l in range(len(Ws) - 2, -1, -1):
            suffix[l] = Ws[l + 1] if suffix[l + 1] is None else Ws[l + 1] @ suffix[l + 1]
        grads = []
        for l in range(len(Ws)):
            g = G if l == 0 else prefix[l - 1].transpose(1, 2) @ G
            if suffix[l] is not None:
                g = g @ suffix[l].transpose(1, 2)
            grads.append(g.reshape(x.shape[0], -1))
        return torch.cat(grads, 1)
