"""Command-line overrides of one sweep, as Hydra and W&B users write them.

    saddlescape run sweeps.yaml --sweep quick optimizer.lr=0.001,0.01 seeds=256

    key=v            one value               ({value: v})
    key=v1,v2,...    a grid of values        ({values: [v1, v2, ...]})
    key=[v1, v2]     the same, in YAML flow style
    key={...}        a parameter written in YAML flow style: {distribution: uniform, min: 1, max: 5},
                     {rule: paper}, or a whole component: optimizer={name: adam, lr: 0.001}
    +key=... ++key=...   the same (Hydra's "add" spellings)
    ~key             remove the parameter from the sweep (Hydra's delete)

Values are read by the sweep file's own rules (YAML 1.2 scalars: `010` is ten, `yes` a string);
quote a value with a comma in it: key='"a,b"'. Keys: any parameter of a sweep (problem.<p>,
optimizer.<h>, problem, optimizer, the run settings) and the sweep settings method, samples and
random_seed. An override is the most specific setting there is: it wins over the sweep's own
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
    return Override(text, key, _value(text, rhs))


def _key(text: str, key: str) -> str:
    if not KEY.match(key):
        raise OverrideError(f"override {text!r}: key {key!r} is not a parameter name; allowed: a name such "
                            "as seeds, optimizer.lr or problem.anisotropy")
    return key


def _value(text: str, rhs: str):
    """A scalar or a comma list of scalars, or one YAML flow node ([...] or {...})."""
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
