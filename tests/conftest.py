import os

import pytest
import torch

# No internet here to report usage statistics to; set before anything imports Ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

# The tests' tensors are small: intra-op threads only add synchronisation, and on a shared
# 2-core machine under load that costs up to 20x (measured: an engine cell 0.8 s on one
# thread, 15-22 s on two). One thread is also what a Ray Tune trial uses.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def local_ray():
    """One embedded local Ray for the whole test run (it takes seconds to start). The CLI uses
    an already-initialised Ray as it is, and leaves it running."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
