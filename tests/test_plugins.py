"""Plugins: a third-party package registers a problem and optimizers through entry points, found
on the driver and on Ray workers alike (also when installed after they started); a plugin that
fails to load is reported and fails only the sweeps that name it; registrations made in this
process reach the Ray workers."""
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
import torch
from helpers import assert_same_rows
from ray import cloudpickle as ray_cloudpickle

from optimizers.base import Optimizer, lr_param
from problems.from_loss import GaussianNoise, Landscape, define_problem
from workflows.api import run_sweep
from workflows.core.params import Param, positive, unit_open
from workflows.cli import registered_lines
from workflows.registry import get_optimizer, get_problem, inventory, register_optimizer, register_problem, registry, \
    unregister
from workflows.spec import SweepError

README = Path(__file__).resolve().parent.parent / "README.md"
PLUGIN = "saddlescape-myplugin"
# The header of a pyproject.toml for the small plugins written here (the entry points follow).
HEADER = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"

[project.entry-points."saddlescape.optimizers"]
"""


def readme_plugin(root: Path) -> Path:
    """The README's plugin, from its code blocks: each starts with a comment naming its file
    (`# saddlescape-myplugin/<path>`). What the README shows is what is installed and tested."""
    blocks = re.findall(r"```(?:toml|python)\n# (" + PLUGIN + r"/[^\s:]+)[^\n]*\n(.*?)```", README.read_text(), re.S)
    assert {path.split("/", 1)[1] for path, _ in blocks} == {
        "pyproject.toml", "myplugin/sign_sgd.py", "myplugin/torch_optim.py", "myplugin/problems.py"}
    for path, text in blocks:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    (root / PLUGIN / "myplugin" / "__init__.py").write_text("")          # "with an empty __init__.py"
    return root / PLUGIN


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
def readme_plugin_installed(plugin_dir, tmp_path_factory):
    """Installed after this process looked for plugins: it must find it anyway. (A Ray worker
    started before an install finds it too: test_a_long_lived_ray_worker_finds_a_plugin_installed_after_it_started.)"""
    registry("optimizer").plugins()                      # a scan from before the install
    pip_install(readme_plugin(tmp_path_factory.mktemp("readme")), plugin_dir)
    yield plugin_dir
    uninstall(plugin_dir, "myplugin", "saddlescape_myplugin-")


SPEC = {"parameters": {
    "problem": {"value": {"name": "double_well", "noise_scale": {"values": [0.01, 0.1]}}},
    "optimizer": {"values": [{"name": "sign_sgd", "lr": 0.01}, {"name": "sgd", "lr": 0.05}]},
    "seeds": 16, "budget": 3000}}


@pytest.mark.slow
def test_a_plugin_problem_and_optimizer_run_through_ray(local_ray, readme_plugin_installed, tmp_path):
    through_ray = run_sweep(SPEC, storage=tmp_path / "ray", backend="ray")
    assert through_ray.counts["done"] == 4 and through_ray.counts["failed"] == 0
    rows = through_ray.rows
    assert set(rows["optimizer.name"]) == {"sign_sgd", "sgd"} and set(rows["problem.name"]) == {"double_well"}
    # The plugin's problem, measured as a built-in is: its curvature, its noise, its radius and
    # minimum from its minimizers.
    assert (rows.curvature == 1.0).all() and (rows.escape_radius == 0.5).all() and (rows.minimum_loss == 0).all()
    assert set(rows.sigma_escape.round(12)) == {0.01, 0.1} and (rows.saddle_loss == 0.25).all()
    # Sign SGD moves each coordinate by exactly lr per step: escape (‖x‖ ≥ 0.5 in d = 4) takes
    # at least 0.5 / (0.01·√4) = 25 steps, and no run may be faster.
    sign = rows[rows["optimizer.name"] == "sign_sgd"]
    assert sign.escaped.all() and sign.escape_step.min() >= 25
    # The workers ran the plugin as this process does.
    local = run_sweep(SPEC, storage=tmp_path / "local", backend="local")
    assert local.counts["done"] == 4, local.cells.get("error")
    assert_same_rows(rows, local.rows)


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
        (source / "pyproject.toml").write_text(HEADER.format(name="late-plugin") + 'late_sgd = "late_plugin"\n')
        pip_install(source, plugin_dir)
        assert local_ray.get(worker.find.remote("late_sgd")) == "plugin late-plugin 0.1.0"
        assert get_optimizer("late_sgd").origin == "plugin late-plugin 0.1.0"     # and this process
    finally:
        local_ray.kill(worker)
        uninstall(plugin_dir, "late_plugin")


def test_a_plugin_wheel_shipped_with_py_modules_is_found_on_the_workers(local_ray, tmp_path):
    """The README's cluster recipe: a wheel in the job's runtime_env `py_modules` is pip-installed
    (with its dist-info, so with its entry points) on each node. Here a task gets that runtime_env;
    this process has not installed the plugin. A local path is uploaded only at job level
    (`ray job submit`, ray.init): the test uploads the wheel itself, as the job level does."""
    from workflows.core.compat import upload_package

    source = tmp_path / "shipped"
    (source / "shipped_plugin").mkdir(parents=True)
    (source / "shipped_plugin" / "__init__.py").write_text("from optimizers.sgd import SCHEMA, build\nNAME = 'shipped_sgd'\n")
    (source / "pyproject.toml").write_text(HEADER.format(name="shipped-plugin") + 'shipped_sgd = "shipped_plugin"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("shipped_plugin-0.1.0-*.whl")
    uri = upload_package(wheel)

    @local_ray.remote(num_cpus=0, runtime_env={"py_modules": [uri]})
    def origin(name):
        from workflows.registry import get_optimizer
        return get_optimizer(name).origin

    assert local_ray.get(origin.remote("shipped_sgd"), timeout=300) == "plugin shipped-plugin 0.1.0"
    with pytest.raises(ValueError, match="'shipped_sgd' is not a known optimizer"):
        get_optimizer("shipped_sgd")


def test_validate_lists_plugins_as_the_readme_shows(readme_plugin_installed):
    lines = registered_lines(inventory())
    # The README's sample of `saddlescape validate`, line for line where it names the plugin (the
    # versions of torch and the optimizer packages are the README machine's).
    sample = re.search(r"\n(    problems: .*?)\n\n", README.read_text(), re.S).group(1)
    shown = [line.strip() for line in sample.splitlines() if "myplugin" in line]
    modules = [line for line in shown if line.startswith("optimizer classes by path")]
    assert len(shown) == 4 and len(modules) == 1
    assert all(line in [x.strip() for x in lines] for line in shown if line not in modules), (shown, lines)
    plugin_module = "myplugin.torch_optim (plugin saddlescape-myplugin 0.1.0)"
    assert modules[0].endswith(plugin_module) and lines[-1].endswith(plugin_module)
    assert "  built-in: quadratic_saddle, staib_toy, matrix_factorization, pca, tensor_decomposition, phase_retrieval, " \
           "deep_linear, mlp_teacher_student, logistic_regression" in lines
    assert get_problem("double_well").origin == f"plugin {PLUGIN} 0.1.0"
    with pytest.raises(ValueError, match="'my_classes' is a plugin module of optimizer classes .* allowed: one of its "
                                         r"classes, myplugin.torch_optim.<Class>"):
        get_optimizer("my_classes")


def test_a_plugin_torch_optimizer_goes_through_the_adapter(readme_plugin_installed, tmp_path):
    pytest.importorskip("optimizers.torch_adapter", reason="the torch.optim adapter (optimizers/torch_adapter.py) "
                                                           "is not there yet")
    component = get_optimizer("my_sgd")
    assert component.extra["class"] == "myplugin.torch_optim.MySGD" and component.extra["mode"] == "batched"
    # By its entry point's name and by its path in the plugin's module of classes, it steps as
    # the built-in sgd does: p − (lr·g) is x + (−lr·g), seed for seed.
    optimizers = [{"name": "my_sgd", "lr": 0.05}, {"name": "myplugin.torch_optim.MySGD", "lr": 0.05},
                  {"name": "sgd", "lr": 0.05}]
    spec = {"parameters": {"problem": {"value": {"name": "double_well"}}, "optimizer": {"values": optimizers},
                           "seeds": 16, "budget": 2000}}
    rows = run_sweep(spec, storage=tmp_path, backend="local").rows
    outcome = ["seed", "escaped", "escape_step", "final_step", "final_loss", "final_distance"]
    by_name = {name: group[outcome].reset_index(drop=True) for name, group in rows.groupby("optimizer.name")}
    assert by_name["sgd"].escaped.all()
    pd.testing.assert_frame_equal(by_name["my_sgd"], by_name["sgd"])
    pd.testing.assert_frame_equal(by_name["myplugin.torch_optim.MySGD"], by_name["sgd"])


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
    lines = registered_lines(inventory())
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


@pytest.mark.slow
def test_registrations_in_this_process_reach_the_ray_workers(local_ray, registered_here, tmp_path):
    spec = {"parameters": {"problem": {"value": {"name": "here_cross_saddle", "sigma": {"values": [0.01, 0.1]}}},
                           "optimizer": {"value": {"name": "here_heavy_ball", "lr": 0.01}},
                           "seeds": 16, "budget": 2000}}
    through_ray = run_sweep(spec, storage=tmp_path / "ray", backend="ray")
    assert through_ray.counts["done"] == 2 and through_ray.counts["failed"] == 0
    rows = through_ray.rows
    assert rows.escaped.all() and rows.curvature.to_numpy() == pytest.approx(1.0, rel=1e-12)
    assert rows["optimizer.momentum"].eq(0.9).all()
    local = run_sweep(spec, storage=tmp_path / "local", backend="local")
    assert local.counts["done"] == 2, local.cells.get("error")
    assert_same_rows(rows, local.rows)
