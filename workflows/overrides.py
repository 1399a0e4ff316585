"""Command-line overrides of one sweep, as Hydra and W&B users write them.

    saddlescape run sweeps.yaml --sweep quick optimizer.lr=0.001,0.01 seeds=256

    key=v            one value               ({value: v})
    key=v1,v2,...    a grid of values        ({values: [v1, v2, ...]})
    key=[v1, v2]     the same, in YAML flow style (a list-valued argument, such as betas, takes
                     one list as key={value: [0.9, 0.99]})
    key={...}        a parameter written in YAML flow style: {distribution: uniform, min: 1, max: 5},
                     {rule: paper}, or a whole component: optimizer={name: adam, lr: 0.001}
    +key=... ++key=...   the same (Hydra's "add" spellings)
    ~key             remove the parameter from the sweep (Hydra's delete)

Hydra's sweep grammar (range(...), choice(...), interval(...), glob(...) and its other
functions), its own settings (hydra.*) and its -m/--multirun flag are refused in one line that
says what to write instead (a value such as choice(a,b) would otherwise be split at its comma).

Values are read by the sweep file's own rules (YAML 1.2 scalars: `010` is ten, `yes` a string);
quote a value with a comma in it: key='"a,b"'. Keys: any parameter of a sweep (problem.<p>,
optimizer.<h>, problem, optimizer, the run settings), the sweep settings method, samples and
random_seed, and a tuned sweep's tune.<setting> (tune.trials=6, tune.target=gap; workflows/spec.py). An override is the most specific setting there is: it wins over the sweep's own
value, inline component fields included.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from . import yaml12

SWEEP_SETTINGS = ("method", "samples", "random_seed")
FORMS = "key=value, key=v1,v2, key=[...] or key={...} (YAML flow style), or ~key"
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?$")


class OverrideError(ValueError):
    """One line: the override as given, and what is allowed."""


@dataclass(frozen=True)
class Override:
    text: str            # as given on the command line
    key: str
    value: object        # the parameter as a sweep file would write it; None when deleting
    delete: bool = False


def parse(items) -> list[Override]:
    """Each `key=value` (or `~key`) item; raises OverrideError for one that is not."""
    out, seen = [], {}
    for text in items:
        override = parse_one(text)
        if override.key in seen:
            raise OverrideError(f"override {text!r} sets {override.key} again (after {seen[override.key]!r}); "
                                "allowed: each key once (a comma list for several values)")
        seen[override.key] = text
        out.append(override)
    return out


def parse_one(text: str) -> Override:
    if not isinstance(text, str):
        raise OverrideError(f"override {text!r} is not text; allowed: {FORMS}")
    stripped = text.strip()
    if stripped.startswith("~"):
        key = stripped[1:].strip()
        if "=" in key:
            raise OverrideError(f"override {text!r}: ~ removes a key and takes no value; allowed: ~{key.split('=')[0]}")
        return Override(text, _key(text, key), None, delete=True)
    key, eq, rhs = stripped.lstrip("+").partition("=")
    if not eq:
        raise OverrideError(f"override {text!r} is not key=value; allowed: {FORMS}")
    key, rhs = _key(text, key.strip()), rhs.strip()
    if not rhs:
        raise OverrideError(f"override {text!r} has no value; allowed: {FORMS} (no spaces around '=', "
                            "or quote the whole override)")
    return Override(text, key, _value(text, rhs, key))


def _key(text: str, key: str) -> str:
    if key.split(".")[0].split("/")[0] == "hydra":
        raise OverrideError(f"override {text!r}: {key} is one of Hydra's own settings, which mean nothing here; "
                            "allowed: a parameter of the sweep, such as seeds, optimizer.lr or problem.anisotropy")
    if not KEY.match(key):
        raise OverrideError(f"override {text!r}: key {key!r} is not a parameter name; allowed: a name such "
                            "as seeds, optimizer.lr or problem.anisotropy")
    return key


# Hydra's override grammar: sweeps and functions (hydra.cc, "Extended Override syntax").
HYDRA_FUNCTION = re.compile(r"^(range|choice|interval|glob|sort|shuffle|tag|str|int|float|bool|json_str|"
                            r"extend_list)\((.*)\)$", re.S)


def _hydra(text: str, key: str, rhs: str) -> str:
    """The one line for a value in Hydra's function grammar, with what is written here instead."""
    function, inner = HYDRA_FUNCTION.match(rhs).groups()
    if function == "choice":
        instead = f"{key}={inner.replace(' ', '')} (a grid of those values)"
    elif function == "range":
        instead = _range_instead(key, inner)
    elif function == "interval":
        lo, _, hi = inner.partition(",")
        instead = (f"{key}={{distribution: uniform, min: {lo.strip()}, max: {hi.strip()}}} with method=random "
                   "samples=N (or log_uniform_values for a step size)")
    elif function == "glob":
        instead = f"the values by name, {key}=a,b"
    else:
        instead = f"the value itself, {key}=v (YAML 1.2 reads its type: 0.1 is a number, '\"0.1\"' a string)"
    return (f"override {text!r}: {function}(...) is Hydra's override grammar, which saddlescape does not "
            f"read; allowed: {instead}")


def _range_instead(key: str, inner: str) -> str:
    """Hydra's range(start, stop[, step]) is Python's: the stop is left out."""
    try:
        numbers = [float(v) for v in inner.split(",")]
        start, stop, step = (numbers + [1.0])[:3] if len(numbers) > 1 else (0.0, numbers[0], 1.0)
        values, v = [], start
        while (step > 0 and v < stop - 1e-12 * abs(stop)) or (step < 0 and v > stop + 1e-12 * abs(stop)):
            values.append(v)
            v = start + step * len(values)
            if len(values) > 20:
                break
    except (ValueError, ZeroDivisionError):
        return f"a grid, {key}=v1,v2,..."
    if not values or len(values) > 20:
        return f"a grid, {key}=v1,v2,... (Hydra's range leaves out its stop)"
    shown = ",".join(f"{v:g}" if not float(v).is_integer() else str(int(v)) for v in values)
    return f"{key}={shown} (Hydra's range leaves out its stop)"


def _value(text: str, rhs: str, key: str = "key"):
    """A scalar or a comma list of scalars, or one YAML flow node ([...] or {...})."""
    if HYDRA_FUNCTION.match(rhs):
        raise OverrideError(_hydra(text, key, rhs))
    flow = rhs.startswith(("[", "{"))
    try:
        parsed = yaml12.load(rhs if flow else f"[{rhs}]")
    except (yaml.YAMLError, RecursionError) as e:
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise OverrideError(f"override {text!r}: {rhs!r} is not valid YAML ({what}); allowed: {FORMS}") from None
    if isinstance(parsed, dict):
        return parsed
    if not isinstance(parsed, list) or not parsed:
        raise OverrideError(f"override {text!r}: {rhs!r} is not a value; allowed: {FORMS}")
    if not flow:
        nested = [v for v in parsed if isinstance(v, (list, dict))]
        if nested:
            raise OverrideError(f"override {text!r}: {nested[0]!r} is not a single value; allowed: {FORMS} "
                                "(quote a value that has ':' or brackets in it)")
    return {"value": parsed[0]} if len(parsed) == 1 and not flow else {"values": parsed}
