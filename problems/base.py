"""What every problem exposes, batched over R independent runs (x has shape [R, d]).

Randomness is split in two so that the engine can draw it in blocks (one generator call per
block of steps, not per step): `draw(generator, steps, runs)` returns whatever one step's noise
needs for every run (noise vectors, sample indices, ...) with leading shape [steps, runs], and
`stochastic_grad(x, drawn)` turns one step's draw into a stochastic gradient.
"""
from __future__ import annotations

import math

import torch

from workflows.core.params import Param, resolve


class Problem:
    name: str = ""
    SCHEMA: dict[str, Param] = {}

    # Set by subclasses in __init__.
    dim: int
    saddle: torch.Tensor             # x*, shape [d]
    saddle_loss: float
    escape_radius: float
    escape_direction: torch.Tensor   # unit eigenvector of the most negative Hessian eigenvalue at x*
    minimum_loss: float | None = None  # the local minima's loss, where known in closed form
    # The named tensors whose flattened concatenation is x (workflows/core/shapes.py); () means one
    # vector [d]. Only optimizers see it: the engine, escape measures and rows keep x flat.
    shapes: tuple = ()
    noise_cov_constant: bool = True      # additive noise: Σ does not depend on x
    # Ranges that involve several parameters: (key, ok(p), allowed(p)), checked after the schema.
    LIMITS: tuple = ()

    @classmethod
    def validate(cls, params: dict) -> dict:
        """Resolved parameters (defaults filled in), then the cross-parameter LIMITS."""
        p = resolve(f"problem {cls.name}", cls.SCHEMA, params)
        for key, ok, allowed in cls.LIMITS:
            if not ok(p):
                raise ValueError(f"problem {cls.name}: {key}={p[key]!r} is out of range; allowed: {allowed(p)}")
        return p

    # --- the objective ---------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:            # [R]
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:            # [R, d], the full gradient
        raise NotImplementedError

    def hessian(self, x: torch.Tensor) -> torch.Tensor:         # [R, d, d]
        # Column j is H e_j: d Hessian-vector products. Fine for the small d where a dense
        # Hessian makes sense; problems with a closed form override this.
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        cols = [self.hvp(x, eye[j].expand_as(x)) for j in range(self.dim)]
        return torch.stack(cols, dim=-1)

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # [R, d]
        # Forward-mode derivative of the analytic gradient along v: exact, one pass.
        return torch.func.jvp(self.grad, (x,), (v,))[1]

    # --- the noise ---------------------------------------------------------------------
    @property
    def draw_size(self) -> int:
        """Numbers drawn per run and step: the engine sizes its blocks of draws by it."""
        return self.dim

    def draw(self, generator: torch.Generator, steps: int, runs: int) -> torch.Tensor:
        raise NotImplementedError

    def stochastic_grad(self, x: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def noise_cov(self, x: torch.Tensor | None = None) -> torch.Tensor | None:
        """Covariance of the gradient noise at x ([d, d]), or None where it is not known."""
        return None

    # --- escape --------------------------------------------------------------------------
    def escape_distance(self, x: torch.Tensor) -> torch.Tensor:  # [R]
        """Escape is the first step at which this reaches escape_radius."""
        return torch.linalg.vector_norm(x - self.saddle, dim=-1)

    @property
    def escape_is_distance(self) -> bool:
        """Whether escape_distance is ‖x − x*‖ itself; where it is not (a projection, one
        coordinate, a loss), the engine measures ‖x − x*‖ separately to catch divergence."""
        return type(self).escape_distance is Problem.escape_distance

    def derived(self) -> dict:
        """Quantities the theory needs, stored on every row: curvature γ (minus the most negative
        Hessian eigenvalue at the saddle), sigma_escape (noise std along the escape direction),
        escape_radius r, noise_anisotropy √(tr Σ/d)/sigma_escape."""
        cov = self.noise_cov()
        v = self.escape_direction
        sigma = float(torch.sqrt(v @ cov @ v)) if cov is not None else float("nan")
        eig = torch.linalg.eigvalsh(self.hessian(self.saddle[None])[0].double())
        return {"curvature": float(-eig[0]), "sigma_escape": sigma,
                "escape_radius": float(self.escape_radius), "noise_anisotropy": noise_anisotropy(cov, sigma)}


def noise_anisotropy(cov: torch.Tensor | None, sigma_escape: float) -> float:
    """√(tr Σ / d) / sigma_escape: the rms noise std over the escape direction's (1: isotropic)."""
    if cov is None:
        return math.nan
    rms = math.sqrt(float(torch.trace(cov)) / cov.shape[-1])
    return rms / sigma_escape if sigma_escape > 0 else math.inf
