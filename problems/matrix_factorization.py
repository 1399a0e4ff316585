"""Symmetric low-rank matrix factorisation from noisy entries:

    f(U) = ¼ ‖UUᵀ − Y‖²_F = (1/n²) Σ_{i,j} (n²/4) ((UUᵀ)_ij − Y_ij)²,    U ∈ ℝ^{n×r}, x = vec(U),

Y = M + σ W: M = V diag(signal·(k, k−1, …, 1)) Vᵀ of rank k = true_rank (V a random orthonormal
n×k), W a symmetric Gaussian matrix (N(0, 1) entries), σ = observation_noise. The n² entries are
the data: a minibatch is `batch_size` entries drawn with replacement, its gradient the mean of
the per-entry gradients (n²/2)((UUᵀ)_ij − Y_ij)(e_i U_jᵀ + e_j U_iᵀ).

Stationary points (Y symmetric with eigenpairs (μ_i, v_i), μ₁ ≥ μ₂ ≥ …): U = [√μ_i v_i]_{i∈S},
zero-padded to r columns, for any set S of at most r eigenpairs with μ_i > 0 (and their
rotations U R). The global minima use the top r; everything else is a saddle.

`saddle: zero`     U* = 0. The Hessian there is −Y ⊗ I_r on vec(U): curvature μ₁ (r-fold).
                   Beware: every per-entry gradient vanishes at U = 0 (the noise is
                   multiplicative), so SGD started exactly there never moves. Start with the
                   cell's `start_offset` > 0, or use the other saddle.
`saddle: non_top`  U* = [√μ_i v_i] for i in the top r+1 except the `missing`-th: the "wrong"
                   eigenspace. Swapping the missing eigenvector in lowers f, with curvature
                   μ_missing − μ_{r+1}; the per-entry gradients do not vanish there, so the
                   minibatch noise drives the escape.

Minimum f = ¼ (‖Y‖²_F − Σ_{i≤r} μ_i²). The escape radius defaults to half the distance from U*
to the set of minimisers {U_top R : R orthogonal} (orthogonal Procrustes). The saddles come in
rotation orbits {U* R}: distance from U* also grows along the (flat) orbit, slowly.
"""
from __future__ import annotations

import torch

from workflows.core.params import Param, at_least, choice, non_negative, positive
from workflows.core.shapes import Shape

from .noise import random_rotation
from .sampled import FiniteSum, batch_size_param, escape_params


class MatrixFactorization(FiniteSum):
    name = "matrix_factorization"
    SCHEMA = {
        "size": Param(10, int, ">= 2", at_least(2), "n: Y is n×n"),
        "rank": Param(2, int, "1 <= rank < size", at_least(1), "r: U is n×r"),
        "true_rank": Param(3, int, "1 <= true_rank <= size", at_least(1), "rank k of M"),
        "signal": Param(1.0, float, "> 0", positive, "M's eigenvalues are signal·(k, k−1, …, 1)"),
        "observation_noise": Param(0.1, float, ">= 0", non_negative, "σ: Y = M + σW"),
        "saddle": choice("non_top", "non_top", "zero", doc="which saddle the runs start from"),
        "missing": Param(1, int, "1 <= missing <= rank", at_least(1),
                         "non_top: which of the top r eigenvectors U* lacks"),
        "batch_size": batch_size_param(10),
        **escape_params(),
    }

    LIMITS = (("rank", lambda p: p["rank"] < p["size"], lambda p: f"1 <= rank < size (size={p['size']})"),
              ("true_rank", lambda p: p["true_rank"] <= p["size"],
               lambda p: f"1 <= true_rank <= size (size={p['size']})"),
              ("missing", lambda p: p["missing"] <= p["rank"], lambda p: f"1 <= missing <= rank (rank={p['rank']})"))

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        p = self.params = params
        n, r, k = p["size"], p["rank"], p["true_rank"]
        self.size, self.rank, self.batch_size = n, r, p["batch_size"]
        self.dim, self.n_examples = n * r, n * n
        self.shapes = (Shape("U", (n, r)),)
        V = random_rotation(n, generator, torch.float64)[:, :k]
        M = (V * (p["signal"] * torch.arange(k, 0, -1, dtype=torch.float64))) @ V.T
        W = torch.randn(n, n, generator=generator, dtype=torch.float64)
        self.Y = M + p["observation_noise"] * (W + W.T) / 2 ** 0.5
        mu, vecs = torch.linalg.eigh(self.Y)
        mu, vecs = mu.flip(0), vecs.flip(1)                   # descending
        need = r + 1 if p["saddle"] == "non_top" else r
        if mu[need - 1] <= 0:
            raise ValueError(f"problem matrix_factorization: Y has only {int((mu > 0).sum())} positive "
                             f"eigenvalues, the {p['saddle']} saddle needs {need}; allowed: "
                             "true_rank >= rank (+1 for non_top), or more observation noise")
        self.eigenvalues = mu
        top = vecs[:, :r] * mu[:r].sqrt()
        if p["saddle"] == "zero":
            U = torch.zeros(n, r, dtype=torch.float64)
        else:
            keep = [i for i in range(r + 1) if i != p["missing"] - 1]
            U = vecs[:, keep] * mu[keep].sqrt()
        self.saddle = U.reshape(-1)
        self.minimum_loss = 0.25 * float(self.Y.square().sum() - mu[:r].square().sum())
        # The minimiser nearest U* in the orbit {U_top R}: R from the SVD of U_topᵀ U*.
        P, _, Qh = torch.linalg.svd(top.T @ U)
        nearest = (top @ P @ Qh).reshape(1, -1)
        self.finish(dtype, device, minimizers=nearest)

    def _U(self, x):
        return x.reshape(x.shape[0], self.size, self.rank)

    def loss(self, x):
        U = self._U(x)
        return 0.25 * (U @ U.transpose(1, 2) - self.Y).square().sum((1, 2))

    def grad(self, x):
        U = self._U(x)
        return ((U @ U.transpose(1, 2) - self.Y) @ U).reshape(x.shape)

    def stochastic_grad(self, x, drawn):
        U = self._U(x)
        i, j = drawn // self.size, drawn % self.size                 # [R, B] entries
        Ui = torch.gather(U, 1, i[..., None].expand(-1, -1, self.rank))
        Uj = torch.gather(U, 1, j[..., None].expand(-1, -1, self.rank))
        residual = (Ui * Uj).sum(-1) - self.Y[i, j]                  # [R, B]
        scale = self.size**2 / (2 * drawn.shape[-1])
        G = torch.zeros_like(U)
        G.scatter_add_(1, i[..., None].expand_as(Uj), residual[..., None] * Uj)
        G.scatter_add_(1, j[..., None].expand_as(Ui), residual[..., None] * Ui)
        return (scale * G).reshape(x.shape)
