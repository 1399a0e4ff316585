"""Perturbed gradient descent (Jin, Ge, Netrapalli, Kakade & Jordan 2017, Algorithm 2), with
stochastic gradients:

    for t = 0, 1, …:
        if ‖∇f(x_t)‖ ≤ g_thres and t − t_noise > t_thres:
            t_noise ← t,   x_t ← x_t + ξ_t,   ξ_t ~ Uniform(ball of radius r)
        x_{t+1} = x_t − η g_t

A perturbation at most once every t_thres steps, and only where the gradient is small (near a
saddle, or a minimum). `check: full` tests the full gradient ∇f(x_t), as in the paper (one full
gradient per step); `stochastic` tests the stochastic g_t itself, which noise rarely lets be
small. Two liberties, both immaterial when r ≫ η‖g‖: the step after a perturbation uses g_t
drawn at the unperturbed x_t (the optax interface gets one gradient per step), and the paper's
termination test (no decrease f_thres within t_thres steps ⇒ stop) is left out: the engine runs
to its own stopping rules.

ξ = r u^{1/d} z/‖z‖ (z ~ N(0, I_d), u ~ U(0, 1)), drawn for every run of the batch whenever
any run perturbs, from a generator seeded by `seed`: the same cell gives the same rows.
"""
from typing import NamedTuple

import torch

from workflows.core.params import Param, at_least, choice, non_negative, positive

from .base import Optimizer, full_gradient_is_small, lr_param, require_problem, sgd_step

NAME = "perturbed_sgd"
SCHEMA = {
    "lr": lr_param(1e-2),
    "radius": Param(0.01, float, "> 0", positive, "r, the perturbation ball's radius"),
    "g_thres": Param(0.01, float, ">= 0", non_negative, "perturb only where ‖∇f‖ ≤ g_thres"),
    "t_thres": Param(100, int, ">= 0", at_least(0), "at most one perturbation per t_thres + 1 steps"),
    "check": choice("full", "full", "stochastic", doc="which gradient the g_thres test uses"),
    "seed": Param(0, int, ">= 0", non_negative, "seeds the perturbations' generator"),
}


class PerturbedState(NamedTuple):
    t_noise: torch.Tensor    # [R], the step of each run's last perturbation
    count: int               # t


def uniform_ball(generator, runs: int, dim: int, radius: float, like: torch.Tensor) -> torch.Tensor:
    z = torch.randn(runs, dim, generator=generator, dtype=torch.float64)
    u = torch.rand(runs, 1, generator=generator, dtype=torch.float64)
    return (radius * u ** (1 / dim) * z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)).to(like)


def build(hp: dict, problem=None) -> Optimizer:
    if hp["check"] == "full":
        require_problem(NAME, problem, "check: full tests the full gradient")
    generator = torch.Generator().manual_seed(hp["seed"])
    t_thres = hp["t_thres"]

    def init(x):
        return PerturbedState(torch.full((x.shape[0],), -t_thres - 1, dtype=torch.int64), 0)

    def update(grad, state, x):
        t = state.count
        small = (full_gradient_is_small(problem, x, hp["g_thres"]) if hp["check"] == "full"
                 else torch.linalg.vector_norm(grad, dim=-1) <= hp["g_thres"])
        perturb = small & (t - state.t_noise > t_thres)
        step = sgd_step(grad, hp["lr"])
        t_noise = state.t_noise
        if perturb.any():
            xi = uniform_ball(generator, x.shape[0], x.shape[1], hp["radius"], x)
            step += xi * perturb[:, None]
            t_noise = torch.where(perturb, t, t_noise)
        return step, PerturbedState(t_noise, t + 1)

    return Optimizer(init, update)
