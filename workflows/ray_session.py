"""Connecting to Ray: the embedded local Ray, or a cluster. Light on purpose (Ray itself, not
Ray Tune): the driver starts Ray with it while Ray Tune and the engine are imported beside it
(workflows/prefetch.py), which on this project's 2-core machine hid 1.2–2.3 s of imports behind
Ray's start.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from pathlib import Path

import ray

from .core import compat
from .core.compat import configure
from .interrupt import deferred, noticed
from .spec import SweepError

CONNECT_SECONDS = 5.0       # a TCP connection to the cluster's address, then its GCS's first answer:
ANSWER_SECONDS = 10.0       # a live head answers in milliseconds; Ray itself waits 20-40 s, and retries
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"


_warm = False


def warm_workers() -> bool:
    """Whether this process is connected to the embedded local Ray it started, whose workers import
    what a trial needs before they take one (workflows/warm_worker.py)."""
    return _warm and ray.is_initialized()


def cluster_address(address: str | None) -> str | None:
    """The cluster a run of the Ray backend connects to: `address` (--address), else RAY_ADDRESS,
    else None (an embedded local Ray; so is "local"), checked before anything is written or
    started. Raises SweepError, one line naming the address and where it came from, within
    seconds, where Ray would hang for minutes printing its own lines or end in a traceback:

    - nothing listens there (connection refused, or no answer in CONNECT_SECONDS), or what
      listens is not a Ray head (no GCS answer in ANSWER_SECONDS);
    - the cluster wants a token this client lacks or holds another one;
    - an address of another shape: the dashboard's http://HOST:8265 (what `ray job submit` takes),
      a host without its port, "auto" with no cluster on this machine.
    Ray Client addresses (ray://HOST:PORT) get the connection check; Ray Client's own answer
    about tokens comes from ray.init (`connected` turns it into one line too)."""
    given, source = (address, "--address") if address else (os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS")
    given = (given or "").strip()
    if not given or given == "local":
        return None
    where = f"{source} {given}" if source == "--address" else f"{source}={given}"
    allowed = ("allowed: a running Ray head's HOST:PORT (`ray start --head` prints it; 6379 by default), "
               "ray://HOST:PORT (Ray Client) or auto, or no address for an embedded local Ray")
    scheme, _, rest = given.partition("://") if "://" in given else ("", "", given)
    if scheme and scheme != "ray":
        hint = " (the dashboard's address, which `ray job submit` takes)" if scheme in ("http", "https") else ""
        raise SweepError(f"{where}: not a Ray cluster address{hint}; {allowed}")
    if given == "auto":
        try:
            rest = compat.canonical_address(given)
        except ConnectionError:
            raise SweepError(f"{where}: no Ray cluster was started on this machine; {allowed}") from None
    parsed = compat.parse_address(rest)
    if parsed is None or not parsed[1].isdigit():
        raise SweepError(f"{where}: not HOST:PORT; {allowed}")
    host, port = parsed[0].strip("[]"), int(parsed[1])
    # Ray connects to this machine's network address for a loopback one (unless told it is on one
    # machine only): probe what Ray will use.
    target = host if scheme else compat.localhost_ip(host)
    refused = _unreachable(target, port)
    if refused and target != host and not _unreachable(host, port):
        _check_gcs(f"{host}:{port}", where, allowed)          # a Ray head there? Else that is the one line.
        raise SweepError(
            f"{where}: the Ray head there listens on loopback only, and Ray connects to {target}:{port} for "
            f"{host}:{port}, where nothing answers ({refused}); allowed: {LOOPBACK_SWITCH} in this environment "
            "too, as for the head (README, On a Ray cluster)")
    if refused:
        raise SweepError(f"{where}: no Ray cluster answers there ({refused}); {allowed}")
    if not scheme:
        _check_gcs(f"{target}:{port}", where, allowed)
    return given


def _unreachable(host: str, port: int) -> str | None:
    """Why a TCP connection to host:port fails, or None when it opens."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return None
    except socket.timeout:
        return f"no answer in {CONNECT_SECONDS:g} s"
    except OSError as e:
        return (e.strerror or str(e)).lower()


# An HTTP/2 client's first bytes (RFC 9113, 3.4), then an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_http2(host: str, port: int) -> bool:
    """Whether the server at host:port answers as gRPC servers do (a GCS is one): with an HTTP/2
    SETTINGS frame. Ray's dashboard (HTTP/1), the usual wrong port, does not; Ray's own client
    would wait 40 s on it."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS) as connection:
            connection.sendall(HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = connection.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    return len(head) == 9 and head[3] == 4          # frame type 4: SETTINGS


def _check_gcs(address: str, where: str, allowed: str):
    """Ask the head's GCS for its cluster id, as ray.init's first step does, with a deadline (Ray's
    own client waits 40 s and retries) and Ray's C++ warnings kept off the terminal."""
    host, _, port = address.rpartition(":")
    if not _speaks_http2(host.strip("[]"), int(port)):
        raise SweepError(f"{where}: what listens there is not a Ray head (it does not speak gRPC: the dashboard's port, for one); "
                         f"{allowed}")
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:                     # another Ray: its ray.init is then the only check
        return
    with_token = ("allowed: the cluster's token, in the file RAY_AUTH_TOKEN_PATH names, in RAY_AUTH_TOKEN or in "
                  "~/.ray/auth_token, with RAY_AUTH_MODE=token (README, On a Ray cluster)")
    try:
        # What ray.init checks first. Token mode without a token must stop here: Ray's C++ client
        # would end the whole process (exit 1, nothing said) when it finds none.
        compat.check_token()
    except AuthenticationError:
        raise SweepError(f"{where}: this client uses token authentication (RAY_AUTH_MODE=token, saddlescape's "
                         f"default) but {token_situation()}; {with_token}") from None
    outcome: list = []

    def ask():
        try:
            compat.gcs_cluster_id(address)
            outcome.append(None)
        except Exception as e:              # noqa: BLE001 - reported below
            outcome.append(e)

    with _stderr_silenced():
        asking = threading.Thread(target=ask, daemon=True, name="saddlescape-gcs-check")
        asking.start()
        asking.join(ANSWER_SECONDS)
    if not outcome:
        raise SweepError(f"{where}: something listens there but no Ray head answered in {ANSWER_SECONDS:g} s; "
                         f"{allowed}")
    error = outcome[0]
    if isinstance(error, AuthenticationError):
        raise SweepError(f"{where}: the cluster wants a token and refuses this client's: {token_situation()}; "
                         f"{with_token}")
    if error is not None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SweepError(f"{where}: no Ray head answered ({first}); {allowed}")


def token_situation() -> str:
    """Which token this client would send, in words (never the token)."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode.lower() != "token":
        return f"RAY_AUTH_MODE={mode or '(unset)'} here, so none is sent"
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "it sends the one in RAY_AUTH_TOKEN, which is not the cluster's"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        found = Path(path).expanduser().is_file()
        return (f"it sends the one in RAY_AUTH_TOKEN_PATH={path}, which is not the cluster's" if found
                else f"RAY_AUTH_TOKEN_PATH={path} names no file, so it has no token")
    default = Path.home() / ".ray" / "auth_token"
    return (f"it sends the one in {default}, which is not the cluster's" if default.is_file()
            else "it has no token (no RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null for the block (Ray's C++ client writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Runtime environments whose files the nodes' runtime-env agents keep, and delete when unused.
SHIPPED = ("working_dir", "py_modules")


def shared_temp_dir(nodes: list[dict]) -> tuple[str, list[str]] | None:
    """(the session folder, the node ids) of live nodes on one machine that share a Ray temp dir
    (their sockets lie in one session folder), or None. Nodes on different machines may use the
    same path on their own disks: only nodes of one address count."""
    places: dict[tuple, list[str]] = {}
    for node in nodes:
        socket_path = node.get("RayletSocketName") or node.get("ObjectStoreSocketName") or ""
        if node.get("Alive") and socket_path:
            session = os.path.dirname(os.path.dirname(socket_path))      # <temp dir>/session_*/sockets/raylet
            places.setdefault((node.get("NodeManagerAddress"), session), []).append(node["NodeID"])
    return next(((session, ids) for (_, session), ids in places.items() if len(ids) > 1), None)


def check_temp_dirs(address: str):
    """Refuse (one line) a job that ships files (`ray job submit --working-dir`, py_modules) to a
    cluster whose nodes on one machine share a temp dir: each node's runtime-env agent deletes the
    files of jobs it did not set up, so the job's working directory vanished under it and the run
    failed later as 'cannot write the results: [Errno 2] No such file or directory' (issue 25).
    Runs that ship nothing are not affected and go on."""
    shipped = [key for key in SHIPPED if (ray.get_runtime_context().runtime_env or {}).get(key)]
    shared = shared_temp_dir(ray.nodes()) if shipped else None
    if shared is not None:
        session, ids = shared
        raise SweepError(f"the Ray cluster at {address}: {len(ids)} nodes on one machine share the temp dir "
                         f"{os.path.dirname(session)}, and each node's runtime-env agent deletes the files of jobs it "
                         f"did not set up (this job's {shipped[0]} among them); allowed: a temp dir of its own for each "
                         "node (ray start --temp-dir=DIR, another DIR for each node of a machine)")


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
            configure()                           # the environment Ray's processes start with
            address = address or os.environ.get("RAY_ADDRESS")
            address = None if address in ("", "local") else address
            common = dict(logging_level=logging.WARNING, log_to_driver=False)
            if address:
                from ray.exceptions import AuthenticationError

                try:
                    with noticed():
                        ray.init(address=address, **common)
                except (AuthenticationError, ConnectionError) as e:
                    # Checked before (cluster_address); what a Ray Client address or a head that
                    # changed meanwhile still gives: one line, not Ray's traceback.
                    cause = e
                    while cause.__cause__ is not None and not isinstance(cause, AuthenticationError):
                        cause = cause.__cause__
                    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                    raise SweepError(f"cannot connect to the Ray cluster at {address}: {first}") from None
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
            if address:
                check_temp_dirs(address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        yield min(cpus, workers) if workers else cpus
    finally:
        if started:
            with deferred():                  # a second Ctrl-C does not cut the shutdown short
                ray.shutdown()
            _warm = False
