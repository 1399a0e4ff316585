"""A turnstile for the tests that interrupt or kill a sweep: they wait for a state the product
reaches and holds, never for the machine to be slow.

A sweep on the problem `gated_saddle` (tests/gated_saddle.py) runs a cell only once the test has
admitted its ticket; the rest wait, however fast the machine. So "interrupt after the first k
stored cells" becomes: admit k, wait until k cells are stored and the next cell is waiting, then
send the signal. The sweep cannot finish before the signal lands, and a rerun completes once the
gate is opened.

    gate = Gate(tmp_path / "gate")
    driver = subprocess.Popen(..., env=gate.env(ray_env()))
    gate.admit(2); gate.wait_for_tickets(3)     # 2 cells run, the third waits at the gate
    ...; gate.open()                             # everything from now on runs
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from gated_saddle import GATE_ENV

HERE = Path(__file__).resolve().parent
ENTRY_POINTS = "[saddlescape.problems]\ngated_saddle = gated_saddle:GatedSaddle\n"
METADATA = "Metadata-Version: 2.1\nName: saddlescape-gate\nVersion: 0.1\n"
HOLD_ANALYSIS = """# Written by tests/gate.py (Gate.hold_analysis): the analysis waits at the turnstile first.
import analysis
import gated_saddle

_analyze = analysis.analyze


def analyze(*args, **kwargs):
    gated_saddle.wait_at_the_gate()
    return _analyze(*args, **kwargs)


analysis.analyze = analyze
"""


class Gate:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.plugin = self.root / "plugin"
        dist_info = self.plugin / "saddlescape_gate-0.1.dist-info"
        dist_info.mkdir(parents=True, exist_ok=True)
        (dist_info / "METADATA").write_text(METADATA)
        (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
        shutil.copy(HERE / "gated_saddle.py", self.plugin / "gated_saddle.py")
        self.reset()

    def hold_analysis(self):
        """Make the analysis of a driver started with `env` take a ticket and wait at the gate as it
        begins (a sitecustomize on the plugin's path wraps `analysis.analyze`), so that a Ctrl-C
        lands in the analysis however fast the machine."""
        (self.plugin / "sitecustomize.py").write_text(HOLD_ANALYSIS)

    def env(self, base: dict) -> dict:
        """`base` with the plugin on the path and this gate named: for a driver or a Ray node."""
        path = os.pathsep.join(filter(None, (str(self.plugin), base.get("PYTHONPATH"))))
        return dict(base, PYTHONPATH=path, **{GATE_ENV: str(self.root)})

    def reset(self, admitted: int = 0):
        """Forget every ticket (for a fresh driver: the tickets of a killed one are void)."""
        shutil.rmtree(self.root / "tickets", ignore_errors=True)
        (self.root / "tickets").mkdir()
        self.admit(admitted)

    def admit(self, count: int):
        """Let tickets 0 … count−1 through (written atomically: a cell never reads half a number)."""
        temporary = self.root / "admitted.tmp"
        temporary.write_text(str(count))
        temporary.replace(self.root / "admitted")

    def open(self):
        self.admit(10**9)

    def tickets(self) -> int:
        return len(list((self.root / "tickets").iterdir()))

    def wait_for_tickets(self, count: int, alive=lambda: True, timeout: float = 240.0):
        """Until `count` cells have reached the gate (those beyond the admitted ones are waiting)."""
        deadline = time.monotonic() + timeout
        while self.tickets() < count:
            assert alive(), "the driver ended before reaching the gate"
            assert time.monotonic() < deadline, f"{self.tickets()} of {count} tickets taken in {timeout} s"
            time.sleep(0.02)
