"""Which definition wrote a results folder, and whether this one may share it.

Results are stored under the sweep's name (results/<name>/), so two files with a sweep of the
same name, or a sweep edited between runs, would share one folder without a word. meta.json
keeps the effective definition (the sweep's block, the defaults it used, the command-line
overrides) and its hash; before anything is computed or written, a run compares its own:

    same definition                          as always: only missing cells run
    changed, every stored cell still in it   an extension (a longer grid, an edited description):
                                             one note saying what changed, then as always
    changed, stored cells would drop out     refused (exit 2), saying what changed and how many
    of the tables, or none is shared         cells would drop out; --allow-changed proceeds (the
                                             cells still in the grid are kept, the others stay on
                                             disk, out of the tables), --storage elsewhere keeps both

"Stored cells" are the cells of the stored tables (cells.parquet) with results: a part file of
a cell that an earlier --allow-changed already dropped does not count again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import yaml

ALLOW_FLAG = "--allow-changed (run_sweep(..., allow_changed=True))"


def definition_hash(definition: dict) -> str:
    text = json.dumps(definition, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_definition(meta: dict, name: str) -> dict | None:
    """The definition a meta.json was written by: its `definition`, or (meta.json written before
    it kept one) its `yaml`."""
    if isinstance(meta.get("definition"), dict):
        return meta["definition"]
    from . import yaml12

    try:
        parsed = yaml12.load(meta.get("yaml") or "")
    except yaml.YAMLError:
        return None
    return parsed.get(name) if isinstance(parsed, dict) and isinstance(parsed.get(name), dict) else None


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        out = {}
        for key, sub in value.items():
            out.update(_flat(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def changes(old: dict, new: dict, limit: int = 3) -> str:
    """What differs, key by key: 'parameters.seeds: 256 -> 1024; parameters.optimizer.lr added'."""
    a, b = _flat(old), _flat(new)
    lines = []
    for key in sorted(a.keys() | b.keys()):
        if key not in a:
            lines.append(f"{key} added ({b[key]!r})")
        elif key not in b:
            lines.append(f"{key} removed (was {a[key]!r})")
        elif a[key] != b[key] and json.dumps(a[key], default=repr) != json.dumps(b[key], default=repr):
            lines.append(f"{key}: {a[key]!r} -> {b[key]!r}")
    if not lines:
        return "no key changed"
    more = f"; and {len(lines) - limit} more" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


@dataclass
class Verdict:
    kind: str                    # new, same, extension, changed (allowed), refused
    message: str = ""            # the note (or the refusal) as one line; "" when nothing to say
    kept: int = 0                # stored cells still in the grid
    dropped: int = 0             # stored cells no longer in the grid
    previous: dict = field(default_factory=dict)   # what meta.json said (for the new meta.json)


def compare(store, sweep, cell_ids, allow_changed: bool = False) -> Verdict:
    """How this sweep relates to what `store` holds (reads only)."""
    meta = store.read_json("meta.json")
    if not meta:
        return Verdict("new")
    new_hash = definition_hash(sweep.definition)
    old = stored_definition(meta, sweep.name)
    old_hash = meta.get("definition_hash") or (definition_hash(old) if old is not None else None)
    if old_hash == new_hash:
        return Verdict("same", previous=meta)
    stored = store.stored_cell_ids()
    kept, dropped = len(stored & set(cell_ids)), len(stored - set(cell_ids))
    what = changes(old, sweep.definition) if old is not None else "the stored meta.json keeps no definition"
    where = f"sweep {sweep.name!r}: {store.uri} was written by another definition ({what})"
    if not dropped:
        return Verdict("extension", f"{where}; its {kept} stored cells are all still in the grid", kept, 0, meta)
    lost = (f"none of its {dropped} stored cells is in this grid (another sweep of the same name?)" if not kept
            else f"{dropped} of its {kept + dropped} stored cells are not in this grid")
    if allow_changed:
        return Verdict("changed", f"{where}; {lost}: kept {kept}, the other {dropped} stay on disk out of the "
                                  "tables", kept, dropped, meta)
    return Verdict("refused", f"{where}; {lost} and would drop out of its tables; allowed: the same definition "
                              f"or an extension of it, --storage elsewhere to keep both, or {ALLOW_FLAG} to "
                              f"proceed (keeps the {kept} cells still in the grid)", kept, dropped, meta)
