"""Random ingredients several problems share: Haar rotations and unit-variance noise."""
from __future__ import annotations

import math

import torch


def random_rotation(dim: int, generator: torch.Generator, dtype) -> torch.Tensor:
    """Haar-distributed orthogonal matrix: QR of a Gaussian, signs fixed by R's diagonal."""
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def standard_noise(generator, shape, dist: str, df: int, dtype, device) -> torch.Tensor:
    """Unit-variance noise: Gaussian, or Student-t with df degrees of freedom scaled by
    √((df−2)/df) so that its variance is 1 (df ≥ 3 keeps the variance finite). The χ² is a sum
    of df squared normals because torch has no gamma sampler that takes a Generator."""
    z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if dist == "gaussian":
        return z
    chi2 = torch.randn((df, *shape), generator=generator, dtype=dtype, device=device).square_().sum(0)
    return z * torch.rsqrt(chi2 / df) * math.sqrt((df - 2) / df)
