"""Problems: gradients and Hessians against finite differences, the saddle, the noise model,
and a clear error for each kind of bad parameter."""
import math

import pytest
import torch

from workflows.registry import make_problem, validate_problem
from workflows.registry import registry

SPECS = [
    {"name": "quadratic_saddle", "dim": 5, "n_negative": 2, "quartic": 0.3, "rotate_hessian": True,
     "condition": 10},
    {"name": "quadratic_saddle", "dim": 3, "anisotropy": 10, "noise_alignment": "rotated"},
    {"name": "staib_toy"},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
def test_gradient_and_hessian_match_finite_differences(spec):
    problem = make_problem(spec, seed=3, dtype=torch.float64)
    x = 0.5 * torch.randn(4, problem.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = 1e-6
    eye = torch.eye(problem.dim, dtype=torch.float64)
    fd_grad = torch.stack([(problem.loss(x + h * e) - problem.loss(x - h * e)) / (2 * h) for e in eye], -1)
    torch.testing.assert_close(problem.grad(x), fd_grad, rtol=1e-6, atol=1e-8)
    fd_hess = torch.stack([(problem.grad(x + h * e) - problem.grad(x - h * e)) / (2 * h) for e in eye], -1)
    torch.testing.assert_close(problem.hessian(x), fd_hess, rtol=1e-5, atol=1e-7)
    v = torch.randn_like(x)
    torch.testing.assert_close(problem.hvp(x, v), (problem.hessian(x) @ v[..., None])[..., 0])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
def test_saddle_is_a_strict_saddle_along_the_escape_direction(spec):
    problem = make_problem(spec, seed=3, dtype=torch.float64)
    x = problem.saddle[None]
    assert torch.linalg.vector_norm(problem.grad(x)) < 1e-12
    assert float(problem.loss(x)) == pytest.approx(problem.saddle_loss)
    evals = torch.linalg.eigvalsh(problem.hessian(x)[0])
    assert evals[0] < 0
    v = problem.escape_direction
    assert float(v @ problem.hessian(x)[0] @ v) == pytest.approx(float(evals[0]))
    assert problem.derived()["curvature"] == pytest.approx(-float(evals[0]))


@pytest.mark.parametrize("spec", [
    {"name": "quadratic_saddle", "dim": 3, "anisotropy": 10, "noise_scale": 2.0},
    {"name": "quadratic_saddle", "dim": 3, "anisotropy": 10, "rotate_hessian": True},
    {"name": "quadratic_saddle", "dim": 3, "anisotropy": 10, "noise_alignment": "rotated"},
    {"name": "quadratic_saddle", "dim": 3, "anisotropy": 10, "noise_dist": "student_t", "df": 4},
    {"name": "staib_toy"},
], ids=["aligned", "rotated-hessian", "rotated-noise", "student-t", "staib"])
def test_drawn_noise_has_the_declared_covariance(spec):
    problem = make_problem(spec, seed=1, dtype=torch.float64)
    x = torch.zeros(200_000, problem.dim, dtype=torch.float64)
    drawn = problem.draw(torch.Generator().manual_seed(7), 1, x.shape[0])[0]
    noise = problem.stochastic_grad(x, drawn)
    empirical = noise.T @ noise / len(noise)
    cov = problem.noise_cov()
    # Student-t with df = 4 has a heavy fourth moment: a looser but still binding tolerance.
    tol = 0.08 if spec.get("noise_dist") == "student_t" else 0.02
    scale = torch.sqrt(torch.diagonal(cov))
    torch.testing.assert_close(empirical / torch.outer(scale, scale), cov / torch.outer(scale, scale),
                               atol=tol, rtol=0)
    assert noise.mean(0).abs().max() < 5 * scale.max() / math.sqrt(len(noise))


def test_sigma_escape_is_noise_scale_over_anisotropy_when_aligned():
    problem = make_problem({"name": "quadratic_saddle", "dim": 4, "noise_scale": 0.5, "anisotropy": 50,
                            "rotate_hessian": True}, seed=0)
    assert problem.derived()["sigma_escape"] == pytest.approx(0.01)


def test_staib_toy_data_has_exact_moments_and_known_minima():
    problem = make_problem({"name": "staib_toy", "n": 17}, seed=5, dtype=torch.float64)
    torch.testing.assert_close(problem.b.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(problem.noise_cov(), torch.diag(torch.tensor([1.0, 0.01], dtype=torch.float64)),
                               atol=1e-14, rtol=0)
    assert torch.linalg.vector_norm(problem.grad(problem.minima)) < 1e-12
    assert problem.minimum_loss == pytest.approx(-0.0126, abs=1e-4)
    assert float(problem.minima[0, 1]) == pytest.approx(0.562, abs=1e-3)


def test_quartic_minima_are_where_theory_puts_them():
    problem = make_problem({"name": "quadratic_saddle", "dim": 3, "curvature": 0.5, "quartic": 2.0},
                           seed=0, dtype=torch.float64)
    x = math.sqrt(0.5 / 2.0) * problem.escape_direction[None]
    assert torch.linalg.vector_norm(problem.grad(x)) < 1e-12
    assert float(problem.loss(x)) == pytest.approx(problem.minimum_loss) == pytest.approx(-0.5**2 / 8)
    assert torch.linalg.eigvalsh(problem.hessian(x)[0])[0] > 0


@pytest.mark.parametrize("spec, message", [
    ({"name": "nope"}, "problem.name='nope' is not a known problem; allowed: quadratic_saddle, staib_toy"),
    ({"name": "quadratic_saddle", "dim": 0}, "problem quadratic_saddle: dim=0 is out of range; allowed: >= 1"),
    ({"name": "quadratic_saddle", "dim": 2, "n_negative": 3},
     "n_negative=3 is out of range; allowed: 1 <= n_negative <= dim (dim=2)"),
    ({"name": "quadratic_saddle", "anisotropy": 0.5}, "anisotropy=0.5 is out of range; allowed: >= 1"),
    ({"name": "quadratic_saddle", "noise_scale": -1}, "noise_scale=-1.0 is out of range; allowed: >= 0"),
    ({"name": "quadratic_saddle", "curvature": 0}, "curvature=0.0 is out of range; allowed: > 0"),
    ({"name": "quadratic_saddle", "noise_alignment": "diagonal"},
     "noise_alignment='diagonal' is not allowed; allowed: one of aligned, rotated"),
    ({"name": "quadratic_saddle", "dim": 2.5}, "dim=2.5 is not an integer"),
    ({"name": "quadratic_saddle", "curvature": "steep"}, "curvature='steep' is not a number"),
    ({"name": "quadratic_saddle", "rotate_hessian": "yes"}, "rotate_hessian='yes' is not a boolean"),
    ({"name": "quadratic_saddle", "df": 2}, "df=2 is out of range; allowed: >= 3 (finite variance)"),
    ({"name": "quadratic_saddle", "dimension": 2}, "unknown parameter 'dimension'; allowed: dim, n_negative"),
])
def test_bad_parameters_raise_a_clear_error(spec, message):
    with pytest.raises(ValueError) as err:
        validate_problem(spec)
    assert message in str(err.value)


def test_quoted_numbers_are_strings_and_refused():
    with pytest.raises(ValueError, match="is a string; allowed: a number"):     # YAML 1.2: a quoted number is text
        validate_problem({"name": "quadratic_saddle", "noise_scale": "1e-3"})


def test_every_problem_is_registered_under_its_name():
    builtins = registry("problem").builtins()
    assert set(builtins) >= {"quadratic_saddle", "staib_toy"}
    for name, component in builtins.items():
        assert component.factory.name == name
