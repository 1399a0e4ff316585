"""Every use saddlescape makes of Ray's, Ray Tune's and torch's private or process-wide machinery,
in one place, with the versions it was checked against. tests/test_compat.py fails loudly when one
of them is gone or changed shape, naming this file; re-check each use against the new version,
then update CHECKED.

Nothing here runs at import. `configure()` sets the environment before Ray is imported or started
(the command line's `main` and `execute` call it); the rest are called where they are needed, and
undo what they did.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading

CHECKED = {"ray": "2.60.0", "torch": "2.13.0"}

# Set where the user has not set them.
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",     # no internet to report usage to
    "RAY_AIR_NEW_OUTPUT": "0",          # our progress lines, not Tune's tables
    # Tune gives its trial actors this variable (for PyTorch Lightning) through a runtime_env, which
    # keeps them off the workers Ray starts ahead (`trials_without_runtime_env`); set before Ray
    # starts, the embedded Ray's workers inherit it instead.
    "PL_DISABLE_FORK": "1",
    # Token authentication, explicitly (Ray 2.60's default for a new local Ray; a client of an
    # existing cluster needs it said). Ray reads it once, when imported.
    "RAY_AUTH_MODE": "token",
    # Tune's per-result JSON, CSV and TensorBoard loggers, in every trial's folder under _tune/:
    # what they would log (a block's cell ids, its engine seconds) the store holds already, and each
    # result costs the driver's loop time (issue 25: 1-2 ms a result with them, 0.9 ms without).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
# Set whatever the user set: Ctrl-C is ours (workflows/interrupt.py). Tune's own SIGINT handler ends
# fit() "gracefully", advises Tuner.restore (wrong here: rerunning the command resumes) and stays
# installed after fit() returns, swallowing a later Ctrl-C. Read by Tune at every fit().
RAY_FORCED = {"TUNE_DISABLE_SIGINT_HANDLER": "1"}


def configure():
    """The environment saddlescape's Ray runs in: RAY_ENVIRONMENT where unset, RAY_FORCED always.
    Call before Ray is imported (RAY_AUTH_MODE is read then: where Ray is imported already, the
    user's setting stands) and before it starts (its workers inherit the rest)."""
    for key, value in RAY_ENVIRONMENT.items():
        if key == "RAY_AUTH_MODE" and "ray" in sys.modules:
            continue
        os.environ.setdefault(key, value)
    os.environ.update(RAY_FORCED)


# --- Ray Tune ---------------------------------------------------------------------------------

# Loggers quieted during a sweep's fit(): "Wrote the latest version..." lines, and each failed
# attempt's full remote traceback (a failed cell is reported once, from the store's records).
TUNE_LOGGERS = {"ray.tune": logging.WARNING, "ray.tune.execution.tune_controller": logging.CRITICAL,
                "ray.tune.tune": logging.CRITICAL,
                # "Failed to fetch metrics": the per-result loggers are off (RAY_ENVIRONMENT), by design.
                "ray.tune.analysis.experiment_analysis": logging.ERROR}


@contextlib.contextmanager
def quiet_tune():
    """During a fit(): Tune's loggers at TUNE_LOGGERS' levels, and, where Ray's usage statistics
    are off, no counting of the callbacks: Tune's fit() counts them for those statistics and imports
    the mlflow, wandb and comet integrations to do so (ray.air._internal.usage.tag_callbacks, a
    private function: 1.6 s of every run's driver with mlflow installed). Both restored after."""
    from ray.air._internal import usage

    levels = {name: logging.getLogger(name).level for name in TUNE_LOGGERS}
    original = usage.tag_callbacks
    try:
        for name, level in TUNE_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        if os.environ.get("RAY_USAGE_STATS_ENABLED") == "0":
            usage.tag_callbacks = lambda callbacks: False
        yield
    finally:
        usage.tag_callbacks = original
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def trials_without_runtime_env():
    """Trial actors without a runtime_env (on the embedded local Ray only: its workers were started
    and warmed ahead, workflows/warm_worker.py). Ray's pool keys its workers by runtime_env: an actor
    with one never takes a worker started ahead; it waits for a fresh process and its imports (3-4 s
    here, every worker, every sweep). Tune gives each trial actor the environment variables it means
    to carry to other machines (PL_DISABLE_FORK, AWS credentials, Ray Train's) from two private
    tables of ray/tune/execution/class_cache.py; on the embedded Ray every worker inherits the
    driver's environment anyway. The tables are emptied for the fit() and restored after."""
    from ray.tune.execution import class_cache

    defaults, propagated = dict(class_cache.DEFAULT_ENV_VARS), set(class_cache.ENV_VARS_TO_PROPAGATE)
    class_cache.DEFAULT_ENV_VARS.clear()
    class_cache.ENV_VARS_TO_PROPAGATE.clear()
    try:
        yield
    finally:
        class_cache.DEFAULT_ENV_VARS.update(defaults)
        class_cache.ENV_VARS_TO_PROPAGATE.update(propagated)


# --- Ray's address and token checks (workflows/ray_session.py: one line before ray.init) ------

def parse_address(address: str):
    """(host, port) of a HOST:PORT address, as Ray parses it (ray._common.network_utils), or None."""
    from ray._common.network_utils import parse_address as parse

    return parse(address)


def canonical_address(address: str) -> str:
    """`auto` as Ray resolves it: the cluster started on this machine (ray._private.services);
    ConnectionError where there is none."""
    from ray._private import services

    return services.canonicalize_bootstrap_address(address)


def localhost_ip(host: str) -> str:
    """The address Ray itself connects to for `host` (localhost: this node's IP)."""
    from ray._private import services

    return services.resolve_ip_for_localhost(host)


def check_token():
    """What ray.init checks first under token authentication: AuthenticationError where this client
    has no token (ray._private.authentication; Ray's C++ client would end the process instead)."""
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled

    ensure_token_if_auth_enabled(None, create_token_if_missing=False)


def gcs_cluster_id(address: str):
    """The head's cluster id, asked of its GCS as ray.init does first (ray._raylet.GcsClient)."""
    from ray._raylet import GcsClient

    return GcsClient(address=address).cluster_id


def upload_package(path) -> str:
    """A local wheel uploaded to the running Ray's object store as a runtime_env package; its URI
    (what `ray job submit` does for a job's py_modules; private in ray._private.runtime_env)."""
    from ray._private.runtime_env.packaging import get_uri_for_package, upload_package_to_gcs

    uri = get_uri_for_package(path)
    upload_package_to_gcs(uri, path.read_bytes())
    return uri


# --- torch ------------------------------------------------------------------------------------

def usage_tag_callbacks():
    """Ray's own ray.air._internal.usage.tag_callbacks as it is now (tests check that quiet_tune puts
    it back)."""
    from ray.air._internal import usage

    return usage.tag_callbacks


def fused_adam():
    """torch.optim.Adam(fused=True)'s kernel (torch._fused_adam_, private): the whole Adam step in
    one pass over x, g, m, v (optimizers/adam.py). None where this torch has none."""
    import torch

    return getattr(torch, "_fused_adam_", None)


# --- the interpreter --------------------------------------------------------------------------

def exit_without_teardown(code: int):
    """End the process without the interpreter's teardown of its modules: with torch, Ray and the
    analysis loaded that took 1.3-1.5 s after the work was done, every time. What the teardown
    would do that matters is done first: non-daemon threads joined, the atexit handlers run (Ray's,
    multiprocessing's, the trackers': atexit._run_exitfuncs, private), the output flushed."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):          # a closed pipe (`... | head`) or stream: nothing to keep
            pass
    os._exit(code)


def private_uses() -> dict[str, bool]:
    """Each private thing used above, and whether this installation still has it as used."""
    import inspect

    import torch
    from ray.air._internal import usage
    from ray.tune.execution import class_cache

    def has(obj, name):
        return hasattr(obj, name)

    uses = {
        "ray.air._internal.usage.tag_callbacks(callbacks)":
            has(usage, "tag_callbacks") and list(inspect.signature(usage.tag_callbacks).parameters) == ["callbacks"],
        "ray.tune.execution.class_cache.DEFAULT_ENV_VARS (a dict)": isinstance(getattr(class_cache, "DEFAULT_ENV_VARS",
                                                                                       None), dict),
        "ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE (a set)":
            isinstance(getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None), set),
        "torch._fused_adam_": callable(getattr(torch, "_fused_adam_", None)),
        "atexit._run_exitfuncs": callable(getattr(atexit, "_run_exitfuncs", None)),
    }
    from ray._private import services
    from ray._private.authentication import authentication_token_setup
    from ray._raylet import GcsClient

    uses["ray._private.services.canonicalize_bootstrap_address/resolve_ip_for_localhost"] = \
        has(services, "canonicalize_bootstrap_address") and has(services, "resolve_ip_for_localhost")
    uses["ray._private.authentication...ensure_token_if_auth_enabled(_, create_token_if_missing)"] = \
        "create_token_if_missing" in inspect.signature(authentication_token_setup.ensure_token_if_auth_enabled).parameters
    uses["ray._raylet.GcsClient (a class)"] = isinstance(GcsClient, type)
    try:
        from ray._common import network_utils
        uses["ray._common.network_utils.parse_address"] = has(network_utils, "parse_address")
    except ImportError:
        uses["ray._common.network_utils.parse_address"] = False
    try:
        from ray._private.runtime_env import packaging
        uses["ray._private.runtime_env.packaging.get_uri_for_package/upload_package_to_gcs"] = \
            has(packaging, "get_uri_for_package") and has(packaging, "upload_package_to_gcs")
    except ImportError:
        uses["ray._private.runtime_env.packaging.get_uri_for_package/upload_package_to_gcs"] = False
    return uses
