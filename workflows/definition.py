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

from . import yaml12
from .core.suggest import count

ALLOW_FLAG = "--allow-changed (run_sweep(..., allow_changed=True))"


def definition_hash(definition: dict, draws: str | None = None) -> str:
    """A short hash of the effective definition (the order of its keys aside). `draws`: a random
    sweep's hash of the order of its draws (Sweep.draws), which its cells depend on too."""
    text = json.dumps(definition, sort_keys=True, default=repr, separators=(",", ":"))
    if draws is not None:
        text += f"\ndraws:{draws}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_definition(meta: dict, name: str) -> dict | None:
    """The definition a meta.json was written by: its `definition`, or (meta.json written before
    it kept one) its `yaml`."""
    if isinstance(meta.get("definition"), dict):
        return meta["definition"]

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
    """What differs, key by key: 'parameters.seeds: 256 -> 1024; parameters.optimizer.lr added';
    where no key changed, how their order did ('the order of keys: a, b -> b, a')."""
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
        moved = _moved(old, new)
        return f"the order of keys: {moved}" if moved else "no key changed"
    more = f"; and {len(lines) - limit} more" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def _moved(old, new, prefix: str = "") -> str:
    """The first mapping whose keys are the same in another order: 'parameters: a, b -> b, a'."""
    if isinstance(old, dict) and isinstance(new, dict):
        if set(old) == set(new) and list(old) != list(new):
            return f"{prefix or '(top)'}: {', '.join(map(str, old))} -> {', '.join(map(str, new))}"
        for key in old:
            if key in new:
                found = _moved(old[key], new[key], f"{prefix}.{key}" if prefix else str(key))
                if found:
                    return found
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = _moved(a, b, f"{prefix}[{i}]")
            if found:
                return found
    return ""


@dataclass
class Verdict:
    kind: str                    # new, same, extension, changed (allowed), refused
    message: str = ""            # the note (or the refusal) as one line; "" when nothing to say
    kept: int = 0                # stored cells still in the grid
    dropped: int = 0             # stored cells no longer in the grid
    previous: dict = field(default_factory=dict)   # what meta.json said (for the new meta.json)


def compare(store, sweep, cell_ids, allow_changed: bool = False, python: bool = False) -> Verdict:
    """How this sweep relates to what `store` holds (reads only). `python`: the refusal speaks to
    a caller of run_sweep (storage=, allow_changed=True) instead of the command line's."""
    meta = store.read_json("meta.json")
    if not meta:
        return Verdict("new")
    random_ = getattr(sweep, "method", "grid") == "random"
    new_hash = sweep.hash
    old = _stored_in_order(meta, sweep.name) if random_ else None
    old = old if old is not None else stored_definition(meta, sweep.name)
    old_hash = meta.get("definition_hash") or (definition_hash(old) if old is not None else None)
    stored = None
    # The same definition: by its hash, or (a random sweep stored before its hash saw the order of
    # its draws) by the hash of its keys and values alone. Then every stored cell is in the grid,
    # unless what draws or expands the cells changed: the stored cells say.
    if old_hash in (new_hash, definition_hash(sweep.definition)):
        stored = store.stored_cell_ids()
        if not stored - set(cell_ids):
            return Verdict("same", previous=meta)
        moved = _moved(old, sweep.definition) if random_ and old is not None else ""
        what = (f"the same keys and values, but its draws differ: a random sweep draws its parameters in the "
                f"order they are written{f' ({moved})' if moved else ''}, and its cells were drawn in another "
                "order or by another saddlescape"
                if random_ else "the same definition, but the cells it expands to differ (another saddlescape?)")
    else:
        what = changes(old, sweep.definition) if old is not None else "the stored meta.json keeps no definition"
        if random_ and "the order of keys" in what:
            what += " (a random sweep draws its parameters in the order they are written)"
    stored = store.stored_cell_ids() if stored is None else stored
    kept, dropped = len(stored & set(cell_ids)), len(stored - set(cell_ids))
    where = f"sweep {sweep.name!r}: {store.uri} was written by another definition ({what})"
    if not dropped:
        still = "its stored cell is" if kept == 1 else f"its {kept} stored cells are all"
        return Verdict("extension", f"{where}; {still} still in the grid", kept, 0, meta)
    # Another sweep of the same name is the likely cause only where no key or override explains it.
    other = "" if (random_ and "order" in what) or "overrides" in what else " (another sweep of the same name?)"
    lost = ((f"none of its {dropped} stored cells is" if dropped > 1 else "its stored cell is not")
            + f" in this grid{other}" if not kept
            else f"{dropped} of its {kept + dropped} stored cells {'is' if dropped == 1 else 'are'} not in this grid")
    if allow_changed:
        return Verdict("changed", f"{where}; {lost}: kept {kept}, the other {dropped} stay on disk out of the "
                                  "tables", kept, dropped, meta)
    keeps = f"keeps the {count(kept, 'cell')} still in the grid" if kept else "the tables then hold only the new cells"
    if python:
        unnamed = (" (every spec given to run_sweep without a name is called 'notebook')"
                   if getattr(sweep, "unnamed", False) else "")
        allowed = (f"the same definition or an extension of it; another name to keep both, "
                   f"run_sweep(spec, '<name>'){unnamed}, or another storage=; or allow_changed=True to "
                   f"proceed ({keeps})")
    else:
        allowed = (f"the same definition or an extension of it, --storage elsewhere to keep both, or {ALLOW_FLAG} "
                   f"to proceed ({keeps})")
    return Verdict("refused", f"{where}; {lost} and would drop out of its tables; allowed: {allowed}",
                   kept, dropped, meta)


def _stored_in_order(meta: dict, name: str) -> dict | None:
    """The stored definition with its keys in their written order: meta.json's `definition` is
    written with sorted keys, its `yaml` keeps the order."""

    try:
        parsed = yaml12.load(meta.get("yaml") or "")
    except yaml.YAMLError:
        return None
    return parsed.get(name) if isinstance(parsed, dict) and isinstance(parsed.get(name), dict) else None
