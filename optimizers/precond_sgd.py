"""SGD with a preconditioner built from known moments of the gradient (Staib et al.'s A, exact
instead of estimated):

    x ← x − η A g,    A = (M + εI)^(−α/2)

`target: noise`          M = Σ(x), the gradient-noise covariance: the fixed noise preconditioner
                         Σ^(−α/2). Constant for additive noise, so along the escape direction it
                         is SGD with the step η σ₁^−α (docs/theory.md section 4).
`target: second_moment`  M = G(x) = E[g gᵀ] = ∇f ∇fᵀ + Σ(x), the paper's second-moment
                         preconditioner: Σ at the saddle, dominated by the gradient once |γx| ≫ σ₁
                         (a normalised-gradient step); an adaptive method's estimate without lag.

α = 0 is SGD; α = 1 makes the preconditioned noise isotropic. `form: diagonal` uses diag(M),
what practical methods estimate; `full` the whole matrix (small d: one eigh per step and run
for the second moment).
"""
import torch

from workflows.core.params import Param, choice, non_negative, unit_closed

from .base import Empty, Optimizer, full_precondition, lr_param, matrix_power, sgd_step

NAME = "precond_sgd"
SCHEMA = {
    "lr": lr_param(1e-3),
    "alpha": Param(1.0, float, "in [0, 1]", unit_closed, "preconditioner exponent α"),
    "form": choice("diagonal", "diagonal", "full"),
    "target": choice("noise", "noise", "second_moment"),
    "eps": Param(1e-12, float, ">= 0", non_negative, "added to M's eigenvalues"),
}


def fixed_preconditioner(problem, hp: dict, cov: torch.Tensor | None = None) -> torch.Tensor:
    """A = (Σ + εI)^(−α/2) for the noise covariance Σ (default: the problem's, at the saddle):
    [d] for the diagonal form (diag(Σ) + ε)^(−α/2), [d, d] for the full one."""
    cov = problem.noise_cov() if cov is None else cov
    power = -hp["alpha"] / 2
    if hp["form"] == "full":
        return matrix_power(cov, power, hp["eps"])
    return (torch.diagonal(cov, dim1=-2, dim2=-1) + hp["eps"]).pow(power)


def build(hp: dict, problem=None) -> Optimizer:
    if problem is None or problem.noise_cov() is None:
        name = getattr(problem, "name", None)
        raise ValueError(f"optimizer precond_sgd: problem {name!r} has no known noise covariance; "
                         "allowed: problems that expose noise_cov")
    full = hp["form"] == "full"
    A_noise = fixed_preconditioner(problem, hp) if problem.noise_cov_constant else None

    def init(x):
        return Empty()

    def update(grad, state, x):
        power, eps = -hp["alpha"] / 2, hp["eps"]
        if hp["target"] == "noise":
            A = A_noise if A_noise is not None else fixed_preconditioner(problem, hp, problem.noise_cov(x))
            preconditioned = (A @ grad[:, :, None])[:, :, 0] if full else grad.mul_(A)
        else:
            full_grad, cov = problem.grad(x), problem.noise_cov(x)
            if full:
                M = cov + full_grad[:, :, None] * full_grad[:, None, :]
                preconditioned = full_precondition(M, grad, power, eps)
            else:
                preconditioned = grad.mul_((full_grad.square() + torch.diagonal(cov, dim1=-2, dim2=-1) + eps)
                                           .pow(power))
        return sgd_step(preconditioned, hp["lr"]), state

    return Optimizer(init, update)
