"""sweeps.yaml: read (safely, YAML 1.2), validate, expand into cells.

    defaults:                     # plain values every sweep starts from
      seeds: 256
      problem.name: quadratic_saddle
    sweeps:
      quick:
        description: ...
        method: grid              # or random, with samples: N (and random_seed)
        parameters:
          problem.anisotropy: {values: [1, 10, 100]}
          optimizer:              # whole optimizers, each with its own grid
            values:
              - {name: sgd, lr: {values: [0.01, 0.1]}}
              - {name: adam, lr: 0.001, beta1: 0.0, beta2: {rule: paper}}
          optimizer.eps: {value: 1.0e-8}    # only multiplies the optimizers that take eps

A parameter is `{value: v}`, `{values: [...]}`, `{distribution: name, min, max}` (random
method only; workflows/distributions.py) or `{rule: name}` (a value derived from the rest of
the cell). Keys address the cell: `problem`, `optimizer` (whole components), `problem.<p>`,
`optimizer.<h>`, and the run settings (`seeds`, `budget`, ...). A hyperparameter that an
optimizer does not take never multiplies that optimizer's cells; one that no optimizer in the
sweep takes is an error.

W&B's spellings are read too: a nested `optimizer: {parameters: {name: {value: adam}, lr: ...}}`
is the dotted keys `optimizer.name`, `optimizer.lr`; a file holding one sweep in W&B's shape
(`method` and `parameters` at the top) is a sweeps file of one sweep, named by its `name` or the
file's stem; W&B keys that mean nothing here (program, command, metric, early_terminate,
project, entity) are ignored with a note. Command-line overrides (workflows/overrides.py) are a
layer above everything the file says.

Every error is one line naming the sweep, the key, the value and what is allowed, for any
shape of YAML: a SweepError, never another exception.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from optimizers.torch_adapter import usable

from . import distributions, yaml12
from . import overrides as overrides_
from .cell import make_cell
from .core.component import MissingExtra
from .core.schedules import paper_beta2
from .core.settings import RUN_SCHEMA
from .core.suggest import did_you_mean, plural
from .core.tuning import TUNE_SETTINGS, parse_tune
from .definition import definition_hash
from .registry import registry as registry_of
from .tuned_design import TunedDesign
from .yaml12 import SweepLoader  # noqa: F401  (the loader a sweep file is read with)

SWEEP_KEYS = ("description", "method", "samples", "random_seed", "parameters", "analysis", "tune")
# Keys of a W&B sweep configuration that mean nothing here: saddlescape runs its own engine,
# stores every run and stops none early, so there is no program, metric or stopping rule.
WANDB_IGNORED = ("program", "command", "metric", "early_terminate", "project", "entity", "name")
# What a sweep may tell its report (analysis.*): the optimizer variant(s) every other is compared
# against in the pairwise table (default: every pair where there are few).
ANALYSIS_KEYS = ("reference",)
METHODS = ("grid", "random")
COMPONENTS = ("problem", "optimizer")
PARAM_KINDS = ("value", "values", "distribution", "rule")
PARAM_FORMS = "{value: v}, {values: [...]}, {distribution: ...} or {rule: ...}"
DISTRIBUTIONS = tuple(distributions.DISTRIBUTIONS)
# Named rules for derived values, per key; no expression evaluation. A rule sees its
# component with every default filled in.
RULES = {
    # Staib et al.'s recommendation β₂ = 1 − η^(2/3): the averaging window follows the step size.
    "optimizer.beta2": {"paper": lambda optimizer: float(paper_beta2(optimizer["lr"]))},
    # Isotropic noise of fixed total variance spread over d coordinates (docs/theory.md: σ₁² ∝ 1/d).
    "problem.noise_scale": {"inverse_sqrt_dim": lambda problem: problem["dim"] ** -0.5},
}
DEFAULT_MAX_CELLS = 10_000
# A sweep's name is its results folder (results/<name>/): no path separators, no leading dot.
SWEEP_NAME = re.compile(r"^[^\W][\w.\- ]{0,99}$")
SEEDS_HINT = ("seeds is the number of runs of a cell (one batch) and seed the base seed: for several "
              "base seeds write seed: {values: [0, 1, 2]}")


class SweepError(ValueError):
    """A sweeps.yaml problem, as one line."""


class NeedsExtra(SweepError):
    """A sweep that names what an optional extra provides, the extra not installed: `extra`
    names it (pip install -e '.[<extra>]')."""

    def __init__(self, message: str, extra: str):
        super().__init__(message)
        self.extra = extra


@dataclass
class Sweep:
    name: str
    description: str
    cells: list[dict]            # normalised, unique, in a stable order
    definition: dict             # the effective definition: the block as written, the defaults it
                                 # used, and the command-line overrides (when there are any)
    analysis: dict = field(default_factory=dict)   # the block's `analysis` settings, for the report
    notes: list[str] = field(default_factory=list)        # one line each: what was read how, ignored
    overrides: list[str] = field(default_factory=list)    # as given on the command line
    method: str = "grid"                                  # grid or random
    draws: str | None = None                              # random: a hash of the order of its draws
    warnings: list[str] = field(default_factory=list)     # one line each: what is valid but looks wrong
    unnamed: bool = False                                 # a block given to run_sweep without a name
    tuned: TunedDesign | None = None                      # a tuned comparison (its tune: block); `cells`
                                                          # are then its search's first round

    @property
    def seed_steps(self) -> int:
        """Upper bound on the work: every seed of every cell running to its budget (a tuned sweep:
        of every cell its searches may ask for)."""
        return sum(c["seeds"] * c["budget"] for c in self.bound_cells)

    @property
    def bound_cells(self) -> list[dict]:
        """The cells a run may compute, for the estimates: the cells, or a tuned sweep's stand-ins
        for the most its searches may ask for (TunedDesign.bound_cells)."""
        return self.tuned.bound_cells() if self.tuned is not None else self.cells

    @property
    def hash(self) -> str:
        """The definition's hash (meta.json's definition_hash). A random sweep's sees the order of
        its draws as well (each parameter's key, in the order drawn: it follows the order the file
        writes them in, so moving two keys can change every cell); a grid's cells do not depend on
        any order."""
        return definition_hash(self.definition, self.draws)


# --- reading -------------------------------------------------------------------------------


def load_yaml(path) -> dict:
    """The file's document, by the YAML 1.2 core schema (workflows/yaml12.py)."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml12.load(f)
    except OSError as e:
        raise SweepError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SweepError(f"{path}: is not UTF-8 text (byte {e.start}); allowed: a UTF-8 YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(f"{path}: invalid YAML{where}: {what}; allowed: plain YAML "
                         "(mappings, lists, numbers, strings; no tags)") from None
    except RecursionError:
        raise SweepError(f"{path}: invalid YAML: nested too deeply; allowed: plain YAML "
                         "(mappings, lists, numbers, strings)") from None


def load_sweeps(path, only: str | None = None, max_cells: int = DEFAULT_MAX_CELLS,
                overrides=()) -> dict[str, Sweep]:
    """Every sweep in the file (or just `only`), validated and expanded; `overrides`
    (["optimizer.lr=0.001,0.01", ...]) apply to the one sweep chosen."""
    return expand_file(load_yaml(path), str(path), only, max_cells, overrides, stem=Path(str(path)).stem)


def sweep_names(path) -> list[str]:
    """The names of the file's sweeps, without expanding them."""
    data, _ = file_shape(load_yaml(path), str(path), Path(str(path)).stem)
    return [str(name) for name in data["sweeps"]]


def sweeps_from_mapping(data: dict, name: str = "notebook", max_cells: int = DEFAULT_MAX_CELLS) -> dict[str, Sweep]:
    """A sweeps file given as a mapping (the Python API): a whole file ({defaults, sweeps}), or one
    sweep's block ({description, method, parameters}), which is then called `name` (or its W&B
    `name`)."""
    sweeps = expand_file(data, "spec", None, max_cells, stem=name)
    for sweep in sweeps.values():        # a block given as a mapping is the API's usual form: no note
        sweep.notes = [n for n in sweep.notes if "W&B's shape" not in n]
    return sweeps


def file_shape(data, where: str, stem: str | None = None) -> tuple[dict, list[str]]:
    """{defaults, sweeps} from a file of either shape: ours, or one sweep in W&B's shape
    (`parameters` at the top), named by its `name` or else `stem`."""
    if isinstance(data, dict) and "sweeps" not in data and "parameters" in data:
        block = dict(data)
        name = block.pop("name", None)
        name = stem or "sweep" if name is None else name
        if not isinstance(name, str):
            raise SweepError(f"{where}: name={name!r} is not allowed; allowed: a string, the sweep's name "
                             "(and its results folder)")
        return {"sweeps": {name: block}}, [f"{where}: one sweep in W&B's shape, called {name!r}"]
    if not isinstance(data, dict) or not isinstance(data.get("sweeps"), dict) or not data["sweeps"]:
        raise SweepError(f"{where}: top level must be a mapping with a non-empty 'sweeps' mapping "
                         "(and optionally 'defaults'), or one sweep in W&B's shape (method, parameters)")
    unknown = [k for k in data if k not in ("defaults", "sweeps")]
    if unknown:
        hint = did_you_mean(unknown[0], ("defaults", "sweeps"))
        if unknown[0] in SWEEP_KEYS:
            hint = f" ({unknown[0]} belongs in a sweep's block, under sweeps: <name>:)"
        raise SweepError(f"{where}: unknown top-level key {unknown[0]!r}{hint}; allowed: defaults, sweeps")
    return data, []


def check_file(data, where: str) -> dict:
    """The file's {defaults, sweeps} (either shape; see file_shape)."""
    return file_shape(data, where)[0]


def expand_file(data, where: str, only: str | None, max_cells: int, overrides=(),
                stem: str | None = None) -> dict[str, Sweep]:
    data, notes = file_shape(data, where, stem)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SweepError(f"{where}: defaults={defaults!r} is not a mapping; allowed: key: value pairs")
    sweeps = data["sweeps"]
    for name in sweeps:
        if not isinstance(name, str) or not SWEEP_NAME.match(name):
            raise SweepError(f"{where}: sweep name {name!r} cannot name a results folder; allowed: letters, "
                             "digits, '_', '-', '.' and inner spaces, not starting with '.' (at most 100)")
    if only is not None and only not in sweeps:
        single = " (the file's one sweep: --sweep may be left out)" if len(sweeps) == 1 else ""
        raise SweepError(f"{where}: --sweep {only!r} is not defined{did_you_mean(only, sweeps)}; "
                         f"allowed: {', '.join(sweeps)}{single}")
    if overrides and only is None and len(sweeps) > 1:
        # Each override as typed where it prints as one word, else quoted: one with a newline broke
        # the error's one line (found by tests/test_inputs.py's fuzzing).
        shown = " ".join(o if o.isprintable() and " " not in o else repr(o) for o in map(str, overrides))
        raise SweepError(f"{where}: overrides {shown} need one sweep; allowed: "
                         f"--sweep NAME, one of {', '.join(sweeps)}")
    names = [only] if only is not None else list(sweeps)
    out = {name: expand_sweep(name, sweeps[name], defaults, max_cells, overrides) for name in names}
    for sweep in out.values():
        sweep.notes[:0] = notes
    return out


# --- one sweep -----------------------------------------------------------------------------


def expand_sweep(name: str, block, defaults: dict, max_cells: int = DEFAULT_MAX_CELLS, overrides=()) -> Sweep:
    where = f"sweep {name!r}"
    written, block, top, given, notes = _read_block(where, block, overrides)
    method = block.get("method", "grid")
    base = parse_params(where, defaults)
    specs = parse_params(where, block["parameters"])
    for key in (*base, *specs, *top):
        check_key(where, key)
    tuned, draws = None, None
    if "tune" in block:
        tuned = _tuned_design(where, block, base, specs, top, max_cells)
        raw_cells = tuned.coarse_cells
    elif method == "grid":
        for key, spec in {**base, **specs, **top}.items():
            if "distribution" in spec:
                raise SweepError(f"{where}: {key} has a distribution; allowed with method: random only "
                                 "(use values: for a grid)")
        raw_cells = _grid(where, base, specs, top, max_cells)
    else:
        raw_cells, draws = _random_cells(where, block, base, specs, top, max_cells)
    cells = _made_cells(where, raw_cells, _spec_of("seeds", base, specs, top))
    if method == "random" and len(cells) < len(raw_cells):
        samples = len(raw_cells)
        notes.append(f"{where}: samples: {samples} drew {len(cells)} distinct "
                     f"{plural(len(cells), 'cell')} ({samples - len(cells)} of the draws repeated a cell "
                     "already drawn: its parameters take few values; a cell runs once)")
    definition = {"defaults": defaults, **written}
    if given:
        definition["overrides"] = [o.text for o in given]
    warnings = _log_bound_warnings(where, base, specs, top) if method == "random" else []
    return Sweep(name, str(block.get("description", "")).strip(), cells, definition,
                 _analysis_settings(where, block.get("analysis")), notes, [o.text for o in given],
                 method, draws, warnings, tuned=tuned)


def _read_block(where: str, block, overrides) -> tuple[dict, dict, dict, list, list]:
    """(the block as written, the block with its overrides applied, the overrides' parameters,
    the parsed overrides, notes): its keys, method and parameters checked, W&B's spelling read."""
    if not isinstance(block, dict):
        raise SweepError(f"{where}: {block!r} is not a mapping; allowed: keys {', '.join(SWEEP_KEYS)}")
    block, notes = _wandb_keys(where, dict(block))
    unknown = [k for k in block if k not in SWEEP_KEYS]
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], SWEEP_KEYS)}; "
                         f"allowed: {', '.join(SWEEP_KEYS)}")
    written = dict(block)
    try:
        given = overrides_.parse(overrides)
    except overrides_.OverrideError as e:
        raise SweepError(f"{where}: {e}") from None
    block, top = _apply_overrides(where, block, given)
    method = block.get("method", "grid")
    if not isinstance(method, str) or method not in METHODS:
        raise SweepError(f"{where}: method={method!r} is not allowed{did_you_mean(method, METHODS)}; "
                         f"allowed: {', '.join(METHODS)}")
    params = block.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{where}: parameters={params!r} is not a non-empty mapping; "
                         "allowed: key: {value | values | distribution | rule}")
    return written, block, top, given, notes


def _random_cells(where: str, block: dict, base: dict, specs: dict, top: dict, max_cells: int) -> tuple[list, str]:
    """A random sweep's `samples` draws from its `random_seed`, and a hash of the order of the draws."""
    samples = block.get("samples")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise SweepError(f"{where}: samples={samples!r} is not allowed; allowed: an integer >= 1 "
                         "(required by method: random)")
    if samples > max_cells:
        raise SweepError(f"{where}: samples={samples} is over --max-cells {max_cells}; "
                         f"allowed: at most {max_cells}")
    seed = block.get("random_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SweepError(f"{where}: random_seed={seed!r} is not allowed; allowed: an integer")
    rng = random.Random(seed)
    drawn: list[str] = []
    raw_cells = [_sample(where, base, specs, top, rng, max_cells, drawn) for _ in range(samples)]
    return raw_cells, hashlib.sha256("\n".join(drawn).encode()).hexdigest()[:16]


def _made_cells(where: str, raw_cells, seeds_spec) -> list:
    """Each raw cell made once (make_cell: normalised, validated, its id), a cell met twice kept once."""
    cells, seen, memo = [], set(), {}
    for raw in raw_cells:
        try:
            cell = make_cell(raw, memo)
        except ValueError as e:
            hint = f"; {SEEDS_HINT}" if re.search(r"\bseeds=", str(e)) and "values" in seeds_spec else ""
            raise SweepError(f"{where}: {e}{hint}") from None
        if cell.id not in seen:
            seen.add(cell.id)
            cells.append(cell)
    if not cells:
        raise SweepError(f"{where}: the sweep expands to no cells; allowed: at least one")
    return cells


def _tuned_design(where: str, block: dict, base: dict, specs: dict, top: dict, max_cells: int) -> TunedDesign:
    """A tuned comparison's design (workflows/tuned_design.py): its tune: block read, the tuned keys
    refused where the sweep writes them itself (the search sets them), its groups and the cells of
    its first round made and checked."""
    try:
        spec = parse_tune(block["tune"])
    except ValueError as e:
        raise SweepError(f"{where}: {e}") from None
    if block.get("method", "grid") != "grid":
        raise SweepError(f"{where}: method={block['method']!r} with tune: is not allowed; allowed: method: grid "
                         "(a tuned sweep's settings are a grid; the search chooses the tuned values)")
    for key, param in {**base, **specs, **top}.items():
        if "distribution" in param:
            raise SweepError(f"{where}: {key} has a distribution; allowed in a tuned sweep: values (its settings "
                             "are a grid)")
    for key in spec.keys:
        name = key.split(".", 1)[1]
        written = [f"{layer} {key}" for layer, params in (("the override", top), ("the parameter", specs))
                   if key in params]
        written += [f"the variant {{name: {c.get('name')}, {name}: ...}}"
                    for c in _choices(_spec_of("optimizer", base, specs, top))
                    if isinstance(c, dict) and name in c]
        if written:
            raise SweepError(f"{where}: {written[0]} sets {key}, which tune: searches; allowed: {key} only in "
                             f"tune: (its range), or a sweep without tune: to fix it")
    seed = _choices(_spec_of("seed", base, specs, top)) if _spec_of("seed", base, specs, top) else [0]
    if len(seed) != 1 or not isinstance(seed[0], int) or isinstance(seed[0], bool):
        raise SweepError(f"{where}: seed={seed if len(seed) != 1 else seed[0]!r} in a tuned sweep is not allowed; "
                         "allowed: one integer, the base seed of the tuning cells (the search's seed; the verdict's "
                         "cells use tune.fresh_seed)")
    expand = lambda point: list(_grid(where, base, specs, {**top, **parse_params(where, point)}, max_cells))
    try:
        design = TunedDesign(spec, expand, seed[0])
    except ValueError as e:
        raise SweepError(f"{where}: {e}") from None
    if design.upper_bound() > max_cells:
        raise SweepError(f"{where}: the tuned comparison has up to {design.upper_bound()} cells ({len(design.groups)} "
                         f"variants and settings, each {spec.trials} trials and its fresh-seed cells), over "
                         f"--max-cells {max_cells}; allowed: fewer trials or settings, or raise --max-cells")
    return design


def _log_bound_warnings(where: str, *layers: dict) -> list[str]:
    """A warning per distribution with natural-log bounds whose bounds look like values
    (distributions.looks_like_values), wherever it is written: a parameter, or a field of a
    component written inline."""
    out = []

    def walk(key: str, node):
        if isinstance(node, dict):
            if "distribution" in node:
                warning = distributions.looks_like_values(key, node)
                if warning:
                    out.append(f"{where}: {warning}")
                return
            for sub, value in node.items():
                inner = key if sub in (*PARAM_KINDS, "parameters") else f"{key}.{sub}" if key in COMPONENTS else str(sub)
                walk(inner, value)
        elif isinstance(node, list):
            for value in node:
                walk(key, value)

    for layer in layers:
        for key, spec in layer.items():
            walk(key, spec)
    return list(dict.fromkeys(out))



def _spec_of(key: str, *layers) -> dict:
    for layer in reversed(layers):
        if key in layer:
            return layer[key]
    return {}


def _wandb_keys(where: str, block: dict) -> tuple[dict, list[str]]:
    """W&B's keys that mean nothing here, dropped with a note; `run_cap` is `samples` for a
    random sweep (W&B's random search runs until its cap)."""
    notes = []
    ignored = [k for k in WANDB_IGNORED if k in block]
    for key in ignored:
        block.pop(key)
    if ignored:
        named = "; the sweep's name is its key under sweeps" if "name" in ignored else ""
        notes.append(f"{where}: ignored W&B key{'s' if len(ignored) > 1 else ''} {', '.join(ignored)} "
                     f"(saddlescape runs its own engine on every cell, keeps every run and stops none early: "
                     f"no program, metric or stopping rule{named})")
    if "run_cap" in block:
        cap = block.pop("run_cap")
        if block.get("method") == "random" and "samples" not in block:
            block["samples"] = cap
            notes.append(f"{where}: W&B's run_cap={cap!r} read as samples={cap!r}")
        else:
            notes.append(f"{where}: ignored W&B key run_cap (a grid runs all its cells; random: samples)")
    return block, notes


def _apply_overrides(where: str, block: dict, given) -> tuple[dict, dict]:
    """The sweep's block with the sweep settings and deletions of the overrides applied, and the
    overriding parameters as a layer of their own (parsed): they win over everything."""
    if not given:
        return block, {}
    params = block.get("parameters")
    params = dict(params) if isinstance(params, dict) else {}
    top = {}
    for o in given:
        if o.key.startswith("tune."):
            block["tune"] = _tune_override(where, block.get("tune"), o)
        elif o.key in overrides_.SWEEP_SETTINGS:
            if o.delete or "value" not in o.value:
                raise SweepError(f"{where}: override {o.text!r}: {o.key} takes one value; allowed: {o.key}=v")
            block[o.key] = o.value["value"]
        elif o.delete:
            if o.key not in params:
                raise SweepError(f"{where}: override {o.text!r}: the sweep has no parameter {o.key}"
                                 f"{did_you_mean(o.key, params)}; allowed: one of {', '.join(map(str, params))}")
            del params[o.key]
        else:
            top[o.key] = o.value
    block["parameters"] = params
    return block, parse_params(where, top)


def _tune_override(where: str, tune, o) -> dict:
    """The tune: block with one of its settings overridden (tune.trials=8) or removed (~tune.fresh_seed)."""
    setting = o.key.split(".", 1)[1]
    if not isinstance(tune, dict):
        raise SweepError(f"{where}: override {o.text!r}: the sweep has no tune: block; allowed: tune.<setting> "
                         "overrides only for a tuned sweep")
    if setting not in TUNE_SETTINGS:
        raise SweepError(f"{where}: override {o.text!r}: tune.{setting} is not a setting of tune:"
                         f"{did_you_mean(setting, TUNE_SETTINGS)}; allowed: {', '.join(TUNE_SETTINGS)} (a tuned "
                         "range is changed in the file)")
    tune = dict(tune)
    if o.delete:
        tune.pop(setting, None)
    elif "value" not in o.value:
        raise SweepError(f"{where}: override {o.text!r}: tune.{setting} takes one value; allowed: tune.{setting}=v")
    else:
        tune[setting] = o.value["value"]
    return tune


def _analysis_settings(where: str, settings) -> dict:
    """`analysis: {reference: rmsprop}` (or a list of names or variant labels)."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise SweepError(f"{where}: analysis={settings!r} is not a mapping; allowed: keys {', '.join(ANALYSIS_KEYS)}")
    unknown = [k for k in settings if k not in ANALYSIS_KEYS]
    if unknown:
        raise SweepError(f"{where}: analysis.{unknown[0]} is not known{did_you_mean(unknown[0], ANALYSIS_KEYS)}; "
                         f"allowed: {', '.join(ANALYSIS_KEYS)}")
    reference = settings.get("reference")
    names = reference if isinstance(reference, list) else [reference]
    if reference is not None and not all(isinstance(n, str) and n for n in names):
        raise SweepError(f"{where}: analysis.reference={reference!r} is not allowed; allowed: an optimizer "
                         "name or variant label, or a list of them")
    return dict(settings)


# --- parameters ----------------------------------------------------------------------------


def parse_params(where: str, mapping: dict) -> dict[str, dict]:
    """{key: parameter} with W&B's nested `parameters:` blocks flattened onto dotted keys:
    optimizer: {parameters: {lr: {values: [...]}}} is optimizer.lr: {values: [...]}."""
    out: dict[str, dict] = {}

    def add(key, value, written):
        if key in out:
            raise SweepError(f"{where}: {key} is given twice ({written} and {key}); allowed: once")
        out[key] = parse_param(where, key, value)

    for key, value in mapping.items():
        if not isinstance(key, str):
            raise SweepError(f"{where}: parameter name {key!r} is not a string; allowed: names such as "
                             "seeds, optimizer.lr")
        if not (isinstance(value, dict) and "parameters" in value):
            add(key, value, key)
            continue
        if key not in COMPONENTS:
            raise SweepError(f"{where}: {key} has nested parameters; allowed: nested parameters (W&B's "
                             "parameters: block) only under problem and optimizer")
        nested = value["parameters"]
        if len(value) != 1 or not isinstance(nested, dict) or not nested:
            raise SweepError(f"{where}: {key}={value!r} is not allowed; allowed: {key}: {{parameters: "
                             "{name: {value: ...}, <field>: {values: [...]}, ...}} and nothing beside parameters")
        for sub, subvalue in nested.items():
            if not isinstance(sub, str) or "." in sub:
                raise SweepError(f"{where}: {key}.parameters key {sub!r} is not a field name; allowed: "
                                 f"name and the fields of the {key}")
            if isinstance(subvalue, dict) and "parameters" in subvalue:
                raise SweepError(f"{where}: {key}.{sub} has nested parameters; allowed: one level "
                                 f"({key}.parameters.<field>)")
            add(f"{key}.{sub}", subvalue, f"{key}.parameters.{sub}")
    return out


def parse_param(where: str, key, value) -> dict:
    if not isinstance(key, str):
        raise SweepError(f"{where}: parameter name {key!r} is not a string")
    if not isinstance(value, dict):
        if isinstance(value, list):
            grid = "[{name: ...}, ...]" if key in COMPONENTS else "[...]"
            raise SweepError(f"{where}: {key}={value!r} is a list; allowed: {PARAM_FORMS} (a grid is "
                             f"{key}: {{values: {grid}}})")
        if key in COMPONENTS:
            raise SweepError(f"{where}: {key}={value!r} is not a mapping; allowed: {key}: {{name: ..., ...}}, "
                             f"{{value: {{name: ...}}}} or {{values: [{{name: ...}}, ...]}} (or {key}.name: ...)")
        return {"value": value}                # a bare scalar is a constant
    kinds = [k for k in PARAM_KINDS if k in value]
    if key in COMPONENTS and not kinds:
        return {"value": value}                # a whole component written inline
    if not kinds and "min" in value and "max" in value:
        # W&B infers the distribution from the bounds' types; here it is named.
        integers = all(isinstance(value[b], int) and not isinstance(value[b], bool) for b in ("min", "max"))
        named = "int_uniform" if integers else "uniform"
        raise SweepError(f"{where}: {key}={value!r} has min and max but no distribution (W&B infers one from "
                         f"the bounds; here it is named); allowed: {key}: {{distribution: {named}, min: "
                         f"{value['min']!r}, max: {value['max']!r}}}{'' if integers else ' (log_uniform_values for a step size)'}, "
                         "with method: random, or {values: [...]} for a grid")
    if len(kinds) != 1:
        near = [f"{k!r}{did_you_mean(k, PARAM_KINDS)}" for k in value if did_you_mean(k, PARAM_KINDS)]
        raise SweepError(f"{where}: {key}={value!r} must have exactly one of value, values, distribution, rule"
                         + (f"; found {near[0]}" if near and not kinds else ""))
    kind = kinds[0]
    if kind == "distribution":
        if key in COMPONENTS or key.endswith(".name"):
            raise SweepError(f"{where}: {key} has a distribution; allowed: {key}: {{values: [...]}} "
                             "(a distribution draws numbers)")
        try:
            distributions.check(key, value)
        except distributions.DistributionError as e:
            raise SweepError(f"{where}: {e}") from None
        return value
    extra = [k for k in value if k != kind]
    if extra:
        raise SweepError(f"{where}: {key} has unknown field {extra[0]!r}; allowed: {kind} alone")
    if kind == "values" and not isinstance(value["values"], list):
        raise SweepError(f"{where}: {key}.values={value['values']!r} is not a list; allowed: a non-empty list")
    if kind == "values" and not value["values"]:
        raise SweepError(f"{where}: {key}.values=[] is an empty grid; allowed: a non-empty list")
    rules = [value] if kind == "rule" else [] if key in COMPONENTS else [
        v for v in value.get("values", []) if isinstance(v, dict)]
    for rule in rules:                       # a rule may stand alone or as one of the values
        if set(rule) != {"rule"} or not isinstance(rule["rule"], str) or rule["rule"] not in RULES.get(key, {}):
            usable = [f"{k}: {{rule: {r}}}" for k, named in RULES.items() for r in named]
            raise SweepError(f"{where}: {key}={rule!r} is not a known rule for {key}; "
                             f"allowed: {', '.join(usable)}")
    return value


def check_key(where: str, key: str):
    if key in COMPONENTS or key in RUN_SCHEMA:
        return
    head, _, field = key.partition(".")
    if head in COMPONENTS and field and "." not in field:
        return                                   # field checked against the components below
    allowed = ["problem", "problem.<parameter>", "optimizer", "optimizer.<hyperparameter>", *RUN_SCHEMA]
    raise SweepError(f"{where}: unknown parameter {key!r}{did_you_mean(key, [*COMPONENTS, *RUN_SCHEMA])}; "
                     f"allowed: {', '.join(allowed)}")


# --- grid and random expansion -----------------------------------------------------------


def _choices(spec: dict) -> list:
    """value -> [v]; values -> the list; a rule stays a {rule: name} choice, derived later."""
    return spec["values"] if "values" in spec else [spec["value"]] if "value" in spec else [spec]


def _get(where: str, registry, name):
    """The component called `name`, or one line naming it, its closest known name (one that can
    be stepped) and the rest; NeedsExtra where its package is an extra not installed."""

    try:
        return registry.get(name)
    except MissingExtra as e:
        raise NeedsExtra(f"{where}: {e}", e.extra) from None
    except (ValueError, ImportError) as e:   # ImportError: a class path whose package is missing
        message = str(e).replace("; allowed:", did_you_mean(name, _suggestable(registry)) + "; allowed:", 1)
        raise SweepError(f"{where}: {message}") from None


def _suggestable(registry) -> list[str]:
    """The registered names a did-you-mean may offer: every one but the adapted classes that a
    cell could not step (optimizers/torch_adapter.usable)."""
    out = []
    for name in registry.names():
        try:
            cls = registry.get(name).extra.get("cls")
        except (ValueError, ImportError):
            continue
        if cls is not None:
            if not usable(cls):
                continue
        out.append(name)
    return out


def _names(where: str, kind: str, written, pick) -> list:
    """The names an inline component's `name` stands for: a name, or {value: n} / {values: [...]}."""
    if isinstance(written, list):
        raise SweepError(f"{where}: {kind}.name={written!r} is a list; allowed: one name, or several as "
                         f"{kind}: {{name: {{values: {written!r}}}, ...}} or {kind}.name: {{values: [...]}}")
    if isinstance(written, dict):
        return pick(f"{kind}.name", parse_param(where, f"{kind}.name", written))
    return [written]


def _components(where, kind: str, defaults: dict, specs: dict, top: dict, pick, max_cells: int) -> list[dict]:
    """Every component (problem or optimizer) the sweep asks for. Layers, the more specific
    winning: the defaults' dotted keys, the sweep's dotted keys, what a whole component written
    inline says, then the command-line overrides. Dotted keys only reach the components that
    take them. `pick(key, spec)` returns the list of choices for one parameter."""
    registry = registry_of(kind)
    schema_of = lambda n: _get(where, registry, n).schema
    dotted = lambda layer: {k.split(".", 1)[1]: s for k, s in layer.items() if k.startswith(kind + ".")}
    low, high, over = dotted(defaults), dotted(specs), dotted(top)
    named = {"defaults": low.pop("name", None), "sweep": high.pop("name", None), "override": over.pop("name", None)}
    whole = top.get(kind, specs.get(kind, defaults.get(kind)))
    out = []
    for base in (pick(kind, whole) if whole is not None else [{}]):
        base = _inline(where, kind, base)
        names = _component_names(where, kind, base.pop("name", None), named, pick)
        # Inline fields belong to the one component they are written with; when the name is a
        # grid (or overridden), each name takes those of them it has.
        shared = named["override"] is not None or len(names) > 1
        inline = {k: parse_param(where, f"{kind}.{k}", v) for k, v in base.items()}
        for name in names:
            if name is None:
                raise SweepError(f"{where}: {kind}.name is not set; allowed: {', '.join(registry.names())}")
            schema = schema_of(name)
            fields = {k: s for layer in (low, high) for k, s in layer.items() if k in schema}
            fields.update({k: s for k, s in inline.items() if not shared or k in schema})
            fields.update({k: s for k, s in over.items() if k in schema})
            for k, spec in fields.items():
                if "distribution" in spec and k in schema:
                    _check_draw(where, f"{kind}.{k}", spec, schema[k])
                if k in schema:
                    _check_list_grid(where, f"{kind}.{k}", spec, schema[k], name)
            out.extend(_product(where, kind, name, schema, fields, pick, max_cells - len(out)))
        for key in inline if shared else ():
            if not any(key in schema_of(n) for n in names):
                raise SweepError(f"{where}: {kind}.{key} is not a parameter of {', '.join(map(str, names))}")
    _check_dotted_keys(where, kind, registry, schema_of, ((over, out), (high, out), (low, None)))
    return out


def _inline(where: str, kind: str, base) -> dict:
    """A component written inline ({name: ..., field: ...}), as a fresh mapping of its fields."""
    if not isinstance(base, dict):
        raise SweepError(f"{where}: {kind}={base!r} is not a mapping; allowed: {{name: ..., ...}}")
    bad = [k for k in base if not isinstance(k, str)]
    if bad:
        raise SweepError(f"{where}: {kind} field {bad[0]!r} is not a name; allowed: name and the "
                         f"fields of the {kind}")
    return dict(base)


def _component_names(where: str, kind: str, inline_name, named: dict, pick) -> list:
    """The names one inline component stands for: an override's, else its own, else the sweep's
    dotted name, else the defaults' ([None] where none is set)."""
    if named["override"] is not None:
        return pick(f"{kind}.name", named["override"])
    if inline_name is not None:
        return _names(where, kind, inline_name, pick)
    for layer in ("sweep", "defaults"):
        if named[layer]:
            return pick(f"{kind}.name", named[layer])
    return [None]


def _check_dotted_keys(where: str, kind: str, registry, schema_of, layers):
    """A dotted key that no component takes is a typo: in the sweep and the overrides, against its
    components (`layers`: (keys, the components made) pairs); in the defaults (None), against every
    registered one (a default may serve other sweeps). `schema_of(name)`: a component's schema."""
    for layer, made in layers:
        names = sorted({c["name"] for c in made}) if made is not None else sorted(registry.names())
        for key in layer:
            if not any(key in schema_of(n) for n in names):
                allowed = sorted({k for n in names for k in schema_of(n)})
                # The components' own parameters first; the step-size schedule's, which every
                # optimizer takes, once after them.
                own = sorted({k for n in names for k in registry.get(n).own_schema})
                shared = [k for k in allowed if k not in own]
                listed = ", ".join(own) + (f" (and the step-size schedule's: {', '.join(shared)})" if shared else "")
                raise SweepError(f"{where}: {kind}.{key} is not a parameter of {', '.join(names)}"
                                 f"{did_you_mean(key, allowed)}; allowed: {listed}")


def _check_list_grid(where: str, key: str, spec: dict, param, name):
    """A list-valued argument (torch's betas) given a grid of single numbers: `key=[0.9, 0.99]` on
    the command line, or {values: [0.9, 0.99]} in a file, is a grid of its elements, each of which
    the argument refuses; one list is {value: [...]}."""
    if param.kind not in (tuple, list) or "values" not in spec:
        return
    singles = [v for v in spec["values"] if not isinstance(v, (list, tuple, dict))]
    if not singles:
        return
    listed = ", ".join(map(repr, spec["values"]))
    raise SweepError(f"{where}: {key}={{values: [{listed}]}} is a grid of single values, but {key.split('.', 1)[1]} "
                     f"of {name} is {param.allowed}; allowed: one list as {key}: {{value: [{listed}]}} (on the "
                     f"command line {key}='{{value: [{listed}]}}': there key=[...] is a grid of its elements), "
                     "or a grid of lists, {values: [[...], [...]]}")


def _check_draw(where: str, key: str, spec: dict, param):
    try:
        distributions.check_for(key, spec, param)
    except distributions.DistributionError as e:
        raise SweepError(f"{where}: {e}") from None


def _product(where, kind, name, schema, fields: dict, pick, room: int) -> list[dict]:
    """The grid over one component's fields; a chosen {rule: name} is then derived from the rest.
    Counted before it is built: a grid over `room` cells is refused, not enumerated."""
    keys = list(fields)
    choices = [pick(f"{kind}.{k}", fields[k]) for k in keys]
    if math.prod(len(c) for c in choices) > room:
        raise SweepError(f"{where}: the grid has more than --max-cells cells ({kind} {name} alone has "
                         f"{math.prod(len(c) for c in choices)}); allowed: shrink the grid or raise --max-cells")
    out = []
    for combo in itertools.product(*choices):
        component = {"name": name, **dict(zip(keys, combo))}
        filled = {k: p.default for k, p in schema.items()} | component
        for key, value in list(component.items()):
            if isinstance(value, dict) and "rule" in value:
                try:
                    component[key] = RULES[f"{kind}.{key}"][value["rule"]](filled)
                except (KeyError, TypeError, ValueError, ArithmeticError):      # dim: false is 0: 0 ** -0.5
                    raise SweepError(f"{where}: {kind}.{key}={value!r} cannot be derived for {name}; "
                                     f"allowed: a rule whose inputs are numbers") from None
                if (kind, key, value["rule"]) == ("optimizer", "beta2", "paper") and "beta2_rule" in schema:
                    # Under a step-size schedule the rule is evaluated at every step (beta2 above
                    # is its value at step 1); under a constant step it is that one value.
                    component["beta2_rule"] = "paper"
        out.append(component)
    return out


def _run_settings(where, defaults: dict, specs: dict, top: dict) -> dict:
    """The run settings' parameters (seeds, budget, ...), the most specific layer winning."""
    run = {k: s for k, s in {**defaults, **specs, **top}.items() if k in RUN_SCHEMA}
    for key, spec in run.items():
        if "distribution" in spec:
            _check_draw(where, key, spec, RUN_SCHEMA[key])
    return run


def _grid(where, defaults: dict, specs: dict, top: dict, max_cells: int) -> Iterator[dict]:
    """The grid's points, one at a time (a grid of 10⁵ points is never a list of them); the
    problems' and optimizers' mappings are shared by the points that have them (make_cell
    validates each once)."""
    pick = lambda key, spec: _choices(spec)
    problems = _components(where, "problem", defaults, specs, top, pick, max_cells)
    optimizers = _components(where, "optimizer", defaults, specs, top, pick, max_cells)
    run_specs = _run_settings(where, defaults, specs, top)
    total = len(problems) * len(optimizers) * math.prod(len(_choices(s)) for s in run_specs.values())
    if total > max_cells:
        raise SweepError(f"{where}: the grid has {total} cells, over --max-cells {max_cells}; "
                         f"allowed: at most {max_cells} (shrink the grid or raise --max-cells)")
    runs = [dict(zip(run_specs, combo)) for combo in itertools.product(*map(_choices, run_specs.values()))]
    return ({"problem": p, "optimizer": o, **r} for p, o, r in itertools.product(problems, optimizers, runs))


def _sample(where, defaults: dict, specs: dict, top: dict, rng: random.Random, max_cells: int,
            drawn: list) -> dict:
    """One cell of a random sweep: its problem's parameters, then its optimizer's, then the run
    settings, each in the order the sweep writes them. `drawn` gets each parameter's key as it is
    drawn: the order the draws depend on (Sweep.hash)."""
    def pick(key, spec):
        drawn.append(key)
        if "distribution" not in spec:
            return [rng.choice(_choices(spec))]
        return [distributions.draw(spec, rng)]

    problem = rng.choice(_components(where, "problem", defaults, specs, top, pick, max_cells))
    optimizer = rng.choice(_components(where, "optimizer", defaults, specs, top, pick, max_cells))
    run = {k: pick(k, s)[0] for k, s in _run_settings(where, defaults, specs, top).items()}
    return {"problem": problem, "optimizer": optimizer, **run}
