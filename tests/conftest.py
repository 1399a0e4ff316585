import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# No internet here to report usage statistics to; set before anything imports Ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

# The tests' tensors are small: intra-op threads only add synchronisation, and on a shared
# 2-core machine under load that costs up to 20x (measured: an engine cell 0.8 s on one
# thread, 15-22 s on two). One thread is also what a Ray Tune trial uses.
torch.set_num_threads(1)

# Plugins installed by tests (tests/test_plugins.py) go into one directory that is on the path
# of this process and of every Ray worker: set here, before any test starts Ray, because
# workers inherit PYTHONPATH from the process that starts Ray and read it once, at their start.
# Packages written into it later are still found (importlib rescans a directory that changed).
PLUGIN_DIR = Path(tempfile.mkdtemp(prefix="saddlescape-test-plugins-"))
sys.path.insert(0, str(PLUGIN_DIR))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PLUGIN_DIR), os.environ.get("PYTHONPATH"))))
atexit.register(shutil.rmtree, PLUGIN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def plugin_dir() -> Path:
    """A directory on sys.path and PYTHONPATH of this process and of the shared Ray's workers,
    for packages (with their dist-info) that tests install."""
    return PLUGIN_DIR


@pytest.fixture(scope="session")
def local_ray():
    """One embedded local Ray for the whole test run (it takes seconds to start). The CLI uses
    an already-initialised Ray as it is, and leaves it running."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
