import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import raycluster
import torch
from helpers import Driver

# No internet here to report usage statistics to; set before anything imports Ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

# Ctrl-C as a terminal's foreground job has it, whatever started the suite: a background job of a
# non-interactive shell (`make test &`, nohup, GNU time) starts with SIGINT ignored, which Python then
# leaves ignored and every driver a test starts inherits, so the tests that send Ctrl-C waited for a
# driver that never saw it. A handler (unlike SIG_IGN) is reset to the default in each child at exec.
signal.signal(signal.SIGINT, signal.default_int_handler)

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


# --- the `ray` marker ----------------------------------------------------------------------------
# A test starts or uses Ray exactly when it asks for one of these fixtures; the marker is set from
# them (a `ray` mark written by hand is taken off), and `ray_only_where_marked` fails a test that
# reaches Ray without one.
RAY_FIXTURES = {"local_ray", "ray_head", "ray_nodes", "ray_drivers"}


@pytest.hookimpl(tryfirst=True)         # before `-m` selects by the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        for node in item.listchain():
            node.own_markers[:] = [mark for mark in node.own_markers if mark.name != "ray"]
        if RAY_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.ray)
        group = shared_fixture_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    # With several test processes (`make test` runs pytest-xdist), the slow tests first: the last to
    # start is then a short one, not a minute-long cluster test that the others wait for. (Not in
    # one process, where the order only costs module fixtures made again.)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# --- several test processes (pytest-xdist, `--dist loadgroup`) ---------------------------------
# pytest < 9.2 (pyproject.toml): from 9.2 xdist's groups are silently ignored (pytest-xdist issue
# 1386: it marks a group in the test's node id, which pytest 9.2 no longer lets it change), and
# every process would make each module fixture again. tests/test_suite_groups.py checks it.
SHARED_SCOPES = {"module", "class", "package"}


def shared_fixture_group(item) -> str | None:
    """The xdist group of a test that uses a module-scoped fixture of its module: one group per
    module and fixtures, so that one process makes the fixture once and runs every test that uses
    it. Session fixtures (local_ray, plugin_dir) are made once per process instead: grouping every
    test on the shared Ray would put a fifth of the suite in one process."""
    shared = sorted(name for name, defs in item._fixtureinfo.name2fixturedefs.items()   # pytest has no public API
                    if defs and defs[-1].scope in SHARED_SCOPES)                         # for a fixture's scope
    return f"{item.module.__name__}:{'+'.join(shared)}" if shared else None


def _refuse_ray(*args, **kwargs):
    raise AssertionError("this test reaches Ray but asks for no Ray fixture (conftest.RAY_FIXTURES), so it is not "
                         "marked `ray`: ask for local_ray, ray_head, ray_nodes or ray_drivers, or run it on the "
                         "local backend")


@pytest.fixture(autouse=True)
def ray_only_where_marked(request, monkeypatch):
    """Outside the tests marked `ray`: no driver that starts Ray (helpers.Driver checks), no
    ray.init and no Ray backend in this process (both refused)."""
    marked = request.node.get_closest_marker("ray") is not None
    monkeypatch.setattr(raycluster, "RAY_ALLOWED", marked)
    if not marked and "ray" in sys.modules:
        import workflows.ray_session

        monkeypatch.setattr(sys.modules["ray"], "init", _refuse_ray)
        monkeypatch.setattr(workflows.ray_session, "connected", _refuse_ray)


# --- Ray ---------------------------------------------------------------------------------------

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


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head of its own on loopback (tests/raycluster.py), up to its dashboard, shared by the
    tests of a module: none of them stops or kills it."""
    node = raycluster.RayNode()
    try:
        node.wait_for_dashboard()
        yield node
    finally:
        node.stop()


@pytest.fixture
def ray_nodes():
    """Start Ray nodes: `ray_nodes(**RayNode's arguments)`; each is stopped after the test, the
    last started first (workers before their head)."""
    nodes = []

    def start(**kwargs) -> raycluster.RayNode:
        nodes.append(raycluster.RayNode(**kwargs))
        return nodes[-1]

    yield start
    for node in reversed(nodes):
        node.stop()


def _started_drivers():
    """`start(args, env, **kwargs)` -> helpers.Driver; every driver started is stopped after the
    test with exactly the processes of its session."""
    started = []

    def start(args, env: dict, **kwargs) -> Driver:
        started.append(Driver(args, env, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for driver in started:
            driver.cleanup()


@pytest.fixture
def ray_drivers():
    """Start `python ARGS` drivers that start or join a Ray (helpers.Driver): `ray_drivers(args, env)`."""
    yield from _started_drivers()


@pytest.fixture
def drivers():
    """Start local-backend drivers (helpers.Driver refuses one that would start Ray in a test not
    marked `ray`)."""
    yield from _started_drivers()
