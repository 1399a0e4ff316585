"""What several test modules need, written once: reading a sweep's stored tables, the gated
sweep the fault tests interrupt, and a CLI driver in a session of its own."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import raycluster
from raycluster import kill_session, session_members

from workflows.store import Store

ROOT = Path(__file__).resolve().parent.parent
KEY = ["cell_id", "seed"]          # one row per run

# The sweep the fault tests interrupt, kill or run concurrently: 16 cells whose runs wait at the
# turnstile of tests/gate.py, so a fault strikes mid-sweep however fast the machine.
GATED_SWEEP = """
sweeps:
  r:
    parameters:
      problem: {name: gated_saddle, dim: 10}
      problem.anisotropy: {values: [1, 10, 100, 1000]}
      optimizer.name: {values: [sgd, adam]}
      optimizer.lr: {values: [0.001, 0.003]}
      seeds: 128
      budget: 20000
"""
GATED_CELLS = 16


def write_sweep(folder: Path, text: str, name: str = "sweeps.yaml") -> Path:
    """`text` (a sweeps file, indented as in a test module) as folder/name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def by_run(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order of (cell_id, seed): the backends and the number of workers store them in
    another order, never other rows."""
    return frame.sort_values(KEY).reset_index(drop=True)


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame):
    pd.testing.assert_frame_equal(by_run(a), by_run(b))


def rows(storage: Path, sweep: str = "r") -> pd.DataFrame:
    """storage/sweep/rows.parquet, by run."""
    return by_run(pd.read_parquet(Path(storage) / sweep / "rows.parquet"))


def meta(storage: Path, sweep: str = "r") -> dict:
    return json.loads((Path(storage) / sweep / "meta.json").read_text())


def parts(storage: Path, sweep: str = "r") -> set[str]:
    """The ids of the cells stored whole (a block is written within seconds of its cells:
    workflows/blocks.py)."""
    folder = Path(storage) / sweep
    return stored_cells(folder) if folder.exists() else set()


def part_stamps(storage: Path, sweep: str = "r") -> dict[str, int]:
    """Every block (and part) file of the sweep and its modification time: a later run may add
    files, never rewrite these (`stamps.items() <= part_stamps(...).items()`)."""
    return stored_files(Path(storage) / sweep)


def stored_cells(folder: Path) -> set[str]:
    """The ids of the complete cells stored in results/<sweep> `folder` (the store's index, any layout)."""
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


def starts_ray(args) -> bool:
    """Whether `python ARGS` starts or joins a Ray: a `workflows run` without `--backend local`
    (the CLI's default backend is Ray)."""
    args = list(args)
    if "workflows" not in args or "run" not in args:
        return False
    return not any(a == "--backend=local" or (a == "--backend" and b == "local") for a, b in zip(args, args[1:] + [""]))


def shell_starts_ray(script: str) -> bool:
    """Whether any command of a shell script is a `workflows run` that starts Ray."""
    return any(starts_ray(shlex.split(command)) for command in re.split(r"[;&|\n]", script))


class Driver:
    """`python ARGS` (or `bash -c SHELL`) in a session of its own, as a terminal runs a command,
    its stdout and stderr read line by line while it runs. Stopped by `cleanup`: the driver, then
    exactly the processes of its session (the Ray it started: agents and workers)."""

    def __init__(self, args, env: dict, *, shell: str | None = None, cwd: Path = ROOT):
        command = ["bash", "-c", shell] if shell else [sys.executable, *args]
        assert raycluster.RAY_ALLOWED or not (shell_starts_ray(shell) if shell else starts_ray(args)), (
            f"{command}: a driver that starts Ray, in a test not marked `ray`: start it with the ray_drivers "
            "fixture (conftest.py), or give it --backend local")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.lines: list[str] = []          # both, in the order they were read
        self.readers = [threading.Thread(target=self._read, args=(stream, own), daemon=True)
                        for stream, own in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, own: list[str]):
        for line in stream:
            own.append(line)
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, predicate, what: str = "the awaited state", timeout: float = 240.0):
        """Until `predicate()`; fails if the driver ends first or it takes `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"the driver ended before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"not {what} in {timeout} s:\n{self.output}"
            time.sleep(0.02)

    def _join(self):
        for reader in self.readers:
            reader.join(10)

    def interrupt(self) -> float:
        """SIGINT to the driver's process group, as a terminal's Ctrl-C; seconds until it exited."""
        start = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=120)
        seconds = time.monotonic() - start
        self._join()
        return seconds

    def finish(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout=timeout)
        self._join()
        return code

    def kill9(self):
        """kill -9 the driver; then, so that no orphan finishes a cell behind the test's back, every
        process of its session."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        kill_session(self.proc.pid)
        self._join()

    def leftovers(self, timeout: float = 15.0) -> list[int]:
        """The driver's session after it exited: every Ray process it started should be gone."""
        deadline = time.monotonic() + timeout
        while session_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        return session_members(self.proc.pid)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        kill_session(self.proc.pid)
        self._join()
