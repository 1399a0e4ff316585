"""Plugins: a third-party package registers a problem and optimizers through entry points, found
on the driver and on Ray workers alike (also when installed after they started); a plugin that
fails to load is reported and fails only the sweeps that name it; registrations made in this
process reach the Ray workers."""
import shutil
import subprocess
import sys
import textwrap
from typing import NamedTuple

import pandas as pd
import pytest
import torch
from ray import cloudpickle as ray_cloudpickle

from optimizers.base import Optimizer, lr_param
from problems.from_loss import GaussianNoise, Landscape, define_problem
from workflows.api import run_sweep
from workflows.params import Param, positive, unit_open
from workflows.registry import get_optimizer, get_problem, register_optimizer, register_problem, registered_lines, \
    registry, unregister
from workflows.spec import SweepError

# The plugin as its author would write it: pyproject.toml declares the entry points (the README's
# example), the package holds a problem defined by its loss, an optimizer of saddlescape's own
# shape, and a torch.optim.Optimizer class (also offered as a module of classes).
PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "saddlescape-toy-plugin"
version = "0.1.0"

[project.entry-points."saddlescape.problems"]
toy_double_well = "saddlescape_toy_plugin.problems:DoubleWell"

[project.entry-points."saddlescape.optimizers"]
toy_sign_sgd = "saddlescape_toy_plugin.sign_sgd"
toy_torch_sgd = "saddlescape_toy_plugin.torch_optim:ToySGD"
toy_classes = "saddlescape_toy_plugin.torch_optim"
"""

SOURCES = {
    "__init__.py": '"""A problem and optimizers for saddlescape, shipped as a plugin."""\n',
    "problems.py": '''
        """(x₀² − 1)²/4 + ½‖x₁…‖²: minima at x₀ = ±1, a saddle at 0 with curvature 1."""
        import torch

        from problems.from_loss import GaussianNoise, Landscape, define_problem
        from workflows.params import Param, at_least, non_negative


        def build(p, generator, dtype):
            d = p["dim"]
            minimizers = torch.zeros(2, d, dtype=torch.float64)
            minimizers[:, 0] = torch.tensor([1.0, -1.0])

            def loss(x):
                return 0.25 * (x[:, 0].square() - 1).square() + 0.5 * x[:, 1:].square().sum(-1)

            variances = torch.full((d,), p["noise_scale"] ** 2, dtype=torch.float64)
            return Landscape(loss, torch.zeros(d, dtype=dtype), GaussianNoise(variances), minimizers=minimizers)


        DoubleWell = define_problem("toy_double_well", build, {
            "dim": Param(4, int, ">= 1", at_least(1), "d"),
            "noise_scale": Param(0.1, float, ">= 0", non_negative, "σ of the isotropic noise"),
        })
    ''',
    "sign_sgd.py": '''
        """Sign SGD: x ← x − η sign(g), the sign regime of Adam without its averages."""
        from optimizers.base import Empty, Optimizer, lr_param

        NAME = "toy_sign_sgd"
        SCHEMA = {"lr": lr_param(0.01)}


        def build(hp, problem=None):
            def init(x):
                return Empty()

            def update(grad, state, x):
                return grad.sign_().mul_(-hp["lr"]), state

            return Optimizer(init, update)
    ''',
    "torch_optim.py": '''
        import torch


        class ToySGD(torch.optim.Optimizer):
            """Plain SGD, p ← p − lr·g, as a torch.optim.Optimizer."""

            def __init__(self, params, lr=0.01):
                super().__init__(params, {"lr": lr})

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.sub_(p.grad * group["lr"])
    ''',
}

TOY = "saddlescape_toy_plugin"


def pip_install(source, target):
    """What `pip install <plugin>` does, into `target` (as Ray does with a wheel in py_modules)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, timeout=300)


def uninstall(target, *prefixes):
    for path in target.iterdir():
        if path.name.startswith(prefixes):
            shutil.rmtree(path)
    for kind in ("problem", "optimizer"):
        registry(kind).refresh()


@pytest.fixture(scope="module")
def toy_plugin(local_ray, plugin_dir, tmp_path_factory):
    """Installed after the shared Ray's workers started, and after this process looked for
    plugins: both must find it anyway."""
    registry("optimizer").plugins()                      # a scan from before the install
    source = tmp_path_factory.mktemp("toy_plugin")
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / TOY).mkdir()
    for name, text in SOURCES.items():
        (source / TOY / name).write_text(textwrap.dedent(text).lstrip())
    pip_install(source, plugin_dir)
    yield plugin_dir
    uninstall(plugin_dir, TOY, "saddlescape_toy_plugin-")


SPEC = {"parameters": {
    "problem": {"value": {"name": "toy_double_well", "noise_scale": {"values": [0.01, 0.1]}}},
    "optimizer": {"values": [{"name": "toy_sign_sgd", "lr": 0.01}, {"name": "sgd", "lr": 0.05}]},
    "seeds": 16, "budget": 3000}}


def same_rows(a, b):
    key = ["cell_id", "seed"]
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))


@pytest.mark.ray
def test_a_plugin_problem_and_optimizer_run_through_ray(toy_plugin, tmp_path):
    through_ray = run_sweep(SPEC, storage=tmp_path / "ray", backend="ray")
    assert through_ray.counts["done"] == 4 and through_ray.counts["failed"] == 0
    rows = through_ray.rows
    assert set(rows["optimizer.name"]) == {"toy_sign_sgd", "sgd"} and set(rows["problem.name"]) == {"toy_double_well"}
    # The plugin's problem, measured as a built-in is: its curvature, its noise, its radius and
    # minimum from its minimizers.
    assert (rows.curvature == 1.0).all() and (rows.escape_radius == 0.5).all() and (rows.minimum_loss == 0).all()
    assert set(rows.sigma_escape.round(12)) == {0.01, 0.1} and (rows.saddle_loss == 0.25).all()
    # Sign SGD moves each coordinate by exactly lr per step: escape (‖x‖ ≥ 0.5 in d = 4) takes
    # at least 0.5 / (0.01·√4) = 25 steps, and no run may be faster.
    sign = rows[rows["optimizer.name"] == "toy_sign_sgd"]
    assert sign.escaped.all() and sign.escape_step.min() >= 25
    # The workers ran the plugin as this process does.
    same_rows(rows, run_sweep(SPEC, storage=tmp_path / "local", backend="local").rows)


@pytest.mark.ray
def test_a_long_lived_ray_worker_finds_a_plugin_installed_after_it_started(local_ray, plugin_dir, tmp_path):
    """The registry of a worker that looked for plugins before the install finds it after (a
    miss rescans), as a reused Tune worker must."""
    @local_ray.remote(num_cpus=0)
    class Lookup:
        def find(self, name):
            from workflows.registry import registry
            try:
                return registry("optimizer").get(name).origin
            except ValueError as error:
                return f"not found: {error}"

    worker = Lookup.remote()
    try:
        assert local_ray.get(worker.find.remote("late_sgd")).startswith("not found")
        source = tmp_path / "late"
        (source / "late_plugin").mkdir(parents=True)
        (source / "late_plugin" / "__init__.py").write_text("from optimizers.sgd import SCHEMA, build\nNAME = 'late_sgd'\n")
        (source / "pyproject.toml").write_text(PYPROJECT.split("[project.entry")[0].replace(
            "saddlescape-toy-plugin", "late-plugin") + '[project.entry-points."saddlescape.optimizers"]\n'
            'late_sgd = "late_plugin"\n')
        pip_install(source, plugin_dir)
        assert local_ray.get(worker.find.remote("late_sgd")) == "plugin late-plugin 0.1.0"
        assert get_optimizer("late_sgd").origin == "plugin late-plugin 0.1.0"     # and this process
    finally:
        local_ray.kill(worker)
        uninstall(plugin_dir, "late_plugin")


@pytest.mark.ray
def test_a_plugin_wheel_shipped_with_py_modules_is_found_on_the_workers(local_ray, tmp_path):
    """The README's cluster recipe: a wheel in the job's runtime_env `py_modules` is pip-installed
    (with its dist-info, so with its entry points) on each node. Here a task gets that runtime_env;
    this process has not installed the plugin. A local path is uploaded only at job level
    (`ray job submit`, ray.init): the test uploads the wheel itself, as the job level does."""
    from ray._private.runtime_env.packaging import get_uri_for_package, upload_package_to_gcs

    source = tmp_path / "shipped"
    (source / "shipped_plugin").mkdir(parents=True)
    (source / "shipped_plugin" / "__init__.py").write_text("from optimizers.sgd import SCHEMA, build\nNAME = 'shipped_sgd'\n")
    (source / "pyproject.toml").write_text(PYPROJECT.split("[project.entry")[0].replace(
        "saddlescape-toy-plugin", "shipped-plugin") + '[project.entry-points."saddlescape.optimizers"]\n'
        'shipped_sgd = "shipped_plugin"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("shipped_plugin-0.1.0-*.whl")
    uri = get_uri_for_package(wheel)
    upload_package_to_gcs(uri, wheel.read_bytes())

    @local_ray.remote(num_cpus=0, runtime_env={"py_modules": [uri]})
    def origin(name):
        from workflows.registry import get_optimizer
        return get_optimizer(name).origin

    assert local_ray.get(origin.remote("shipped_sgd"), timeout=300) == "plugin shipped-plugin 0.1.0"
    with pytest.raises(ValueError, match="'shipped_sgd' is not a known optimizer"):
        get_optimizer("shipped_sgd")


def test_validate_lists_plugins_with_their_distribution(toy_plugin):
    lines = "\n".join(registered_lines())
    assert "toy_double_well (plugin saddlescape-toy-plugin 0.1.0)" in lines
    assert "toy_sign_sgd (plugin saddlescape-toy-plugin 0.1.0)" in lines
    assert "saddlescape_toy_plugin.torch_optim (plugin saddlescape-toy-plugin 0.1.0)" in lines
    assert "built-in: quadratic_saddle, " in lines and "built-in: sgd, " in lines
    assert get_problem("toy_double_well").origin == "plugin saddlescape-toy-plugin 0.1.0"
    with pytest.raises(ValueError, match="toy_classes' is a plugin module of optimizer classes .* allowed: one of its "
                                         r"classes, saddlescape_toy_plugin.torch_optim.<Class>"):
        get_optimizer("toy_classes")


def test_a_plugin_torch_optimizer_goes_through_the_adapter(toy_plugin, tmp_path):
    pytest.importorskip("optimizers.torch_adapter", reason="the torch.optim adapter (optimizers/torch_adapter.py) "
                                                           "is not there yet")
    component = get_optimizer("toy_torch_sgd")
    assert component.extra["class"].endswith("torch_optim.ToySGD") and component.extra["mode"] == "batched"
    assert f"toy_torch_sgd (plugin saddlescape-toy-plugin 0.1.0; {component.extra['class']} through the adapter, " \
           "batched)" in "\n".join(registered_lines())
    # By its entry point's name and by its path in the plugin's module of classes, it steps as
    # the built-in sgd does: p − (lr·g) is x + (−lr·g), seed for seed.
    optimizers = [{"name": "toy_torch_sgd", "lr": 0.05}, {"name": f"{TOY}.torch_optim.ToySGD", "lr": 0.05},
                  {"name": "sgd", "lr": 0.05}]
    spec = {"parameters": {"problem": {"value": {"name": "toy_double_well"}}, "optimizer": {"values": optimizers},
                           "seeds": 16, "budget": 2000}}
    rows = run_sweep(spec, storage=tmp_path, backend="local").rows
    outcome = ["seed", "escaped", "escape_step", "final_step", "final_loss", "final_distance"]
    by_name = {name: group[outcome].reset_index(drop=True) for name, group in rows.groupby("optimizer.name")}
    assert by_name["sgd"].escaped.all()
    pd.testing.assert_frame_equal(by_name["toy_torch_sgd"], by_name["sgd"])
    pd.testing.assert_frame_equal(by_name[f"{TOY}.torch_optim.ToySGD"], by_name["sgd"])


@pytest.fixture
def broken_plugin(plugin_dir):
    """A distribution written by hand (METADATA + entry_points.txt), whose entry points fail:
    a missing module, a name taken by a built-in, a problem that is not one."""
    (plugin_dir / "saddlescape_broken_plugin").mkdir()
    (plugin_dir / "saddlescape_broken_plugin" / "__init__.py").write_text("NOT_A_PROBLEM = 3\n")
    info = plugin_dir / "saddlescape_broken_plugin-0.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: saddlescape-broken-plugin\nVersion: 0.2\n")
    (info / "entry_points.txt").write_text(
        "[saddlescape.optimizers]\nbroken_import = saddlescape_broken_plugin.missing:Thing\n"
        "sgd = saddlescape_broken_plugin:NOT_A_PROBLEM\n"
        "[saddlescape.problems]\nbroken_problem = saddlescape_broken_plugin:NOT_A_PROBLEM\n")
    for kind in ("problem", "optimizer"):
        registry(kind).refresh()
    yield
    uninstall(plugin_dir, "saddlescape_broken_plugin")


def test_a_plugin_that_fails_to_load_is_reported_not_fatal(broken_plugin, tmp_path):
    # Sweeps that do not name it run; the built-in keeps its name.
    spec = {"parameters": {"problem": {"value": {"name": "quadratic_saddle", "dim": 2}},
                           "optimizer": {"value": {"name": "sgd", "lr": 0.1}}, "seeds": 4, "budget": 500}}
    assert run_sweep(spec, storage=tmp_path, backend="local").counts["done"] == 1
    assert get_optimizer("sgd").origin == "built-in"
    lines = registered_lines()
    assert "plugins that failed to load (3; sweeps that name them fail, the others run):" in lines
    errors = "\n".join(lines[lines.index("plugins that failed to load (3; sweeps that name them fail, the others run):"):])
    assert "optimizer broken_import: saddlescape_broken_plugin.missing:Thing: ModuleNotFoundError: " in errors
    assert "optimizer sgd: saddlescape_broken_plugin:NOT_A_PROBLEM: ValueError: the name of a built-in optimizer" in errors
    assert "problem broken_problem: saddlescape_broken_plugin:NOT_A_PROBLEM: TypeError: 3 is not a problem" in errors
    # A sweep that names it fails before anything runs, with one line saying why.
    named = {"parameters": {**spec["parameters"], "optimizer": {"value": {"name": "broken_import"}}}}
    with pytest.raises(SweepError) as error:
        run_sweep(named, storage=tmp_path / "named", backend="local")
    assert "optimizer.name='broken_import' is a plugin that failed to load (saddlescape_broken_plugin.missing:Thing: " \
           "ModuleNotFoundError" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "named").exists()


# --- registrations made in this process --------------------------------------------------------

class Velocity(NamedTuple):
    v: torch.Tensor


class HeavyBall:
    """Heavy-ball momentum written here, of saddlescape's own shape: v ← μv + g, x ← x − ηv."""
    NAME = "here_heavy_ball"
    SCHEMA = {"lr": lr_param(0.01), "momentum": Param(0.9, float, "in [0, 1)", unit_open, "μ")}

    @staticmethod
    def build(hp, problem=None):
        def init(x):
            return Velocity(torch.zeros_like(x))

        def update(grad, state, x):
            velocity = state.v.mul_(hp["momentum"]).add_(grad)
            return velocity * -hp["lr"], Velocity(velocity)

        return Optimizer(init, update)


def here_landscape(p, generator, dtype):
    """A saddle of f = x₀x₁ (curvature 1 along (1, −1)/√2) plus a confining ¼‖x‖⁴."""
    return Landscape(lambda x: x[:, 0] * x[:, 1] + 0.25 * x.square().sum(-1).square(), torch.zeros(2, dtype=dtype),
                     GaussianNoise(torch.full((2,), p["sigma"] ** 2, dtype=torch.float64)), escape_radius=0.5)


@pytest.fixture
def registered_here():
    # Defined in this test module, which Ray workers cannot import (a notebook's own definitions
    # are pickled by value without asking). Ray pickles with its own copy of cloudpickle.
    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])
    register_optimizer(HeavyBall)
    register_problem(define_problem("here_cross_saddle", here_landscape,
                                    {"sigma": Param(0.01, float, "> 0", positive, "noise std")}))
    yield
    unregister("optimizer", HeavyBall.NAME)
    unregister("problem", "here_cross_saddle")
    ray_cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.ray
def test_registrations_in_this_process_reach_the_ray_workers(local_ray, registered_here, tmp_path):
    spec = {"parameters": {"problem": {"value": {"name": "here_cross_saddle", "sigma": {"values": [0.01, 0.1]}}},
                           "optimizer": {"value": {"name": "here_heavy_ball", "lr": 0.01}},
                           "seeds": 16, "budget": 2000}}
    through_ray = run_sweep(spec, storage=tmp_path / "ray", backend="ray")
    assert through_ray.counts["done"] == 2 and through_ray.counts["failed"] == 0
    rows = through_ray.rows
    assert rows.escaped.all() and rows.curvature.to_numpy() == pytest.approx(1.0, rel=1e-12)
    assert rows["optimizer.momentum"].eq(0.9).all()
    same_rows(rows, run_sweep(spec, storage=tmp_path / "local", backend="local").rows)
