"""Random ingredients several problems share: Haar rotations and unit-variance noise."""
from __future__ import annotations

import math

import torch


def random_rotation(dim: int, generator: torch.Generator, dtype) -> torch.Tensor:
    """Haar-distributed orthogonal matrix: QR of a Gaussian, signs fixed by R's diagonal."""
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def standard_noise(generator, shape, dist: str, df: int, dtype, device, alpha: float = 2.0) -> torch.Tensor:
    """Unit-variance noise: Gaussian, or Student-t with df degrees of freedom scaled by
    √((df−2)/df) so that its variance is 1 (df ≥ 3 keeps the variance finite). The χ² is a sum
    of df squared normals because torch has no gamma sampler that takes a Generator.
    alpha_stable: symmetric α-stable of unit scale (stable_noise), which is N(0, 1) at α = 2."""
    if dist == "alpha_stable":
        return stable_noise(generator, shape, alpha, dtype, device)
    z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if dist == "gaussian":
        return z
    chi2 = torch.randn((df, *shape), generator=generator, dtype=dtype, device=device).square_().sum(0)
    return z * torch.rsqrt(chi2 / df) * math.sqrt((df - 2) / df)


def stable_noise(generator, shape, alpha: float, dtype, device) -> torch.Tensor:
    """Symmetric α-stable noise by the Chambers–Mallows–Stuck method (Chambers, Mallows & Stuck
    1976; Weron 1996, eq. 3.1 with β = 0): with V uniform on (−π/2, π/2) and W exponential(1),

        X = sin(αV) / cos(V)^(1/α) · (cos((1 − α)V) / W)^((1 − α)/α)

    has characteristic function exp(−|t|^α) (α = 1: X = tan V, Cauchy; α = 2: N(0, 2)). Returned
    as X/√2, so that α = 2 is N(0, 1) and the problem's noise_scale sets the same scale for every
    α; for α < 2 the variance is infinite and noise_scale is a scale, not a standard deviation.
    Drawn in float64 (the tails need it), then cast."""
    u = torch.rand((2, *shape), generator=generator, dtype=torch.float64, device=device)
    v = math.pi * (u[0] - 0.5)
    w = -torch.log1p(-u[1])                           # exponential(1); 1 − u is never 0
    x = torch.sin(alpha * v) / torch.cos(v) ** (1 / alpha) * (torch.cos((1 - alpha) * v) / w) ** ((1 - alpha) / alpha)
    return (x / math.sqrt(2)).to(dtype)
