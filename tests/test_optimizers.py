"""Optimizers: iterates equal torch.optim's on any gradient sequence, precond_sgd (the fixed noise
preconditioner Σ^(−α/2) and the second-moment preconditioner G(x)^(−α/2)) reduces to SGD at α = 0,
and bad hyperparameters raise a clear error."""
import pytest
import torch

from optimizers import select_runs

from workflows.registry import make_optimizer, validate_optimizer
from workflows.registry import make_problem
from workflows.registry import registry

# (our spec, the torch.optim class, its keyword arguments)
PARITY = [
    ({"name": "sgd", "lr": 0.05}, torch.optim.SGD, {"lr": 0.05}),
    ({"name": "momentum", "lr": 0.05, "momentum": 0.8}, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8}),
    ({"name": "momentum", "lr": 0.05, "momentum": 0.8, "nesterov": True}, torch.optim.SGD,
     {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ({"name": "rmsprop", "lr": 0.01, "beta2": 0.9, "eps": 1e-6}, torch.optim.RMSprop,
     {"lr": 0.01, "alpha": 0.9, "eps": 1e-6}),
    ({"name": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.99}, torch.optim.Adam,
     {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8}),
    ({"name": "adam", "lr": 0.01, "beta1": 0.0, "beta2": 0.999, "eps": 1e-6}, torch.optim.Adam,
     {"lr": 0.01, "betas": (0.0, 0.999), "eps": 1e-6}),
    ({"name": "adagrad", "lr": 0.1, "eps": 1e-10}, torch.optim.Adagrad, {"lr": 0.1, "eps": 1e-10}),
    ({"name": "amsgrad", "lr": 0.01, "beta1": 0.9, "beta2": 0.99}, torch.optim.Adam,
     {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "amsgrad": True}),
    ({"name": "amsgrad", "lr": 0.01, "beta1": 0.0, "beta2": 0.999, "eps": 1e-6}, torch.optim.Adam,
     {"lr": 0.01, "betas": (0.0, 0.999), "eps": 1e-6, "amsgrad": True}),
]


def torch_optim_iterates(cls, kwargs, x0, grad_fn, steps):
    """The reference: one torch.optim optimizer per run, a plain loop."""
    out = []
    for r in range(x0.shape[0]):
        p = torch.nn.Parameter(x0[r].clone())
        opt = cls([p], **kwargs)
        path = []
        for t in range(steps):
            p.grad = grad_fn(p.detach()[None], t, r)[0].clone()
            opt.step()
            path.append(p.detach().clone())
        out.append(torch.stack(path))
    return torch.stack(out, 1)            # [steps, R, d]


def our_iterates(spec, x0, grad_fn, steps):
    opt = make_optimizer(spec)
    x, state, path = x0.clone(), opt.init(x0), []
    for t in range(steps):
        step, state = opt.update(grad_fn(x, t, None).clone(), state, x)
        x = x + step
        path.append(x.clone())
    return torch.stack(path)


@pytest.mark.parametrize("spec, cls, kwargs", PARITY, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_parity_with_torch_optim_on_an_arbitrary_gradient_sequence(spec, cls, kwargs):
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(40, 5, 3, generator=gen, dtype=torch.float64) * torch.logspace(-3, 1, 40)[:, None, None]
    x0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)

    def grad_fn(x, t, r):                  # independent of x: "any gradient sequence"
        return grads[t] if r is None else grads[t, r][None]

    ours = our_iterates(spec, x0, grad_fn, 40)
    ref = torch_optim_iterates(cls, kwargs, x0, grad_fn, 40)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("spec, cls, kwargs", PARITY, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_parity_with_torch_optim_on_a_noisy_saddle(spec, cls, kwargs):
    problem = make_problem({"name": "quadratic_saddle", "dim": 4, "anisotropy": 10, "quartic": 1.0,
                            "rotate_hessian": True}, seed=0, dtype=torch.float64)
    drawn = problem.draw(torch.Generator().manual_seed(1), 200, 3)

    def grad_fn(x, t, r):                  # depends on x: the iterates must agree step by step
        return problem.stochastic_grad(x, drawn[t] if r is None else drawn[t, r][None])

    x0 = torch.zeros(3, 4, dtype=torch.float64)
    ours = our_iterates(spec, x0, grad_fn, 200)
    ref = torch_optim_iterates(cls, kwargs, x0, grad_fn, 200)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)


def test_adam_without_bias_correction_and_beta1_zero_is_rmsprop():
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(30, 4, 2, generator=gen, dtype=torch.float64)
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    fn = lambda x, t, r: grads[t]
    adam = our_iterates({"name": "adam", "lr": 0.01, "beta1": 0.0, "beta2": 0.9, "bias_correction": False}, x0, fn, 30)
    rms = our_iterates({"name": "rmsprop", "lr": 0.01, "beta2": 0.9}, x0, fn, 30)
    torch.testing.assert_close(adam, rms)


@pytest.mark.parametrize("form", ["diagonal", "full"])
@pytest.mark.parametrize("target", ["noise", "second_moment"])
def test_precond_sgd_at_alpha_zero_is_sgd(form, target):
    problem = make_problem({"name": "quadratic_saddle", "dim": 3, "anisotropy": 30}, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(1, 4, 3, generator=gen, dtype=torch.float64)
    x0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    opt = make_optimizer({"name": "precond_sgd", "lr": 0.1, "alpha": 0.0, "form": form, "target": target,
                          "eps": 0.0}, problem)
    step, _ = opt.update(grads[0].clone(), opt.init(x0), x0)
    torch.testing.assert_close(step, -0.1 * grads[0])


def test_fixed_noise_preconditioner_whitens_the_noise():
    """At the saddle, A = Σ^(−1/2) makes the preconditioned noise isotropic (Staib et al. §3),
    diagonal when Σ is axis-aligned, and only in full form when it is rotated."""
    gen = torch.Generator().manual_seed(0)
    for spec, form in [({"noise_alignment": "aligned"}, "diagonal"), ({"rotate_hessian": True}, "full")]:
        problem = make_problem({"name": "quadratic_saddle", "dim": 3, "anisotropy": 100, **spec},
                               seed=0, dtype=torch.float64)
        opt = make_optimizer({"name": "precond_sgd", "lr": 1.0, "form": form}, problem)
        x = torch.zeros(100_000, 3, dtype=torch.float64)
        noise = problem.stochastic_grad(x, problem.draw(gen, 1, len(x))[0])
        step, _ = opt.update(noise, opt.init(x), x)
        torch.testing.assert_close(step.T @ step / len(step), torch.eye(3, dtype=torch.float64),
                                   atol=0.02, rtol=0)


def test_adaptive_full_estimates_the_inverse_square_root_of_the_noise():
    problem = make_problem({"name": "quadratic_saddle", "dim": 3, "anisotropy": 10, "rotate_hessian": True},
                           seed=0, dtype=torch.float64)
    opt = make_optimizer({"name": "adaptive_full", "lr": 1.0, "beta2": 0.999, "eps": 0.0})
    x = torch.zeros(64, 3, dtype=torch.float64)
    state, drawn = opt.init(x), problem.draw(torch.Generator().manual_seed(0), 5000, 64)
    for t in range(5000):
        _, state = opt.update(problem.stochastic_grad(x, drawn[t]), state, x)
    G = state.G.mean(0) / (1 - 0.999**5000)
    torch.testing.assert_close(G, problem.noise_cov(), atol=0.05, rtol=0)


def test_select_runs_keeps_shared_fields():
    opt = make_optimizer({"name": "adam", "beta1": 0.9})
    x = torch.arange(12.0).reshape(4, 3)
    state = opt.init(x)
    _, state = opt.update(torch.ones(4, 3), state, x)
    kept = select_runs(state, torch.tensor([True, False, True, False]))
    assert kept.m.shape == (2, 3) and kept.v.shape == (2, 3) and kept.count == 1


@pytest.mark.parametrize("spec, message", [
    ({"name": "sgd", "lr": 0}, "optimizer sgd: lr=0.0 is out of range; allowed: > 0"),
    ({"name": "sgd", "lr": -1e-3}, "lr=-0.001 is out of range; allowed: > 0"),
    ({"name": "adam", "beta2": 1.0}, "optimizer adam: beta2=1.0 is out of range; allowed: in [0, 1)"),
    ({"name": "adam", "beta1": -0.1}, "beta1=-0.1 is out of range; allowed: in [0, 1)"),
    ({"name": "rmsprop", "eps": -1e-8}, "eps=-1e-08 is out of range; allowed: >= 0"),
    ({"name": "precond_sgd", "alpha": 1.5}, "alpha=1.5 is out of range; allowed: in [0, 1]"),
    ({"name": "precond_sgd", "form": "banded"}, "form='banded' is not allowed; allowed: one of diagonal, full"),
    ({"name": "sgd", "beta2": 0.9}, "optimizer sgd: unknown parameter 'beta2'; allowed: lr"),
    ({"name": "lbfgs"}, "optimizer.name='lbfgs' is not a known optimizer"),
])
def test_bad_hyperparameters_raise_a_clear_error(spec, message):
    with pytest.raises(ValueError) as err:
        validate_optimizer(spec)
    assert message in str(err.value)


def test_precond_sgd_needs_a_known_noise_covariance():
    with pytest.raises(ValueError, match="has no known noise covariance"):
        make_optimizer({"name": "precond_sgd"}, problem=None)


def test_every_optimizer_is_registered():
    assert set(registry("optimizer").builtins()) >= {"sgd", "momentum", "rmsprop", "adam", "adagrad", "precond_sgd", "adaptive_full",
                               "amsgrad", "adagrad_full", "perturbed_sgd", "cnc_sgd"}


@pytest.mark.parametrize("form", ["diagonal", "full"])
def test_noise_preconditioner_follows_state_dependent_noise(form):
    """Data-driven noise depends on x: A = Σ(x)^(−1/2) is rebuilt per run and step."""
    problem = make_problem({"name": "pca", "dim": 4, "batch_size": 2}, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x, g = (torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    opt = make_optimizer({"name": "precond_sgd", "lr": 1.0, "form": form, "eps": 0.0}, problem)
    step, _ = opt.update(g.clone(), opt.init(x), x)
    for r in range(3):
        cov = problem.noise_cov(x[r])
        if form == "diagonal":
            expected = g[r] / torch.diagonal(cov).sqrt()
        else:
            evals, evecs = torch.linalg.eigh(cov)
            expected = (evecs * evals.rsqrt()) @ evecs.T @ g[r]
        torch.testing.assert_close(step[r], -expected)


def test_a_diverged_run_gets_a_nan_preconditioner_not_a_crash():
    from optimizers.base import matrix_power
    M = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1) * torch.tensor([1.0, 4.0, 9.0])[:, None, None]
    M[1, 0, 2] = float("nan")
    A = matrix_power(M, -0.5, 0.0)
    assert A[1].isnan().all()
    torch.testing.assert_close(A[[0, 2]], torch.eye(3, dtype=torch.float64) * torch.tensor([1.0, 1 / 3])[:, None, None])


@pytest.mark.parametrize("spec, cls, kwargs", [
    ({"name": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.99}, torch.optim.Adam, {"lr": 0.01, "betas": (0.9, 0.99)}),
    ({"name": "adam", "lr": 0.01, "beta1": 0.0, "beta2": 0.999}, torch.optim.Adam, {"lr": 0.01, "betas": (0.0, 0.999)}),
    ({"name": "amsgrad", "lr": 0.01, "beta1": 0.9, "beta2": 0.99}, torch.optim.Adam,
     {"lr": 0.01, "betas": (0.9, 0.99), "amsgrad": True}),
], ids=["adam", "adam-beta1-0", "amsgrad"])
def test_the_fused_apply_equals_update_and_torch_optim(spec, cls, kwargs):
    """The engine uses `apply` (torch's fused kernel) where an optimizer has one."""
    opt = make_optimizer(spec)
    assert opt.apply is not None
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(60, 5, 3, generator=gen, dtype=torch.float64) * torch.logspace(-3, 1, 60)[:, None, None]
    x0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    x, state, fused = x0.clone(), opt.init(x0), []
    for t in range(60):
        state = opt.apply(grads[t].clone(), state, x)
        fused.append(x.clone())
    fused = torch.stack(fused)
    torch.testing.assert_close(fused, our_iterates(spec, x0, lambda x, t, r: grads[t], 60), rtol=1e-6, atol=1e-12)
    ref = torch_optim_iterates(cls, kwargs, x0, lambda x, t, r: grads[t] if r is None else grads[t, r][None], 60)
    torch.testing.assert_close(fused, ref, rtol=1e-6, atol=1e-12)
