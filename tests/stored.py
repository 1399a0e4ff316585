"""What a results folder holds, for the tests: the cells stored (the store's index, any layout)
and the files that hold them (blocks/ and, for the layout before blocks, parts/)."""
from __future__ import annotations

from pathlib import Path

from workflows.store import Store


def stored_cells(folder: Path) -> set[str]:
    """The ids of the complete cells stored in results/<sweep> `folder`."""
    folder = Path(folder)
    return set(Store(str(folder.parent), folder.name).index().ids())


def stored_files(folder: Path) -> dict[str, int]:
    """{file name: mtime in ns} of every block (and part) file: what a rerun must leave alone."""
    folder = Path(folder)
    return {f"{sub}/{p.name}": p.stat().st_mtime_ns for sub in ("blocks", "parts") if (folder / sub).is_dir()
            for p in (folder / sub).iterdir()}


def block_of(folder: Path, key: str) -> Path:
    """The file that holds the stored cell `key` (a block, or a part of the old layout)."""
    folder = Path(folder)
    return folder / Store(str(folder.parent), folder.name).index().entry(key)["block"]
