"""YAML for sweep files: PyYAML's safe loader with the YAML 1.2 core schema for every scalar.

PyYAML implements YAML 1.1, whose implicit types surprise: `010` is 8 (octal), `yes`, `on` and
`off` are booleans, `1_000` is 1000, `1:20` is 80 (base 60), `2024-01-01` is a date and `1e-3`
is a string. The YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), which
every current YAML library reads by default, has four implicit types:

    null    null | Null | NULL | ~ | (empty)
    bool    true | True | TRUE | false | False | FALSE
    int     [-+]?[0-9]+ (decimal, leading zeros allowed: 010 is ten) | 0o[0-7]+ | 0x[0-9a-fA-F]+
    float   [-+]?(.[0-9]+ | [0-9]+(.[0-9]*)?)([eE][-+]?[0-9]+)? | [-+]?.inf | .nan (any of the
            three spellings of inf and nan: .inf, .Inf, .INF)

and everything else is a string (yes, no, on, off, 1_000, 1:20, 0b101, timestamps, `=`).

Merge keys (`<<: *anchor`, a YAML 1.1 type that 1.2 dropped) are kept, as most 1.2 readers
keep them: they are the usual way to share a block between sweeps. The mapping's own keys win
over merged ones; a key written twice in the same mapping is an error.

Tags are refused (only the safe loader's standard ones construct), so a sweep file never
builds a Python object.
"""
from __future__ import annotations

import re

import yaml

TAG = "tag:yaml.org,2002:"
CORE_SCHEMA = [   # (type, pattern, first characters), in resolution order: int before float
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+0123456789.")),
    ("merge", r"^(?:<<)$", ["<"]),
]


class SweepLoader(yaml.SafeLoader):
    """The safe loader, reading scalars by the YAML 1.2 core schema, refusing duplicate keys."""

    yaml_implicit_resolvers: dict = {}        # none of YAML 1.1's: only CORE_SCHEMA below


for _kind, _pattern, _first in CORE_SCHEMA:
    SweepLoader.add_implicit_resolver(TAG + _kind, re.compile(_pattern), _first)


def _construct_int(loader, node) -> int:
    """1.2 ints: decimal (010 is ten, not YAML 1.1's octal eight), 0o octal, 0x hex."""
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _construct_mapping(loader, node, deep=False):
    """A key given twice would silently keep the last value: refuse it. Merged keys (<<) are
    not counted: the mapping's own key wins over a merged one, as YAML defines."""
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == TAG + "merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:                    # an unhashable key: PyYAML's own error follows
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


SweepLoader.add_constructor(TAG + "int", _construct_int)
SweepLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            lambda loader, node: _construct_mapping(loader, node, deep=True))


def load(stream):
    """A YAML document (text or a file), by the rules above. Raises yaml.YAMLError."""
    return yaml.load(stream, Loader=SweepLoader)   # noqa: S506 (a SafeLoader subclass)


class SweepDumper(yaml.SafeDumper):
    """The safe dumper, quoting every string that either YAML 1.1 or YAML 1.2 would read as
    something else (`yes`, `0o17`, `1e3`), so that what it writes reads back the same anywhere."""


for _kind, _pattern, _first in CORE_SCHEMA[2:4]:
    SweepDumper.add_implicit_resolver(TAG + _kind, re.compile(_pattern), _first)


def dump(data) -> str:
    return yaml.dump(data, Dumper=SweepDumper, sort_keys=False, allow_unicode=True)
