"""What each worker of the embedded local Ray does before it is given a trial.

Ray starts one worker per core as the driver connects (workflows/ray_session.py) and imports this
module in each before the worker takes work (Ray's `preload_python_modules`): Ray Tune, torch and
the engine are imported and the compiled kernel is loaded (numba reads its cached machine code on
the first call) while the driver is still importing Ray Tune and starting the sweep, instead of
after Tune has started the trial (3.9 CPU-seconds a worker here). Where a core is idle during
Ray's start that is wall time saved (quick on 1 worker: 22.3-23.3 s against 23.6-26.4 s); where
both cores are busy it is little (README, Performance).
"""
from __future__ import annotations

import os

from . import tune_runner  # noqa: F401  (Ray Tune, torch, the trainable's modules)
from .engine import simulate
from .spec import sweeps_from_mapping


def process_started() -> float:
    """When this process was created, in seconds since boot (CLOCK_BOOTTIME, the clock of
    tune_runner's `tune_started`; field 22 of /proc/self/stat, in clock ticks:
    10 ms here). A worker Ray started ahead was created while the driver connected, before Tune
    began, however long its imports then took; one started for a trial was created after."""
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    return ticks / os.sysconf("SC_CLK_TCK")


# The smallest cells of the shapes most sweeps run (float32, the compiled block's two kinds of
# optimizer update): a few milliseconds once the kernel is loaded. Nothing is stored.
WARM_SWEEP = {"sweeps": {"warm": {"parameters": {
    "problem": {"name": "quadratic_saddle", "dim": 2},
    "optimizer": {"values": [{"name": "sgd", "lr": 0.01}, {"name": "adam", "lr": 0.01}]},
    "seeds": 4, "budget": 20}}}}


def warm():
    for cell in sweeps_from_mapping(WARM_SWEEP)["warm"].cells:
        simulate(cell)


warm()
