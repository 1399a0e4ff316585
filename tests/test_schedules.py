"""Step-size schedules (workflows/core/schedules.py): the step sizes against torch.optim.lr_scheduler,
SGD under η_t = η/√t against a Monte Carlo of the scalar recursion and against its escape-time
formula (analysis/recursion.py), the β₂ rule evaluated per step, and the compiled block against
the reference loop under every schedule."""
import numpy as np
import pytest
import torch

from analysis.recursion import monte_carlo_escape, recursion_escape
from workflows.core.schedules import learning_rates, paper_beta2
from workflows import normalize_cell, simulate

BUDGET = 200


def torch_rates(scheduler_factory, lr=0.1, steps=BUDGET):
    """The lr torch.optim uses at each optimizer.step(), t = 1 … steps."""
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=lr)
    scheduler = scheduler_factory(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


@pytest.mark.parametrize("hp, factory", [
    ({"lr_schedule": "inverse_sqrt"}, lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: (e + 1) ** -0.5)),
    ({"lr_schedule": "cosine", "final_lr": 0.01},
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=BUDGET - 1, eta_min=0.01)),
    ({"lr_schedule": "linear_warmup", "warmup_steps": 25},
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 25, end_factor=1.0, total_iters=24)),
    ({"lr_schedule": "step", "decay_factor": 0.5, "decay_every": 30},
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=30, gamma=0.5)),
    ({"lr_schedule": "constant"}, lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
])
def test_step_sizes_equal_torch_lr_schedulers(hp, factory):
    ours = learning_rates({"lr": 0.1, **hp}, np.arange(1, BUDGET + 1), BUDGET)
    np.testing.assert_allclose(ours, torch_rates(factory), rtol=1e-12, atol=1e-15)


def test_sgd_under_inverse_sqrt_matches_the_scalar_recursion():
    """A 1-d quadratic saddle is the scalar recursion x_t = (1 + η_t γ) x_{t−1} + η_t σ₁ ξ_t: the
    engine's escape steps, a Monte Carlo of the recursion and the formula must agree (restricted
    means E[min(τ, B)] and medians: a few runs start with W so near 0 that they outlast the budget)."""
    lr, sigma, budget, seeds = 0.1, 0.01, 20_000, 4096
    cell = {"problem": {"name": "quadratic_saddle", "dim": 1, "noise_scale": sigma}, "seeds": seeds,
            "optimizer": {"name": "sgd", "lr": lr, "lr_schedule": "inverse_sqrt"}, "budget": budget}
    rows = simulate(cell).rows
    lrs = learning_rates({"lr": lr, "lr_schedule": "inverse_sqrt"}, np.arange(1, budget + 1), budget)
    simulated = np.minimum(monte_carlo_escape(lrs, 1.0, sigma, 1.0, samples=100_000), budget)
    formula = recursion_escape(lrs, 1.0, sigma, 1.0)
    steps = rows.escape_step.to_numpy()                   # censored at the budget
    engine_se = steps.std() / np.sqrt(seeds)
    assert rows.escaped.mean() > 0.99
    assert abs(steps.mean() - simulated.mean()) < 4 * engine_se
    assert formula.restricted_mean == pytest.approx(simulated.mean(), rel=0.01)
    assert formula.median == pytest.approx(np.median(steps), rel=0.02)
    # The decaying step escapes far later than the constant one would (ln P_t ≈ 2ηγ√t).
    assert np.median(steps) > 1.5 * recursion_escape(np.full(budget, lr), 1.0, sigma, 1.0).median


def test_the_beta2_rule_follows_the_step_size_at_every_step():
    """RMSProp with beta2_rule: paper under inverse_sqrt: the reference loop's v after 3 steps equals
    a hand computation with β₂_t = 1 − η_t^(2/3)."""
    cell = normalize_cell({"problem": {"name": "quadratic_saddle", "dim": 3, "escape_radius": 1e3},
                           "optimizer": {"name": "rmsprop", "lr": 0.01, "lr_schedule": "inverse_sqrt",
                                         "beta2": float(paper_beta2(0.01)), "beta2_rule": "paper"},
                           "seeds": 2, "budget": 3, "run_to_budget": True})
    rows = simulate(cell, reference=True).rows
    from workflows.registry import make_problem
    from workflows.engine import block_steps
    problem = make_problem(cell["problem"], seed=0)
    generator = torch.Generator().manual_seed(1)
    x, v = torch.zeros(2, 3), torch.zeros(2, 3)
    noise = problem.draw(generator, block_steps(0, 3, 2, problem), 2)
    for t in (1, 2, 3):
        eta = 0.01 / t**0.5
        beta2 = 1 - eta ** (2 / 3)
        g = problem.stochastic_grad(x, noise[t - 1])
        v = beta2 * v + (1 - beta2) * g * g
        x = x - eta * g / (v.sqrt() + 1e-8)
    np.testing.assert_allclose(rows.final_loss, problem.loss(x).double().numpy(), rtol=1e-5)


SCHEDULED = [{"lr_schedule": "inverse_sqrt"}, {"lr_schedule": "cosine", "final_lr": 1e-4},
             {"lr_schedule": "linear_warmup", "warmup_steps": 300}, {"lr_schedule": "step", "decay_every": 500}]


@pytest.mark.parametrize("schedule", SCHEDULED)
@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.05},
                                       {"name": "rmsprop", "lr": 0.03, "beta2": 0.9035, "beta2_rule": "paper"},
                                       {"name": "adam", "lr": 0.03, "beta1": 0.0, "beta2": 0.9035,
                                        "beta2_rule": "paper"}])
def test_compiled_and_reference_agree_under_schedules(schedule, optimizer):
    cell = {"problem": {"name": "quadratic_saddle", "dim": 4, "anisotropy": 30}, "optimizer": {**optimizer, **schedule},
            "seeds": 64, "budget": 3000}
    fast, slow = simulate(cell), simulate(cell, reference=True)
    columns = ["escaped", "escape_step", "diverged", "final_step"]
    assert slow.rows.escaped.any()
    assert fast.rows[columns].equals(slow.rows[columns])


def test_a_schedule_reaches_a_torch_optim_class_through_the_adapter():
    """torch.optim.SGD under inverse_sqrt through the adapter steps as the built-in sgd under the
    same schedule: the same escape steps, seed for seed."""
    base = {"problem": {"name": "quadratic_saddle", "dim": 2, "anisotropy": 10}, "seeds": 32, "budget": 3000}
    schedule = {"lr": 0.05, "lr_schedule": "inverse_sqrt"}
    ours = simulate({**base, "optimizer": {"name": "sgd", **schedule}}, reference=True).rows
    theirs = simulate({**base, "optimizer": {"name": "torch.optim.SGD", **schedule}}).rows
    assert ours.escaped.any()
    assert (ours.escape_step.to_numpy() == theirs.escape_step.to_numpy()).all()
    constant = simulate({**base, "optimizer": {"name": "torch.optim.SGD", "lr": 0.05}}).rows
    assert (constant.escape_step.to_numpy() != theirs.escape_step.to_numpy()).any()
