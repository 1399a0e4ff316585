"""The optimizers without a torch.optim counterpart, each against a plain per-run loop written
from its paper's pseudocode: full-matrix AdaGrad, perturbed SGD (Jin et al. 2017) and CNC-SGD
(Daneshmand et al. 2018)."""
import numpy as np
import pytest
import scipy.linalg
import torch

from workflows.registry import make_optimizer
from workflows.registry import make_problem

F64 = torch.float64


def run_ours(spec, problem, x0, drawn, steps):
    opt = make_optimizer(spec, problem)
    x, state, path = x0.clone(), opt.init(x0), []
    for t in range(steps):
        step, state = opt.update(problem.stochastic_grad(x, drawn[t]), state, x)
        x = x + step
        path.append(x.clone())
    return torch.stack(path)                   # [steps, R, d]


def noisy_saddle(noise_scale=1e-3):
    return make_problem({"name": "quadratic_saddle", "dim": 3, "quartic": 1.0, "rotate_hessian": True,
                         "noise_scale": noise_scale, "anisotropy": 10}, seed=0, dtype=F64)


def test_adagrad_full_matches_the_matrix_square_root_loop():
    problem = noisy_saddle(noise_scale=0.1)
    drawn = problem.draw(torch.Generator().manual_seed(1), 60, 3)
    x0 = torch.zeros(3, 3, dtype=F64)
    spec = {"name": "adagrad_full", "lr": 0.05, "eps": 1e-8, "initial_accumulator": 0.01}
    ours = run_ours(spec, problem, x0, drawn, 60)
    for r in range(3):
        x, G = x0[r].numpy().copy(), 0.01 * np.eye(3)
        for t in range(60):
            g = problem.stochastic_grad(torch.tensor(x)[None], drawn[t, r][None])[0].numpy()
            G += np.outer(g, g)
            A = scipy.linalg.fractional_matrix_power(G + 1e-8 * np.eye(3), -0.5).real
            x = x - 0.05 * A @ g
            np.testing.assert_allclose(ours[t, r].numpy(), x, rtol=1e-6, atol=1e-12)


def test_adagrad_full_whitens_rotated_noise_where_diagonal_adagrad_cannot():
    """At the saddle G_t/t → Σ, so A_t g has covariance ≈ I/t whatever the rotation of Σ."""
    problem = make_problem({"name": "quadratic_saddle", "dim": 3, "anisotropy": 100, "rotate_hessian": True},
                           seed=0, dtype=F64)
    opt = make_optimizer({"name": "adagrad_full", "lr": 1.0, "eps": 0.0})
    x = torch.zeros(2000, 3, dtype=F64)
    state, drawn = opt.init(x), problem.draw(torch.Generator().manual_seed(0), 400, 2000)
    for t in range(400):
        step, state = opt.update(problem.stochastic_grad(x, drawn[t]), state, x)
    torch.testing.assert_close(400 * step.T @ step / len(step), torch.eye(3, dtype=F64), atol=0.1, rtol=0)


def perturbed_sgd_reference(problem, x0, drawn, steps, lr, radius, g_thres, t_thres, seed, check):
    """Jin et al. (2017), Algorithm 2, one run; ξ drawn as the module documents."""
    gen = torch.Generator().manual_seed(seed)
    x, t_noise, path, perturbations = x0.clone(), -t_thres - 1, [], 0
    d = len(x)
    for t in range(steps):
        g = problem.stochastic_grad(x[None], drawn[t][None])[0]
        test = problem.grad(x[None])[0] if check == "full" else g
        if torch.linalg.vector_norm(test) <= g_thres and t - t_noise > t_thres:
            z = torch.randn(1, d, generator=gen, dtype=F64)
            u = torch.rand(1, 1, generator=gen, dtype=F64)
            xi = (radius * u ** (1 / d) * z / torch.linalg.vector_norm(z))[0]
            x, t_noise, perturbations = x + xi, t, perturbations + 1
        x = x - lr * g
        path.append(x.clone())
    return torch.stack(path), perturbations


@pytest.mark.parametrize("check", ["full", "stochastic"])
def test_perturbed_sgd_matches_its_pseudocode(check):
    problem = noisy_saddle(noise_scale=1e-4)
    drawn = problem.draw(torch.Generator().manual_seed(2), 300, 4)
    hp = dict(lr=0.05, radius=0.1, g_thres=0.02, t_thres=40, seed=7, check=check)
    for r in range(4):
        x0 = torch.zeros(1, 3, dtype=F64)
        ours = run_ours({"name": "perturbed_sgd", **hp}, problem, x0, drawn[:, r:r + 1], 300)[:, 0]
        ref, perturbations = perturbed_sgd_reference(problem, x0[0], drawn[:, r], 300, **hp)
        assert perturbations >= 2                  # the rule fired, more than once
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)


def test_perturbed_sgd_leaves_an_exact_saddle_that_sgd_cannot():
    problem = make_problem({"name": "quadratic_saddle", "dim": 4, "quartic": 1.0, "noise_scale": 0.0},
                           seed=0, dtype=F64)
    x0 = torch.zeros(16, 4, dtype=F64)
    drawn = problem.draw(torch.Generator().manual_seed(0), 400, 16)
    sgd = run_ours({"name": "sgd", "lr": 0.05}, problem, x0, drawn, 400)
    pgd = run_ours({"name": "perturbed_sgd", "lr": 0.05, "radius": 1e-3}, problem, x0, drawn, 400)
    assert sgd.abs().max() == 0
    torch.testing.assert_close(problem.escape_distance(pgd[-1]), torch.ones(16, dtype=F64), rtol=1e-3, atol=0)
    assert len({round(float(v), 6) for v in pgd[0, :, 0]}) == 16     # independent perturbations


def cnc_sgd_reference(problem, x0, drawn, steps, lr, large_lr, t_thres, g_thres):
    """Daneshmand et al. (2018): a step r along the stochastic gradient every t_thres steps
    (CNC-PGD: only where ‖∇f‖ ≤ g_thres), η otherwise."""
    x, path = x0.clone(), []
    for t in range(1, steps + 1):
        g = problem.stochastic_grad(x[None], drawn[t - 1][None])[0]
        large = t % t_thres == 0 and (g_thres is None or
                                      torch.linalg.vector_norm(problem.grad(x[None])[0]) <= g_thres)
        x = x - (large_lr if large else lr) * g
        path.append(x.clone())
    return torch.stack(path)


@pytest.mark.parametrize("g_thres", [None, 0.05])
def test_cnc_sgd_matches_its_pseudocode(g_thres):
    problem = noisy_saddle(noise_scale=0.01)
    drawn = problem.draw(torch.Generator().manual_seed(3), 200, 3)
    hp = dict(lr=0.02, large_lr=0.5, t_thres=25, g_thres=g_thres)
    x0 = 0.3 * torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    ours = run_ours({"name": "cnc_sgd", **hp}, problem, x0, drawn, 200)
    for r in range(3):
        torch.testing.assert_close(ours[:, r], cnc_sgd_reference(problem, x0[r], drawn[:, r], 200, **hp),
                                   rtol=1e-6, atol=1e-12)
    sgd = run_ours({"name": "sgd", "lr": 0.02}, problem, x0, drawn, 200)
    assert not torch.allclose(ours, sgd)
    same = run_ours({"name": "cnc_sgd", "lr": 0.02, "large_lr": 0.02, "t_thres": 25}, problem, x0, drawn, 200)
    torch.testing.assert_close(same, sgd, rtol=0, atol=0)


@pytest.mark.parametrize("spec, message", [
    ({"name": "perturbed_sgd"}, "optimizer perturbed_sgd: needs the problem"),
    ({"name": "cnc_sgd", "g_thres": 0.1}, "optimizer cnc_sgd: needs the problem"),
])
def test_gradient_tests_need_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(spec)


@pytest.mark.parametrize("spec, message", [
    ({"name": "perturbed_sgd", "radius": 0}, "optimizer perturbed_sgd: radius=0.0 is out of range; allowed: > 0"),
    ({"name": "perturbed_sgd", "check": "both"}, "check='both' is not allowed; allowed: one of full, stochastic"),
    ({"name": "cnc_sgd", "t_thres": 0}, "optimizer cnc_sgd: t_thres=0 is out of range; allowed: >= 1"),
    ({"name": "adagrad_full", "eps": -1.0}, "optimizer adagrad_full: eps=-1.0 is out of range; allowed: >= 0"),
    ({"name": "amsgrad", "beta2": 1.0}, "optimizer amsgrad: beta2=1.0 is out of range; allowed: in [0, 1)"),
])
def test_bad_hyperparameters_raise_a_clear_error(spec, message):
    from workflows.registry import validate_optimizer
    with pytest.raises(ValueError) as err:
        validate_optimizer(spec)
    assert message in str(err.value)
