"""Whether a sweep's report is up to date: a cheap fingerprint of what the analysis reads, kept
next to the report (analysis/inputs.json), so that a rerun with nothing new does not redo an
analysis of tens of seconds whose inputs did not change.

The fingerprint: the cells table (each cell's id, status, counts and engine time: the part files
behind it are written once per cell, so the same cells table means the same rows and traces),
what meta.json tells the report about the sweep (name, description, definition, `analysis`
settings), the analysis's options (dpi, figure formats, a reference given to it), and the code that draws it (the
analysis package's source, saddlescape's version and the versions of the libraries it fits and
draws with). Not the run's times or host: a rerun that computed nothing leaves the report
describing the run that computed the cells.

The file is removed before an analysis starts and written after it finished, so an interrupted
analysis never counts as up to date; a report marked out of date (workflows/store.py's banner)
is not either.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import pandas as pd

from .store import STALE_BANNER

FILE = "analysis/inputs.json"
REPORT = "analysis/report.md"
# What analysis/ fits and draws with: a new version may change a number or a figure.
LIBRARIES = ("pandas", "numpy", "scipy", "lifelines", "matplotlib", "seaborn", "pyarrow")
# `reference`: the comparison's reference given to the analysis (None: the sweep's own).
DEFAULT_OPTIONS = {"dpi": 150, "formats": ["png", "pdf"], "reference": None}


def fingerprint(store, options: dict | None = None) -> dict | None:
    """What the analysis of `store` would read, as a small mapping; None without tables."""
    try:
        cells = store.read_table("cells.parquet")
    except (FileNotFoundError, OSError):
        return None
    meta = store.read_json("meta.json") or {}
    tables = hashlib.sha256(pd.util.hash_pandas_object(cells.astype(str), index=False).to_numpy().tobytes())
    tables.update(",".join(map(str, cells.columns)).encode())
    about = {k: meta.get(k) for k in ("sweep", "description", "yaml", "analysis")}
    return {"tables": tables.hexdigest()[:16],
            "sweep": hashlib.sha256(json.dumps(about, sort_keys=True, default=str).encode()).hexdigest()[:16],
            "options": {**DEFAULT_OPTIONS, **(options or {})}, "code": code_version()}


def code_version() -> str:
    """A hash of the analysis package's source and the versions of saddlescape and LIBRARIES."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent / "analysis"
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    for name in ("saddlescape", *LIBRARIES):
        try:
            digest.update(f"{name}={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{name}=none".encode())
    return digest.hexdigest()[:16]


def up_to_date(store, options: dict | None = None) -> bool:
    """Whether report.md exists, is not marked out of date, and was written from these inputs."""
    recorded = store.read_json(FILE)
    if not recorded:
        return False
    try:
        with store.fs.open_input_stream(store.path(REPORT)) as f:
            if f.read(len(STALE_BANNER.encode())).decode("utf-8", errors="replace") == STALE_BANNER:
                return False
    except (FileNotFoundError, OSError):
        return False
    return recorded == fingerprint(store, options)


def forget(store):
    """Before an analysis: until it finishes, the report counts as out of date."""
    store.delete(FILE)


def record(store, options: dict | None = None):
    """After an analysis: the inputs it was written from."""
    current = fingerprint(store, options)
    if current is not None:
        store.write_json(FILE, current)
