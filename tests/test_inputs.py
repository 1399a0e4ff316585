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


# --- issue 24: hints that lead somewhere (item 8) ---------------------------------------------------


def refused(capsys, argv) -> str:
    """The command exits 2 with one line on stderr; returns it."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def random_file(tmp_path, params: str, extra: str = "") -> Path:
    return write(tmp_path, HEAD + "sweeps:\n  s:\n    method: random\n    samples: 4\n" + extra + "    parameters:\n"
                 + textwrap.indent(textwrap.dedent(params), "      "))


@pytest.mark.parametrize("dist,bounds,meant", [
    ("loguniform", "min: 0.001, max: 0.1", "'log_uniform_values'"),     # Ray Tune, Optuna: the values
    ("tune.loguniform", "min: 0.001, max: 0.1", "'log_uniform_values'"),
    ("LogUniformDistribution", "min: 0.001, max: 0.1", "'log_uniform_values'"),
    ("loguniform", "min: -6.9, max: -2.3", "'log_uniform'"),             # bounds <= 0: hyperopt's logs
    ("randint", "min: 1, max: 5", "'int_uniform'"),
    ("quniform", "min: 1, max: 5, q: 1", "'q_uniform'"),
    ("qloguniform", "min: 1, max: 100, q: 1", "'q_log_uniform_values'"),
])
def test_another_librarys_distribution_is_translated_by_meaning(tmp_path, capsys, dist, bounds, meant):
    """`loguniform` suggested `log_uniform`, whose bounds are logs: min 0.001, max 0.1 then drew
    lr 1.001-1.105 without a word."""
    key = "seeds" if dist in ("randint", "quniform", "qloguniform") else "optimizer.lr"
    path = random_file(tmp_path, f"{key}: {{distribution: {dist}, {bounds}}}\n")
    err = refused(capsys, ["validate", str(path)])
    assert f"did you mean {meant}?" in err, err


def test_grid_and_value_spellings_of_other_libraries_point_to_values(tmp_path, capsys):
    path = random_file(tmp_path, "optimizer.lr: {distribution: choice, min: 0.1, max: 0.2}\n")
    assert "write {values: [...]}" in refused(capsys, ["validate", str(path)])


def test_log_bounds_that_look_like_values_warn_with_what_is_drawn(tmp_path, capsys):
    path = random_file(tmp_path, """\
        optimizer: {name: sgd, lr: {distribution: log_uniform, min: 0.001, max: 0.1}}
        problem.anisotropy: {distribution: log_uniform, min: 0.0, max: 4.6}
        """)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err                                  # natural-log bounds from 0: no warning
    assert "optimizer.lr: log_uniform's bounds are natural logs" in warnings[0]
    assert "1.001 .. 1.105" in warnings[0] and "log_uniform_values" in warnings[0]
    assert main(["run", str(path), "--dry-run", "--storage", str(tmp_path / "r")]) == 0
    assert "1.001 .. 1.105" in capsys.readouterr().err


@pytest.mark.parametrize("override,instead", [
    ("optimizer.lr=choice(0.1,0.01)", "allowed: optimizer.lr=0.1,0.01"),
    ("optimizer.lr=range(1,5)", "allowed: optimizer.lr=1,2,3,4 (Hydra's range leaves out its stop)"),
    ("seeds=range(2,10,4)", "allowed: seeds=2,6"),
    ("optimizer.lr=interval(0.001,0.1)", "{distribution: uniform, min: 0.001, max: 0.1} with method=random"),
    ("optimizer.name=glob(*)", "the values by name"),
    ("seeds=int(8)", "the value itself"),
    ("hydra.sweeper.params=x", "Hydra's own settings"),
])
def test_hydra_grammar_is_named_not_split_at_its_commas(tmp_path, capsys, override, instead):
    """choice(0.1,0.01) used to be split into the strings 'choice(0.1' and '0.01)'."""
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.lr: 0.1}\n")
    err = refused(capsys, ["run", str(path), override, "--dry-run", "--storage", str(tmp_path / "r")])
    assert "Hydra" in err and instead in err, err


@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_hydras_multirun_flag_is_one_line(tmp_path, capsys, flag):
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.lr: 0.1}\n")
    err = refused(capsys, ["run", str(path), flag, "optimizer.lr=0.1,0.2", "--dry-run"])
    assert f"{flag} is Hydra's flag for a multirun" in err and "usage:" not in err


def test_a_grid_of_single_values_for_a_list_argument_gets_the_value_hint(tmp_path, capsys):
    """Hydra's `key=[a,b]` is one list; here it is a grid, so torch's betas got 0.9, then 0.99."""
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.name: torch.optim.Adam}\n")
    err = refused(capsys, ["validate", str(path), "--sweep", "s", "optimizer.betas=[0.9,0.99]"])
    assert "grid of single values" in err and "optimizer.betas='{value: [0.9, 0.99]}'" in err, err
    assert main(["validate", str(path), "--sweep", "s", "optimizer.betas={value: [0.9, 0.99]}"]) == 0
    assert main(["validate", str(path), "--sweep", "s", "optimizer.betas=[[0.9,0.99],[0.8,0.9]]"]) == 0
    capsys.readouterr()
    in_file = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters:\n      optimizer.name: torch.optim.Adam\n"
                    "      optimizer.betas: {values: [0.9, 0.99]}\n")
    assert "{value: [0.9, 0.99]}" in refused(capsys, ["validate", str(in_file)])


def test_wandbs_min_max_without_a_distribution_gets_the_distribution_to_add(tmp_path, capsys):
    path = random_file(tmp_path, "optimizer.lr: {min: 0.001, max: 0.1}\nseeds: {min: 2, max: 8}\n")
    err = refused(capsys, ["validate", str(path)])
    assert "has min and max but no distribution" in err
    assert "optimizer.lr: {distribution: uniform, min: 0.001, max: 0.1}" in err
    path = random_file(tmp_path, "seeds: {min: 2, max: 8}\n")
    assert "seeds: {distribution: int_uniform, min: 2, max: 8}" in refused(capsys, ["validate", str(path)])


# --- issue 24: definitions that changed without a trace (item 9) -----------------------------------


RANDOM_LR_FIRST = """\
optimizer.lr: {distribution: log_uniform_values, min: 0.01, max: 0.1}
problem.anisotropy: {distribution: uniform, min: 1, max: 10}
problem.curvature: {distribution: uniform, min: 0.5, max: 2}
"""
# The problem's two parameters swapped: every cell's draws change.
RANDOM_SWAPPED = """\
optimizer.lr: {distribution: log_uniform_values, min: 0.01, max: 0.1}
problem.curvature: {distribution: uniform, min: 0.5, max: 2}
problem.anisotropy: {distribution: uniform, min: 1, max: 10}
"""
# The optimizer's parameter moved after the problem's: a cell draws its problem's parameters
# first whatever the order of the file, so nothing changes.
RANDOM_LR_LAST = """\
problem.anisotropy: {distribution: uniform, min: 1, max: 10}
problem.curvature: {distribution: uniform, min: 0.5, max: 2}
optimizer.lr: {distribution: log_uniform_values, min: 0.01, max: 0.1}
"""


def local_run(path, storage, *extra) -> int:
    return main(["run", str(path), "--backend", "local", "--no-analyze", "--storage", str(storage), *extra])


def test_moving_a_key_of_a_random_sweep_is_a_changed_definition(tmp_path, capsys):
    """Its draws follow the order of its keys: before, the hash did not see it, the run said nothing
    and the stored cells left the tables."""
    storage = tmp_path / "r"
    assert local_run(random_file(tmp_path, RANDOM_LR_FIRST), storage) == 0
    stored = set(pd_cells(storage))
    capsys.readouterr()
    assert local_run(random_file(tmp_path, RANDOM_LR_FIRST), storage) == 0
    assert capsys.readouterr().err == ""                           # the same file: nothing to say
    assert local_run(random_file(tmp_path, RANDOM_LR_LAST), storage) == 0
    assert capsys.readouterr().err == ""                           # the same draws: nothing to say
    moved = random_file(tmp_path, RANDOM_SWAPPED)
    err = refused(capsys, ["run", str(moved), "--backend", "local", "--no-analyze", "--storage", str(storage)])
    assert "the order of keys: parameters: problem.anisotropy, problem.curvature, optimizer.lr -> " \
           "optimizer.lr, problem.curvature, problem.anisotropy" in err, err
    assert "a random sweep draws its parameters in the order they are written" in err
    assert "none of its 4 stored cells is in this grid and would drop out" in err
    assert set(pd_cells(storage)) == stored


def test_a_grids_key_order_changes_nothing(tmp_path, capsys):
    storage = tmp_path / "r"
    grid = "optimizer.lr: {values: [0.1, 0.2]}\nproblem.anisotropy: {values: [1, 10]}\n"
    assert local_run(write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters:\n" + textwrap.indent(grid, "      ")),
                     storage) == 0
    swapped = "".join(reversed(grid.splitlines(keepends=True)))
    capsys.readouterr()
    assert local_run(write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters:\n" + textwrap.indent(swapped, "      ")),
                     storage) == 0
    assert capsys.readouterr().err == ""


def test_random_results_stored_before_the_hash_saw_the_order_keep_their_cells(tmp_path, capsys):
    """A meta.json whose definition_hash ignores the order (every random sweep stored before):
    the same file resumes without a word; the file with a key moved is refused by its cells."""
    from workflows.definition import definition_hash

    storage = tmp_path / "r"
    path = random_file(tmp_path, RANDOM_LR_FIRST)
    assert local_run(path, storage) == 0
    meta_path = storage / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["definition_hash"] = definition_hash(meta["definition"])           # as stored before
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    assert local_run(path, storage) == 0
    err = capsys.readouterr().err
    assert err == "", err
    assert json.loads(meta_path.read_text())["definition_hash"] != meta["definition_hash"]   # now ordered
    meta_path.write_text(json.dumps(meta))
    err = refused(capsys, ["run", str(random_file(tmp_path, RANDOM_SWAPPED)), "--backend", "local",
                           "--no-analyze", "--storage", str(storage)])
    assert "its draws differ: a random sweep draws its parameters in the order they are written (parameters: " \
           "optimizer.lr, problem.anisotropy, problem.curvature -> optimizer.lr, problem.curvature, " \
           "problem.anisotropy)" in err, err


def pd_cells(storage) -> list:
    import pandas as pd

    cells = pd.read_parquet(storage / "s" / "cells.parquet")
    return list(cells.cell_id)


def test_samples_that_collapse_into_fewer_cells_say_so(tmp_path, capsys):
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    method: random\n    samples: 10\n    parameters:\n"
                 "      optimizer.lr: {values: [0.1, 0.2, 0.3]}\n")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "samples: 10 drew 3 distinct cells (7 of the draws repeated a cell already drawn" in err
    assert " 3 cells " in out


def test_two_unnamed_specs_do_not_collide_silently_and_the_refusal_speaks_python(tmp_path):
    from workflows import run_sweep

    block = {"parameters": {"problem.name": "quadratic_saddle", "problem.dim": 2, "optimizer.name": "sgd",
                            "optimizer.lr": {"values": [0.1, 0.2]}, "seeds": 4, "budget": 40}}
    run_sweep(block, storage=tmp_path, backend="local")
    other = {"parameters": {**block["parameters"], "optimizer.lr": 0.3}}
    with pytest.raises(SweepError) as error:
        run_sweep(other, storage=tmp_path, backend="local")
    message = str(error.value)
    assert "--storage" not in message and "--allow-changed" not in message
    assert "run_sweep(spec, '<name>')" in message and "called 'notebook'" in message
    assert "storage=" in message and "allow_changed=True" in message
    assert run_sweep(other, "second", storage=tmp_path, backend="local").counts["done"] == 1


# --- issue 24: paths as people write them (item 11, --storage '~/x') ------------------------------


def test_a_tilde_in_storage_is_the_home_directory(tmp_path, monkeypatch, capsys):
    """`--storage '~/x'` (quoted, or --storage=~/x, which no shell expands) created ./~/x."""
    from workflows import run_sweep

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.lr: 0.1}\n")
    assert main(["run", "~/../" + path.name, "--backend", "local", "--no-analyze", "--storage", "~/x"]) == 0
    assert main(["run", str(path), "--backend", "local", "--no-analyze", "--storage=~/y"]) == 0
    assert run_sweep(str(path), storage="~/z", backend="local").counts["done"] == 1
    for root in ("x", "y", "z"):
        assert (home / root / "s" / "meta.json").is_file()
    assert not (work / "~").exists()
    assert main(["run", str(path), "--dry-run", "--storage", "~/x"]) == 0
    assert f"-> {home / 'x' / 's'}" in capsys.readouterr().out


# --- issue 24: the first commands of the README (item 12) -----------------------------------------


@pytest.fixture
def without_the_optimizers_extra(monkeypatch):
    """As on the default install: pytorch_optimizer and schedulefree cannot be imported."""
    from workflows.registry import registry

    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)
    monkeypatch.setitem(sys.modules, "schedulefree", None)
    registry("optimizer").refresh()
    yield
    registry("optimizer").refresh()


def test_validate_on_the_default_install_checks_the_rest_and_names_the_extra(
        tmp_path, capsys, without_the_optimizers_extra):
    path = write(tmp_path, HEAD + "sweeps:\n  plain:\n    parameters: {optimizer.lr: 0.1}\n"
                 "  eco:\n    parameters: {optimizer.name: pytorch_optimizer.Lion}\n")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "2 sweeps, 1 valid, 1 needs an extra that is not installed" in out
    assert "  eco    needs the optimizers extra: pip install -e '.[optimizers]'" in out
    assert "  plain       1 cell " in out
    assert "note: sweep 'eco' needs the optimizers extra" in err and "error" not in err
    storage = tmp_path / "r"
    assert "pip install -e '.[optimizers]'" in refused(capsys, ["run", str(path), "--sweep", "eco", "--backend",
                                                                  "local", "--storage", str(storage)])
    assert not storage.exists()
    refused(capsys, ["validate", str(path), "--sweep", "eco"])
    bad = write(tmp_path, HEAD + "sweeps:\n  plain:\n    parameters: {optimizer.lr: -1}\n"
                "  eco:\n    parameters: {optimizer.name: pytorch_optimizer.Lion}\n", "bad.yaml")
    refused(capsys, ["validate", str(bad)])                 # any other error is still exit 2


def test_the_readmes_sweeps_file_validates_without_the_extra(capsys, without_the_optimizers_extra):
    assert main(["validate", str(ROOT / "sweeps.yaml")]) == 0
    out = capsys.readouterr().out
    assert "1 needs an extra that is not installed" in out and "ecosystem" in out


def test_run_warns_of_a_sweep_of_days_and_asks_nothing(tmp_path, capsys, monkeypatch):
    """validate warned of 14 h; run started it without a word. Every seed escapes within a few
    steps here, so the cell itself takes a second."""
    def no_questions(*args):
        raise AssertionError("run asked a question")

    monkeypatch.setattr("builtins.input", no_questions)
    path = write(tmp_path, "sweeps:\n  big:\n    parameters: {problem: {name: quadratic_saddle, dim: 2}, optimizer: "
                           "{name: sgd, lr: 0.5}, seeds: 2048, budget: 1000000000, cnc_samples: 0}\n")
    assert local_run(path, tmp_path / "r") == 0
    err = capsys.readouterr().err
    assert "warning: sweep 'big': up to 2.05e+12 seed-steps, about 14.5 h on 1 worker; is that meant?" in err


def test_the_first_progress_line_has_no_estimate_of_the_time_left():
    """The rate from the start put the 12 s of Ray's start on every cell: 3000 s left for a sweep
    that ended 15 s later. It is measured from the first cell, once three more have finished."""
    from workflows.progress import line

    assert line(1, 250, 12.0, 12.0) == "  1/250 cells  elapsed 12s"
    assert line(3, 250, 12.1, 12.0) == "  3/250 cells  elapsed 12s"
    assert line(5, 250, 12.2, 12.0) == "  5/250 cells  elapsed 12s"          # 0.2 s: too short to tell
    assert line(5, 250, 16.0, 12.0) == "  5/250 cells  elapsed 16s  left ~245s"
    assert line(250, 250, 24.0, 12.0) == "  250/250 cells  elapsed 24s"
    assert line(1, 1, 2.0, 2.0) == "  1/1 cell  elapsed 2s"


def test_cells_reported_a_block_at_a_time_give_no_estimate_from_one_block():
    """Blocks bring several cells at once: `make demo` printed '4/84 cells  elapsed 8s  left ~0s'
    (4 cells in two reports 0.1 s apart). The rate counts the cells after the first report's, over
    at least two seconds."""
    from workflows.progress import line

    assert line(4, 84, 8.0, 7.9) == "  4/84 cells  elapsed 8s"
    assert line(12, 84, 10.0, 7.9, first_done=4) == "  12/84 cells  elapsed 10s  left ~19s"
    assert line(12, 84, 10.0, 7.9, first_done=10) == "  12/84 cells  elapsed 10s"   # 2 cells since


def test_one_cell_is_one_cell(tmp_path, capsys):
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.lr: 0.1}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 sweep," in out and "1 cell " in out and "1 cells" not in out
    assert local_run(path, tmp_path / "r") == 0
    out = capsys.readouterr().out
    assert "sweep s: 1 cell, 0 already stored" in out and "1/1 cell stored" in out and "1 cells" not in out
    assert main(["run", str(path), "--dry-run", "--storage", str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert "estimate for the 1 cell to run" in out and "1 cells" not in out


def test_a_rerun_with_nothing_new_keeps_the_report(tmp_path, capsys):
    """The report was redone on every run (40 s for the study's sweeps) though nothing changed."""
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    description: first\n    parameters: "
                                  "{optimizer.lr: {values: [0.1, 0.2]}}\n")
    storage = tmp_path / "r"
    argv = ["run", str(path), "--backend", "local", "--storage", str(storage)]
    assert main(argv) == 0
    report = storage / "s" / "analysis" / "report.md"
    written = report.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert f"report: {report} (up to date" in capsys.readouterr().out
    assert report.stat().st_mtime_ns == written


def test_what_makes_a_report_out_of_date(tmp_path, monkeypatch):
    """The fingerprint sees the tables, the sweep's description and definition, the options and
    the analysis code; an out-of-date banner and a missing fingerprint redo it too."""
    from workflows import report_inputs, run_sweep
    from workflows.store import STALE_BANNER

    block = {"description": "first", "parameters": {"problem.name": "quadratic_saddle", "problem.dim": 2,
                                                    "optimizer.name": "sgd", "seeds": 4, "budget": 40}}
    store = run_sweep(block, "s", storage=tmp_path, backend="local").store
    report = Path(store.base) / report_inputs.REPORT
    report.parent.mkdir()
    report.write_text("# report\n")
    report_inputs.record(store)
    assert report_inputs.up_to_date(store)
    assert not report_inputs.up_to_date(store, {"dpi": 300})
    monkeypatch.setattr(report_inputs, "code_version", lambda: "another")
    assert not report_inputs.up_to_date(store)
    monkeypatch.undo()
    report.write_text(f"{STALE_BANNER} ...\n# report\n")
    assert not report_inputs.up_to_date(store)
    report.write_text("# report\n")
    run_sweep({**block, "description": "second"}, "s", storage=tmp_path, backend="local")
    assert not report_inputs.up_to_date(store)                      # the description the report shows
    report_inputs.record(store)
    run_sweep({**block, "parameters": {**block["parameters"], "optimizer.lr": {"values": [0.01, 0.02]}},
               "description": "second"}, "s", storage=tmp_path, backend="local", allow_changed=True)
    assert not report_inputs.up_to_date(store)                      # other tables
    report_inputs.forget(store)
    assert not report_inputs.up_to_date(store)


def test_mlflows_refusal_of_its_file_store_is_shown_whole(tmp_path, capsys, monkeypatch):
    """It was cut at 200 characters, before its opt-out."""
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    path = write(tmp_path, HEAD + "sweeps:\n  s:\n    parameters: {optimizer.lr: 0.1}\n")
    assert local_run(path, tmp_path / "r", "--track", "mlflow") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: mlflow")]
    assert len(warnings) == 1 and "MLFLOW_ALLOW_FILE_STORE=true" in warnings[0] and "…" not in warnings[0]


def test_an_override_that_is_not_one_printable_word_is_quoted_in_the_one_line_error(tmp_path):
    """Found by the fuzzing above (a fresh-clone CI run): an override with a newline, given to a file
    of two sweeps without --sweep, printed the error on two lines."""
    from workflows.spec import SweepError, load_sweeps

    path = tmp_path / "sweeps.yaml"
    path.write_text("sweeps:\n  s: {parameters: {seeds: 4}}\n  t: {parameters: {seeds: 4}}\n")
    with pytest.raises(SweepError) as error:
        load_sweeps(str(path), overrides=["seeds=8", "a\nb"])
    assert "\n" not in str(error.value) and "overrides seeds=8 'a\\nb' need one sweep" in str(error.value)
