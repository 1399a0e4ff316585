"""f(x) = ½ xᵀHx + (quartic/4)‖x‖⁴, a strict saddle at x* = 0 (docs/theory.md).

H = Q diag(λ) Qᵀ with k = n_negative eigenvalues −curvature (the escape directions) and the
rest positive. The gradient noise is additive, ξ = B (s ⊙ z), covariance Σ = B diag(s²) Bᵀ with
s = sigma_escape = noise_scale/anisotropy along the escape directions and noise_scale elsewhere.
`aligned`: B = Q, so Σ is diagonal in H's eigenbasis; `rotated`: B is an independent random
rotation (fixed by the cell's seed), which mixes the escape direction's small noise with the rest.
With rotate_hessian the eigenbasis Q itself is a random rotation: the noise is then not
diagonal in the coordinate axes, which is what a diagonal preconditioner cannot undo.

The quartic confines the iterate: along an escape direction −γt + λt³ = 0, so the minima lie at
distance √(γ/λ) from the saddle with loss −γ²/(4λ).

`matrix_rows` > 1 declares x a matrix X [matrix_rows, dim/matrix_rows] (row-major), for the
optimizers that act on matrices (Muon, Shampoo; workflows/core/shapes.py). Nothing else changes:
the escape direction e₁ is the entry X[0, 0] (or H's rotated eigenvector, read as a matrix), and
the noise is the same vector noise, isotropic in the matrix when anisotropy is 1.
"""
from __future__ import annotations

import math

import torch

from workflows.core.params import Param, at_least, choice, non_negative, positive
from workflows.core.shapes import Shape

from .base import Problem, noise_anisotropy
from .noise import random_rotation, standard_noise


class QuadraticSaddle(Problem):
    name = "quadratic_saddle"
    SCHEMA = {
        "dim": Param(10, int, ">= 1", at_least(1), "dimension d"),
        "n_negative": Param(1, int, "1 <= n_negative <= dim", at_least(1), "escape directions k"),
        "curvature": Param(1.0, float, "> 0", positive, "γ: the negative eigenvalues are −γ"),
        "positive_curvature": Param(1.0, float, "> 0", positive, "largest positive eigenvalue"),
        "condition": Param(1.0, float, ">= 1", at_least(1.0),
                           "positive eigenvalues log-spaced from positive_curvature down by this factor"),
        "quartic": Param(0.0, float, ">= 0", non_negative, "λ of the confining (λ/4)‖x‖⁴; 0: none"),
        "noise_scale": Param(1.0, float, ">= 0", non_negative, "σ: noise std off the escape directions"),
        "anisotropy": Param(1.0, float, ">= 1", at_least(1.0), "κ: sigma_escape = σ/κ"),
        "noise_alignment": choice("aligned", "aligned", "rotated"),
        "rotate_hessian": Param(False, bool, "true or false", None, "random eigenbasis for H"),
        "noise_dist": choice("gaussian", "gaussian", "student_t", "alpha_stable",
                             doc="gaussian; student_t (df degrees of freedom, unit variance); alpha_stable "
                                 "(symmetric α-stable of index stable_alpha: infinite variance for α < 2)"),
        "df": Param(5, int, ">= 3 (finite variance)", at_least(3), "Student-t degrees of freedom",
                    applies=("noise_dist", "student_t")),
        "stable_alpha": Param(1.5, float, "in (0, 2]", lambda v: 0 < v <= 2,
                              "α of alpha_stable noise (2: Gaussian, 1: Cauchy)", hashed_at_default=False,
                              applies=("noise_dist", "alpha_stable")),
        "noise_model": choice("additive", "additive", "proportional", hashed_at_default=False,
                              doc="additive: covariance Σ everywhere; proportional: (‖x − x*‖/noise_length)² Σ, "
                                  "vanishing at the saddle"),
        "noise_length": Param(1.0, float, "> 0", positive, "ℓ of proportional noise", hashed_at_default=False,
                              applies=("noise_model", "proportional")),
        "matrix_rows": Param(1, int, ">= 1, dividing dim", at_least(1),
                             "x is a matrix [matrix_rows, dim/matrix_rows] for matrix optimizers; 1: a vector",
                             hashed_at_default=False),
        "escape_radius": Param(1.0, float, "> 0", positive, "r"),
        "escape_measure": choice("norm", "norm", "projection",
                                 doc="norm: ‖x − x*‖; projection: the norm within the escape subspace"),
    }

    LIMITS = (("n_negative", lambda p: p["n_negative"] <= p["dim"],
               lambda p: f"1 <= n_negative <= dim (dim={p['dim']})"),
              ("matrix_rows", lambda p: p["dim"] % p["matrix_rows"] == 0,
               lambda p: f"a divisor of dim (dim={p['dim']})"))

    def __init__(self, params: dict, generator: torch.Generator, dtype=torch.float32, device="cpu"):
        p = self.params = params
        d, k = p["dim"], p["n_negative"]
        self.dim, self.escape_radius = d, p["escape_radius"]
        rows = p["matrix_rows"]
        self.shapes = (Shape("X", (rows, d // rows)),) if rows > 1 else ()
        positive_eigs = torch.logspace(0, -math.log10(p["condition"]), d - k, dtype=torch.float64)
        eigs = torch.cat([torch.full((k,), -p["curvature"], dtype=torch.float64),
                          p["positive_curvature"] * positive_eigs])
        std = torch.cat([torch.full((k,), p["noise_scale"] / p["anisotropy"], dtype=torch.float64),
                         torch.full((d - k,), p["noise_scale"], dtype=torch.float64)])
        # The eigenbasis rotation is drawn first, the noise rotation second, from the same
        # construction generator: a cell's seed fixes both.
        Q = random_rotation(d, generator, torch.float64) if p["rotate_hessian"] else None
        B = random_rotation(d, generator, torch.float64) if p["noise_alignment"] == "rotated" else Q
        to = dict(dtype=dtype, device=device)
        self.eigs, self.noise_std = eigs.to(**to), std.to(**to)
        self.basis = None if Q is None else Q.to(**to)             # None: H is diagonal
        self.noise_basis = None if B is None else B.to(**to)       # None: Σ is diagonal
        eye = torch.eye(d, dtype=torch.float64)
        Qd, Bd = (eye if Q is None else Q), (eye if B is None else B)
        self.H = ((Qd * eigs) @ Qd.T).to(**to)
        self.Sigma = ((Bd * std**2) @ Bd.T).to(**to)
        # Along the escape direction in float64: exactly σ/κ when aligned, mixed when rotated.
        v = Qd[:, 0]
        self.sigma_escape = float(torch.sqrt(v @ ((Bd * std**2) @ Bd.T) @ v))
        self.escape_basis = Qd[:, :k].to(**to)                    # [d, k]
        self.escape_direction = Qd[:, 0].to(**to)
        self.saddle = torch.zeros(d, **to)
        self.saddle_loss = 0.0
        self.quartic = p["quartic"]
        self.minimum_loss = -p["curvature"] ** 2 / (4 * self.quartic) if self.quartic > 0 else None

    def loss(self, x):
        y = x if self.basis is None else x @ self.basis
        out = 0.5 * (self.eigs * y.square()).sum(-1)
        if self.quartic:
            out = out + 0.25 * self.quartic * x.square().sum(-1).square()
        return out

    def grad(self, x):
        g = x * self.eigs if self.basis is None else x @ self.H
        if self.quartic:
            g = g + self.quartic * x.square().sum(-1, keepdim=True) * x
        return g

    def hessian(self, x):
        H = self.H.expand(x.shape[0], -1, -1)
        if not self.quartic:
            return H.clone()
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        sq = x.square().sum(-1)[:, None, None]
        return H + self.quartic * (sq * eye + 2 * x[:, :, None] * x[:, None, :])

    def hvp(self, x, v):
        out = v * self.eigs if self.basis is None else v @ self.H
        if self.quartic:
            out = out + self.quartic * (x.square().sum(-1, keepdim=True) * v
                                        + 2 * (x * v).sum(-1, keepdim=True) * x)
        return out

    def draw(self, generator, steps, runs):
        p = self.params
        z = standard_noise(generator, (steps, runs, self.dim), p["noise_dist"], p["df"],
                           self.eigs.dtype, self.eigs.device, p["stable_alpha"])
        if self.noise_basis is None:
            return z                       # scaled in stochastic_grad: one pass over memory fewer
        return z.mul_(self.noise_std) @ self.noise_basis.T

    def stochastic_grad(self, x, drawn):
        if self.proportional:               # the noise's scale is ‖x − x*‖/ℓ
            drawn = drawn * (torch.linalg.vector_norm(x, dim=-1, keepdim=True) / self.params["noise_length"])
        if self.noise_basis is None:
            return self.grad(x).addcmul_(drawn, self.noise_std)
        return self.grad(x).add_(drawn)

    @property
    def proportional(self) -> bool:
        return self.params["noise_model"] == "proportional"

    @property
    def noise_cov_constant(self) -> bool:
        return not self.proportional

    def noise_cov(self, x=None):
        """Σ, or (‖x‖/ℓ)² Σ for proportional noise ([R, d, d] for x [R, d]; at the saddle without x).
        For alpha_stable noise Σ describes the scale (the variance is infinite for α < 2)."""
        if not self.proportional:
            return self.Sigma
        if x is None:
            return torch.zeros_like(self.Sigma)
        factor = torch.linalg.vector_norm(x, dim=-1) / self.params["noise_length"]
        return factor[:, None, None] ** 2 * self.Sigma

    def derived(self):
        # Proportional noise vanishes at the saddle: σ₁ = 0 there (the anisotropy, a ratio, is
        # that of Σ at any other point).
        sigma = 0.0 if self.proportional else self.sigma_escape
        return {"curvature": self.params["curvature"], "sigma_escape": sigma,
                "escape_radius": self.escape_radius,
                "noise_anisotropy": noise_anisotropy(self.Sigma.double(), self.sigma_escape)}

    @property
    def escape_is_distance(self):
        return self.params["escape_measure"] == "norm"

    def escape_distance(self, x):
        if self.params["escape_measure"] == "norm":
            return torch.linalg.vector_norm(x, dim=-1)
        return torch.linalg.vector_norm(x @ self.escape_basis, dim=-1)
