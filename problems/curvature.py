"""The smallest Hessian eigenvalue, batched over runs: exact for small d, Lanczos otherwise.

Used for the second-order stationarity test λ_min(∇²f(x)) ≥ −√(ρε) (Jin et al. 2017). Lanczos
needs only Hessian-vector products; with full reorthogonalisation and m = min(d, steps) steps its
smallest Ritz value is an upper bound on λ_min that is exact when m = d and, for the extreme
eigenvalue, accurate to far below the SOSP tolerances well before that.
"""
from __future__ import annotations

import torch

EXACT_MAX_DIM = 64       # "auto": dense eigvalsh up to this d, Lanczos above
LANCZOS_STEPS = 40


def lanczos_min_eigenvalue(hvp, x: torch.Tensor, steps: int = LANCZOS_STEPS,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """min eig of the symmetric operator v ↦ hvp(x, v) for each run ([R, d] → [R], float64).

    Full reorthogonalisation (twice, "twice is enough") keeps the Krylov basis orthogonal in
    float32; on breakdown (an invariant subspace found) the next basis vector is a fresh random
    one orthogonal to the basis, with a zero coupling in the tridiagonal matrix."""
    R, d = x.shape
    m = min(steps, d)
    basis = x.new_zeros(m, R, d)
    alpha = torch.zeros(R, m, dtype=torch.float64)
    beta = torch.zeros(R, max(m - 1, 0), dtype=torch.float64)

    def orthonormalise(w, upto):
        for _ in range(2):
            Q = basis[:upto]
            w = w - torch.einsum("jr,jrd->rd", torch.einsum("jrd,rd->jr", Q, w), Q)
        return w

    def random_unit(upto):
        w = torch.randn(R, d, generator=generator, dtype=torch.float64).to(x)
        w = orthonormalise(w, upto)
        return w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)

    q = random_unit(0)
    for j in range(m):
        basis[j] = q
        w = hvp(x, q)
        alpha[:, j] = (w * q).sum(-1).double()
        if j == m - 1:
            break
        w = orthonormalise(w, j + 1)
        b = torch.linalg.vector_norm(w, dim=-1)
        scale = alpha[:, : j + 1].abs().amax(-1).clamp_min(1.0).to(b)
        broke = b <= 1e-7 * scale
        q = w / b.clamp_min(torch.finfo(b.dtype).tiny)[:, None]
        if broke.any():
            q = torch.where(broke[:, None], random_unit(j + 1), q)
            b = torch.where(broke, torch.zeros_like(b), b)
        beta[:, j] = b.double()
    T = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return smallest_eigenvalue(T)


def smallest_eigenvalue(M: torch.Tensor) -> torch.Tensor:
    """eigvalsh(M)[:, 0] in float64, NaN for a run whose matrix is not finite (a diverged run:
    eigvalsh would raise for the whole batch)."""
    M = M.double()
    finite = torch.isfinite(M).all(-1).all(-1)
    if finite.all():
        return torch.linalg.eigvalsh(M)[:, 0]
    out = torch.full((len(M),), float("nan"), dtype=torch.float64, device=M.device)
    if finite.any():
        out[finite] = torch.linalg.eigvalsh(M[finite])[:, 0]
    return out


def min_hessian_eigenvalue(problem, x: torch.Tensor, method: str = "auto",
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """λ_min(∇²f(x)) per run, float64: `exact` (dense Hessian, eigvalsh), `lanczos`, or `auto`
    (exact for d ≤ EXACT_MAX_DIM)."""
    if method == "exact" or (method == "auto" and problem.dim <= EXACT_MAX_DIM):
        return smallest_eigenvalue(problem.hessian(x))
    return lanczos_min_eigenvalue(problem.hvp, x, generator=generator)
