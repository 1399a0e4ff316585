"""The problem `gated_saddle`: quadratic_saddle under another name, whose cells wait at a turnstile
the test controls (tests/gate.py). Installed only on the path of the drivers and Ray nodes a test
starts (never in the test process, so that it does not join the plugin listings other tests check).

Each cell, as its problem is built (in the engine, on whichever process runs the cell), takes the
next ticket (an exclusive file create: 0, 1, 2, ... across every process of the run) and waits
while its ticket is at or above the number the test admitted. Without SADDLESCAPE_GATE it is
quadratic_saddle exactly, waiting for nothing: the same rows.
"""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from problems.quadratic_saddle import QuadraticSaddle

GATE_ENV = "SADDLESCAPE_GATE"


def admitted(root: Path) -> int:
    try:
        return int((root / "admitted").read_text())
    except (OSError, ValueError):        # not written yet, or being replaced: nobody admitted
        return 0


def take_ticket(root: Path) -> int:
    tickets = root / "tickets"
    for number in itertools.count():
        try:
            os.close(os.open(tickets / str(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return number
        except FileExistsError:
            continue


def wait_at_the_gate():
    root = os.environ.get(GATE_ENV)
    if not root:
        return
    ticket = take_ticket(Path(root))
    while ticket >= admitted(Path(root)):
        time.sleep(0.02)                 # a Ctrl-C interrupts the sleep; a kill ends the process


class GatedSaddle(QuadraticSaddle):
    name = "gated_saddle"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        wait_at_the_gate()
