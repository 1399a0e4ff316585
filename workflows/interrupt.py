"""Ctrl-C: a sweep stops within seconds, keeps every finished cell, and says how to resume.

A terminal's Ctrl-C sends SIGINT to the driver's process group; Python turns it into
KeyboardInterrupt wherever the driver is. That is what saddlescape wants everywhere: in Ray's
start, in Tune's loop, in the engine (local backend), in consolidation and in the analysis.
Two things stand in the way, and this module holds what removes them:

- Ray Tune installs its own SIGINT handler for the length of `Tuner.fit` (ray/tune/tune.py,
  _setup_signal_catching): it ends the run "gracefully", returns normally and advises
  `Tuner.restore(...)` (wrong here: rerunning the command resumes). Its handler also stays
  installed after fit() returns, so a Ctrl-C in the analysis that follows was swallowed and the
  command exited 0. workflows/tune_runner.py sets TUNE_DISABLE_SIGINT_HANDLER=1.
- A few steps must not be cut in half: stopping a local Ray (cut short, its processes could
  outlive the driver), and writing the tables and meta.json together. `deferred()` holds a
  Ctrl-C until such a step ends (a second or two), then raises it. Starting Ray is not held
  (it took 27 s on a loaded machine): what it started is stopped or dies with the driver.

The command line then ends by SIGINT itself (`exit_by_sigint`), as shells expect.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

EXIT_CODE = 130            # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
RESUME = "interrupted: rerun the same command to resume"


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C, after keeping what it finished. `stage`: where it was (ray
    start, cells, consolidation, analysis); `result`: the SweepResult of the tables written on
    the way out (None when the interruption came before or during consolidation and the tables
    were left as they were)."""

    def __init__(self, stage: str, result=None):
        super().__init__(f"interrupted during {stage}")
        self.stage, self.result = stage, result


@contextlib.contextmanager
def deferred():
    """Hold SIGINT until the block ends, then raise KeyboardInterrupt (once, however many came).
    Outside the main thread (where Python delivers signals) this does nothing."""
    with _sigint_noted(raise_at_once=False):
        yield


@contextlib.contextmanager
def noticed():
    """A Ctrl-C in the block raises KeyboardInterrupt as usual, and is also noted: should C code
    swallow it (a Cython module's initialisation during `import ray` reports it as "Exception
    ignored" and goes on; seen in a fresh-clone CI run of test_ctrl_c_while_ray_starts), it is
    raised again when the block ends. Outside the main thread this does nothing."""
    with _sigint_noted(raise_at_once=True):
        yield


@contextlib.contextmanager
def _sigint_noted(raise_at_once: bool):
    """SIGINT noted in the block (and raised at once if asked); a noted one is raised as
    KeyboardInterrupt when the block ends normally. Nothing changes where SIGINT is ignored (a
    background job's) or cannot be handled here (outside the main thread)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        yield
        return
    caught, owner = [], os.getpid()

    def handler(signum, frame):
        # A child forked from this process before its exec (Ray starts its processes so, with a
        # preexec_fn) inherits this handler: a Ctrl-C to the group is not for it to raise there,
        # where it came out as "Exception ignored ... KeyboardInterrupt" tracebacks on the terminal.
        if os.getpid() != owner:
            return
        caught.append(signum)
        if raise_at_once:
            raise KeyboardInterrupt

    def unraisable(report):
        # Raised where Python cannot raise (an at-fork callback of the parent: Ray starts its
        # processes with a preexec_fn, and logging's lock release runs after each fork; a __del__),
        # the KeyboardInterrupt is "Exception ignored" plus a traceback on the terminal. It is
        # noted above and raised when the block ends: the traceback is only noise.
        if not (caught and isinstance(report.exc_value, KeyboardInterrupt)):
            previous_hook(report)

    previous = signal.signal(signal.SIGINT, handler)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def surfaced():
    """A Ctrl-C that lands while a C extension module initialises (scipy's, during the analysis's
    imports) comes out of the import as that module's ImportError ("initialization failed"), the
    KeyboardInterrupt only its cause: raise it as the KeyboardInterrupt it is."""
    try:
        yield
    except Exception as error:                          # noqa: BLE001 - re-raised unless interrupted
        cause = error
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise KeyboardInterrupt from error


def exit_by_sigint():
    """End this process by SIGINT, as a shell expects of a command stopped by Ctrl-C: the shell
    reports status 130, and a shell loop or script running the command stops too (one that
    exit()s with 130 instead lets `for s in a b; do saddlescape run ...; done` go on to the next
    sweep; https://www.cons.org/cracauer/sigint.html). Call it after every cleanup."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    sys.exit(EXIT_CODE)                 # where SIGINT cannot end a process (not POSIX)
