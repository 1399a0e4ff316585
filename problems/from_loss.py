"""Problems from a loss function: bring your own landscape, keep everything else.

    import torch
    from problems.from_loss import GaussianNoise, Landscape, define_problem
    from workflows.core.params import Param, at_least
    from workflows.registry import register_problem

    def build(p, generator, dtype):
        eigs = torch.tensor([-1.0] + [1.0] * (p["dim"] - 1), dtype=torch.float64)
        std = torch.full((p["dim"],), 0.1, dtype=torch.float64)
        scale = eigs.to(dtype)
        return Landscape(loss=lambda x: 0.5 * (scale * x.square()).sum(-1),   # [R, d] -> [R]
                         saddle=torch.zeros(p["dim"], dtype=dtype),
                         noise=GaussianNoise(torch.diag(std**2)), escape_radius=1.0)

    MySaddle = define_problem("my_saddle", build, {"dim": Param(10, int, ">= 2", at_least(2), "d")})
    register_problem(MySaddle)          # or name MySaddle in a plugin's entry point

A landscape is a batched loss f(x) ([R, d] → [R], torch, differentiable), a saddle x* ([d])
and a noise model:

- `GaussianNoise(Σ)`: additive, g = ∇f(x) + ξ with ξ ~ N(0, Σ) the same at every x (the
  setting of docs/theory.md and of Staib et al.'s analysis);
- `Minibatches(data, example_loss, batch_size)`: the user's data set, g = (1/B) Σ_b ∇ℓ(x; z_{i_b})
  with i_b uniform with replacement; f defaults to the data mean of ℓ, and the noise covariance
  is exactly Σ_B(x) = Cov_i[∇ℓ_i(x)] / B (per-example gradients, problems/sampled.py).

Everything else is derived, as for a built-in problem: ∇f by autograd (every step), Hessian-vector
products by torch.func (forward over reverse), dense Hessians from batched Hessian-vector
products; at the saddle, in float64, the Hessian's most negative eigenpair (curvature γ and the
escape direction v), sigma_escape = √(vᵀΣv), the noise anisotropy, the escape radius (default
half the distance to the nearest of the landscape's `minimizers`) and `minimum_loss` (f at the
minimizers). So escape times, SOSP tracking, cnc_constant and the closed forms work unchanged.

`build(params, generator, dtype)` is called twice: in float64 (everything measured at the saddle)
and in the cell's dtype (the steps), with the generator rewound in between; so it must make the
same problem in every dtype: draw random numbers in float64 and cast, as the built-in problems do,
and give Σ in float64. The loss must be written with torch operations that torch.func can
transform (no in-place updates of x, no .item()). CPU tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from workflows.core.params import Param
from workflows.core.shapes import structure

from .sampled import EXAMPLE_CHUNK, FiniteSum, escape_params, unit_sign

# A quadratic has a constant Hessian: its Hessian-vector products at points within the escape
# radius equal the saddle's to rounding. Above this relative change the landscape is not one.
QUADRATIC_TOLERANCE = 1e-6
QUADRATIC_PROBES = 4
LOSS_MISMATCH = 1e-8          # |f(x*) − mean ℓ(x*)| allowed, relative, when both are given


def gradient(loss: Callable, x: torch.Tensor) -> torch.Tensor:
    """∇f at every row of x ([R, d] → [R, d]) by reverse-mode autograd. The runs are independent,
    so the gradient of Σ_r f(x_r) is every run's own. (torch.autograd.grad rather than
    torch.func.grad here: same numbers, half the per-call overhead, and the engine calls it every
    step.)"""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(loss(x).sum(), x, materialize_grads=True)[0]


def hessian_vector_product(loss: Callable, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """∇²f(x) v for every run ([R, d], [R, d] → [R, d]): forward-mode derivative of the
    reverse-mode gradient along v (torch.func.jvp over torch.func.grad), exact, one pass."""
    total = lambda y: loss(y).sum()                     # noqa: E731
    return torch.func.jvp(torch.func.grad(total), (x,), (v,))[1]


class GaussianNoise:
    """Additive Gaussian gradient noise with a fixed covariance Σ ([d, d], or [d] for a diagonal
    one; give it in float64). A diagonal Σ is applied as g = ∇f + √diag(Σ) ⊙ z, otherwise as
    g = ∇f + Lz with L = U diag(√λ) from Σ's eigendecomposition (Σ may be singular)."""

    constant, batch_size = True, 1

    def __init__(self, cov):
        self.cov = torch.as_tensor(cov)

    def prepare(self, owner: str, dim: int, dtype):
        cov = self.cov.double()
        cov = torch.diag(cov) if cov.dim() == 1 else cov
        if cov.shape != (dim, dim):
            raise ValueError(f"{owner}: GaussianNoise cov has shape {tuple(self.cov.shape)}; allowed: "
                             f"[{dim}, {dim}] or [{dim}] (the saddle's dimension)")
        evals, evecs = torch.linalg.eigh(cov)
        scale = max(float(evals.abs().max()), 1e-300)
        if not torch.allclose(cov, cov.T, rtol=0, atol=1e-12 * scale) or float(evals[0]) < -1e-12 * scale:
            raise ValueError(f"{owner}: GaussianNoise cov is not symmetric positive semidefinite (smallest "
                             f"eigenvalue {float(evals[0]):.3g}); allowed: a covariance matrix")
        self.matrix = cov                                            # float64, for the saddle's numbers
        diagonal = bool((cov == torch.diag(cov.diagonal())).all())
        # √ in float64, then one rounding to the working dtype (as quadratic_saddle's noise_std).
        self.std = cov.diagonal().sqrt().to(dtype) if diagonal else None
        self.factor = None if diagonal else (evecs * evals.clamp_min(0).sqrt()).to(dtype)
        return self

    def draw_size(self, dim: int) -> int:
        return dim

    def draw(self, generator, steps: int, runs: int, dim: int, dtype):
        z = torch.randn(steps, runs, dim, generator=generator, dtype=dtype)
        return z if self.factor is None else z @ self.factor.T       # diagonal: scaled in stochastic_grad

    def stochastic_grad(self, problem, x, drawn):
        if self.factor is None:
            return problem.grad(x).addcmul_(drawn, self.std)
        return problem.grad(x).add_(drawn)


class Minibatches:
    """Gradient noise from minibatches of the user's data: `data` a tensor [n, ...] or a tuple of
    tensors sharing their first dimension n (inputs, targets); `example_loss(x, batch)` the loss
    of each run on each example of its batch, x [R, d] and batch the data indexed by [R, B]
    indices (so shaped [R, B, ...]), returning [R, B]. Batches of `batch_size` examples are drawn
    uniformly with replacement, so the noise covariance is Cov_i[∇ℓ_i(x)] / B exactly."""

    constant = False

    def __init__(self, data, example_loss: Callable, batch_size: int):
        self.data = data
        self.example_loss = example_loss
        self.batch_size = batch_size

    def prepare(self, owner: str, dim: int, dtype):
        tensors = self.data if isinstance(self.data, (tuple, list)) else (self.data,)
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1 or not all(torch.is_tensor(t) for t in tensors):
            raise ValueError(f"{owner}: Minibatches data has first dimensions {sorted(sizes)}; allowed: a "
                             "tensor, or a tuple of tensors with the same first dimension")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"{owner}: Minibatches batch_size={self.batch_size!r} is out of range; allowed: >= 1")
        self.n_examples = sizes.pop()
        return self

    def take(self, indices):
        if isinstance(self.data, (tuple, list)):
            return type(self.data)(t[indices] for t in self.data)
        return self.data[indices]

    def mean_loss(self, x):
        """f(x) = (1/n) Σ_i ℓ_i(x), over the data in chunks of about EXAMPLE_CHUNK (run, example) pairs."""
        runs = len(x)
        chunk = max(1, EXAMPLE_CHUNK // runs)
        total = 0
        for start in range(0, self.n_examples, chunk):
            index = torch.arange(start, min(start + chunk, self.n_examples)).expand(runs, -1)
            total = total + self.example_loss(x, self.take(index)).sum(1)
        return total / self.n_examples

    def draw_size(self, dim: int) -> int:
        return self.batch_size

    def draw(self, generator, steps: int, runs: int, dim: int, dtype):
        return torch.randint(0, self.n_examples, (steps, runs, self.batch_size), generator=generator)

    def stochastic_grad(self, problem, x, indices):
        batch = self.take(indices)
        return gradient(lambda y: self.example_loss(y, batch).mean(1), x)


@dataclass
class Landscape:
    """What `build` returns. `loss`: f, batched ([R, d] → [R]); None with Minibatches noise (f is
    then the data mean of the example loss). `saddle` [d]. `noise`: GaussianNoise or Minibatches.
    `minimizers` [m, d] (optional): the minima, for the default escape radius (half the distance
    to the nearest) and minimum_loss. `minimum_loss`: f at the minima where known (default: f at
    `minimizers`). `escape_radius`: the radius when the problem's `escape_radius` parameter is
    null (it wins over the minimizers' default). `shapes`: the named tensors whose flattened
    concatenation is x, as (name, shape) pairs, e.g. [("W", (4, 3)), ("b", (3,))] for
    x = (vec W, b) (workflows/core/shapes.py: matrix optimizers such as Muon act on each matrix); default:
    one vector."""
    loss: Callable[[torch.Tensor], torch.Tensor] | None
    saddle: torch.Tensor
    noise: Any
    minimizers: torch.Tensor | None = None
    minimum_loss: float | None = None
    escape_radius: float | None = None
    shapes: Any = ()


class LossProblem(FiniteSum):
    """A problem made from a `build(params, generator, dtype) -> Landscape` function; subclass it
    (set `name`, `SCHEMA`, `build`) or let `define_problem` do it. Batched over runs like every
    problem (problems/base.py). With Minibatches noise it is a finite sum (problems/sampled.py:
    per-example gradients give the exact noise covariance); with GaussianNoise, Σ is given."""

    @staticmethod
    def build(params: dict, generator: torch.Generator, dtype) -> Landscape:
        raise NotImplementedError

    def __init__(self, params, generator, dtype=torch.float32, device="cpu"):
        owner = f"problem {self.name}"
        rewind = generator.get_state()
        exact = self._landscape(owner, params, generator, torch.float64)
        working = exact
        if dtype != torch.float64:
            generator.set_state(rewind)
            working = self._landscape(owner, params, generator, dtype)
        self._use(exact)                      # the saddle's numbers, in float64
        self.saddle = saddle = exact.saddle
        self.shapes = tuple(exact.shapes or ())
        structure(self)                       # declared shapes must cover x exactly: one line if not
        self.batch_size = exact.noise.batch_size
        self.noise_cov_constant = exact.noise.constant
        if exact.loss is not None and isinstance(exact.noise, Minibatches):
            mean = float(exact.noise.mean_loss(saddle[None])[0])
            given = float(exact.loss(saddle[None])[0])
            if abs(given - mean) > LOSS_MISMATCH * max(1.0, abs(mean)):
                raise ValueError(f"{owner}: loss(saddle)={given:.6g} but the data mean of example_loss is "
                                 f"{mean:.6g}; allowed: loss=None (the data mean) or the same function")
        hessian = self.hessian(saddle[None])[0]
        evals, evecs = torch.linalg.eigh(hessian)
        curvature, direction = float(-evals[0]), unit_sign(evecs[:, 0])
        minimizers = None if exact.minimizers is None else torch.as_tensor(exact.minimizers).double()
        radius = params.get("escape_radius")
        if radius is None:
            radius = exact.escape_radius
        if radius is None and minimizers is None:
            raise ValueError(f"{owner}: escape_radius is null and the landscape gives no minimizers; allowed: "
                             "a number > 0 (problem.escape_radius), or Landscape(escape_radius=...) or "
                             "Landscape(minimizers=...)")
        self.params = {**params, "escape_radius": radius}
        minimum_loss = exact.minimum_loss
        if minimum_loss is None and minimizers is not None:
            minimum_loss = float(self.loss(minimizers).min())
        self.minimum_loss = minimum_loss
        self.theory = self._theory(exact, minimizers, hessian, evals, evecs)
        self.finish(dtype, device, minimizers=minimizers, escape_direction=direction, curvature=curvature)
        self._use(working)                    # the steps, in the cell's dtype

    def _landscape(self, owner, params, generator, dtype) -> Landscape:
        land = self.build(params, generator, dtype)
        if not isinstance(land, Landscape):
            raise TypeError(f"{owner}: build returned {type(land).__name__}; allowed: a Landscape")
        saddle = torch.as_tensor(land.saddle)
        if saddle.dim() != 1:
            raise ValueError(f"{owner}: saddle has shape {tuple(saddle.shape)}; allowed: [d]")
        if not isinstance(land.noise, (GaussianNoise, Minibatches)):
            raise TypeError(f"{owner}: noise is a {type(land.noise).__name__}; allowed: GaussianNoise or Minibatches")
        if land.loss is None and not isinstance(land.noise, Minibatches):
            raise ValueError(f"{owner}: loss=None; allowed: a function, or Minibatches noise (f = the data mean)")
        land.saddle = saddle.to(dtype)
        land.noise.prepare(owner, len(saddle), dtype)
        return land

    def _use(self, land: Landscape):
        self.dim = len(land.saddle)
        self.noise = land.noise
        self._loss = land.loss if land.loss is not None else land.noise.mean_loss
        self._dtype = land.saddle.dtype
        if isinstance(land.noise, Minibatches):
            self.n_examples = land.noise.n_examples

    # --- the objective: autograd and torch.func ---------------------------------------------------
    def loss(self, x):
        return self._loss(x)

    def grad(self, x):
        return gradient(self._loss, x)

    def hvp(self, x, v):
        return hessian_vector_product(self._loss, x, v)

    # --- the noise: the landscape's model -----------------------------------------------------------
    @property
    def draw_size(self):
        return self.noise.draw_size(self.dim)

    def draw(self, generator, steps, runs):
        return self.noise.draw(generator, steps, runs, self.dim, self._dtype)

    def stochastic_grad(self, x, drawn):
        return self.noise.stochastic_grad(self, x, drawn)

    def sample_noise_cov(self, x):
        if self.noise_cov_constant:                         # GaussianNoise: Σ as given
            return self.noise.matrix.to(x.dtype)
        return super().sample_noise_cov(x)

    def sample_noise_variance(self, x, v):
        if self.noise_cov_constant:
            return float(v @ self.sample_noise_cov(x) @ v)
        return super().sample_noise_variance(x, v)

    # --- what the closed forms need to know -----------------------------------------------------------
    def _theory(self, land: Landscape, minimizers, hessian, evals, evecs) -> dict:
        """Facts of the saddle that decide whether docs/theory.md's closed forms apply, in float64:

        closed_form        "quadratic_additive_gaussian" when the noise is GaussianNoise and the
                           Hessian does not change within the escape radius (hessian_variation
                           ≤ QUADRATIC_TOLERANCE), else None
        hessian_variation  max ‖∇²f(x* + r u) w − ∇²f(x*) w‖ / (max|λ| ‖w‖) over random unit u, w
        n_negative         the number of negative Hessian eigenvalues (escape directions k)
        max_curvature      the largest Hessian eigenvalue (the stability limit lr·λ_max < 2)
        hessian_axis_aligned  the Hessian is diagonal (a diagonal preconditioner keeps the escape direction)
        noise_aligned      Σ commutes with the Hessian (the escape coordinate's noise is its own)
        sigma_top          the noise std along the largest eigenvalue's eigenvector
        """
        scale = max(float(evals.abs().max()), 1e-300)
        radius = self.params["escape_radius"]
        if radius is None:
            radius = 0.5 * float(torch.linalg.vector_norm(minimizers - land.saddle, dim=-1).min())
        probes = torch.Generator().manual_seed(0)             # fixed: the same facts for the same problem
        u, w = torch.randn(2, QUADRATIC_PROBES, self.dim, generator=probes, dtype=torch.float64)
        u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        w = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        far = self.hvp(land.saddle + radius * u, w)
        variation = float(torch.linalg.vector_norm(far - w @ hessian, dim=-1).max()) / scale
        cov = self.sample_noise_cov(land.saddle) / self.batch_size
        gaussian = isinstance(land.noise, GaussianNoise)
        off_diagonal = hessian - torch.diag(hessian.diagonal())
        commutator = hessian @ cov - cov @ hessian
        top = evecs[:, -1]
        return {
            "closed_form": ("quadratic_additive_gaussian"
                            if gaussian and variation <= QUADRATIC_TOLERANCE else None),
            "hessian_variation": variation,
            "n_negative": int((evals < -1e-9 * scale).sum()),
            "max_curvature": float(evals[-1]),
            "hessian_axis_aligned": bool(off_diagonal.abs().max() <= 1e-12 * scale),
            "noise_aligned": bool(commutator.abs().max() <= 1e-9 * scale * max(float(cov.abs().max()), 1e-300)),
            "sigma_top": math.sqrt(max(float(top @ cov @ top), 0.0)),
        }


def define_problem(name: str, build: Callable, schema: dict[str, Param] | None = None, doc: str = "",
                   limits: tuple = ()) -> type[LossProblem]:
    """A Problem class named `name` from `build(params, generator, dtype) -> Landscape`.

    schema: the problem's parameters ({name: Param}, workflows/core/params.py), which sweeps may vary
        as `problem.<name>`; `escape_measure` (norm | projection) and `escape_radius` (null: the
        landscape's, else half the distance to the nearest minimizer) are added unless given.
    limits: cross-parameter checks, (key, ok(p), allowed(p)) as Problem.LIMITS.
    Register the class (workflows.registry.register_problem) or name it in a plugin entry point.
    Raises ValueError for a name that is not an identifier."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"define_problem: name={name!r} is not allowed; allowed: an identifier (letters, digits, _)")
    schema = dict(schema or {})
    for key, param in escape_params("norm").items():
        schema.setdefault(key, param)
    body = {"name": name, "SCHEMA": schema, "LIMITS": tuple(limits), "build": staticmethod(build),
            "__doc__": doc or (build.__doc__ or f"{name}: a problem defined by its loss").strip(),
            "__module__": getattr(build, "__module__", __name__)}
    return type(name, (LossProblem,), body)


__all__ = ["GaussianNoise", "Landscape", "LossProblem", "Minibatches", "define_problem", "gradient",
           "hessian_vector_product"]
