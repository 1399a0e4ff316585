"""sweeps.yaml: validation (one test per kind of error: the message, exit code 2, nothing
written) and expansion (per-optimizer hyperparameters, rules, random sampling, defaults)."""
import math
import textwrap
from pathlib import Path

import pytest

from workflows.cli import main
from workflows.spec import SweepError, load_sweeps, sweeps_from_mapping

GOOD = """
defaults:
  problem.name: quadratic_saddle
  problem.dim: 2
  seeds: 8
  budget: 100
sweeps:
  s:
    description: test
    parameters:
      problem.anisotropy: {values: [1, 10]}
      optimizer.name: {values: [sgd, adam]}
      optimizer.lr: {values: [0.01, 0.1]}
      optimizer.beta2: {values: [0.9, 0.99]}
"""


def write(tmp_path, text):
    path = tmp_path / "sweeps.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def sweep_with(params: str, extra: str = "", defaults=True) -> str:
    head = "defaults: {problem.name: quadratic_saddle, problem.dim: 2, optimizer.name: sgd, seeds: 4, budget: 50}\n"
    return (head if defaults else "") + "sweeps:\n  s:\n" + textwrap.indent(textwrap.dedent(extra), "    ") + \
        "    parameters:\n" + textwrap.indent(textwrap.dedent(params), "      ")


# The corpus of malformed sweeps.yaml files: each names the error it must produce on its first
# line (`# expect: ...`) and optionally extra command-line arguments (`# args: ...`).
CORPUS = sorted((Path(__file__).parent / "malformed").glob("*.yaml"))


def expectation(path: Path) -> tuple[str, list[str]]:
    head = path.read_bytes().split(b"\n")[:2]
    message = head[0].decode().removeprefix("# expect: ").strip()
    args = head[1].decode().removeprefix("# args: ").split() if head[1].startswith(b"# args:") else []
    return message, args


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 90


@pytest.mark.reliability
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_each_malformed_sweep_is_one_clear_line_exit_2_and_nothing_written(path, tmp_path, capsys):
    message, args = expectation(path)
    storage = tmp_path / "results"
    code = main(["run", str(path), "--sweep", "s", "--storage", str(storage), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not storage.exists() and not (Path.cwd() / "results" / "s").exists()
    if not set(args) & RUN_ONLY:
        assert main(["validate", str(path), *args]) == 2


RUN_ONLY = {"--storage", "--allow-changed", "--backend", "--dry-run"}


def test_an_unknown_sweep_name_lists_the_known_ones(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["run", str(path), "--sweep", "nope", "--storage", str(tmp_path / "r")]) == 2
    assert "--sweep 'nope' is not defined; allowed: s" in capsys.readouterr().err


def test_a_hyperparameter_an_optimizer_does_not_take_never_multiplies_its_cells(tmp_path):
    cells = load_sweeps(write(tmp_path, GOOD))["s"].cells
    sgd = [c for c in cells if c["optimizer"]["name"] == "sgd"]
    adam = [c for c in cells if c["optimizer"]["name"] == "adam"]
    assert len(sgd) == 2 * 2            # anisotropy x lr, not x beta2
    assert len(adam) == 2 * 2 * 2
    assert all("beta2" not in c["optimizer"] for c in sgd)


def test_the_paper_rule_sets_beta2_from_lr(tmp_path):
    text = sweep_with("""
        optimizer:
          values:
            - {name: rmsprop, lr: {values: [0.001, 0.008]}, beta2: {rule: paper}}
        optimizer.eps: 1.0e-6
        """)
    cells = load_sweeps(write(tmp_path, text))["s"].cells
    for c in cells:
        assert c["optimizer"]["beta2"] == pytest.approx(1 - c["optimizer"]["lr"] ** (2 / 3))
        assert c["optimizer"]["eps"] == 1e-6
    assert sorted(c["optimizer"]["beta2"] for c in cells) == pytest.approx([0.96, 0.99])


def test_a_rule_can_be_one_of_the_values(tmp_path):
    text = sweep_with("optimizer.name: adam\noptimizer.lr: 0.001\noptimizer.beta2: {values: [0.9, {rule: paper}]}\n")
    betas = sorted(c["optimizer"]["beta2"] for c in load_sweeps(write(tmp_path, text))["s"].cells)
    assert betas == pytest.approx([0.9, 0.99])


def test_inverse_sqrt_dim_rule(tmp_path):
    text = sweep_with("problem.dim: {values: [4, 16]}\nproblem.noise_scale: {rule: inverse_sqrt_dim}\n")
    for c in load_sweeps(write(tmp_path, text))["s"].cells:
        assert c["problem"]["noise_scale"] == pytest.approx(c["problem"]["dim"] ** -0.5)


def test_specific_settings_win_over_general_ones(tmp_path):
    text = "defaults: {problem.name: quadratic_saddle, optimizer.lr: 0.5, seeds: 3}\n" + sweep_with(defaults=False, params="""
        optimizer.lr: 0.05
        optimizer:
          values:
            - {name: sgd, lr: 0.005}
            - {name: momentum}
        """)
    cells = load_sweeps(write(tmp_path, text))["s"].cells
    lrs = {c["optimizer"]["name"]: c["optimizer"]["lr"] for c in cells}
    assert lrs == {"sgd": 0.005, "momentum": 0.05}
    assert all(c["seeds"] == 3 for c in cells)


def test_yaml_1_2_floats(tmp_path):
    cells = load_sweeps(write(tmp_path, sweep_with("optimizer.lr: {values: [1e-3, 2E-2]}\n")))["s"].cells
    assert sorted(c["optimizer"]["lr"] for c in cells) == [1e-3, 2e-2]


def test_random_search_is_reproducible_and_inside_its_bounds(tmp_path):
    text = sweep_with("""
        optimizer.name: {values: [sgd, adam]}
        optimizer.lr: {distribution: log_uniform_values, min: 0.0001, max: 0.1}
        problem.anisotropy: {distribution: uniform, min: 1, max: 100}
        seed: {distribution: int_uniform, min: 0, max: 5}
        """, "method: random\nsamples: 40\nrandom_seed: 3\n")
    path = write(tmp_path, text)
    first, again = load_sweeps(path)["s"].cells, load_sweeps(path)["s"].cells
    assert first == again and 30 <= len(first) <= 40          # duplicates collapse
    lrs = [c["optimizer"]["lr"] for c in first]
    assert all(1e-4 <= lr <= 0.1 for lr in lrs)
    assert min(lrs) < 1e-3 and max(lrs) > 1e-2                # log-uniform spreads over decades
    assert {c["optimizer"]["name"] for c in first} == {"sgd", "adam"}
    assert all(0 <= c["seed"] <= 5 and isinstance(c["seed"], int) for c in first)


def test_duplicate_cells_collapse(tmp_path):
    text = sweep_with("optimizer.name: sgd\noptimizer.lr: {values: [0.01, 1.0e-2]}\n")
    assert len(load_sweeps(write(tmp_path, text))["s"].cells) == 1


@pytest.mark.slow
def test_the_shipped_sweeps_validate(capsys):
    assert main(["validate", "sweeps.yaml"]) == 0
    out = capsys.readouterr().out
    for name in ("smoke", "quick", "anisotropy", "stepsize", "beta2", "staib2019", "dimension"):
        assert f"  {name} " in out
    sweeps = load_sweeps("sweeps.yaml")
    beta2 = sweeps["beta2"].cells
    assert any(math.isclose(c["optimizer"]["beta2"], 1 - c["optimizer"]["lr"] ** (2 / 3)) for c in beta2)
    assert any(c["optimizer"]["beta2"] == 0.999 for c in beta2)
    assert len(sweeps["smoke"].cells) <= 8


def test_the_readme_run_settings_table_lists_every_run_setting():
    from workflows.core.settings import RUN_SCHEMA

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("Run settings (a cell's keys besides", 1)[1].split("\n\n", 2)[1]
    documented = [line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:]]
    assert documented == list(RUN_SCHEMA)


def test_a_rule_whose_input_is_not_a_number_is_one_line():
    """problem.dim: false is 0 to Python: the rule's 0 ** -0.5 raised ZeroDivisionError (found by
    hypothesis in test_inputs)."""
    block = {"parameters": {"problem": {"value": {"name": "quadratic_saddle", "dim": False,
                                                  "noise_scale": {"rule": "inverse_sqrt_dim"}}},
                            "optimizer.name": "sgd"}}
    with pytest.raises(SweepError, match="noise_scale=.*cannot be derived for quadratic_saddle; allowed: a rule whose"):
        sweeps_from_mapping(block)
