"""Drawing the report's figures: every figure job, on every core the analysis may use.

A report draws a handful of independent figures, each a few tenths of a second to seconds of
matplotlib (layout, ticks, rasterising, PNG and PDF); one after the other they were most of a
short sweep's report time (the smoke sweep: 7.9 of 10 s). Here each figure is drawn in a forked
child process, as many at once as the analysis has cores, while the analysis goes on with its
scaling fits. A figure job is a closure over the analysis's tables, which a fork inherits as they
are: nothing is pickled but its answer (a path and a caption), and a job must not depend on
anything computed after its Drawing was made. Where fork is not the platform's way (macOS,
Windows), or there is one core or one figure, the jobs run in this process, one after the other,
when the result is asked for: the same files either way.

A job is (stem, draw): draw(path) returns ((path, caption), "") or (None, why it was not drawn); a
job that raises is listed as failed with its error, never a crash of the report.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import wait
from pathlib import Path


class Drawing:
    """The figure jobs, drawn while the caller goes on (the scaling fits, here): the first children
    start at once, the others as cores free up; `result()` waits for all. A context manager: leaving
    it early (Ctrl-C, an error) terminates the children still drawing.

        with Drawing(jobs, folder, first=("figure1_",)) as drawing:
            ...                                   # other work of the analysis
            drawn, skipped = drawing.result()

    `first`: stem prefixes of the figures that take longest, started before the others (the longest
    first keeps the cores busy to the end). result(): ([(path, caption)] drawn, [(file, why not)]),
    in the order of `jobs`."""

    def __init__(self, jobs: list[tuple[str, object]], folder: Path, first: tuple[str, ...] = ()):
        self.jobs, self.folder = jobs, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.workers = min(len(jobs), _cores())
        # (a daemonic process, such as a multiprocessing pool's worker, may not start children)
        self.forked = self.workers > 1 and sys.platform == "linux" and not multiprocessing.current_process().daemon
        self.answers: list = [None] * len(jobs)
        self.pending = sorted(range(len(jobs)), key=lambda i: not jobs[i][0].startswith(first) if first else False)
        self.running: dict = {}                   # receiving end -> (job index, process)
        if self.forked:
            self._start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for receive, (_, child) in self.running.items():     # only after an interruption or an error
            child.terminate()
            child.join()
            receive.close()
        self.running = {}

    def result(self) -> tuple[list, list]:
        if not self.forked:
            self.answers = [_draw(draw, self.folder / f"{stem}.png") for stem, draw in self.jobs]
        while self.running:
            for receive in wait(list(self.running)):
                index, child = self.running.pop(receive)
                try:
                    self.answers[index] = receive.recv()
                except EOFError:                  # died without answering (killed, out of memory)
                    child.join()
                    self.answers[index] = (None, f"failed: the process drawing it died (exit code {child.exitcode})")
                receive.close()
                child.join()
            self._start()
        drawn, skipped = [], []
        for (stem, _), (path_caption, why) in zip(self.jobs, self.answers):
            if path_caption is None:
                skipped.append((f"{stem}.png", why))
            else:
                drawn.append(path_caption)
        return drawn, skipped

    def _start(self):
        context = multiprocessing.get_context("fork")
        while self.pending and len(self.running) < self.workers:
            index = self.pending.pop(0)
            stem, draw = self.jobs[index]
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(draw, self.folder / f"{stem}.png", send), daemon=True)
            child.start()
            send.close()
            self.running[receive] = (index, child)


def _draw(draw, path: Path):
    try:
        return draw(path)
    except Exception as error:                      # a figure never stops the report
        return None, f"failed: {type(error).__name__}: {error}"


def _child(draw, path: Path, send):
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's: it terminates the children
    # Fresh stream objects on the same descriptors: had another thread of the parent been writing
    # at the fork, the lock of the inherited ones would stay taken here, and a warning would hang.
    for name, fd in (("stdout", 1), ("stderr", 2)):
        try:
            setattr(sys, name, open(os.dup(fd), "w", buffering=1, closefd=True))
        except OSError:
            pass
    send.send(_draw(draw, path))
    send.close()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
