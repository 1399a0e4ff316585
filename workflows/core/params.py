"""Declarative parameters: one schema per problem, optimizer and the run settings.

The same schema fills defaults, checks types and ranges, and tells the sweep validator which
keys a component takes (so a hyperparameter that an optimizer does not take never multiplies
its cells). Every error names the owner, the key, the value and what is allowed.

Shared ground: problems, optimizers, the registry and the sweep spec all import it, and it
imports nothing of theirs.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    default: Any
    kind: type                       # float, int, bool or str
    allowed: str                     # human-readable range, quoted in errors
    check: Callable[[Any], bool] | None = None
    doc: str = ""
    choices: tuple = ()              # for kind=str: the allowed words
    # A parameter added after cells were first stored says so: at its default it is left out of
    # the cell's hash, so every cell stored before keeps its cell_id (workflows.cell.cell_id).
    hashed_at_default: bool = True
    # Where the parameter has an effect: (key, *values) where its component's `key` takes one of
    # `values`, (key,) where `key` is on (`is_on`; a switch may name itself: trace_points = 0 is
    # no trace). Empty: always. The report leaves a parameter that applies to none of its cells out
    # of what it lists as fixed (analysis.design; condition_holds).
    applies: tuple = ()


def is_on(value) -> bool:
    """A switch's value that turns its feature on: anything but 0, false, none and null."""
    return not (value is None or value is False or value == 0 or value == "none")


def condition_holds(applies, value) -> bool:
    """Whether a Param.applies condition, (key, *values), holds where its key has `value`."""
    _, *values = applies
    return value in values if values else is_on(value)


def conditions(prefix: str, schema: dict) -> dict[str, list]:
    """{prefix + parameter: [prefix + key, *values]} for the parameters of `schema` that apply only
    under a condition (Param.applies), named as rows.parquet's columns are (`problem.df`)."""
    return {prefix + name: [prefix + p.applies[0], *p.applies[1:]] for name, p in schema.items() if p.applies}


def positive(v):      return v > 0
def non_negative(v):  return v >= 0
def unit_open(v):     return 0 <= v < 1      # beta in [0, 1)
def unit_closed(v):   return 0 <= v <= 1     # alpha in [0, 1]
def at_least(lo):     return lambda v: v >= lo


def choice(default: str, *choices: str, doc: str = "", hashed_at_default: bool = True, applies: tuple = ()) -> Param:
    return Param(default, str, "one of " + ", ".join(choices), None, doc, choices, hashed_at_default, applies)


def _coerce(owner: str, key: str, value: Any, p: Param) -> Any:
    where = f"{owner}: {key}={value!r}"
    if p.kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} is not a boolean; allowed: true or false")
    if p.kind is str:
        if isinstance(value, str) and (not p.choices or value in p.choices):
            return value
        raise ValueError(f"{where} is not allowed; allowed: {p.allowed}")
    if isinstance(value, bool):                      # bool is an int in Python: refuse it
        raise ValueError(f"{where} is a boolean; allowed: a number {p.allowed}")
    if p.kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"{where} is not an integer; allowed: an integer {p.allowed}")
        return value
    # float. Sweep files are read as YAML 1.2 (workflows/yaml12.py): `1e-3` is a number, and a
    # quoted "0.001" is a string someone meant as one, which is refused, not guessed at.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise ValueError(f"{where} is not a number; allowed: a number {p.allowed}") from None
        raise ValueError(f"{where} is a string; allowed: a number {p.allowed} (written without quotes)")
    if not isinstance(value, (int, float)):
        raise ValueError(f"{where} is not a number; allowed: a number {p.allowed}")
    try:
        value = float(value)
    except OverflowError:                            # an integer of hundreds of digits
        digits = str(value).lstrip("-")
        raise ValueError(f"{owner}: {key}={str(value)[:12]}... ({len(digits)} digits) is too large; "
                         f"allowed: a number below {sys.float_info.max:.2g}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where} is not finite; allowed: a number {p.allowed}")
    return value


def resolve(owner: str, schema: dict[str, Param], given: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, types coerced, ranges checked; keys in schema order."""
    unknown = [k for k in given if k not in schema]
    if unknown:
        raise ValueError(f"{owner}: unknown parameter {unknown[0]!r}; allowed: {', '.join(schema) or 'none'}")
    out = {}
    for key, p in schema.items():
        if key not in given or given[key] is None and p.default is None:
            out[key] = p.default
            continue
        value = _coerce(owner, key, given[key], p)
        if p.check is not None and not p.check(value):
            raise ValueError(f"{owner}: {key}={value!r} is out of range; allowed: {p.allowed}")
        out[key] = value
    return out
