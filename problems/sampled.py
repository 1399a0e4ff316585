"""Problems whose gradient noise comes from sampling their own data.

f(x) = E_ξ[f_ξ(x)], ξ a data point: uniform over a finite data set (`FiniteSum`: minibatches of
`batch_size` indices drawn with replacement) or a fresh sample from a population (streaming). A
minibatch of B independent points gives an unbiased gradient whose noise covariance is exactly

    Σ_B(x) = Cov_ξ[∇f_ξ(x)] / B,

so the noise is multiplicative (it depends on x, `noise_cov_constant = False`) and shrinks with
the batch size. Everything the theory needs at the saddle is computed once, in float64, at
construction (`finish`): the Hessian's most negative eigenpair (curvature γ and the escape
direction v), sigma_escape = √(vᵀΣ_B v) and the noise anisotropy √(tr Σ_B / d)/sigma_escape,
the escape radius, and then every tensor is cast to the working dtype.

Escape is measured (`escape_measure`) as the distance from the saddle, ‖x − x*‖ (`norm`), or as
its norm within the escape subspace, the span of the saddle Hessian's negative eigenvectors
(`projection`, as quadratic_saddle's): in many dimensions with strong noise the positive
directions alone spread ‖x − x*‖ to a sizeable distance, which the projection ignores. Unless
given, the escape radius is half the measure of the nearest of the problem's known global
minimisers (each problem says which): far enough that the quadratic picture has ended, not so
far that reaching it measures the convergence to the minimum instead.
"""
from __future__ import annotations

import torch

from workflows.core.params import Param, at_least, choice, positive

from .base import Problem, noise_anisotropy

HVP_CHUNK = 256           # Hessian columns computed in one batched Hessian-vector product
EXAMPLE_CHUNK = 4096      # per-example gradients computed in one batched call


def batch_size_param(default: int) -> Param:
    return Param(default, int, ">= 1", at_least(1),
                 "minibatch size B (drawn with replacement): noise covariance Σ₁/B")


def escape_params(measure: str = "norm") -> dict[str, Param]:
    return {
        "escape_measure": choice(measure, "norm", "projection",
                                 doc="norm: ‖x − x*‖; projection: its norm within the escape subspace "
                                     "(the saddle Hessian's negative eigenspace)"),
        "escape_radius": Param(None, float, "> 0, or null for half the distance to the nearest minimum",
                               positive, "escape when the escape measure reaches this"),
    }


def data_matmul(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """X W for each run: X the whole data set ([n, p], shared by all runs) or per-run minibatches
    ([R, B, p]); W [R, p, k] → [R, n or B, k]. The shared case is one GEMM: torch's broadcasting
    matmul would copy X once per run (ten times slower, and it dominates Hessians)."""
    if X.dim() == 3:
        return X @ W
    R, p, k = W.shape
    return (X @ W.transpose(0, 1).reshape(p, R * k)).reshape(-1, R, k).transpose(0, 1)


def data_tmatmul(X: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Xᵀ E for each run (X as in data_matmul, E [R, n or B, k]) → [R, p, k]."""
    if X.dim() == 3:
        return X.transpose(1, 2) @ E
    R, n, k = E.shape
    return (X.T @ E.transpose(0, 1).reshape(n, R * k)).reshape(-1, R, k).transpose(0, 1)


def unit_sign(v: torch.Tensor) -> torch.Tensor:
    """An eigenvector's sign is arbitrary: fix it so that its largest entry is positive."""
    return v * torch.sign(v[v.abs().argmax()])


class SampledProblem(Problem):
    noise_cov_constant = False
    batch_size: int
    curvature: float
    sigma_escape: float
    noise_anisotropy: float

    @property
    def draw_size(self) -> int:
        """Numbers drawn per run and step (the engine sizes its noise blocks by it)."""
        return self.batch_size

    # --- per-sample gradients --------------------------------------------------------------
    def sample_noise_cov(self, x: torch.Tensor) -> torch.Tensor:
        """Cov_ξ[∇f_ξ(x)] for one data point ξ ([d] → [d, d])."""
        grads, weights = self.example_gradients(x)
        centred = grads - weights @ grads
        return (centred * weights[:, None]).T @ centred

    def sample_noise_variance(self, x: torch.Tensor, v: torch.Tensor) -> float:
        """vᵀ Cov_ξ[∇f_ξ(x)] v, as a mean of squares (never a difference that rounds below 0)."""
        grads, weights = self.example_gradients(x)
        return float(weights @ ((grads - weights @ grads) @ v).square())

    def example_gradients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-sample gradients at x ([d]) over the data distribution (or a large sample of
        it), with weights summing to one: ([N, d], [N])."""
        raise NotImplementedError

    def noise_cov(self, x: torch.Tensor | None = None) -> torch.Tensor | None:
        """Σ_B(x) = Cov_ξ[∇f_ξ(x)]/B, exact ([d, d]); x [R, d] gives [R, d, d]; x None: the saddle."""
        if x is None:
            x = self.saddle
        if x.dim() == 2:
            return torch.stack([self.noise_cov(row) for row in x])
        return self.sample_noise_cov(x) / self.batch_size

    # --- the Hessian, all columns in a few batched products ------------------------------------
    def hessian(self, x):
        R, d = x.shape
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        chunk = max(1, HVP_CHUNK // R)
        cols = []
        for start in range(0, d, chunk):
            e = eye[start:start + chunk]
            c = len(e)
            X, V = x.repeat_interleave(c, 0), e.repeat(R, 1)      # run-major, [R·c, d]
            cols.append(self.hvp(X, V).reshape(R, c, d))
        H = torch.cat(cols, 1)                      # H[r, j, :] = H e_j: symmetric, so H itself
        return 0.5 * (H + H.transpose(1, 2))

    # --- construction ----------------------------------------------------------------------------
    def finish(self, dtype, device, minimizers: torch.Tensor | None = None,
               escape_direction: torch.Tensor | None = None, curvature: float | None = None):
        """Called at the end of a subclass's __init__, with every tensor still in float64: the
        saddle's curvature and escape direction (from a dense eigh of the Hessian, unless the
        subclass knows both), the noise along it and the escape radius; then the cast."""
        measure = self.params.get("escape_measure", "norm")
        self.escape_basis = None
        if escape_direction is None or curvature is None or measure == "projection":
            evals, evecs = torch.linalg.eigh(self.hessian(self.saddle[None])[0])
            if escape_direction is None or curvature is None:
                curvature, escape_direction = float(-evals[0]), unit_sign(evecs[:, 0])
            if measure == "projection":
                negative = evals < -1e-9 * float(evals.abs().max())
                if not negative.any():
                    raise ValueError(f"problem {self.name}: escape_measure='projection' is not allowed for "
                                     "this saddle: its Hessian has no negative eigenvalue; allowed: norm")
                self.escape_basis = evecs[:, negative]                   # [d, k]
        self.curvature = curvature
        self.escape_direction = v = escape_direction
        self.sigma_escape = (self.sample_noise_variance(self.saddle, v) / self.batch_size) ** 0.5
        cov = self.sample_noise_cov(self.saddle) / self.batch_size
        self.noise_anisotropy = noise_anisotropy(cov, self.sigma_escape)
        self.saddle_loss = float(self.loss(self.saddle[None])[0])
        self.minimizers = minimizers
        if self.params.get("escape_radius") is not None:
            self.escape_radius = self.params["escape_radius"]
        else:
            self.escape_radius = 0.5 * float(self.escape_distance(minimizers).min())
        for key, value in list(vars(self).items()):
            if torch.is_tensor(value):
                setattr(self, key, value.to(dtype=dtype if value.is_floating_point() else value.dtype,
                                            device=device))

    @property
    def escape_is_distance(self):
        return self.escape_basis is None and type(self).escape_distance is SampledProblem.escape_distance

    def escape_distance(self, x):
        if self.escape_basis is None:
            return torch.linalg.vector_norm(x - self.saddle, dim=-1)
        return torch.linalg.vector_norm((x - self.saddle) @ self.escape_basis, dim=-1)

    def derived(self):
        return {"curvature": self.curvature, "sigma_escape": self.sigma_escape,
                "escape_radius": float(self.escape_radius), "noise_anisotropy": self.noise_anisotropy}


class FiniteSum(SampledProblem):
    """f(x) = (1/n) Σᵢ fᵢ(x). Subclasses set `n_examples` and implement `loss`, `grad` and
    `stochastic_grad(x, indices)` (indices [R, B]: the mean gradient over those examples)."""
    n_examples: int

    def draw(self, generator, steps, runs):
        return torch.randint(0, self.n_examples, (steps, runs, self.batch_size), generator=generator,
                             device=self.saddle.device)

    def example_gradients(self, x):
        n, d = self.n_examples, self.dim
        index = torch.arange(n, device=x.device)[:, None]
        grads = torch.cat([self.stochastic_grad(x.expand(len(i), d), i) for i in index.split(EXAMPLE_CHUNK)])
        return grads, torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)


def find_saddle(problem: Problem, x0: torch.Tensor, n_negative: int = 1, tol: float = 1e-11,
                max_iter: int = 500, max_step: float = 0.05) -> torch.Tensor:
    """The stationary point of index `n_negative` near x0 (float64, [d]) by eigenvector following
    (Cerjan & Miller 1981): in the Hessian's eigenbasis, a Newton step up the `n_negative` lowest
    modes and a descent step −g_i/|λ_i| down all the others, its length capped at max_step. Near
    a nondegenerate saddle of that index this is Newton's method (quadratic convergence); away
    from it, it climbs out of minima and slides along near-flat families of saddles to an
    isolated one. n_negative = 0 finds a minimum."""
    x = x0.clone()
    for _ in range(max_iter):
        g = problem.grad(x[None])[0]
        if torch.linalg.vector_norm(g) <= tol:
            return x
        evals, evecs = torch.linalg.eigh(problem.hessian(x[None])[0])
        along = evecs.T @ g
        scale = evals.abs().max()
        step_along = -along / evals.abs().clamp_min(1e-12 * scale)
        step_along[:n_negative] = -along[:n_negative] / evals[:n_negative]
        step = evecs @ step_along
        length = torch.linalg.vector_norm(step)
        x = x + step * min(1.0, max_step / float(length))
    raise ValueError(f"problem {problem.name}: no stationary point of index {n_negative} found near the "
                     f"expected one in {max_iter} iterations (‖∇f‖ = "
                     f"{float(torch.linalg.vector_norm(problem.grad(x[None]))):.2e}); allowed: more samples "
                     "per dimension")
