"""Sweep files as people write them (issue 15): W&B's and Hydra's habits, YAML 1.2 for every
scalar, distributions that keep their promises, hints where users go wrong, command-line
overrides, estimates and dry runs. No Ray: everything here is spec, CLI and store."""
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows import yaml12
from workflows.cell import cell_id
from workflows.cli import main
from workflows.spec import SweepError, expand_file, load_sweeps

ROOT = Path(__file__).resolve().parent.parent
HEAD = "defaults: {problem.name: quadratic_saddle, problem.dim: 2, optimizer.name: sgd, seeds: 4, budget: 50}\n"


def write(tmp_path, text, name="sweeps.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def sweep(tmp_path, params: str, extra: str = "", head: str = HEAD, **kw):
    text = head + "sweeps:\n  s:\n" + textwrap.indent(textwrap.dedent(extra), "    ") + "    parameters:\n" + \
        textwrap.indent(textwrap.dedent(params), "      ")
    return load_sweeps(write(tmp_path, text), **kw)["s"]


def ids(s) -> set:
    return {cell_id(c) for c in s.cells}


# --- 1. nested component mappings, and any shape of YAML -----------------------------------


def test_a_component_whose_name_is_a_grid_is_the_dotted_grid(tmp_path):
    nested = sweep(tmp_path, "optimizer: {name: {values: [adam, sgd]}, lr: {values: [0.001, 0.005]}}\n")
    dotted = sweep(tmp_path, "optimizer.name: {values: [adam, sgd]}\noptimizer.lr: {values: [0.001, 0.005]}\n")
    assert len(nested.cells) == 4 and ids(nested) == ids(dotted)


def test_inline_fields_of_a_name_grid_reach_only_the_names_that_take_them(tmp_path):
    s = sweep(tmp_path, "optimizer: {name: {values: [adam, sgd]}, beta2: 0.9}\n")
    by_name = {c["optimizer"]["name"]: c["optimizer"] for c in s.cells}
    assert by_name["adam"]["beta2"] == 0.9 and "beta2" not in by_name["sgd"]


def test_the_issue_examples_are_one_line_exit_2(tmp_path, capsys):
    for params in ("optimizer: {value: {name: [adam, sgd], lr: 0.001}}",
                   "optimizer: {name: {values: [adam, 7]}, lr: 0.1}",
                   "optimizer: {name: {rule: paper}}"):
        path = write(tmp_path, HEAD + f"sweeps:\n  s:\n    parameters:\n      {params}\n")
        assert main(["validate", str(path)]) == 2, params
        err = capsys.readouterr().err
        assert err.startswith("error: sweep 's': ") and err.count("\n") == 1, err


# Sweep-shaped documents: a valid sweeps file of one of the shapes people write, with up to four
# places changed to anything at all (a list, a mapping, a null, a huge number, a word: at any
# depth, keys included), or removed.
WORDS = ["quadratic_saddle", "staib_toy", "sgd", "adam", "paper", "uniform", "q_uniform", "grid", "random", "values",
         "value", "parameters", "name", "distribution", "a.b", "torch.optim.SGD", ""]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.integers(), st.floats(),
                    st.sampled_from([0.1, 1e-3, 1e400, -0.0]), st.sampled_from(WORDS), st.text(max_size=3))
nodes = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(scalars, inner, max_size=3)), max_leaves=10)
DEFAULTS = {"problem.name": "quadratic_saddle", "problem.dim": 2, "optimizer.name": "sgd", "seeds": 4, "budget": 50}
VALID = [
    {"defaults": DEFAULTS, "sweeps": {"s": {"parameters": {
        "optimizer.lr": {"values": [0.1, 0.01]}, "problem.anisotropy": {"values": [1, 10]}}}}},
    {"sweeps": {"s": {"description": "components", "parameters": {
        "problem": {"values": [{"name": "quadratic_saddle", "dim": 2, "anisotropy": {"values": [1, 100]}},
                               {"name": "staib_toy"}]},
        "optimizer": {"values": [{"name": "sgd", "lr": 0.01},
                                 {"name": "adam", "lr": 0.001, "beta1": 0.0, "beta2": {"rule": "paper"}}]},
        "seeds": 8, "budget": 30}}}},
    {"name": "wandb", "method": "random", "samples": 3, "metric": {"name": "loss"}, "parameters": {
        "problem": {"parameters": {"name": {"value": "quadratic_saddle"}, "dim": {"value": 2}}},
        "optimizer": {"parameters": {"name": {"values": ["adam", "sgd"]},
                                     "lr": {"distribution": "q_uniform", "min": 0.1, "max": 0.5, "q": 0.1}}},
        "seeds": {"value": 4}}},
    {"defaults": DEFAULTS, "sweeps": {"s": {"method": "random", "samples": 5, "random_seed": 2, "parameters": {
        "optimizer": {"name": {"values": ["adam", "rmsprop"]},
                      "lr": {"distribution": "log_uniform_values", "min": 0.001, "max": 0.1}},
        "seed": {"distribution": "int_uniform", "min": 0, "max": 9},
        "problem.noise_scale": {"rule": "inverse_sqrt_dim"}}}}},
    {"defaults": DEFAULTS, "sweeps": {
        "s": {"analysis": {"reference": "sgd"}, "parameters": {
            "optimizer.name": {"values": ["sgd", "adam"]}, "optimizer.beta2": {"values": [0.9, {"rule": "paper"}]},
            "run_to_budget": True, "dtype": "float64"}},
        "t": {"parameters": {"optimizer": {"value": {"name": "cnc_sgd", "g_thres": None}}, "seed": {"values": [0, 1]}}}}},
]


@st.composite
def documents(draw):
    import copy

    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    # (Hypothesis leans to the first of sampled_from's choices: the likely one comes first.)
    for _ in range(draw(st.sampled_from([1, 1, 0, 2, 3]))):
        node, parent, key = doc, None, None
        while isinstance(node, (dict, list)) and node and (parent is None or draw(st.sampled_from([True, True, False]))):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, keys[draw(st.integers(0, len(keys) - 1))]
            node = parent[key]
        if parent is None:
            continue
        change = draw(st.sampled_from(["replace", "replace", "rename", "remove"]))
        if change == "replace":
            parent[key] = draw(nodes)
        elif change == "remove":
            del parent[key]
        elif isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(WORDS), scalars))
            parent[new] = parent.pop(key)
    return doc if draw(st.sampled_from([True] * 9 + [False])) else draw(nodes)


documents = documents()
overrides = st.one_of(st.just([]), st.just([]), st.lists(st.one_of(st.sampled_from(
    ["seeds=2", "optimizer.lr=0.1,0.2", "~optimizer.lr", "budget=", "problem.dim=[2, 3]", "optimizer={name: adam}",
     "method=random", "samples=3", "x", "+seed=1", "optimizer.name=adam,sgd"]), st.text(max_size=6)), max_size=2))


@pytest.mark.reliability
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents, overrides)
def test_any_yaml_shape_gives_sweeps_or_one_sweep_error(document, extra):
    """Whatever the document (lists and mappings where scalars belong, at every level; names,
    numbers, booleans and nulls anywhere), the loader returns sweeps or raises SweepError."""
    try:
        out = expand_file(document, "doc", None, 40, extra, stem="doc")
    except SweepError as e:
        assert "\n" not in str(e)
    else:
        assert out and all(s.cells for s in out.values())


@pytest.mark.reliability
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_any_yaml_file_gives_sweeps_or_one_sweep_error(tmp_path_factory, document):
    """The same through YAML text and the file loader (duplicate keys, tags, 1.2 scalars)."""
    path = tmp_path_factory.mktemp("doc") / "doc.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        load_sweeps(path, max_cells=40)
    except SweepError as e:
        assert "\n" not in str(e)


# --- 2. W&B's shapes -------------------------------------------------------------------------


def test_wandb_nested_parameters_are_the_dotted_keys(tmp_path):
    nested = sweep(tmp_path, """
        optimizer:
          parameters:
            name: {value: adam}
            lr: {values: [0.01, 0.001]}
        problem: {parameters: {anisotropy: {values: [1, 10]}}}
        """)
    dotted = sweep(tmp_path, "optimizer.name: adam\noptimizer.lr: {values: [0.01, 0.001]}\n"
                             "problem.anisotropy: {values: [1, 10]}\n")
    assert len(nested.cells) == 4 and ids(nested) == ids(dotted)


WANDB = """
    program: train.py
    name: {name}
    method: random
    run_cap: 6
    metric: {{name: loss, goal: minimize}}
    early_terminate: {{type: hyperband, min_iter: 3}}
    parameters:
      problem:
        parameters:
          name: {{value: quadratic_saddle}}
          dim: {{value: 2}}
      optimizer:
        parameters:
          name: {{values: [adam, sgd]}}
          lr: {{distribution: log_uniform_values, min: 0.001, max: 0.1}}
      seeds: {{value: 4}}
      budget: {{value: 50}}
"""


def test_a_wandb_sweep_file_is_one_sweep_named_by_its_name_or_the_file(tmp_path, capsys):
    named = write(tmp_path, WANDB.format(name="lr-search"), "wandb.yaml")
    (s,) = load_sweeps(named).values()
    assert s.name == "lr-search" and len(s.cells) == 6                     # run_cap read as samples
    assert all(0.001 <= c["optimizer"]["lr"] <= 0.1 for c in s.cells)
    assert any("ignored W&B keys program, metric, early_terminate" in n for n in s.notes)
    unnamed = write(tmp_path, WANDB.format(name="null"), "my_search.yaml")
    assert list(load_sweeps(unnamed)) == ["my_search"]
    # The CLI: no --sweep needed for a file of one sweep; notes are one line each, on stderr.
    assert main(["run", str(named), "--dry-run", "--storage", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert "sweep lr-search: 6 cells" in out and not (tmp_path / "r").exists()
    notes = err.splitlines()
    assert notes and all(line.startswith("note: ") for line in notes)
    assert any("run_cap=6 read as samples=6" in line for line in notes)


# --- 3. YAML 1.2 for every scalar --------------------------------------------------------------

TRAPS = {        # as written -> as read (YAML 1.1 read the first four as 8, True, 1000 and 80)
    "010": 10, "yes": "yes", "1_000": "1_000", "1:20": "1:20", "on": "on", "off": "off", "no": "no",
    "0o17": 15, "0x1F": 31, "+5": 5, "-0": 0, "1e3": 1000.0, "1E-3": 0.001, ".5": 0.5, "5.": 5.0,
    ".inf": math.inf, "-.Inf": -math.inf, "true": True, "True": True, "TRUE": True, "tRUE": "tRUE",
    "false": False, "~": None, "null": None, "Null": None, "2024-01-01": "2024-01-01", "=": "=",
    "0b101": "0b101", "1.0e+3": 1000.0, "'010'": "010", "0x": "0x", "0o8": "0o8", "12e": "12e",
}


@pytest.mark.parametrize("written", TRAPS)
def test_yaml_1_2_core_schema(written):
    assert yaml12.load(f"a: {written}") == {"a": TRAPS[written]}


def test_nan_is_a_float_and_what_the_dumper_writes_reads_back():
    assert math.isnan(yaml12.load("a: .nan")["a"])
    strings = ["yes", "0o17", "1e3", "010", "on", "1_000", "2024-01-01", "x"]
    assert yaml12.load(yaml12.dump({"a": strings})) == {"a": strings}
    assert yaml.safe_load(yaml12.dump({"a": strings})) == {"a": strings}     # and under YAML 1.1


def test_yaml_1_2_reaches_the_cells(tmp_path):
    s = sweep(tmp_path, "seed: 010\nbudget: 1e3\nrun_to_budget: TRUE\noptimizer.lr: 0x1\n")
    (cell,) = s.cells
    assert (cell["seed"], cell["budget"], cell["run_to_budget"], cell["optimizer"]["lr"]) == (10, 1000, True, 1.0)


def test_merge_keys_share_a_block_and_the_mapping_own_keys_win(tmp_path):
    path = write(tmp_path, HEAD + textwrap.dedent("""
        sweeps:
          a:
            parameters: &shared
              optimizer.lr: {values: [0.1, 0.01]}
              budget: 50
          b:
            parameters:
              <<: *shared
              budget: 60
        """))
    sweeps = load_sweeps(path)
    assert [c["budget"] for c in sweeps["b"].cells] == [60, 60]
    assert [c["optimizer"]["lr"] for c in sweeps["a"].cells] == [c["optimizer"]["lr"] for c in sweeps["b"].cells]


# --- 4. distributions ---------------------------------------------------------------------------


def random_sweep(tmp_path, params: str, samples=60, seed=1):
    return sweep(tmp_path, params, f"method: random\nsamples: {samples}\nrandom_seed: {seed}\n")


def test_a_quantised_draw_is_the_decimal_q_says_and_its_cell_is_the_grid_cell(tmp_path):
    drawn = random_sweep(tmp_path, "optimizer.lr: {distribution: q_uniform, min: 0.1, max: 0.9, q: 0.1}\n")
    lrs = {c["optimizer"]["lr"] for c in drawn.cells}
    assert lrs == {round(0.1 * k, 10) for k in range(1, 10)}        # 0.3, never 0.30000000000000004
    assert 0.3 in lrs and 0.7 in lrs
    grid = sweep(tmp_path, "optimizer.lr: {values: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}\n")
    assert ids(drawn) == ids(grid)


@pytest.mark.parametrize("dist,lo,hi,q,allowed", [
    ("q_uniform", 0.12, 0.28, 0.1, {0.2}),                    # rounding would leave [min, max]
    ("q_uniform", 0.05, 0.25, 0.1, {0.1, 0.2}),
    ("q_log_uniform_values", 0.015, 0.1, 0.02, {0.02, 0.04, 0.06, 0.08, 0.1}),
    ("q_uniform", 0.5, 7.5, 2, {2, 4, 6}),
])
def test_a_quantised_draw_never_leaves_its_bounds(tmp_path, dist, lo, hi, q, allowed):
    s = random_sweep(tmp_path, f"optimizer.lr: {{distribution: {dist}, min: {lo}, max: {hi}, q: {q}}}\n", 80)
    assert {c["optimizer"]["lr"] for c in s.cells} == allowed


def test_real_draws_stay_in_bounds_and_integer_draws_are_integers(tmp_path):
    s = random_sweep(tmp_path, """
        optimizer.lr: {distribution: log_uniform, min: -6.9, max: -2.3}
        problem.anisotropy: {distribution: log_uniform_values, min: 1, max: 1000}
        budget: {distribution: q_uniform, min: 40, max: 100, q: 20}
        seed: {distribution: int_uniform, min: 0, max: 3}
        """, 50)
    for c in s.cells:
        assert math.exp(-6.9) <= c["optimizer"]["lr"] <= math.exp(-2.3)
        assert 1 <= c["problem"]["anisotropy"] <= 1000
        assert c["budget"] in (40, 60, 80, 100) and type(c["budget"]) is int
        assert c["seed"] in range(4)


# --- 5. hints -------------------------------------------------------------------------------------


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)


def test_python_m_analysis_help_version_and_help_texts():
    analysis = run_cli("analysis", "--help")
    assert analysis.returncode == 0 and "usage: python -m analysis" in analysis.stdout and not analysis.stderr
    version = run_cli("workflows", "--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("saddlescape 0.")
    run_help = run_cli("workflows", "run", "--help").stdout
    assert "the sweeps file, e.g. sweeps.yaml" in run_help and "refuse grids of more cells" in run_help
    assert "KEY=VALUE" in run_help and "--dry-run" in run_help and "--allow-changed" in run_help


def test_did_you_mean_for_sweep_names(tmp_path, capsys):
    assert main(["run", "sweeps.yaml", "--sweep", "quik", "--dry-run"]) == 2
    assert "--sweep 'quik' is not defined (did you mean 'quick'?)" in capsys.readouterr().err


# --- 8. validate and dry runs ---------------------------------------------------------------------


def test_validate_one_sweep_with_an_estimate_and_a_warning_for_absurd_work(tmp_path, capsys):
    path = write(tmp_path, HEAD + textwrap.dedent("""
        sweeps:
          small:
            parameters: {optimizer.lr: 0.1}
          absurd:
            parameters: {seeds: 100000000, budget: 100000000, optimizer.lr: 0.1}
        """))
    assert main(["validate", str(path), "--sweep", "small"]) == 0
    out, err = capsys.readouterr()
    assert "small" in out and "absurd" not in out and not err
    assert main(["validate", str(path), "--workers", "4"]) == 0
    out, err = capsys.readouterr()
    assert "1.00e+16 seed-steps" in out and " days " in out
    assert err.count("\n") == 1 and err.startswith("warning: sweep 'absurd': up to 1.00e+16 seed-steps")


def test_a_dry_run_lists_what_varies_estimates_and_writes_nothing(tmp_path):
    storage = tmp_path / "results"
    probe = ("import sys; from workflows.cli import main; "
             f"code = main(['run', 'sweeps.yaml', '--sweep', 'quick', '--dry-run', '--storage', {str(storage)!r}, "
             "'--workers', '2', 'optimizer.lr=0.001,0.01']); "
             "print('RAY IMPORTED' if 'ray' in sys.modules else 'NO RAY'); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "sweep quick: 56 cells, 0 already stored, 56 to run" in out and "NO RAY" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("#"))
    assert header.split() == ["#", "problem.anisotropy", "optimizer.name", "optimizer.lr", "optimizer.beta2", "stored"]
    assert "in every cell: problem.name=quadratic_saddle, seeds=1024, budget=20000" in out
    assert "<= 1.15e+09 seed-steps" in out and "wall about " in out and "on 2 workers" in out
    assert "do not model" not in out      # quadratic saddles with built-in optimizers: modelled
    assert not storage.exists()


def test_a_dry_run_names_the_cells_whose_cost_the_estimate_does_not_model(tmp_path, capsys):
    """The time estimate is per-step costs measured on the synthetic saddles: a sweep with other
    problems, SOSP checks or ecosystem optimizers is told so, with how many cells and which kinds."""
    path = write(tmp_path, HEAD + textwrap.dedent("""
        sweeps:
          mixed:
            parameters:
              problem.name: {values: [quadratic_saddle, logistic_regression]}
              optimizer.lr: 0.1
        """))
    assert main(["run", str(path), "--sweep", "mixed", "--dry-run", "--storage", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "1 of the 2 cells are of kinds the time estimate does not model (logistic_regression)" in out
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "*  " in out and "the time estimate does not model" in out
    assert not (tmp_path / "r").exists()


# --- 9. overrides ---------------------------------------------------------------------------------


def test_overrides_add_and_replace_parameters_with_the_file_rules(tmp_path):
    params = "optimizer: {values: [{name: sgd, lr: 0.1}, {name: momentum, lr: 0.2}]}\n"
    plain = sweep(tmp_path, params)
    over = sweep(tmp_path, params, overrides=["optimizer.lr=0.001,0.01", "seeds=010", "+problem.anisotropy=3"])
    assert len(plain.cells) == 2 and len(over.cells) == 4
    assert {c["optimizer"]["lr"] for c in over.cells} == {0.001, 0.01}     # wins over inline fields
    assert all(c["seeds"] == 10 and c["problem"]["anisotropy"] == 3 for c in over.cells)
    assert over.overrides == ["optimizer.lr=0.001,0.01", "seeds=010", "+problem.anisotropy=3"]
    assert over.definition["overrides"] == over.overrides and "overrides" not in plain.definition


def test_override_forms(tmp_path):
    base = "optimizer.lr: 0.1\noptimizer.name: {values: [sgd, adam]}\n"
    s = sweep(tmp_path, base, overrides=["optimizer.name=adam", "optimizer.beta2=[0.9, 0.99]",
                                          "problem={name: staib_toy}"])
    assert {(c["problem"]["name"], c["optimizer"]["beta2"]) for c in s.cells} == {("staib_toy", 0.9),
                                                                                 ("staib_toy", 0.99)}
    s = sweep(tmp_path, base, overrides=["~optimizer.name", "optimizer.lr={distribution: uniform, min: 0.1, max: 0.2}",
                                          "method=random", "samples=5"])
    assert len(s.cells) == 5 and all(0.1 <= c["optimizer"]["lr"] <= 0.2 for c in s.cells)
    assert {c["optimizer"]["name"] for c in s.cells} == {"sgd"}           # back to the default's name
    s = sweep(tmp_path, base, overrides=[' dtype = "float64" '])
    assert {c["dtype"] for c in s.cells} == {"float64"}


def test_overrides_on_the_command_line_anywhere_among_the_options(tmp_path, capsys):
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.lr: 0.1}\n  t:\n    parameters: {seed: 1}\n")
    assert main(["run", str(path), "seeds=8", "--sweep", "s", "optimizer.lr=0.2,0.3", "--dry-run",
                 "--storage", str(tmp_path / "r")]) == 0
    assert "sweep s: 2 cells" in capsys.readouterr().out
    assert main(["validate", str(path), "seeds=8"]) == 2
    assert "overrides seeds=8 need one sweep; allowed: --sweep NAME, one of s, t" in capsys.readouterr().err


def test_meta_json_records_the_overrides_and_their_hash(tmp_path):
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.lr: 0.1}\n")
    storage = tmp_path / "r"
    assert main(["run", str(path), "--sweep", "s", "seeds=3", "--backend", "local", "--no-analyze",
                 "--storage", str(storage)]) == 0
    meta = json.loads((storage / "s" / "meta.json").read_text())
    assert meta["overrides"] == ["seeds=3"] and meta["definition"]["overrides"] == ["seeds=3"]
    assert len(meta["definition_hash"]) == 16 and meta["interrupted"] is False
    assert yaml12.load(meta["yaml"]) == {"s": meta["definition"]}
