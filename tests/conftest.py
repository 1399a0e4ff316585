import os

import pytest

# No internet here to report usage statistics to; set before anything imports Ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture(scope="session")
def local_ray():
    """One embedded local Ray for the whole test run (it takes seconds to start). The CLI uses
    an already-initialised Ray as it is, and leaves it running."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
