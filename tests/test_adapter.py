"""The torch.optim adapter (optimizers/torch_adapter.py): any torch.optim.Optimizer class of
torch.optim, pytorch_optimizer and schedulefree, stepped with exact per-seed semantics.

The reference everywhere is a plain per-seed loop: one torch optimizer per seed, on its own [d]
parameter, fed the same gradients."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from optimizers import select_runs
from optimizers import torch_adapter, torch_layouts
from workflows.engine import simulate, simulate_cell
from workflows.registry import get_optimizer

pytest.importorskip("pytorch_optimizer")
pytest.importorskip("schedulefree")

R, D, STEPS = 6, 5, 40
# Rows leave the batch at two different times, as finished runs do in the engine.
DROPS = {10: (1, 4), 25: (0,)}

# (class path, hyperparameters, the layout the probe must choose)
CLASSES = [
    ("torch.optim.Adam", {"lr": 0.01}, "batched"),
    ("torch.optim.NAdam", {"lr": 0.01, "betas": (0.9, 0.99)}, "batched"),
    ("pytorch_optimizer.Lion", {"lr": 1e-3}, "batched"),
    ("pytorch_optimizer.AdaBelief", {"lr": 0.01}, "batched"),
    ("schedulefree.AdamWScheduleFree", {"lr": 0.01}, "batched"),
    ("pytorch_optimizer.Lamb", {"lr": 0.01}, "params"),             # trust ratio per parameter
    ("pytorch_optimizer.LARS", {"lr": 0.01, "param_shape": "row"}, "params"),
    ("pytorch_optimizer.AdaFactor", {"lr": 0.01}, "params"),        # factored moments of a matrix
    ("pytorch_optimizer.Prodigy", {}, "optimizers"),                # d estimated over every group
    ("pytorch_optimizer.DAdaptAdam", {}, "optimizers"),
]


def problem_data(dtype=torch.float64):
    """Starting points and gradients whose scales differ by 10^4 from row to row."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(R, D, generator=g, dtype=dtype) * torch.logspace(1, -2, R, dtype=dtype)[:, None]
    grads = torch.randn(STEPS, R, D, generator=g, dtype=dtype) * torch.logspace(-2, 2, R, dtype=dtype)[:, None]
    return x0, grads


def per_seed_loop(name, hp, x0, grads, lr_at=None):
    """One optimizer per seed; returns each seed's last iterate (a dropped seed: as it left)."""
    cls = torch_adapter.resolve_class(name, ("torch.optim", "pytorch_optimizer", "schedulefree"))
    args = torch_adapter.constructor_args(get_optimizer(name).validate(dict(hp)), cls)
    row = hp.get("param_shape", "vector") == "row"
    params = [x0[i].clone().reshape(1, D) if row else x0[i].clone() for i in range(R)]
    optimizers = [cls([p], **args) for p in params]
    for opt in optimizers:
        torch_layouts.train_mode(opt)
    alive = list(range(R))
    for t in range(STEPS):
        if lr_at and t in lr_at:
            for opt in optimizers:
                opt.param_groups[0]["lr"] = lr_at[t]
        for i in alive:
            params[i].grad = grads[t, i].clone().reshape(params[i].shape)
            optimizers[i].step()
        alive = [i for i in alive if i not in DROPS.get(t, ())]
    return torch.stack([p.reshape(D) for p in params])


def through_adapter(name, hp, x0, grads, lr_at=None):
    """The same through the registry, the engine's way: init, apply, x = x[keep] and
    select_runs(state, keep) when runs leave; hp["lr"] changed live at the steps of `lr_at`."""
    component = get_optimizer(name)
    # The dict the engine holds: the hyperparameters, and keys of its own (a step-size schedule's),
    # which the adapter leaves alone.
    live = {**component.validate(dict(hp)), "lr_schedule": "constant", "final_lr": 0.0}
    opt = component.factory(live, None)
    x = x0.clone()
    state = opt.init(x)
    active = torch.arange(R)
    out = torch.empty_like(x0)
    for t in range(STEPS):
        if lr_at and t in lr_at:
            live["lr"] = lr_at[t]
        state = opt.apply(grads[t][active].clone(), state, x)
        if t in DROPS:
            keep = ~torch.isin(active, torch.tensor(DROPS[t]))
            out[active[~keep]] = x[~keep]
            x, active = x[keep], active[keep]          # a new tensor, as in the engine
            state = select_runs(state, keep)
    out[active] = x
    return out, state


@pytest.mark.parametrize("name,hp,layout", CLASSES, ids=[c[0] for c in CLASSES])
def test_adapter_equals_a_per_seed_loop_and_the_probe_classifies_the_class(name, hp, layout):
    x0, grads = problem_data()
    got, state = through_adapter(name, hp, x0, grads)
    assert state.layout == layout
    assert torch_adapter.mode_of(state.layout) == ("batched" if layout == "batched" else "per_seed")
    torch.testing.assert_close(got, per_seed_loop(name, hp, x0, grads), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,hp,wrong", [
    ("pytorch_optimizer.Lamb", {"lr": 0.01}, "batched"),
    ("pytorch_optimizer.AdaFactor", {"lr": 0.01}, "batched"),
    ("pytorch_optimizer.Prodigy", {}, "params"),
    ("pytorch_optimizer.DAdaptAdam", {}, "groups"),
])
def test_a_coupling_class_in_a_faster_layout_couples_the_seeds(name, hp, wrong, monkeypatch):
    """What the probe protects against: the layout it refused really mixes the seeds."""
    monkeypatch.setattr(torch_adapter, "choose_layout", lambda *a: wrong)
    x0, grads = problem_data()
    got, _ = through_adapter(name, hp, x0, grads)
    reference = per_seed_loop(name, hp, x0, grads)
    assert not torch.allclose(got, reference, rtol=1e-6)


@pytest.mark.parametrize("layout", torch_layouts.LAYOUTS)
def test_every_layout_of_an_element_wise_class_is_exact(layout, monkeypatch):
    monkeypatch.setattr(torch_adapter, "choose_layout", lambda *a: layout)
    x0, grads = problem_data()
    got, state = through_adapter("torch.optim.Adam", {"lr": 0.01}, x0, grads)
    assert state.layout == layout
    torch.testing.assert_close(got, per_seed_loop("torch.optim.Adam", {"lr": 0.01}, x0, grads), rtol=1e-10, atol=0)


class GroupNormalizedSGD(torch.optim.Optimizer):
    """x ← x − lr g/‖g‖, the norm over the group's parameters: couples parameters within a group,
    not across groups (the probe must choose `groups`)."""

    def __init__(self, params, lr: float = 0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            norm = torch.sqrt(sum(p.grad.square().sum() for p in group["params"]))
            for p in group["params"]:
                p.add_(p.grad / norm, alpha=-group["lr"])


def test_a_class_coupling_within_its_groups_gets_one_group_per_seed():
    component = torch_adapter.adapt_class("group_normalized_sgd", GroupNormalizedSGD, "test")
    assert component.extra["layout"] == "groups" and component.extra["mode"] == "per_seed"
    hp = component.validate({"lr": 0.05})
    x0, grads = problem_data()
    opt = component.factory(hp, None)
    x = x0.clone()
    state = opt.init(x)
    for t in range(STEPS):
        state = opt.apply(grads[t].clone(), state, x)
    expected = x0.clone()
    for t in range(STEPS):
        expected -= 0.05 * grads[t] / torch.linalg.vector_norm(grads[t], dim=1, keepdim=True)
    assert state.layout == "groups"
    torch.testing.assert_close(x, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,hp", [("torch.optim.Adam", {"lr": 0.01}), ("pytorch_optimizer.Lamb", {"lr": 0.01}),
                                     ("pytorch_optimizer.Prodigy", {"lr": 1.0})])
def test_hyperparameters_are_live(name, hp):
    """A step-size schedule changes hp["lr"] between steps: the param groups follow."""
    schedule = {5: 0.003, 20: 0.0005}
    x0, grads = problem_data()
    got, _ = through_adapter(name, hp, x0, grads, lr_at=schedule)
    torch.testing.assert_close(got, per_seed_loop(name, hp, x0, grads, lr_at=schedule), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, through_adapter(name, hp, x0, grads)[0])      # the schedule mattered


def test_a_hyperparameter_read_only_at_construction_cannot_change_live():
    hp = get_optimizer("pytorch_optimizer.Lion").validate({"maximize": False})
    opt = get_optimizer("pytorch_optimizer.Lion").factory(hp, None)
    x = torch.zeros(3, 4)
    state = opt.init(x)
    hp["maximize"] = True                 # Lion keeps it as an attribute, not in its groups
    with pytest.raises(ValueError, match="maximize changed") as error:
        opt.apply(torch.ones(3, 4), state, x)
    assert "\n" not in str(error.value)


# --- the engine: the adapter reproduces the built-ins seed for seed -------------------------

CELL = {"problem": {"name": "quadratic_saddle", "dim": 10, "anisotropy": 100, "noise_scale": 1.0, "curvature": 1.0},
        "seeds": 128, "budget": 3000, "cnc_samples": 0}
ESCAPE = ["escaped", "escape_step", "diverged", "final_step"]


@pytest.mark.parametrize("builtin,adapted,bitwise", [
    # torch.optim.Adam(fused=True) runs torch's fused kernel, which the built-in adam's reference
    # loop calls: bit for bit against it.
    ({"name": "adam", "lr": 5e-4, "beta1": 0.9, "beta2": 0.999},
     {"name": "torch.optim.Adam", "lr": 5e-4, "betas": [0.9, 0.999], "fused": True}, True),
    # The default single-tensor Adam rounds differently (addcdiv): the iterates differ in the last
    # bit (loss_at_escape by ~2e-7), the escape steps do not.
    ({"name": "adam", "lr": 5e-4, "beta1": 0.9, "beta2": 0.999},
     {"name": "torch.optim.Adam", "lr": 5e-4, "betas": [0.9, 0.999]}, False),
    ({"name": "rmsprop", "lr": 1e-3, "beta2": 0.99}, {"name": "torch.optim.RMSprop", "lr": 1e-3, "alpha": 0.99}, False),
    # SGD's escape times spread over many blocks: runs leave the batch at many different steps.
    # torch adds −lr·g with one rounding (add_(g, alpha)), the built-in forms −lr·g first.
    ({"name": "sgd", "lr": 0.01}, {"name": "torch.optim.SGD", "lr": 0.01}, False),
], ids=["adam-fused", "adam-single-tensor", "rmsprop", "sgd"])
def test_the_adapter_reproduces_the_builtin_seed_for_seed(builtin, adapted, bitwise):
    """The same escape steps as the built-in on the same cell, whether the built-in runs its
    compiled block (workflows/kernels.py, what simulate_cell runs here) or its reference loop."""
    got = simulate_cell({**CELL, "optimizer": adapted})
    compiled = simulate_cell({**CELL, "optimizer": builtin})
    reference = simulate({**CELL, "optimizer": builtin}, reference=True).rows
    assert compiled["escaped"].sum() > 0
    for expected in (compiled, reference):
        for column in ESCAPE:
            assert (got[column].to_numpy() == expected[column].to_numpy()).all(), column
        # Last-bit differences, amplified like the iterate itself along the escape direction
        # (e^{γηt}): up to ~3e-5 relative in float32 by the time a run escapes.
        torch.testing.assert_close(torch.tensor(got["loss_at_escape"].to_numpy()),
                                   torch.tensor(expected["loss_at_escape"].to_numpy()), rtol=1e-4, atol=0)
    if bitwise:
        for column in ("loss_at_escape", "final_loss", "final_distance"):
            assert got[column].equals(reference[column]), column


@pytest.mark.parametrize("layout", ["params", "groups", "optimizers"])
def test_per_seed_layouts_under_the_engine_give_the_builtin_rows(layout, monkeypatch):
    """Runs leaving the batch at many different steps (sgd's spread of escape times), stepped
    one seed at a time: the rows are the built-in sgd's."""
    cell = {**CELL, "seeds": 16, "budget": 1500, "problem": {**CELL["problem"], "dim": 4}}
    expected = simulate({**cell, "optimizer": {"name": "sgd", "lr": 0.01}}, reference=True).rows
    monkeypatch.setattr(torch_adapter, "choose_layout", lambda *a: layout)
    got = simulate_cell({**cell, "optimizer": {"name": "torch.optim.SGD", "lr": 0.01}})
    assert expected["escape_step"].nunique() > 4
    for column in ESCAPE:
        assert (got[column].to_numpy() == expected[column].to_numpy()).all(), column


# --- refusals: one line each ----------------------------------------------------------------


def refusal(name, modules=("torch.optim", "pytorch_optimizer", "schedulefree")) -> str:
    with pytest.raises(ValueError) as error:
        torch_adapter.adapt(name, modules)
    message = str(error.value)
    assert "\n" not in message and name in message
    return message


def test_only_allowed_modules_may_be_named():
    assert "not allowed" in refusal("os.system")
    assert "not allowed" in refusal("torch.optim.os.system")            # no getattr chains
    assert "not allowed" in refusal("torch.optim.lr_scheduler.StepLR")
    assert "not allowed" in refusal("subprocess.Popen")
    assert "public class name" in refusal("torch.optim._functional")


def test_a_module_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "schedulefree", None)        # as if not installed
    assert "pip install -e '.[optimizers]'" in refusal("schedulefree.AdamWScheduleFree")
    assert "not installed" in refusal("saddlescape_no_such_plugin.Opt", ("saddlescape_no_such_plugin",))


def test_names_that_are_no_optimizer_class_are_refused():
    assert "did you mean Adam" in refusal("torch.optim.Adamm")
    assert "not an optimizer class" in refusal("torch.optim.Optimizer")
    assert "not an optimizer class" in refusal("torch.optim.lr_scheduler")
    assert "not an optimizer class" in refusal("pytorch_optimizer.get_supported_optimizers")


def test_optimizers_that_need_a_closure_or_wrap_another_are_refused():
    assert "needs a closure" in refusal("torch.optim.LBFGS")
    assert "needs a closure" in refusal("schedulefree.AdamWScheduleFreeClosure")
    assert "needs a closure" in refusal("pytorch_optimizer.AliG")       # raises NoClosureError in step
    assert "wraps another optimizer" in refusal("pytorch_optimizer.SAM")
    assert "wraps another optimizer" in refusal("pytorch_optimizer.Lookahead")


class NoisySGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad + torch.randn_like(p), alpha=-group["lr"])


def test_a_class_that_draws_random_numbers_draws_from_a_generator_per_run():
    """Issue 27 (superseding issue 24 item 7's refusal): its runs step one optimizer each, each under
    a generator of its own, so a run is reproducible and equal to a per-seed loop that does the same."""
    component = torch_adapter.adapt_class("noisy_sgd", NoisySGD, "test")
    x0, grads = problem_data()

    def run():
        opt = component.factory(component.validate({"lr": 0.1}), None)
        x = x0.clone()
        state = opt.init(x)
        for t in range(5):
            state = opt.apply(grads[t].clone(), state, x)
        return x, state

    (first, state), (second, _) = run(), run()
    assert state.layout == "optimizers" and torch.equal(first, second)
    loop = x0.clone()
    for i in range(R):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i + 7919)                       # problem seed 0: 0 · 1000003 + run + 7919
            for t in range(5):
                loop[i].add_(grads[t, i] + torch.randn(D, dtype=loop.dtype), alpha=-0.1)
    torch.testing.assert_close(first, loop, rtol=1e-12, atol=1e-12)


class PythonRandomSGD(torch.optim.Optimizer):
    """Draws from Python's own generator, which no torch generator can make reproducible."""

    def __init__(self, params, lr: float = 0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        import random

        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad + random.gauss(0, 1), alpha=-group["lr"])


def test_a_class_whose_draws_no_torch_generator_controls_is_refused():
    component = torch_adapter.adapt_class("python_random", PythonRandomSGD, "test")
    opt = component.factory(component.validate({"lr": 0.1}), None)
    with pytest.raises(ValueError, match="two identical runs differ") as error:
        opt.init(torch.zeros(4, 3))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("params,expected", [
    ({"betaz": 0.9}, "unknown argument betaz=0.9; allowed: lr, betas, eps, weight_decay"),
    ({"betas": 0.9}, "betas=0.9 is not a list"),
    ({"betas": [0.9, "a"]}, "betas has 'a'"),
    ({"amsgrad": 1}, "amsgrad=1 is not a boolean"),
    ({"lr": -1.0}, "Invalid learning rate"),
    ({"betas": [0.9]}, "refused by Adam"),
    ({"param_shape": "matrix"}, "param_shape='matrix' is not allowed"),
])
def test_bad_arguments_are_one_line(params, expected):
    with pytest.raises(ValueError) as error:
        get_optimizer("torch.optim.Adam").validate(params)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_schema_is_the_constructor_signature():
    component = get_optimizer("torch.optim.Adam")
    assert list(component.schema)[:5] == ["lr", "betas", "eps", "weight_decay", "amsgrad"]
    assert "params" not in component.schema and component.origin == "adapter"
    hp = component.validate({"betas": [0.9, 0.99], "weight_decay": 0})
    assert hp["betas"] == (0.9, 0.99) and hp["weight_decay"] == 0.0 and isinstance(hp["weight_decay"], float)
    assert component.validate(hp) == hp                              # idempotent: cells re-validate
    assert get_optimizer("schedulefree.AdamWScheduleFree").validate({"weight_decay": 0.01})["weight_decay"] == 0.01
    assert component.extra["mode"] == "batched" and get_optimizer("pytorch_optimizer.Prodigy").extra["mode"] == "per_seed"


# --- sweeps ---------------------------------------------------------------------------------


def adapter_sweep(**optimizer):
    return {"description": "adapter", "parameters": {
        "problem": {"name": "quadratic_saddle", "dim": 6, "anisotropy": 10},
        "optimizer": {"values": [
            {"name": "torch.optim.Adam", "lr": 0.01, "betas": {"value": [0.9, 0.99]}, "weight_decay": 0.0, **optimizer},
            {"name": "pytorch_optimizer.Lamb", "lr": 0.01}]},
        "seeds": 16, "budget": 400, "cnc_samples": 0}}


def test_a_sweep_with_torch_style_keys_runs(tmp_path):
    from workflows.api import run_sweep

    result = run_sweep(adapter_sweep(), backend="local", storage=tmp_path)
    rows = result.rows
    assert result.counts["done"] == 2 and len(rows) == 32
    adam = rows[rows["optimizer.name"] == "torch.optim.Adam"]
    assert (adam["optimizer.betas[0]"] == 0.9).all() and (adam["optimizer.betas[1]"] == 0.99).all()
    assert (adam["optimizer.weight_decay"] == 0.0).all()
    assert rows["escaped"].any()


def test_a_bad_key_is_refused_by_the_spec_exit_2_nothing_written(tmp_path):
    import yaml

    path = tmp_path / "sweeps.yaml"
    path.write_text(yaml.safe_dump({"sweeps": {"bad": adapter_sweep(betaz=0.9)}}))
    storage = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "workflows", "run", str(path), "--sweep", "bad", "--backend", "local",
                           "--storage", str(storage)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "betaz" in errors[0] and "0.9" in errors[0] and "allowed: lr, betas" in errors[0]
    assert not storage.exists() or not any(storage.rglob("*"))


def test_the_readme_example_validates():
    """The copy-paste sweep of README's "Any PyTorch optimizer" section expands to its cells."""
    import re
    from pathlib import Path

    import yaml

    from workflows.spec import sweeps_from_mapping

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Any PyTorch optimizer"):]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    cells = sweeps_from_mapping(example)["lion_vs_adam"].cells
    names = [c["optimizer"]["name"] for c in cells]
    assert names.count("pytorch_optimizer.Lion") == 2 and "torch.optim.NAdam" in names
    nadam = next(c["optimizer"] for c in cells if c["optimizer"]["name"] == "torch.optim.NAdam")
    assert nadam["betas"] == (0.9, 0.999)


def test_update_returns_the_step_apply_takes():
    """The optax-style update (x untouched, the step returned) agrees with apply (x in place)."""
    x0, grads = problem_data()
    for name in ("torch.optim.Adam", "pytorch_optimizer.Lamb"):
        component = get_optimizer(name)
        applied, updated = component.factory(component.validate({"lr": 0.01}), None), \
            component.factory(component.validate({"lr": 0.01}), None)
        x, y = x0.clone(), x0.clone()
        state_a, state_u = applied.init(x), updated.init(y)
        for t in range(5):
            state_a = applied.apply(grads[t].clone(), state_a, x)
            before = y.clone()
            step, state_u = updated.update(grads[t].clone(), state_u, y)
            assert torch.equal(y, before)
            y.add_(step)
        torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-12)


# --- steps that need more than a gradient (issue 24, items 6 and 7) ---------------------------


class GraphNewton(torch.optim.Optimizer):
    """x ← x − lr g / h, h the Hessian's diagonal read from the gradient's graph (1 without one):
    a class of no known name whose step differentiates the gradient again."""

    def __init__(self, params, lr: float = 0.5):
        super().__init__(params, {"lr": lr})

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                h = torch.ones_like(p)
                if p.grad.requires_grad:
                    h = torch.autograd.grad(p.grad, p, torch.ones_like(p), retain_graph=True)[0]
                with torch.no_grad():
                    p.sub_(group["lr"] * p.grad / h)


class HessianArgument(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.1):
        super().__init__(params, {"lr": lr})

    def step(self, hessian, closure=None):
        pass


def one_sweep(tmp_path, optimizer, **run) -> Path:
    import yaml

    path = tmp_path / "sweeps.yaml"
    path.write_text(yaml.safe_dump({"sweeps": {"s": {"parameters": {
        "problem": {"name": "quadratic_saddle", "dim": 2}, "optimizer": optimizer,
        "seeds": 4, "budget": 30, **run}}}}))
    return path


def refused_everywhere(tmp_path, capsys, optimizer, **run) -> str:
    """validate and run both: exit 2, one line, nothing written; returns the line."""
    from workflows.cli import main

    path = one_sweep(tmp_path, optimizer, **run)
    storage = tmp_path / "results"
    lines = []
    for argv in (["validate", str(path)], ["run", str(path), "--backend", "local", "--storage", str(storage)]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and captured.err.startswith("error: sweep 's': "), captured.err
        lines.append(captured.err)
    assert not storage.exists()
    assert lines[0] == lines[1]
    return lines[0]


def test_a_class_that_reads_second_derivatives_gets_them_by_what_it_does_not_its_name():
    """A class of no known name whose step differentiates the gradient again gets the gradient's graph
    (issue 27; issue 24 item 6 refused it): on f = ½ Σ c x² its step x − lr g/h with h = the Hessian's
    diagonal is Newton's, so from any start one step at lr 1 lands on the minimum. One whose step needs
    a Hessian argument is still refused in one line."""
    from workflows.registry import make_problem
    from workflows.registry import register_optimizer, unregister

    register_optimizer(GraphNewton, "graph_newton")
    try:
        problem = make_problem({"name": "quadratic_saddle", "dim": 3, "curvature": 2.0}, seed=0, dtype=torch.float64)
        component = get_optimizer("graph_newton")
        opt = component.factory(component.validate({"lr": 1.0}), problem)
        x = torch.tensor([[0.3, -0.2, 0.5], [1.0, 2.0, -3.0]], dtype=torch.float64)
        state = opt.init(x)
        opt.apply(problem.grad(x), state, x)
        torch.testing.assert_close(x, torch.zeros_like(x), rtol=0, atol=1e-12)
    finally:
        unregister("optimizer", "graph_newton")


def test_a_step_that_needs_a_hessian_argument_is_refused(tmp_path, capsys):
    from workflows.registry import register_optimizer, unregister

    register_optimizer(HessianArgument, "hessian_argument")
    try:
        assert "needs hessian besides the gradient" in refused_everywhere(
            tmp_path, capsys, {"name": "hessian_argument"})
    finally:
        unregister("optimizer", "hessian_argument")


@pytest.mark.parametrize("name", ["pytorch_optimizer.Kron", "pytorch_optimizer.Gravity"])
def test_a_class_that_draws_random_numbers_runs_reproducibly(name, tmp_path):
    """They passed validate, then run exited 1 with a failed cell (issue 24 item 7); now each run
    draws from its own generator: the cell runs, and twice gives the same rows."""
    from workflows.api import run_sweep

    spec = {"parameters": {"problem": {"name": "quadratic_saddle", "dim": 2}, "optimizer": {"name": name},
                           "seeds": 4, "budget": 30}}
    first = run_sweep(spec, backend="local", storage=tmp_path / "a").rows
    second = run_sweep(spec, backend="local", storage=tmp_path / "b").rows
    assert len(first) == 4
    pd.testing.assert_frame_equal(first, second)


def test_the_class_is_stepped_in_the_cells_dtype(tmp_path, capsys):
    """FAdam steps in float32 only (its step mixes a float32 constant into the parameter's
    dtype): a float32 cell runs, a float64 cell is refused with a pointer to float32. The probe
    stepped in float64 whatever the cell's dtype and refused both."""
    from workflows.api import run_sweep

    result = run_sweep({"parameters": {"problem": {"name": "quadratic_saddle", "dim": 2},
                                       "optimizer": {"name": "pytorch_optimizer.FAdam", "lr": 0.01},
                                       "seeds": 4, "budget": 30}}, backend="local", storage=tmp_path / "ok")
    assert result.counts["done"] == 1 and len(result.rows) == 4
    line = refused_everywhere(tmp_path, capsys, {"name": "pytorch_optimizer.FAdam"}, dtype="float64")
    assert "in float64" in line and "dtype: float32" in line


def test_the_layout_probe_agrees_in_float32():
    """The probe compares layouts in the cell's dtype, within a few hundred float32 ulps: an
    element-wise class is still batched, a coupling one still per seed."""
    assert torch_adapter.layout_of(get_optimizer("torch.optim.Adam"), {"lr": 0.01}, 8, 5, "float32") == "batched"
    assert torch_adapter.layout_of(get_optimizer("pytorch_optimizer.Lamb"), {"lr": 0.01}, 8, 5, "float32") == "params"
    assert torch_adapter.layout_of(get_optimizer("pytorch_optimizer.Prodigy"), {}, 8, 5, "float32") == "optimizers"


def test_a_did_you_mean_never_offers_a_class_that_would_be_refused():
    """A near miss of a class refused when named (LBFGS: a closure) gets no suggestion of it, nor a
    list of it; a near miss of a usable class still gets one (AdaHessian and Kron now run)."""
    for typo, unusable in (("torch.optim.LBFGs", "LBFGS"),):
        message = refusal(typo)
        hint = message.split("allowed:")[0]
        assert unusable not in hint, message
    assert "LBFGS" not in refusal("torch.optim.LBFGs")              # nor among the allowed classes
    assert "did you mean Adam" in refusal("torch.optim.adam")
    assert "did you mean AdaHessian" in refusal("pytorch_optimizer.Adahessian")
    assert "did you mean Adam" in refusal("torch.optim.Adamm")
