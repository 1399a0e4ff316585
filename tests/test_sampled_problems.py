"""The data-driven problems: derivatives against finite differences, declared saddles are strict
saddles of the objective actually optimised, minibatch gradients are unbiased with the declared
covariance, each problem's closed forms, and clear errors for bad parameters."""
import math

import pytest
import torch

from workflows.registry import make_problem, validate_problem
from problems.sampled import FiniteSum
from workflows.registry import get_problem, registry

F64 = torch.float64

# Small instances of every new problem, with each declared saddle.
SPECS = {
    "mf-non_top": {"name": "matrix_factorization", "size": 6, "rank": 2, "missing": 2},
    "mf-zero": {"name": "matrix_factorization", "size": 6, "rank": 2, "saddle": "zero"},
    "pca": {"name": "pca", "dim": 6, "batch_size": 3},
    "tensor-k3": {"name": "tensor_decomposition", "dim": 5},
    "tensor-k2": {"name": "tensor_decomposition", "dim": 4, "saddle_support": 2},
    "phase": {"name": "phase_retrieval", "dim": 5, "n_samples": 200},
    "deep2-zero": {"name": "deep_linear", "input_dim": 4, "hidden": 2, "output_dim": 3, "n_samples": 50},
    "deep2-non_top": {"name": "deep_linear", "input_dim": 4, "hidden": 2, "output_dim": 3, "n_samples": 50,
                      "saddle": "non_top"},
    "deep3-non_top": {"name": "deep_linear", "depth": 3, "input_dim": 4, "hidden": 2, "output_dim": 3,
                      "n_samples": 50, "saddle": "non_top"},
    "mlp": {"name": "mlp_teacher_student", "input_dim": 4, "hidden": 3, "n_samples": 64, "label_noise": 0.1},
    "logistic": {"name": "logistic_regression", "n_samples": 300},
}
SADDLES = [k for k in SPECS if k != "logistic"]


def build(key, **overrides):
    return make_problem({**SPECS[key], **overrides}, seed=1, dtype=F64)


def near_saddle(problem, scale=0.3, runs=3):
    gen = torch.Generator().manual_seed(0)
    return problem.saddle + scale * torch.randn(runs, problem.dim, generator=gen, dtype=F64)


@pytest.mark.parametrize("key", SPECS)
def test_gradient_and_hvp_match_finite_differences(key):
    """Directional central differences along random directions (exact to O(h²)); the dense
    Hessian agrees with the Hessian-vector product."""
    problem = build(key)
    x = near_saddle(problem)
    h = 1e-5
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(x.shape, generator=gen, dtype=F64)
        fd_slope = (problem.loss(x + h * v) - problem.loss(x - h * v)) / (2 * h)
        torch.testing.assert_close((problem.grad(x) * v).sum(-1), fd_slope, rtol=1e-6, atol=1e-8)
        fd_hvp = (problem.grad(x + h * v) - problem.grad(x - h * v)) / (2 * h)
        torch.testing.assert_close(problem.hvp(x, v), fd_hvp, rtol=1e-5, atol=1e-7)
    if problem.dim <= 64:
        v = torch.randn(x.shape, generator=gen, dtype=F64)
        torch.testing.assert_close((problem.hessian(x) @ v[..., None])[..., 0], problem.hvp(x, v))


@pytest.mark.parametrize("key", SADDLES)
def test_declared_saddle_is_a_strict_saddle(key):
    problem = build(key)
    x = problem.saddle[None]
    assert torch.linalg.vector_norm(problem.grad(x)) < 1e-9
    assert float(problem.loss(x)) == pytest.approx(problem.saddle_loss)
    evals = torch.linalg.eigvalsh(problem.hessian(x)[0])
    assert evals[0] < -1e-3
    v = problem.escape_direction
    assert float(v @ v) == pytest.approx(1.0)
    assert float(v @ problem.hessian(x)[0] @ v) == pytest.approx(float(evals[0]), rel=1e-9)
    derived = problem.derived()
    assert derived["curvature"] == pytest.approx(-float(evals[0]), rel=1e-9)
    assert problem.escape_radius > 0
    if problem.minimum_loss is not None:
        assert problem.minimum_loss < problem.saddle_loss


def test_depth_3_zero_saddle_is_degenerate():
    """At 0 a 3-layer linear net has a vanishing Hessian: not a strict saddle (curvature 0), and
    so no escape subspace to project on."""
    problem = build("deep3-non_top", saddle="zero")
    assert torch.linalg.vector_norm(problem.grad(problem.saddle[None])) == 0
    assert torch.count_nonzero(problem.hessian(problem.saddle[None])) == 0
    assert problem.derived()["curvature"] == 0
    with pytest.raises(ValueError, match="escape_measure='projection' is not allowed for this saddle"):
        build("deep3-non_top", saddle="zero", escape_measure="projection")


@pytest.mark.parametrize("key", ["mf-non_top", "tensor-k3", "phase", "mlp"])
def test_projection_measures_only_the_escape_subspace(key):
    problem = build(key, escape_measure="projection")
    H = problem.hessian(problem.saddle[None])[0]
    P = problem.escape_basis
    evals = torch.linalg.eigvalsh(H)
    assert P.shape[1] == int((evals < -1e-6).sum())
    torch.testing.assert_close(P.T @ H @ P, torch.diag(evals[: P.shape[1]]), atol=1e-9, rtol=0)
    x = near_saddle(problem)
    along = ((x - problem.saddle) @ P) @ P.T
    torch.testing.assert_close(problem.escape_distance(problem.saddle + along), problem.escape_distance(x))
    torch.testing.assert_close(problem.escape_distance(x), torch.linalg.vector_norm(along, dim=-1))
    assert problem.escape_radius == pytest.approx(0.5 * float(problem.escape_distance(problem.minimizers).min()))


@pytest.mark.parametrize("key", SPECS)
def test_minibatch_gradient_is_unbiased_with_the_declared_covariance(key):
    problem = build(key, batch_size=2)
    x = near_saddle(problem, scale=0.2, runs=1).expand(20_000, -1).contiguous()
    drawn = problem.draw(torch.Generator().manual_seed(3), 1, len(x))[0]
    g = problem.stochastic_grad(x.clone(), drawn)
    full = problem.grad(x[:1])[0]
    se = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - full).abs() <= 5 * se + 1e-12).all()
    if problem.dim <= 64:
        cov = problem.noise_cov(x[0])
        scale = torch.sqrt(torch.diagonal(cov)).clamp_min(1e-12)
        empirical = torch.cov(g.T, correction=0)
        torch.testing.assert_close(empirical / torch.outer(scale, scale), cov / torch.outer(scale, scale),
                                   atol=0.1, rtol=0)


@pytest.mark.parametrize("key", [k for k in SPECS if issubclass(get_problem(SPECS[k]["name"]).factory, FiniteSum)])
def test_full_gradient_is_the_mean_of_the_per_example_gradients(key):
    """Exact, no sampling: the finite sum's gradient is the average over all n examples."""
    problem = build(key)
    x = near_saddle(problem, runs=1)[0]
    grads, weights = problem.example_gradients(x)
    torch.testing.assert_close(weights @ grads, problem.grad(x[None])[0], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("key", ["mf-non_top", "tensor-k3", "phase", "logistic"])
def test_sigma_escape_shrinks_like_one_over_root_batch_size(key):
    one, four = build(key, batch_size=1), build(key, batch_size=4)
    assert four.derived()["sigma_escape"] == pytest.approx(one.derived()["sigma_escape"] / 2, rel=1e-9)
    assert four.derived()["noise_anisotropy"] == pytest.approx(one.derived()["noise_anisotropy"], rel=1e-9)


@pytest.mark.parametrize("key", ["mf-zero", "deep2-zero", "mlp"])
def test_noise_vanishes_at_zero_saddles(key):
    """Multiplicative noise: every per-example gradient is zero there, so SGD cannot leave."""
    problem = build(key)
    grads, _ = problem.example_gradients(problem.saddle)
    assert grads.abs().max() == 0 and problem.derived()["sigma_escape"] == 0


def test_same_seed_same_problem_other_seed_other_data():
    a, b = (make_problem(SPECS["phase"], seed=4, dtype=F64) for _ in range(2))
    assert torch.equal(a.a, b.a) and torch.equal(a.saddle, b.saddle)
    assert not torch.equal(a.a, make_problem(SPECS["phase"], seed=5, dtype=F64).a)


# --- closed forms ---------------------------------------------------------------------------------

def test_pca_curvature_is_the_spectral_gap_and_noise_is_isserlis():
    problem = make_problem({"name": "pca", "dim": 7, "spike": 2.0, "spike2": 0.5, "batch_size": 5}, seed=0,
                           dtype=F64)
    lam1, lam2 = 3.0, 1.5
    derived = problem.derived()
    assert derived["curvature"] == pytest.approx(lam1 - lam2)
    assert derived["sigma_escape"] == pytest.approx(lam2 * math.sqrt(lam1 / 5))
    w_min = problem.minimizers[0][None]
    assert torch.linalg.vector_norm(problem.grad(w_min)) < 1e-12
    assert float(problem.loss(w_min)) == pytest.approx(problem.minimum_loss) == pytest.approx(-lam1**2 / 4)
    assert derived["escape_radius"] == pytest.approx(0.5 * math.sqrt(lam1))       # along u₁
    norm = make_problem({"name": "pca", "dim": 7, "spike": 2.0, "spike2": 0.5, "escape_measure": "norm"}, seed=0)
    assert norm.derived()["escape_radius"] == pytest.approx(0.5 * math.sqrt(lam1 + lam2))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_tensor_saddles_and_minima_follow_the_closed_form(k):
    lam = 3.0
    problem = make_problem({"name": "tensor_decomposition", "dim": 6, "penalty": lam, "saddle_support": k},
                           seed=0, dtype=F64)
    assert problem.saddle_loss == pytest.approx(-0.25 * lam / (lam * k - 1))
    assert problem.derived()["curvature"] == pytest.approx(2 * lam / (lam * k - 1))
    evals = torch.linalg.eigvalsh(problem.hessian(problem.saddle[None])[0])
    assert int((evals < -1e-9).sum()) == k - 1                   # the escape subspace
    minima = problem.minimizers
    assert torch.linalg.vector_norm(problem.grad(minima), dim=-1).max() < 1e-12
    torch.testing.assert_close(problem.loss(minima), torch.full((len(minima),), -0.25 * lam / (lam - 1),
                                                                dtype=F64))
    assert (problem.derived()["sigma_escape"] < 1e-12) == (k == 2)


def test_tensor_per_sample_losses_average_to_the_objective():
    """E_z[⅛(uᵀAz)⁴] − ⅜‖u‖⁴ = −¼ Σ(a_iᵀu)⁴ for Rademacher z: checked by exact enumeration."""
    problem = make_problem({"name": "tensor_decomposition", "dim": 5}, seed=2, dtype=F64)
    u = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=F64)
    samples = problem.population.to(F64) @ problem.A.T
    mean = (0.125 * (samples @ u).pow(4)).mean() - 0.375 * (u @ u) ** 2
    penalty = 0.25 * problem.penalty * (u @ u - 1) ** 2
    assert float(mean + penalty) == pytest.approx(float(problem.loss(u[None])[0]), rel=1e-12)


def test_matrix_factorization_curvatures_and_minimum():
    for saddle, missing in [("zero", 1), ("non_top", 1), ("non_top", 2)]:
        problem = make_problem({"name": "matrix_factorization", "size": 6, "rank": 2, "saddle": saddle,
                                "missing": missing}, seed=0, dtype=F64)
        mu = problem.eigenvalues
        expected = mu[0] if saddle == "zero" else mu[missing - 1] - mu[2]
        assert problem.derived()["curvature"] == pytest.approx(float(expected))
    U = problem.minimizers[0][None]
    assert torch.linalg.vector_norm(problem.grad(U)) < 1e-10
    assert float(problem.loss(U)) == pytest.approx(problem.minimum_loss)
    assert torch.linalg.eigvalsh(problem.hessian(U)[0])[0] > -1e-10


def test_deep_linear_curvature_and_minimum():
    problem = build("deep2-zero")
    C = problem.X.T @ problem.Y / problem.n_examples
    sv = torch.linalg.svdvals(C)
    assert problem.derived()["curvature"] == pytest.approx(float(sv[0]))
    const = 0.5 * float(problem.Y.square().sum()) / problem.n_examples - 0.5 * float(C.square().sum())
    assert problem.minimum_loss == pytest.approx(0.5 * float(sv[2:].square().sum()) + const)
    x_min = problem.minimizers
    assert torch.linalg.vector_norm(problem.grad(x_min)) < 1e-10


def test_mlp_curvature_at_the_origin_is_the_input_output_correlation():
    problem = build("mlp")
    c = problem.y @ problem.X / problem.n_examples
    assert problem.derived()["curvature"] == pytest.approx(float(torch.linalg.vector_norm(c)))
    clean = build("mlp", label_noise=0.0)
    assert float(clean.loss(clean.teacher[None])) == pytest.approx(0.0, abs=1e-20)
    assert clean.minimum_loss == 0.0 and problem.minimum_loss is None


def test_phase_retrieval_minimum_is_the_signal_without_noise():
    problem = build("phase")
    torch.testing.assert_close(problem.minimizers[0].abs(), problem.signal.abs())
    assert problem.minimum_loss == pytest.approx(0.0, abs=1e-20)
    # The saddle lies near the population saddle sphere {w ⊥ w♮, ‖w‖² = 1/3}.
    assert abs(float(problem.saddle @ problem.signal)) < 0.2
    assert float(problem.saddle @ problem.saddle) == pytest.approx(1 / 3, rel=0.2)


def test_logistic_regression_has_no_saddle_and_says_so():
    problem = build("logistic")
    g0 = problem.grad(problem.saddle[None])[0]
    assert torch.linalg.vector_norm(g0) > 0.1                     # the start is not stationary
    assert problem.derived()["curvature"] == -problem.l2
    assert float(torch.linalg.eigvalsh(problem.hessian(problem.saddle[None])[0])[0]) == pytest.approx(problem.l2)
    torch.testing.assert_close(problem.escape_direction, -g0 / torch.linalg.vector_norm(g0))
    x_min = problem.minimizers
    assert torch.linalg.vector_norm(problem.grad(x_min)) <= 1e-6
    assert problem.saddle_loss == pytest.approx(math.log(10))
    # Escape means f − f_min ≤ target_gap.
    assert problem.escape_radius == pytest.approx(math.log(10) - problem.minimum_loss - 0.1)
    assert float(problem.escape_distance(x_min)) == pytest.approx(math.log(10) - problem.minimum_loss)


# --- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ({"name": "matrix_factorization", "size": 4, "rank": 4},
     "problem matrix_factorization: rank=4 is out of range; allowed: 1 <= rank < size (size=4)"),
    ({"name": "matrix_factorization", "rank": 2, "missing": 3}, "missing=3 is out of range; allowed: 1 <= missing <= rank"),
    ({"name": "matrix_factorization", "saddle": "top"}, "saddle='top' is not allowed; allowed: one of non_top, zero"),
    ({"name": "pca", "spike": 1.0, "spike2": 2.0}, "problem pca: spike2=2.0 is out of range; allowed: > 0 and < spike"),
    ({"name": "pca", "batch_size": 0}, "problem pca: batch_size=0 is out of range; allowed: >= 1"),
    ({"name": "tensor_decomposition", "penalty": 1.0}, "penalty=1.0 is out of range; allowed: > 1"),
    ({"name": "tensor_decomposition", "dim": 3, "saddle_support": 4},
     "saddle_support=4 is out of range; allowed: 2 <= saddle_support <= dim (dim=3)"),
    ({"name": "phase_retrieval", "dim": 10, "n_samples": 20},
     "n_samples=20 is out of range; allowed: >= 4·dim (dim=10)"),
    ({"name": "deep_linear", "depth": 4}, "problem deep_linear: depth=4 is out of range; allowed: 2 or 3"),
    ({"name": "deep_linear", "hidden": 4, "saddle": "non_top"},
     "hidden=4 is out of range; allowed: hidden < min(input_dim, output_dim) = 4 for saddle non_top"),
    ({"name": "mlp_teacher_student", "label_noise": -1}, "label_noise=-1.0 is out of range; allowed: >= 0"),
    ({"name": "logistic_regression", "n_samples": 5000}, "n_samples=5000 is out of range; allowed: 1 <= n_samples <= 1797"),
    ({"name": "logistic_regression", "l2": 0}, "l2=0.0 is out of range; allowed: > 0"),
    ({"name": "phase_retrieval", "escape_radius": -1}, "escape_radius=-1.0 is out of range; allowed: > 0, or null"),
])
def test_bad_parameters_raise_a_clear_error(spec, message):
    with pytest.raises(ValueError) as err:
        validate_problem(spec)
    assert message in str(err.value)


def test_a_target_the_start_already_meets_is_refused():
    with pytest.raises(ValueError, match="target_gap=5.0 is out of range; allowed: < f"):
        build("logistic", target_gap=5.0)


def test_every_new_problem_is_registered():
    assert set(registry("problem").builtins()) >= {"matrix_factorization", "pca", "tensor_decomposition", "phase_retrieval",
                             "deep_linear", "mlp_teacher_student", "logistic_regression"}
