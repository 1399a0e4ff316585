"""An optimizer is a pair of pure-looking functions, in the optax style:

    init(x) -> state
    update(grad, state, x) -> (step, state),   then x ← x + step.

Everything is batched over R runs (x, grad: [R, d]). States are NamedTuples whose tensor fields
have the runs as their leading dimension (so the engine can drop finished runs from the batch)
and whose plain-number fields (a step count) are shared by every run.

Speed over purity where it is invisible to the caller: `update` may reuse `grad`'s storage and
updates the state's tensors in place (the engine owns both and never looks back at them).

Hyperparameters are live: `build(hp, problem)` receives a dict that the engine may change between
steps (a step-size schedule sets hp["lr"] = η_t, the β2 rule hp["beta2"] = 1 − η_t^(2/3)), so an
update reads hp[...] when it runs, not once at build time.

A state that is not a NamedTuple of tensors (the torch.optim adapter's) gives its own
`select(keep)`; `select_runs` uses it.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

from workflows.core.params import Param, positive

State = Any


class Optimizer(NamedTuple):
    init: Callable[[torch.Tensor], State]
    update: Callable[[torch.Tensor, State, torch.Tensor], tuple[torch.Tensor, State]]
    # Optional: the same update applied to x in place by a fused kernel, apply(grad, state, x)
    # -> state, which the engine prefers. `update` stays the readable definition; the tests
    # check that the two agree and that both equal torch.optim.
    apply: Callable[[torch.Tensor, State, torch.Tensor], State] | None = None


def update_from(apply: Callable) -> Callable:
    """`update(grad, state, x) -> (step, state)` of an optimizer defined by its in-place `apply`
    (the exact path, which the engine prefers): the step x_new − x, with x left as it was."""
    def update(grad, state, x):
        before = x.clone()
        state = apply(grad, state, x)
        step = x - before
        x.copy_(before)
        return step, state
    return update


class Empty(NamedTuple):
    pass


def lr_param(default: float) -> Param:
    return Param(default, float, "> 0", positive, "step size η")


def select_runs(state: State, keep: torch.Tensor) -> State:
    """The state restricted to the runs in `keep` (a boolean mask or indices over the leading
    dimension)."""
    if hasattr(state, "select"):
        return state.select(keep)
    return type(state)(*(f[keep] if torch.is_tensor(f) else f for f in state))


def sgd_step(preconditioned_grad: torch.Tensor, lr: float) -> torch.Tensor:
    """The step every method here ends with: −η A_t g_t (in place on its argument)."""
    return preconditioned_grad.mul_(-lr)


def matrix_power(M: torch.Tensor, power: float, eps: float) -> torch.Tensor:
    """(M + εI)^power for symmetric PSD M ([..., d, d]), through an eigendecomposition in
    float64: the noise's eigenvalues can span 8 decades (σ₁² = 1e-8 next to 1), which float32
    eigh cannot resolve."""
    M64 = M.double()
    finite = torch.isfinite(M64).all(-1).all(-1)
    if not finite.all():
        # A diverged run's G is not finite and eigh would raise for the whole batch: give that
        # run a NaN preconditioner instead, so that the engine records its divergence.
        eye = torch.eye(M.shape[-1], dtype=M64.dtype, device=M.device)
        M64 = torch.where(finite[..., None, None], M64, eye)
    evals, evecs = torch.linalg.eigh(M64)
    scaled = evecs * (evals.clamp_min(0) + eps).pow(power).unsqueeze(-2)
    out = scaled @ evecs.transpose(-1, -2)
    if not finite.all():
        out = torch.where(finite[..., None, None], out, torch.full_like(out, float("nan")))
    return out.to(M.dtype)


def full_precondition(M: torch.Tensor, grad: torch.Tensor, power: float, eps: float) -> torch.Tensor:
    """(M + εI)^power g for each run (M [R, d, d], g [R, d])."""
    return (matrix_power(M, power, eps) @ grad[:, :, None])[:, :, 0]


def full_gradient_is_small(problem, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """‖∇f(x)‖ ≤ threshold per run, on the problem's full gradient (the test of Jin et al.'s and
    Daneshmand et al.'s perturbation conditions)."""
    return torch.linalg.vector_norm(problem.grad(x), dim=-1) <= threshold


def require_problem(name: str, problem, why: str):
    if problem is None:
        raise ValueError(f"optimizer {name}: needs the problem ({why}); allowed: "
                         "make_optimizer(spec, problem)")
