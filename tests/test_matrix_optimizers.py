"""Optimizers that see matrices (issue 27): problems declare their parameter's named tensors
(workflows/core/shapes.py), and the built-in `muon` and `matrix_whitening` act on each matrix, batched over
runs. The references are the library classes stepped one optimizer per seed on that seed's
matrices: torch.optim.Muon (with AdamW on the tensors that are not matrices) and
pytorch_optimizer.Shampoo."""
import pytest
import torch

from optimizers import select_runs

from workflows.registry import make_optimizer
from workflows.registry import make_problem
from problems.from_loss import GaussianNoise, Landscape, define_problem
from workflows.core.shapes import flat, split, structure
from workflows.engine import simulate, step
from workflows.core.params import Param, at_least

MATRIX_PROBLEMS = {
    "matrix_factorization": ({"size": 6, "rank": 2}, [("U", (6, 2))]),
    "deep_linear": ({"depth": 3, "input_dim": 5, "hidden": 3, "output_dim": 4},
                    [("W1", (5, 3)), ("W2", (3, 3)), ("W3", (3, 4))]),
    "mlp_teacher_student": ({"input_dim": 5, "hidden": 3}, [("W", (3, 5)), ("w", (3,))]),
    "logistic_regression": ({"n_samples": 200}, [("W", (65, 10))]),           # 64 pixels and a constant
    "quadratic_saddle": ({"dim": 7}, [("x", (7,))]),
    "quadratic_saddle ": ({"dim": 12, "matrix_rows": 3}, [("X", (3, 4))]),   # read as a matrix
    "pca": ({}, None),
}


@pytest.mark.parametrize("name", MATRIX_PROBLEMS)
def test_shapes_cover_x_and_round_trip(name):
    params, expected = MATRIX_PROBLEMS[name]
    problem = make_problem({"name": name.strip(), **params}, seed=0)
    shapes = structure(problem)
    if expected is not None:
        assert [(s.name, s.shape) for s in shapes] == expected
    assert sum(s.size for s in shapes) == problem.dim
    x = torch.randn(3, problem.dim, dtype=torch.float64)
    views = split(x, shapes)
    assert torch.equal(flat(views), x)
    views[-1].add_(1.0)                                     # a view writes into x
    assert torch.equal(flat(views), x)


def test_deep_linear_shapes_are_its_layers():
    """The declared W_l are the matrices the loss multiplies: f computed from them equals f(x)."""
    problem = make_problem({"name": "deep_linear", "depth": 3}, seed=1, dtype=torch.float64)
    x = torch.randn(2, problem.dim, dtype=torch.float64)
    W1, W2, W3 = split(x, structure(problem))
    residual = problem.X @ (W1 @ W2 @ W3) - problem.Y
    assert torch.allclose(0.5 * residual.square().sum(-1).mean(-1), problem.loss(x))


def double_well(p, generator, dtype):
    d = p["rows"] * p["cols"]

    def loss(x):
        W = x[:, : d].reshape(-1, p["rows"], p["cols"])
        return 0.25 * (W.square().sum((1, 2)) - 1).square() + 0.5 * x[:, d:].square().sum(-1)

    noise = GaussianNoise(torch.full((d + 2,), 0.01, dtype=torch.float64))
    return Landscape(loss, torch.zeros(d + 2, dtype=dtype), noise, escape_radius=0.5,
                     shapes=[("W", (p["rows"], p["cols"])), ("b", (2,))])


def test_a_loss_defined_problem_declares_its_shapes_and_wrong_ones_are_refused():
    Problem = define_problem("shaped_well", double_well, {"rows": Param(3, int, ">= 1", at_least(1)),
                                                          "cols": Param(2, int, ">= 1", at_least(1))})
    problem = Problem(Problem.validate({}), torch.Generator().manual_seed(0))
    assert [(s.name, s.shape) for s in structure(problem)] == [("W", (3, 2)), ("b", (2,))]

    def wrong(p, generator, dtype):
        land = double_well(p, generator, dtype)
        land.shapes = [("W", (3, 3))]
        return land

    Wrong = define_problem("wrongly_shaped", wrong, {"rows": Param(3, int, ">= 1", at_least(1)),
                                                     "cols": Param(2, int, ">= 1", at_least(1))})
    with pytest.raises(ValueError, match=r"shapes W \[3, 3\] hold 9 numbers.*adding up to dim=8"):
        Wrong(Wrong.validate({}), torch.Generator().manual_seed(0))


def library_reference(problem, x0, grads, make, drops):
    """One library optimizer per seed on that seed's own tensors; `drops` {step: rows leaving}."""
    shapes = structure(problem)
    params = [[t[0].clone() for t in split(x0[i:i + 1], shapes)] for i in range(len(x0))]
    optimizers = [make(shapes, p) for p in params]
    alive = list(range(len(x0)))
    for t, g in enumerate(grads):
        for i in alive:
            for p, gi in zip(params[i], split(g[i:i + 1], shapes)):
                p.grad = gi[0].clone()
            for opt in optimizers[i]:
                opt.step()
        alive = [i for i in alive if i not in drops.get(t + 1, ())]
    return torch.stack([torch.cat([p.reshape(-1) for p in ps]) for ps in params])


def builtin_run(problem, x0, grads, spec, drops):
    """The built-in, batched, with rows leaving the batch as finished runs do in the engine."""
    optimizer = make_optimizer(spec, problem)
    x = x0.clone()
    state = optimizer.init(x)
    out = x0.clone()
    rows = torch.arange(len(x0))
    for t, g in enumerate(grads):
        state = step(optimizer, g[rows].clone(), state, x)
        out[rows] = x
        if t + 1 in drops:
            keep = torch.tensor([int(r) not in drops[t + 1] for r in rows])
            rows, x, state = rows[keep], x[keep].clone(), select_runs(state, keep)
    return out


def muon_with_adamw(shapes, params, **hp):
    matrices = [p for s, p in zip(shapes, params) if len(s.shape) == 2]
    others = [p for s, p in zip(shapes, params) if len(s.shape) != 2]
    out = [torch.optim.Muon(matrices, lr=hp["lr"], weight_decay=0.0, momentum=hp["momentum"],
                            nesterov=hp["nesterov"])]
    if others:
        out.append(torch.optim.AdamW(others, lr=hp["fallback_lr"], weight_decay=0.0))
    return out


DROPS = {7: (1,), 15: (0, 3)}


def data(problem, runs=5, steps=25, dtype=torch.float32):
    generator = torch.Generator().manual_seed(3)
    x0 = problem.saddle.to(dtype) + 0.3 * torch.randn(runs, problem.dim, generator=generator, dtype=dtype)
    # Gradients 10^-2 .. 10^2 apart from row to row: a norm shared across runs could not hide.
    scale = (10.0 ** torch.linspace(-2, 2, runs, dtype=dtype))[:, None]
    return x0, [torch.randn(runs, problem.dim, generator=generator, dtype=dtype) * scale for _ in range(steps)]


@pytest.mark.parametrize("name", ["matrix_factorization", "deep_linear", "mlp_teacher_student"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_is_torch_muon_run_for_run(name, nesterov, monkeypatch):
    """The algebra, exactly: torch.optim.Muon's Newton–Schulz iteration moved from bfloat16 to float64
    (its only change), against ns_dtype float64 on float64 runs: equal to 1e-12."""
    import torch.optim._muon as torch_muon

    original = torch_muon._zeropower_via_newtonschulz

    def in_float64(grad, coefficients, steps, eps):
        bfloat16 = torch.Tensor.bfloat16
        # A copy, as .bfloat16() of a float64 tensor is (torch then divides it in place).
        monkeypatch.setattr(torch.Tensor, "bfloat16", lambda t: t.to(torch.float64, copy=True))
        try:
            return original(grad, coefficients, steps, eps)
        finally:
            monkeypatch.setattr(torch.Tensor, "bfloat16", bfloat16)

    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", in_float64)
    problem = make_problem({"name": name, **MATRIX_PROBLEMS[name][0]}, seed=0, dtype=torch.float64)
    x0, grads = data(problem, dtype=torch.float64)
    hp = {"lr": 0.02, "momentum": 0.9, "nesterov": nesterov, "fallback_lr": 3e-3}
    ours = builtin_run(problem, x0, grads, {"name": "muon", "ns_dtype": "float64", **hp}, DROPS)
    reference = library_reference(problem, x0, grads, lambda s, p: muon_with_adamw(s, p, **hp), DROPS)
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-12), (ours - reference).abs().max()


@pytest.mark.parametrize("name", ["matrix_factorization", "deep_linear", "mlp_teacher_student"])
def test_muon_in_bfloat16_is_torch_muon_to_its_rounding(name):
    """torch.optim.Muon itself (bfloat16 Newton–Schulz) on float32 runs: torch's element-wise kernels
    round a seed's [3, 5] momentum and a batch's [5, 3, 5] differently in the last float32 bit
    (vectorised lanes), which can flip a bfloat16 rounding (2^-8) inside the iteration; a step is
    η·√max(1, A/B)·O with O's entries of order 1/√min(A, B). So the runs agree to a small fraction of one
    step, not bit for bit (an error in the algebra moves them by whole steps)."""
    problem = make_problem({"name": name, **MATRIX_PROBLEMS[name][0]}, seed=0)
    x0, grads = data(problem)
    hp = {"lr": 0.02, "momentum": 0.9, "nesterov": True, "fallback_lr": 3e-3}
    ours = builtin_run(problem, x0, grads, {"name": "muon", "ns_dtype": "bfloat16", **hp}, DROPS)
    reference = library_reference(problem, x0, grads, lambda s, p: muon_with_adamw(s, p, **hp), DROPS)
    assert (ours - reference).abs().max() < 0.05 * hp["lr"], (ours - reference).abs().max()


def test_muon_orthogonalises_each_matrix():
    """From zero momentum and nesterov off, one step is −η·NS₅(G): in float64, NS₅'s singular values
    are within Muon's designed band [0.68, 1.2] and its singular vectors are G's."""
    problem = make_problem({"name": "deep_linear", "depth": 2, "input_dim": 6, "hidden": 3, "output_dim": 4},
                           seed=0, dtype=torch.float64)
    x0, grads = data(problem, runs=4, steps=1, dtype=torch.float64)
    lr = 1e-3
    ours = builtin_run(problem, x0, grads, {"name": "muon", "lr": lr, "momentum": 0.0, "nesterov": False,
                                            "ns_dtype": "float64", "adjust_lr": "none"}, {})
    for s, step_, g in zip(structure(problem), split((x0 - ours) / lr, structure(problem)),
                           split(grads[0], structure(problem))):
        U, S, Vh = torch.linalg.svd(g, full_matrices=False)
        singular = torch.linalg.svdvals(step_)
        assert singular.min() > 0.68 and singular.max() < 1.2, singular
        aligned = U.transpose(1, 2) @ step_ @ Vh.transpose(1, 2)          # diagonal in G's singular basis
        off = aligned - torch.diag_embed(torch.diagonal(aligned, dim1=1, dim2=2), dim1=1, dim2=2)
        assert off.abs().max() < 1e-9


def shampoo(shapes, params, lr):
    from pytorch_optimizer import Shampoo
    return [Shampoo(params, lr=lr, momentum=0.0, preconditioning_compute_steps=1, matrix_eps=1e-6)]


@pytest.mark.parametrize("name", ["matrix_factorization", "deep_linear", "mlp_teacher_student"])
def test_matrix_whitening_is_shampoo_run_for_run(name):
    """β₂ = 1, both sides, roots every step: pytorch_optimizer.Shampoo(momentum=0), to the rounding of
    two eigen/singular-value routines (float64)."""
    pytest.importorskip("pytorch_optimizer")
    problem = make_problem({"name": name, **MATRIX_PROBLEMS[name][0]}, seed=0, dtype=torch.float64)
    x0, grads = data(problem, dtype=torch.float64)
    lr = 0.01
    ours = builtin_run(problem, x0, grads, {"name": "matrix_whitening", "lr": lr, "beta2": 1.0, "eps": 1e-6,
                                            "sides": "both", "precondition_every": 1}, DROPS)
    reference = library_reference(problem, x0, grads, lambda s, p: shampoo(s, p, lr), DROPS)
    assert torch.allclose(ours, reference, rtol=1e-7, atol=1e-10), (ours - reference).abs().max()


def test_one_sided_whitening_of_the_current_gradient_is_its_polar_factor():
    """sides: left with β₂ = 0 keeps only G Gᵀ: the step is −η (GGᵀ + εI)^(−1/2) G → −η U Vᵀ, the
    whitening that Muon's Newton–Schulz iteration approximates."""
    problem = make_problem({"name": "matrix_factorization", "size": 6, "rank": 2}, seed=0, dtype=torch.float64)
    x0, grads = data(problem, runs=3, steps=1, dtype=torch.float64)
    ours = builtin_run(problem, x0, grads, {"name": "matrix_whitening", "lr": 1.0, "beta2": 0.0, "eps": 1e-14,
                                            "sides": "left"}, {})
    (G,) = split(grads[0], structure(problem))
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    (step_,) = split(x0 - ours, structure(problem))
    assert torch.allclose(step_, U @ Vh, atol=1e-6)


@pytest.mark.parametrize("optimizer", [{"name": "muon", "lr": 0.01}, {"name": "matrix_whitening", "lr": 0.05},
                                       {"name": "matrix_whitening", "lr": 0.2, "beta2": 1.0, "sides": "left"}])
def test_matrix_optimizers_run_in_the_engine(optimizer):
    cell = {"problem": {"name": "matrix_factorization", "size": 6, "rank": 2, "batch_size": 4},
            "optimizer": optimizer, "seeds": 16, "budget": 300, "cnc_samples": 0}
    rows = simulate(cell).rows
    assert len(rows) == 16 and rows.escape_step.between(1, 300).all()
    assert rows.escaped.any() and not rows.diverged.any()


# --- the torch.optim adapter in the problem's shapes ------------------------------------------------

ADAPTED = [
    ("torch.optim.Muon", {"lr": 0.02, "weight_decay": 0.0}),       # the matrices; AdamW for the rest
    ("pytorch_optimizer.Shampoo", {"lr": 0.01}),
    ("pytorch_optimizer.SOAP", {"lr": 0.01}),
    ("pytorch_optimizer.AdaFactor", {"lr": 0.01}),                   # factored second moments of a matrix
    ("pytorch_optimizer.Lamb", {"lr": 0.01}),                        # a trust ratio per tensor
]


def adapter_run(problem, x0, grads, spec, drops):
    """The adapter as the engine drives it (registry component, init, apply, compaction)."""
    from workflows.registry import get_optimizer

    component = get_optimizer(spec["name"])
    hp = component.validate({k: v for k, v in spec.items() if k != "name"})
    optimizer = component.factory(hp, problem)
    x = x0.clone()
    state = optimizer.init(x)
    out, rows = x0.clone(), torch.arange(len(x0))
    for t, g in enumerate(grads):
        state = optimizer.apply(g[rows].clone(), state, x)
        out[rows] = x
        if t + 1 in drops:
            keep = torch.tensor([int(r) not in drops[t + 1] for r in rows])
            rows, x, state = rows[keep], x[keep].clone(), select_runs(state, keep)
    return out, state


def class_per_seed(name, hp, fallback_lr=None):
    """One optimizer of the class per seed on that seed's tensors: Muon on the matrices and AdamW
    (the class's lr) on the rest, as Muon is configured in practice."""
    import importlib

    module, _, attr = name.rpartition(".")
    cls = getattr(importlib.import_module(module), attr)

    def make(shapes, params):
        if cls is torch.optim.Muon:
            return muon_with_adamw(shapes, params, lr=hp["lr"], momentum=0.95, nesterov=True,
                                   fallback_lr=fallback_lr or hp["lr"])
        return [cls(params, **hp)]
    return make


@pytest.mark.parametrize("name,hp", ADAPTED, ids=[a[0] for a in ADAPTED])
@pytest.mark.parametrize("problem_name", ["matrix_factorization", "mlp_teacher_student"])
def test_adapter_steps_each_seeds_tensors_as_a_plain_loop(name, hp, problem_name):
    pytest.importorskip("pytorch_optimizer")
    problem = make_problem({"name": problem_name, **MATRIX_PROBLEMS[problem_name][0]}, seed=0, dtype=torch.float64)
    x0, grads = data(problem, dtype=torch.float64)
    got, state = adapter_run(problem, x0, grads, {"name": name, **hp}, DROPS)
    expected = library_reference(problem, x0, grads, class_per_seed(name, hp), DROPS)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_the_shapes_reach_the_class():
    """AdaFactor factors a matrix's second moments (row and column sums), a vector's it keeps whole:
    handed U [6, 2] it steps differently than handed the same numbers as one [12] vector."""
    pytest.importorskip("pytorch_optimizer")
    problem = make_problem({"name": "matrix_factorization", "size": 6, "rank": 2}, seed=0, dtype=torch.float64)
    x0, grads = data(problem, dtype=torch.float64)
    as_matrix, _ = adapter_run(problem, x0, grads, {"name": "pytorch_optimizer.AdaFactor", "lr": 0.01}, {})
    as_vector, _ = adapter_run(problem, x0, grads, {"name": "pytorch_optimizer.AdaFactor", "lr": 0.01,
                                                    "param_shape": "vector"}, {})
    assert not torch.allclose(as_matrix, as_vector, rtol=1e-3)


def test_muon_through_the_adapter_refuses_a_problem_without_matrices():
    problem = make_problem({"name": "quadratic_saddle", "dim": 4}, seed=0)
    with pytest.raises(ValueError, match="no matrix for it"):
        adapter_run(problem, problem.saddle.expand(2, -1).clone(), [], {"name": "torch.optim.Muon"}, {})


# --- Hessian-based classes with their Hessians ------------------------------------------------------

HESSIAN_CLASSES = ["pytorch_optimizer.AdaHessian", "pytorch_optimizer.SophiaH"]


def create_graph_loop(problem, name, hp, x0, grads, drops):
    """The reference: per seed, its own optimizer and its own generator (seeded as documented:
    problem seed · 1000003 + run + 7919), each step's gradient the problem's loss differentiated by
    autograd with create_graph=True, plus the step's noise as a constant."""
    import importlib

    module, _, attr = name.rpartition(".")
    cls = getattr(importlib.import_module(module), attr)
    shapes = structure(problem)
    params = [[t[0].clone().requires_grad_(True) for t in split(x0[i:i + 1].clone(), shapes)] for i in range(len(x0))]
    optimizers = [cls(p, **hp) for p in params]
    states = []
    with torch.random.fork_rng(devices=[]):
        for i in range(len(x0)):
            torch.manual_seed(problem.seed * 1_000_003 + i + 7919)
            states.append(torch.get_rng_state())
    alive = list(range(len(x0)))
    for t, g in enumerate(grads):
        for k, i in enumerate(alive):
            with torch.enable_grad():
                flat = torch.cat([p.reshape(-1) for p in params[i]])[None]
                exact = torch.autograd.grad(problem.loss(flat).sum(), params[i], create_graph=True)
            for p, e, gi in zip(params[i], exact, split(g[i:i + 1], shapes)):
                p.grad = e + (gi[0] - e.detach())
            outside = torch.get_rng_state()
            torch.set_rng_state(states[i])
            optimizers[i].step()
            states[i] = torch.get_rng_state()
            torch.set_rng_state(outside)
            for p in params[i]:
                p.grad = None
        alive = [i for i in alive if i not in drops.get(t + 1, ())]
    return torch.stack([torch.cat([p.detach().reshape(-1) for p in ps]) for ps in params])


@pytest.mark.parametrize("name", HESSIAN_CLASSES)
@pytest.mark.parametrize("problem_spec", [{"name": "quadratic_saddle", "dim": 4, "rotate_hessian": True},
                                          {"name": "matrix_factorization", "size": 6, "rank": 2}])
def test_a_hessian_class_gets_the_problems_hessian(name, problem_spec):
    """Its Hessian-vector products are the problem's (a rotated Hessian: not diagonal, so the
    Hutchinson probes' draws matter), its draws a generator per run: equal to a create_graph loop."""
    pytest.importorskip("pytorch_optimizer")
    problem = make_problem(problem_spec, seed=3, dtype=torch.float64)
    x0, grads = data(problem, dtype=torch.float64)
    hp = {"lr": 0.01}
    got, state = adapter_run(problem, x0, grads, {"name": name, **hp}, DROPS)
    assert state.layout == "optimizers" and state.loss is not None and state.streams is not None
    torch.testing.assert_close(got, create_graph_loop(problem, name, hp, x0, grads, DROPS), rtol=1e-9, atol=1e-12)


def test_without_its_hessian_adahessian_would_run_as_another_method():
    """What the graph changes: the same steps with a plain gradient (a Hessian of zeros: it divides
    by eps) end far from the ones with the problem's Hessian."""
    pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer import AdaHessian

    problem = make_problem({"name": "quadratic_saddle", "dim": 4}, seed=0, dtype=torch.float64)
    x0, grads = data(problem, runs=2, steps=5, dtype=torch.float64)
    with_hessian, _ = adapter_run(problem, x0, grads, {"name": "pytorch_optimizer.AdaHessian", "lr": 0.01}, {})
    plain = [x0[i].clone() for i in range(2)]
    for g in grads:
        for i, p in enumerate(plain):
            opt = getattr(p, "_opt", None) or AdaHessian([p], lr=0.01)
            p._opt = opt
            p.grad = g[i].clone()
            opt.step()
    assert (with_hessian - torch.stack(plain)).abs().max() > 1.0


def test_hessian_classes_run_in_the_engine_reproducibly():
    cell = {"problem": {"name": "quadratic_saddle", "dim": 4, "rotate_hessian": True},
            "optimizer": {"name": "pytorch_optimizer.AdaHessian", "lr": 0.05}, "seeds": 6, "budget": 200,
            "cnc_samples": 0}
    first, second = simulate(cell).rows, simulate(cell).rows
    assert first.escaped.all()
    assert first.escape_step.tolist() == second.escape_step.tolist()


class OnceDifferentiable(torch.autograd.Function):
    """x² with a backward that autograd cannot differentiate again (a custom kernel's usual shape)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_a_hessian_class_is_refused_up_front_where_the_loss_has_no_second_derivative(tmp_path, capsys):
    pytest.importorskip("pytorch_optimizer")
    from problems.quadratic_saddle import QuadraticSaddle
    from workflows.cli import main
    from workflows.registry import register_problem, unregister

    class KernelSaddle(QuadraticSaddle):
        name = "kernel_saddle"

        def loss(self, x):
            return 0.5 * (self.eigs * OnceDifferentiable.apply(x)).sum(-1)

    register_problem(KernelSaddle)
    try:
        (tmp_path / "s.yaml").write_text("parameters:\n  problem: {name: kernel_saddle, dim: 3}\n"
                                         "  optimizer: {name: pytorch_optimizer.AdaHessian}\n  seeds: 2\n  budget: 5\n")
        assert main(["run", str(tmp_path / "s.yaml"), "--backend", "local", "--storage", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "kernel_saddle's loss cannot be differentiated twice" in err, err
        assert not (tmp_path / "r").exists()
    finally:
        unregister("problem", "kernel_saddle")


def test_the_readme_muon_sweep_runs_and_the_report_names_no_prediction(tmp_path):
    """README's copy-paste sweep, as written (its seeds and budget lowered): every optimizer escapes
    matrix factorisation's saddle, and the matrix optimizers get "no prediction" with the reason."""
    import re
    from pathlib import Path

    import yaml

    from analysis.prediction import predictions
    from workflows import run_sweep

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("**Parameter shapes.**"):]
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))["sweeps"]["muon_mf"]
    block["parameters"].update(seeds=8, budget=1500)
    result = run_sweep(block, "muon_mf", storage=tmp_path, backend="local")
    rows = result.rows
    assert set(rows["optimizer.name"]) == {"muon", "torch.optim.Muon", "matrix_whitening", "adam", "sgd"}
    assert rows.groupby("optimizer.name")["escaped"].mean().gt(0.5).all(), rows.groupby("optimizer.name")["escaped"].mean()
    cells = rows.drop_duplicates("cell_id")
    notes = predictions(cells)["theory_note"]
    matrix = notes[cells["optimizer.name"].isin(["muon", "torch.optim.Muon", "matrix_whitening"]).to_numpy()]
    assert len(matrix) == 3 and matrix.str.startswith("no prediction for").all(), matrix.tolist()
