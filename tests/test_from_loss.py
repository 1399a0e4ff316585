"""Problems defined by a loss function (problems/from_loss.py): the quadratic saddle rebuilt from
its loss gives the built-in's rows; minibatch noise has the covariance a direct computation
gives; the facts the closed forms need; bad landscapes are one-line errors."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from problems.from_loss import GaussianNoise, Landscape, Minibatches, define_problem
from problems.quadratic_saddle import QuadraticSaddle
from workflows.api import run_sweep
from workflows.engine import simulate
from workflows.registry import register_problem, unregister

# The built-in's own parameters, so that the same cell can name either problem.
QUADRATIC_KEYS = ("dim", "curvature", "positive_curvature", "condition", "quartic", "noise_scale", "anisotropy",
                  "noise_alignment")


def quadratic_landscape(p, generator, dtype):
    """f = ½ xᵀ diag(λ) x + (quartic/4)‖x‖⁴ with quadratic_saddle's eigenvalues, and additive noise
    with its covariance, built as the built-in builds them (float64, then cast); written here only
    as a loss and a covariance."""
    d = p["dim"]
    positive = p["positive_curvature"] * torch.logspace(0, -math.log10(p["condition"]), d - 1, dtype=torch.float64)
    eigs = torch.cat([torch.tensor([-p["curvature"]], dtype=torch.float64), positive]).to(dtype)
    std = torch.full((d,), p["noise_scale"], dtype=torch.float64)
    std[0] = p["noise_scale"] / p["anisotropy"]
    cov = torch.diag(std**2)
    if p["noise_alignment"] == "rotated":                    # the built-in's rotation, same generator draw
        from problems.noise import random_rotation
        B = random_rotation(d, generator, torch.float64)
        cov = B @ cov @ B.T
    quartic = p["quartic"]

    def loss(x):
        out = 0.5 * (eigs * x.square()).sum(-1)
        if quartic:
            out = out + 0.25 * quartic * x.square().sum(-1).square()
        return out

    return Landscape(loss, torch.zeros(d, dtype=dtype), GaussianNoise(cov),
                     minimum_loss=-p["curvature"] ** 2 / (4 * quartic) if quartic else None)


QuadraticFromLoss = define_problem("quadratic_from_loss", quadratic_landscape,
                                   {k: QuadraticSaddle.SCHEMA[k] for k in QUADRATIC_KEYS})


@pytest.fixture
def registered():
    register_problem(QuadraticFromLoss)
    yield QuadraticFromLoss
    unregister("problem", QuadraticFromLoss.name)


@pytest.mark.parametrize("optimizer, problem, run", [
    ({"name": "adam", "lr": 0.01, "beta1": 0.0}, {"escape_radius": 1.0}, {"budget": 3000}),
    # The quartic confines the runs, so that they reach a second-order stationary point.
    ({"name": "sgd", "lr": 0.05}, {"quartic": 0.5, "escape_radius": 0.5, "noise_scale": 0.01},
     {"budget": 2000, "sosp_epsilon": 0.02, "tail_steps": 20}),
])
def test_the_quadratic_saddle_from_its_loss_gives_the_built_in_rows(registered, optimizer, problem, run):
    problem = {"dim": 10, "anisotropy": 100.0, "noise_alignment": "aligned", **problem}
    cell = {"optimizer": optimizer, "seeds": 128, "seed": 7, **run}
    # The built-in through the engine's reference loop (torch operations, the path every
    # problem takes), and through its compiled block (quadratic_saddle only: workflows/kernels.py).
    reference = simulate({**cell, "problem": {"name": "quadratic_saddle", **problem}}, reference=True).rows
    compiled = simulate({**cell, "problem": {"name": "quadratic_saddle", **problem}}).rows
    from_loss = simulate({**cell, "problem": {"name": "quadratic_from_loss", **problem}}).rows
    # Rows worth comparing: every run escaped, each on its own noisy path.
    assert reference.escaped.all() and reference.final_loss.nunique() > len(reference) // 2
    if "sosp_epsilon" in run:
        assert reference.sosp_reached.any()
    compared = [c for c in reference if not c.startswith("problem.") and c != "cell_id"]
    assert set(compared) <= set(from_loss)
    # Bit for bit against the reference loop: the same noise draws, autograd's gradient of ½λx²
    # is λx exactly (the factors ½ and 2 are powers of two), the same addcmul_ adds the noise.
    exact = [c for c in compared if c != "noise_anisotropy"]
    pd.testing.assert_frame_equal(from_loss[exact], reference[exact], check_exact=True)
    # noise_anisotropy = √(tr Σ/d)/σ₁: the built-in takes tr Σ of its float32 copy of Σ, the
    # loss-defined problem of the float64 Σ (σ² = 1e-4 is not a float32 number). Rounding each
    # entry to float32 moves tr Σ by at most 2⁻²⁴ relative, its square root by 2⁻²⁵ (measured:
    # 1.4e-13 at noise_scale 1, 1.3e-8 at 0.01).
    np.testing.assert_allclose(from_loss.noise_anisotropy, reference.noise_anisotropy, rtol=2**-25, atol=0)
    # Against the compiled block: the same outcomes; iterates differ where torch's kernels take
    # their scalar path (tests/test_kernels.py: float32 rounding, 1e-4 relative at most).
    outcomes = [c for c in ("escaped", "escape_step", "diverged", "final_step", "sosp_reached", "sosp_step")
                if c in compared]
    pd.testing.assert_frame_equal(from_loss[outcomes], compiled[outcomes], check_exact=True)
    floats = [c for c in exact if c not in outcomes and from_loss[c].dtype.kind == "f"]
    np.testing.assert_allclose(from_loss[floats], compiled[floats], rtol=1e-4, atol=1e-7)


def test_the_facts_the_closed_forms_need(registered):
    def facts(**p):
        params = QuadraticFromLoss.validate({"dim": 6, "anisotropy": 10.0, "escape_radius": 0.5, **p})
        return QuadraticFromLoss(params, torch.Generator().manual_seed(0)).theory

    aligned = facts()
    assert aligned["closed_form"] == "quadratic_additive_gaussian" and aligned["hessian_variation"] == 0
    assert aligned["n_negative"] == 1 and aligned["max_curvature"] == 1.0
    assert aligned["hessian_axis_aligned"] and aligned["noise_aligned"] and aligned["sigma_top"] == pytest.approx(1.0)
    rotated = facts(noise_alignment="rotated")
    assert rotated["closed_form"] == "quadratic_additive_gaussian" and not rotated["noise_aligned"]
    quartic = facts(quartic=1.0)               # ∇²f changes by 3·quartic·r² = 0.75 within r = 0.5
    assert quartic["closed_form"] is None and 0.2 < quartic["hessian_variation"] < 1.0


def pca_landscape(p, generator, dtype):
    """An Oja-type PCA loss on a data set A [n, d]: ℓ_i(w) = −½(a_iᵀw)² + ¼‖w‖⁴, so f(w) =
    −½ wᵀSw + ¼‖w‖⁴ with S = AᵀA/n; saddle √λ₂ u₂, minima ±√λ₁ u₁ (S's eigenpairs)."""
    data = torch.randn(p["n"], p["dim"], generator=generator, dtype=torch.float64)
    data = data * torch.linspace(2.0, 0.5, p["dim"], dtype=torch.float64)     # distinct eigenvalues
    evals, evecs = torch.linalg.eigh(data.T @ data / p["n"])
    saddle = evals[-2].sqrt() * evecs[:, -2]
    minimizers = torch.stack([evals[-1].sqrt() * evecs[:, -1], -evals[-1].sqrt() * evecs[:, -1]])

    def example_loss(w, batch):                               # w [R, d], batch [R, B, d] -> [R, B]
        projections = (batch @ w[:, :, None])[..., 0]
        return -0.5 * projections.square() + 0.25 * w.square().sum(-1, keepdim=True).square()

    return Landscape(None, saddle.to(dtype), Minibatches(data.to(dtype), example_loss, p["batch_size"]),
                     minimizers=minimizers)


def test_minibatch_noise_has_the_covariance_of_a_direct_computation():
    from workflows.core.params import Param, at_least

    PCA = define_problem("pca_on_my_data", pca_landscape, {
        "dim": Param(5, int, ">= 2", at_least(2), "d"), "n": Param(300, int, ">= 2", at_least(2), "examples"),
        "batch_size": Param(4, int, ">= 1", at_least(1), "B")})
    params = PCA.validate({})
    problem = PCA(params, torch.Generator().manual_seed(3), dtype=torch.float64)

    # Directly, in numpy: S's eigenpairs, and Cov_i[∇ℓ_i(w*)] = Cov_i[(a_iᵀw*) a_i] / B.
    data = pca_landscape(params, torch.Generator().manual_seed(3), torch.float64).noise.data.numpy()
    evals, evecs = np.linalg.eigh(data.T @ data / len(data))
    w = np.sqrt(evals[-2]) * evecs[:, -2]
    per_example = -(data @ w)[:, None] * data + (w @ w) * w
    centred = per_example - per_example.mean(0)
    cov = centred.T @ centred / len(data) / params["batch_size"]
    np.testing.assert_allclose(problem.noise_cov().numpy(), cov, rtol=1e-10, atol=1e-14)
    u1 = evecs[:, -1]
    assert problem.curvature == pytest.approx(evals[-1] - evals[-2], rel=1e-10)
    assert abs(float(problem.escape_direction.numpy() @ u1)) == pytest.approx(1.0, abs=1e-10)
    assert problem.sigma_escape == pytest.approx(math.sqrt(u1 @ cov @ u1), rel=1e-10)
    assert problem.noise_anisotropy == pytest.approx(math.sqrt(np.trace(cov) / 5) / math.sqrt(u1 @ cov @ u1), rel=1e-10)
    assert problem.saddle_loss == pytest.approx(-evals[-2] ** 2 / 4, rel=1e-10)
    assert problem.minimum_loss == pytest.approx(-evals[-1] ** 2 / 4, rel=1e-10)
    assert problem.escape_radius == pytest.approx(0.5 * np.linalg.norm(np.sqrt(evals[-1]) * u1 - w), rel=1e-10)
    # The engine's draw → stochastic_grad: unbiased, with that covariance (20000 minibatches:
    # the covariance's relative standard error is about 1-2%; the thresholds are 3-4 of those).
    drawn = problem.draw(torch.Generator().manual_seed(0), 1, 20_000)[0]
    grads = problem.stochastic_grad(problem.saddle.expand(20_000, 5).clone(), drawn).numpy()
    assert np.linalg.norm(grads.mean(0) - problem.grad(problem.saddle[None])[0].numpy()) < 4 * math.sqrt(np.trace(cov) / 20_000)
    np.testing.assert_allclose(np.cov(grads.T), cov, rtol=0, atol=0.06 * np.abs(cov).max())


def test_gaussian_noise_with_a_full_covariance():
    rotation = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    cov = rotation @ torch.diag(torch.tensor([0.01, 1.0, 2.0, 0.5], dtype=torch.float64)) @ rotation.T
    eigs = torch.tensor([-0.5, 1.0, 2.0, 3.0])

    def build(p, generator, dtype):
        scale = eigs.to(dtype)
        return Landscape(lambda x: 0.5 * (scale * x.square()).sum(-1), torch.zeros(4, dtype=dtype), GaussianNoise(cov),
                         escape_radius=1.0)

    FullNoise = define_problem("full_noise", build)
    problem = FullNoise(FullNoise.validate({}), torch.Generator(), dtype=torch.float64)
    assert problem.curvature == 0.5 and problem.sigma_escape == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-12)
    x = torch.randn(30_000, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    noise = problem.stochastic_grad(x, problem.draw(torch.Generator().manual_seed(5), 1, 30_000)[0]) - problem.grad(x)
    np.testing.assert_allclose(np.cov(noise.numpy().T), cov.numpy(), rtol=0, atol=0.05 * float(cov.abs().max()))
    assert problem.noise_cov_constant and not problem.theory["noise_aligned"]


def test_a_registered_loss_problem_is_swept_over_its_own_parameters(registered, tmp_path):
    spec = {"parameters": {
        "problem": {"value": {"name": "quadratic_from_loss", "dim": 4, "escape_radius": 1.0}},
        "problem.anisotropy": {"values": [1, 100]},
        "optimizer": {"value": {"name": "sgd", "lr": 0.05}},
        "seeds": 32, "budget": 2000, "sosp_epsilon": 0.05, "sosp_method": "lanczos"}}
    result = run_sweep(spec, storage=tmp_path, backend="local")
    rows = result.rows
    assert len(rows) == 64 and set(rows["problem.anisotropy"]) == {1.0, 100.0}
    by_cell = rows.groupby("problem.anisotropy").first()
    assert by_cell.loc[100.0, "sigma_escape"] == pytest.approx(0.01) and by_cell.loc[1.0, "sigma_escape"] == 1.0
    assert (rows.curvature == 1.0).all() and rows.escaped.all()
    assert not rows.sosp_reached.any()          # no minimum without a quartic: every run censored
    assert rows.final_min_eig.to_numpy() == pytest.approx(-1.0, abs=1e-5)   # Lanczos on torch.func HVPs


@pytest.mark.parametrize("build, message", [
    (lambda p, g, dtype: Landscape(lambda x: x.sum(-1), torch.zeros(3), GaussianNoise(torch.eye(2)), escape_radius=1.0),
     "GaussianNoise cov has shape (2, 2); allowed: [3, 3] or [3]"),
    (lambda p, g, dtype: Landscape(lambda x: x.sum(-1), torch.zeros(2), GaussianNoise(torch.tensor([[1.0, 2], [2, 1]])),
                                   escape_radius=1.0),
     "not symmetric positive semidefinite"),
    (lambda p, g, dtype: Landscape(lambda x: x.square().sum(-1), torch.zeros(2), GaussianNoise(torch.ones(2))),
     "escape_radius is null and the landscape gives no minimizers"),
    (lambda p, g, dtype: {"loss": None}, "build returned dict; allowed: a Landscape"),
    (lambda p, g, dtype: Landscape(lambda x: x.sum(-1) + 1, torch.zeros(2),
                                   Minibatches(torch.ones(5, 2), lambda x, b: (b * x[:, None]).sum(-1), 1),
                                   escape_radius=1.0),
     "loss(saddle)=1 but the data mean of example_loss is 0"),
])
def test_a_bad_landscape_is_a_one_line_error(build, message):
    Bad = define_problem("bad", build)
    with pytest.raises((ValueError, TypeError)) as error:
        Bad(Bad.validate({}), torch.Generator())
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("problem bad: ")


def test_a_problem_name_must_be_an_identifier():
    with pytest.raises(ValueError, match="name='my problem' is not allowed; allowed: an identifier"):
        define_problem("my problem", quadratic_landscape)
