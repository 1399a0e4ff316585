"""The turnstile of tests/gate.py at the driver's steps of writing the tables, for a driver started
as `python -c "import tables_gate; ..."` (tests/test_kill_tables.py): each block streamed into
rows.parquet, each table put in place, and meta.json each take the next ticket of the sweep's gate
(after the cells' own) and wait while it is not admitted. A test admits the cells and k more, waits
until the (k+1)-th of these steps is held at the gate, and kills the driver there: a kill at a
chosen step of the table writing, whatever the machine's speed. Blocks of MAX_CELLS cells, so that
rows.parquet is written in several steps."""
from __future__ import annotations

import os
import time
from pathlib import Path

from gated_saddle import GATE_ENV, admitted, take_ticket

from workflows import blocks, tables
from workflows.store import Store

MAX_CELLS = 4
blocks.MAX_CELLS = MAX_CELLS


def wait_at_the_gate():
    root = Path(os.environ[GATE_ENV])
    ticket = take_ticket(root)
    while ticket >= admitted(root):
        time.sleep(0.02)


def gated(function):
    def held(*args, **kwargs):
        wait_at_the_gate()
        return function(*args, **kwargs)
    return held


tables._conform = gated(tables._conform)          # each block written to rows.parquet's temporary
tables._place = gated(tables._place)              # each table renamed into place
_write_json = Store.write_json


def write_json(self, relpath, data):
    if relpath == "meta.json":
        wait_at_the_gate()
    return _write_json(self, relpath, data)


Store.write_json = write_json
