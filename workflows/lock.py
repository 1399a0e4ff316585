"""One run at a time in a sweep's folder: a second run waits for the first, then computes only what
the first did not store.

Two runs writing one folder at once (two terminals, a shell loop sent to the background, two
cluster jobs) each planned the cells missing when it started, so both computed the cells they
shared, and each wrote the tables of its own grid: the last to finish dropped the other's cells
from rows.parquet and cells.parquet. A run therefore holds the folder from its plan to its last
table (`saddlescape run` also through its analysis, `SweepResult.analyze` through the report).

Local paths (NFS included, where the server supports locks): an advisory lock (flock) on
`<root>/<sweep>/.lock`. The kernel drops it when its holder ends, however it ends (kill -9, a
lost node), so a dead run never blocks the next. The holder writes who it is into the file (pid,
host, command, since when) and removes the file when it is done; a folder the run created only
for its lock is removed too, so a refused run leaves nothing behind.

A second run waits rather than refuses: it prints one note naming the run it waits for, and
plans once that run has ended, so it computes only what is still missing (nothing, for the
same grid) and its definition is checked against the tables the first one wrote (a grid that
would drop the first's cells is then refused as any changed definition is: README, Resume).
Launching a few runs of one sweep (or a grid and its extension) therefore just queues them, and
nothing is computed twice. Ctrl-C while waiting ends the run with nothing written (exit 130).

Object-store URIs (s3://, gs://, ...) are not locked: pyarrow's filesystems offer neither a lock
nor an atomic create-if-absent, and a lock built from plain reads and writes would let two runs
both believe they hold it. There, run one `run` of a sweep at a time (README, Results).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Callable

LOCK_NAME = ".lock"


class _Held:
    """This process's hold on one folder: threads of the process queue on `turn` (flock does not
    tell them apart), and nested holds in one thread (the CLI's run around `execute`) share one."""

    def __init__(self):
        self.turn = threading.RLock()
        self.depth = 0
        self.fd: int | None = None
        self.created: list[str] = []


_holds: dict[str, _Held] = {}
_holds_guard = threading.Lock()


def this_command() -> str:
    """How this process was started, as a waiting run names it."""
    argv = sys.argv or [""]
    if argv[0].endswith(os.path.join("workflows", "__main__.py")):
        name = "python -m workflows"
    else:
        name = Path(argv[0]).name or "python"
    command = " ".join([name, *argv[1:]])
    return command if len(command) <= 160 else command[:159] + "…"


@contextlib.contextmanager
def sweep_lock(store, waiting: Callable[[str], None], command: str | None = None):
    """Hold `store`'s folder (a workflows.store.Store) for the block; on an object store, do nothing
    (module docstring). `waiting(line)` is told once, in one line, when another run holds it and
    this one waits. `command`: how this run names itself to a run that waits for it.
    KeyboardInterrupt while waiting propagates, with nothing written."""
    if not store.local:
        yield
        return
    folder = store.base
    path = os.path.join(folder, LOCK_NAME)
    with _holds_guard:
        held = _holds.setdefault(path, _Held())
    if not held.turn.acquire(blocking=False):
        waiting(f"{store.uri} is in use by another run in this process; waiting for it to finish")
        held.turn.acquire()
    try:
        if held.depth == 0:
            held.fd, held.created = _acquire(path, folder, store.uri, waiting, command or this_command())
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                _release(path, held.fd, held.created)
                held.fd = None
    finally:
        held.turn.release()


def _acquire(path: str, folder: str, uri: str, waiting, command: str) -> tuple[int, list[str]]:
    noted, created = False, []
    while True:
        created = _missing_folders(folder) or created
        os.makedirs(folder, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:           # the last holder removed the folder it had made: again
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not noted:
                    waiting(f"{uri} is in use by {_holder(path)}; waiting for it to finish, then this run "
                            "computes what is still missing (Ctrl-C stops waiting, nothing written)")
                    noted = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                _write_holder(fd, command)
                return fd, created
        except BaseException:
            os.close(fd)
            raise
        # The holder removed the file as it let go, and this run locked the removed one: a run that
        # came meanwhile may hold a new file at the path. Lock what is there now.
        os.close(fd)


def _release(path: str, fd: int, created: list[str]):
    # Remove the file while still holding it: a run waiting on it then finds it gone and locks
    # the file at the path afresh (_acquire), so two runs never hold two files of one path.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)
    for folder in created:                  # deepest first; only if nothing else was written there
        try:
            os.rmdir(folder)
        except OSError:
            break


def _missing_folders(folder: str) -> list[str]:
    missing = []
    current = Path(folder)
    while not current.exists() and current != current.parent:
        missing.append(str(current))
        current = current.parent
    return missing


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _write_holder(fd: int, command: str):
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    data = json.dumps({"pid": os.getpid(), "host": platform.node(), "command": command, "since": since})
    os.ftruncate(fd, 0)
    os.pwrite(fd, data.encode(), 0)


def _holder(path: str) -> str:
    """Who holds the lock, as its holder wrote it (it may not have yet)."""
    try:
        info = json.loads(Path(path).read_text())
        return (f"another run (pid {info['pid']} on {info['host']}, since {info['since']}: "
                f"{info['command']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another run"
