"""Connecting to Ray: the embedded local Ray, or a cluster. Light on purpose (Ray itself, not
Ray Tune): the driver starts Ray with it while Ray Tune and the engine are imported beside it
(workflows/prefetch.py), which on this project's 2-core machine hid 1.2–2.3 s of imports behind
Ray's start.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no internet to report usage to
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")        # our progress lines, not Tune's tables
# Ctrl-C is ours (workflows/interrupt.py): Tune's own SIGINT handler ends fit() "gracefully",
# advises Tuner.restore (wrong here: rerunning the command resumes) and stays installed after
# fit() returns, swallowing a later Ctrl-C. Without it, Ctrl-C is a KeyboardInterrupt in fit().
# Read by Tune at every fit(), so set here, before any.
os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
# Tune gives its trial actors this variable (for PyTorch Lightning) through a runtime_env, which
# keeps them off the workers Ray starts ahead (workflows/tune_runner.py: inherited_environment);
# set here, before Ray starts, the embedded Ray's workers inherit it instead.
os.environ.setdefault("PL_DISABLE_FORK", "1")
if "ray" not in sys.modules:
    # Token authentication, explicitly (Ray 2.60's default for a new local Ray; a client of an
    # existing cluster needs it said). Ray reads it once, at import: set later, the driver and
    # the cluster would disagree.
    os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray  # noqa: E402

from .interrupt import deferred, noticed  # noqa: E402


_warm = False


def warm_workers() -> bool:
    """Whether this process is connected to the embedded local Ray it started, whose workers import
    what a trial needs before they take one (workflows/warm_worker.py)."""
    return _warm and ray.is_initialized()


@contextlib.contextmanager
def connected(address: str | None, workers: int | None):
    """An existing cluster when an address is given (or RAY_ADDRESS is set), else an embedded
    local Ray on `workers` cores; one already initialised in this process is used as it is.
    A bare ray.init() is never used: it would attach to whatever cluster a stale
    current-cluster file names. Yields the number of trials to run at once; shuts down only
    what it started."""
    global _warm
    started = not ray.is_initialized()
    try:
        if started:
            address = address or os.environ.get("RAY_ADDRESS")
            common = dict(logging_level=logging.WARNING, log_to_driver=False)
            if address:
                with noticed():
                    ray.init(address=address, **common)
            else:
                # A Ctrl-C in here is not held until Ray is up (that took 27 s on a loaded machine):
                # the shutdown below stops what ray.init registered, and Ray's kernel fate-sharing
                # (PR_SET_PDEATHSIG) ends what it had started before (tests/test_interrupt.py).
                # One worker per core is started as the driver connects, and each imports what a
                # trial needs (workflows/warm_worker.py) while the driver starts Tune: the trials
                # take these workers (workflows/tune_runner.py says how) and start at once.
                with noticed():
                    ray.init(address="local", num_cpus=workers or os.cpu_count(), include_dashboard=False,
                             dashboard_host="127.0.0.1",
                             _system_config={"preload_python_modules": [f"{__package__}.warm_worker"]},
                             **common)
                _warm = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        yield min(cpus, workers) if workers else cpus
    finally:
        if started:
            with deferred():                  # a second Ctrl-C does not cut the shutdown short
                ray.shutdown()
            _warm = False
