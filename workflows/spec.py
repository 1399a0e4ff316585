"""sweeps.yaml: read (safely), validate, expand into cells.

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
method only) or `{rule: name}` (a value derived from the rest of the cell). Keys address the
cell: `problem`, `optimizer` (whole components), `problem.<p>`, `optimizer.<h>`, and the run
settings (`seeds`, `budget`, ...). A hyperparameter that an optimizer does not take never
multiplies that optimizer's cells; one that no optimizer in the sweep takes is an error.
Every error is one line naming the sweep, the key, the value and what is allowed.
"""
from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field

import yaml

from .cell import RUN_SCHEMA, cell_id, normalize_cell
from .registry import registry as registry_of

SWEEP_KEYS = ("description", "method", "samples", "random_seed", "parameters", "analysis")
# What a sweep may tell its report (analysis.*): the optimizer variant(s) every other is compared
# against in the pairwise table (default: every pair where there are few).
ANALYSIS_KEYS = ("reference",)
METHODS = ("grid", "random")
PARAM_KINDS = ("value", "values", "distribution", "rule")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform", "q_log_uniform_values")
# Named rules for derived values, per key; no expression evaluation. A rule sees its
# component with every default filled in.
RULES = {
    # Staib et al.'s recommendation β₂ = 1 − η^(2/3): the averaging window follows the step size.
    "optimizer.beta2": {"paper": lambda optimizer: 1 - optimizer["lr"] ** (2 / 3)},
    # Isotropic noise of fixed total variance spread over d coordinates (THEORY.md §3: σ₁² ∝ 1/d).
    "problem.noise_scale": {"inverse_sqrt_dim": lambda problem: problem["dim"] ** -0.5},
}
DEFAULT_MAX_CELLS = 10_000


class SweepError(ValueError):
    """A sweeps.yaml problem, as one line."""


class SweepLoader(yaml.SafeLoader):
    """The safe loader, with YAML 1.2 floats: `1e-3` is a number, not the string YAML 1.1 makes it."""


def _no_duplicate_keys(loader, node, deep=False):
    """A key given twice would silently keep the last value: refuse it."""
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


SweepLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            lambda loader, node: _no_duplicate_keys(loader, node, deep=True))
SweepLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


@dataclass
class Sweep:
    name: str
    description: str
    cells: list[dict]            # normalised, unique, in a stable order
    definition: dict             # the sweep's block as written, with the defaults it used
    analysis: dict = field(default_factory=dict)   # the block's `analysis` settings, for the report

    @property
    def seed_steps(self) -> int:
        """Upper bound on the work: every seed of every cell running to its budget."""
        return sum(c["seeds"] * c["budget"] for c in self.cells)


def load_yaml(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=SweepLoader)   # noqa: S506 (a SafeLoader subclass)
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
    return check_file(data, str(path))


def check_file(data, where: str) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("sweeps"), dict) or not data["sweeps"]:
        raise SweepError(f"{where}: top level must be a mapping with a non-empty 'sweeps' mapping "
                         "(and optionally 'defaults')")
    unknown = [k for k in data if k not in ("defaults", "sweeps")]
    if unknown:
        raise SweepError(f"{where}: unknown top-level key {unknown[0]!r}; allowed: defaults, sweeps")
    return data


def load_sweeps(path, only: str | None = None, max_cells: int = DEFAULT_MAX_CELLS) -> dict[str, Sweep]:
    """Every sweep in the file (or just `only`), validated and expanded."""
    return expand_file(load_yaml(path), str(path), only, max_cells)


def sweeps_from_mapping(data: dict, name: str = "notebook", max_cells: int = DEFAULT_MAX_CELLS) -> dict[str, Sweep]:
    """A sweeps file given as a mapping (the Python API): a whole file ({defaults, sweeps}), or one
    sweep's block ({description, method, parameters}), which is then called `name`."""
    if isinstance(data, dict) and "sweeps" not in data and "parameters" in data:
        data = {"sweeps": {name: data}}
    return expand_file(check_file(data, "spec"), "spec", None, max_cells)


def expand_file(data: dict, where: str, only: str | None, max_cells: int) -> dict[str, Sweep]:
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SweepError(f"{where}: defaults={defaults!r} is not a mapping; allowed: key: value pairs")
    if only is not None and only not in data["sweeps"]:
        raise SweepError(f"{where}: --sweep {only!r} is not defined; allowed: {', '.join(data['sweeps'])}")
    names = [only] if only is not None else list(data["sweeps"])
    return {name: expand_sweep(name, data["sweeps"][name], defaults, max_cells) for name in names}


# --- expansion ---------------------------------------------------------------------------


def expand_sweep(name: str, block, defaults: dict, max_cells: int = DEFAULT_MAX_CELLS) -> Sweep:
    where = f"sweep {name!r}"
    if not isinstance(block, dict):
        raise SweepError(f"{where}: {block!r} is not a mapping; allowed: keys {', '.join(SWEEP_KEYS)}")
    unknown = [k for k in block if k not in SWEEP_KEYS]
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(SWEEP_KEYS)}")
    method = block.get("method", "grid")
    if method not in METHODS:
        raise SweepError(f"{where}: method={method!r} is not allowed; allowed: {', '.join(METHODS)}")
    params = block.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{where}: parameters={params!r} is not a non-empty mapping; "
                         "allowed: key: {value | values | distribution | rule}")
    base = {key: parse_param(where, key, value) for key, value in defaults.items()}
    specs = {key: parse_param(where, key, value) for key, value in params.items()}
    for key in (*base, *specs):
        check_key(where, key)

    if method == "grid":
        for key, spec in {**base, **specs}.items():
            if "distribution" in spec:
                raise SweepError(f"{where}: {key} has a distribution; allowed with method: random only "
                                 "(use values: for a grid)")
        raw_cells = _grid(where, base, specs, max_cells)
    else:
        samples = block.get("samples")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise SweepError(f"{where}: samples={samples!r} is not allowed; allowed: an integer >= 1 "
                             "(required by method: random)")
        if samples > max_cells:
            raise SweepError(f"{where}: samples={samples} is over --max-cells {max_cells}; "
                             f"allowed: at most {max_cells}")
        rng = random.Random(block.get("random_seed", 0))
        raw_cells = [_sample(where, base, specs, rng) for _ in range(samples)]

    cells, seen = [], set()
    for raw in raw_cells:
        try:
            cell = normalize_cell(raw)
        except ValueError as e:
            raise SweepError(f"{where}: {e}") from None
        key = cell_id(cell)
        if key not in seen:
            seen.add(key)
            cells.append(cell)
    if not cells:
        raise SweepError(f"{where}: the sweep expands to no cells; allowed: at least one")
    definition = {"defaults": defaults, **block}
    return Sweep(name, str(block.get("description", "")).strip(), cells, definition,
                 _analysis_settings(where, block.get("analysis")))


def _analysis_settings(where: str, settings) -> dict:
    """`analysis: {reference: rmsprop}` (or a list of names or variant labels)."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise SweepError(f"{where}: analysis={settings!r} is not a mapping; allowed: keys {', '.join(ANALYSIS_KEYS)}")
    unknown = [k for k in settings if k not in ANALYSIS_KEYS]
    if unknown:
        raise SweepError(f"{where}: analysis.{unknown[0]} is not known; allowed: {', '.join(ANALYSIS_KEYS)}")
    reference = settings.get("reference")
    names = reference if isinstance(reference, list) else [reference]
    if reference is not None and not all(isinstance(n, str) and n for n in names):
        raise SweepError(f"{where}: analysis.reference={reference!r} is not allowed; allowed: an optimizer "
                         "name or variant label, or a list of them")
    return dict(settings)


def parse_param(where: str, key, value) -> dict:
    if not isinstance(key, str):
        raise SweepError(f"{where}: parameter name {key!r} is not a string")
    if not isinstance(value, dict):
        if key in ("problem", "optimizer") or isinstance(value, list):
            raise SweepError(f"{where}: {key}={value!r} is not a parameter; allowed: "
                             "{value: v}, {values: [...]}, {distribution: ...} or {rule: ...}")
        return {"value": value}                # a bare scalar is a constant
    kinds = [k for k in PARAM_KINDS if k in value]
    if key in ("problem", "optimizer") and not kinds:
        return {"value": value}                # a whole component written inline
    if len(kinds) != 1:
        raise SweepError(f"{where}: {key}={value!r} must have exactly one of value, values, distribution, rule")
    kind = kinds[0]
    allowed_extra = {"value": set(), "values": set(), "rule": set(),
                     "distribution": {"min", "max", "q"}}[kind]
    extra = [k for k in value if k != kind and k not in allowed_extra]
    if extra:
        raise SweepError(f"{where}: {key} has unknown field {extra[0]!r}; allowed: {kind}"
                         + (", " + ", ".join(sorted(allowed_extra)) if allowed_extra else ""))
    if kind == "values" and (not isinstance(value["values"], list) or not value["values"]):
        raise SweepError(f"{where}: {key}.values={value['values']!r} is an empty grid; allowed: a non-empty list")
    rules = [value] if kind == "rule" else [] if key in ("problem", "optimizer") else [
        v for v in value.get("values", []) if isinstance(v, dict)]
    for rule in rules:                       # a rule may stand alone or as one of the values
        if set(rule) != {"rule"} or rule["rule"] not in RULES.get(key, {}):
            usable = [f"{k}: {{rule: {r}}}" for k, named in RULES.items() for r in named]
            raise SweepError(f"{where}: {key}={rule!r} is not a known rule for {key}; "
                             f"allowed: {', '.join(usable)}")
    if kind == "distribution":
        _check_distribution(where, key, value)
    return value


def _check_distribution(where, key, spec):
    dist = spec["distribution"]
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"{where}: {key}.distribution={dist!r} is not known; allowed: {', '.join(DISTRIBUTIONS)}")
    lo, hi = spec.get("min"), spec.get("max")
    for bound, v in (("min", lo), ("max", hi)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise SweepError(f"{where}: {key}.{bound}={v!r} is not a number; allowed: a number")
    if not lo < hi:
        raise SweepError(f"{where}: {key} has min={lo!r} >= max={hi!r}; allowed: min < max")
    if dist.startswith(("log", "q_log")) and lo <= 0:
        raise SweepError(f"{where}: {key}.min={lo!r} is not positive; allowed: min > 0 for {dist}")
    if dist.startswith("q_") and not (isinstance(spec.get("q"), (int, float)) and spec["q"] > 0):
        raise SweepError(f"{where}: {key}.q={spec.get('q')!r} is not allowed; allowed: a number > 0 for {dist}")


def check_key(where: str, key: str):
    if key in ("problem", "optimizer") or key in RUN_SCHEMA:
        return
    head, _, field = key.partition(".")
    if head in ("problem", "optimizer") and field and "." not in field:
        return                                   # field checked against the components below
    allowed = ", ".join(["problem", "problem.<parameter>", "optimizer", "optimizer.<hyperparameter>",
                         *RUN_SCHEMA])
    raise SweepError(f"{where}: unknown parameter {key!r}; allowed: {allowed}")


# --- grid and random expansion -----------------------------------------------------------


def _choices(spec: dict) -> list:
    """value -> [v]; values -> the list; a rule stays a {rule: name} choice, derived later."""
    return spec["values"] if "values" in spec else [spec["value"]] if "value" in spec else [spec]


def _components(where, kind: str, defaults: dict, specs: dict, pick) -> list[dict]:
    """Every component (problem or optimizer) the sweep asks for. Layers, the more specific
    winning: the defaults' dotted keys, the sweep's dotted keys, then what a whole component
    written inline says. Dotted keys only reach the components that take them.
    `pick(key, spec)` returns the list of choices for one parameter."""
    registry = registry_of(kind)
    schema_of = lambda n: registry.get(n).schema
    dotted = lambda layer: {k.split(".", 1)[1]: s for k, s in layer.items() if k.startswith(kind + ".")}
    low, high = dotted(defaults), dotted(specs)
    default_name, name_spec = low.pop("name", None), high.pop("name", None)
    whole = specs.get(kind, defaults.get(kind))
    out = []
    for base in (pick(kind, whole) if whole is not None else [{}]):
        if not isinstance(base, dict):
            raise SweepError(f"{where}: {kind}={base!r} is not a mapping; allowed: {{name: ..., ...}}")
        base = dict(base)
        base_name = base.pop("name", None)
        names = ([base_name] if base_name is not None else pick(f"{kind}.name", name_spec) if name_spec
                 else pick(f"{kind}.name", default_name) if default_name else [None])
        for name in names:
            if name is None:
                raise SweepError(f"{where}: {kind}.name is not set; allowed: {', '.join(registry.names())}")
            try:
                registry.get(name)
            except ValueError as e:
                raise SweepError(f"{where}: {e}") from None
            fields = {k: s for k, s in low.items() if k in schema_of(name)}
            fields.update({k: s for k, s in high.items() if k in schema_of(name)})
            fields.update({k: parse_param(where, f"{kind}.{k}", v) for k, v in base.items()})
            out.extend(_product(where, kind, name, fields, pick))
    # A dotted key that no component takes is a typo: in the sweep, against its components;
    # in the defaults, against every registered one (a default may serve other sweeps).
    for layer, names in ((high, sorted({c["name"] for c in out})), (low, sorted(registry.names()))):
        for field in layer:
            if not any(field in schema_of(n) for n in names):
                allowed = sorted({k for n in names for k in schema_of(n)})
                raise SweepError(f"{where}: {kind}.{field} is not a parameter of {', '.join(names)}; "
                                 f"allowed: {', '.join(allowed)}")
    return out


def _product(where, kind, name, fields: dict, pick) -> list[dict]:
    """The grid over one component's fields; a chosen {rule: name} is then derived from the rest."""
    schema = registry_of(kind).get(name).schema
    keys = list(fields)
    out = []
    for combo in itertools.product(*(pick(f"{kind}.{k}", fields[k]) for k in keys)):
        component = {"name": name, **dict(zip(keys, combo))}
        filled = {k: p.default for k, p in schema.items()} | component
        for field, value in component.items():
            if isinstance(value, dict) and "rule" in value:
                try:
                    component[field] = RULES[f"{kind}.{field}"][value["rule"]](filled)
                except (KeyError, TypeError, ValueError):
                    raise SweepError(f"{where}: {kind}.{field}={value!r} cannot be derived for {name}; "
                                     f"allowed: a rule whose inputs are numbers") from None
        out.append(component)
    return out


def _grid(where, defaults: dict, specs: dict, max_cells: int) -> list[dict]:
    pick = lambda key, spec: _choices(spec)
    problems = _components(where, "problem", defaults, specs, pick)
    optimizers = _components(where, "optimizer", defaults, specs, pick)
    run_specs = {k: s for k, s in {**defaults, **specs}.items() if k in RUN_SCHEMA}
    runs = [dict(zip(run_specs, combo)) for combo in itertools.product(*map(_choices, run_specs.values()))]
    total = len(problems) * len(optimizers) * len(runs)
    if total > max_cells:
        raise SweepError(f"{where}: the grid has {total} cells, over --max-cells {max_cells}; "
                         f"allowed: at most {max_cells} (shrink the grid or raise --max-cells)")
    return [{"problem": p, "optimizer": o, **r} for p, o, r in itertools.product(problems, optimizers, runs)]


def _sample(where, defaults: dict, specs: dict, rng: random.Random) -> dict:
    def pick(key, spec):
        if "distribution" not in spec:
            return [rng.choice(_choices(spec))]
        return [_draw(spec, rng)]

    problem = rng.choice(_components(where, "problem", defaults, specs, pick))
    optimizer = rng.choice(_components(where, "optimizer", defaults, specs, pick))
    run = {k: pick(k, s)[0] for k, s in {**defaults, **specs}.items() if k in RUN_SCHEMA}
    return {"problem": problem, "optimizer": optimizer, **run}


def _draw(spec: dict, rng: random.Random):
    dist, lo, hi = spec["distribution"], spec["min"], spec["max"]
    if dist == "uniform":
        return rng.uniform(lo, hi)
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    value = rng.uniform(lo, hi) if dist == "q_uniform" else math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return round(value / spec["q"]) * spec["q"]
