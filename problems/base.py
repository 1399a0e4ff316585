"""What every problem exposes, batched over R independent runs (x has shape [R, d]).

Randomness is split in two so that the engine can draw it in blocks (one generator call per
block of steps, not per step): `draw(generator, steps, runs)` returns whatever one step's noise
needs for every run (noise vectors, sample indices, ...) with leading shape [steps, runs], and
`stochastic_grad(x, drawn)` turns one step's draw into a stochastic gradient.
"""
from __future__ import annotations

import torch

from .params import Param, resolve


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
    noise_cov_constant: bool = True      # additive noise: Σ does not depend on x

    @classmethod
    def validate(cls, params: dict) -> dict:
        """Resolved parameters (defaults filled in); cross-parameter checks in subclasses."""
        return resolve(f"problem {cls.name}", cls.SCHEMA, params)

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

    def derived(self) -> dict:
        """Quantities the theory needs, stored on every row: curvature γ (minus the most negative
        Hessian eigenvalue at the saddle), sigma_escape (noise std along the escape direction),
        escape_radius r."""
        cov = self.noise_cov()
        v = self.escape_direction
        sigma = float(torch.sqrt(v @ cov @ v)) if cov is not None else float("nan")
        eig = torch.linalg.eigvalsh(self.hessian(self.saddle[None])[0].double())
        return {"curvature": float(-eig[0]), "sigma_escape": sigma,
                "escape_radius": float(self.escape_radius)}
