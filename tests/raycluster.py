"""Ray processes a test owns: `ray start --block` in its own session, every port chosen free
and explicit (so it cannot collide with the test run's embedded Ray), stopped by SIGTERM to the
leader and then, if anything is left, SIGKILL to exactly the processes of that session. Never
by name."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# Whether the running test may start or join a Ray (set for each test by conftest.py from its
# `ray` marker; helpers.Driver refuses a Ray driver otherwise).
RAY_ALLOWED = True


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


WORKER_PORTS = 200
_worker_blocks: set[int] = set()


def free_worker_ports() -> int:
    """The first of WORKER_PORTS + 1 consecutive free ports for a node's workers, between Ray's
    default worker ports (10002-19999, the embedded Ray's) and the kernel's ephemeral range
    (from 32768, where `free_ports` and every other component's port come from), so the block
    cannot take a port another component of this or any node was given. Blocks this process
    handed out are not reused."""
    import random
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    # Under pytest-xdist each test process takes every n-th block: a block is checked free by
    # binding its ports, but a node started by another process may not have bound them yet.
    process = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    blocks = range(20000 + process * (WORKER_PORTS + 1), ephemeral_low - WORKER_PORTS - 1,
                   processes * (WORKER_PORTS + 1))
    for _ in range(200):
        start = random.choice(blocks)
        if start in _worker_blocks:
            continue
        try:
            for port in range(start, start + WORKER_PORTS + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _worker_blocks.add(start)
        return start
    raise RuntimeError("no block of free worker ports between 20000 and the ephemeral range")


def session_members(sid: int) -> list[int]:
    """Processes of session `sid` (field 6 of /proc/PID/stat). Ray's workers get their own
    process groups but stay in the session of the process that started Ray."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members


def kill_session(sid: int, timeout: float = 30):
    """SIGKILL exactly the processes of one session this test started, and wait until they are gone."""
    deadline = time.time() + timeout
    while True:
        members = session_members(sid)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not members or time.time() > deadline:
            return
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass                                     # reap our own children (the leader)
        except ChildProcessError:
            pass
        time.sleep(0.1)


def auth_token_file() -> str:
    """The token of the clusters the tests start: a file of the test run's own, so that a fresh
    machine (no ~/.ray/auth_token yet) needs nothing set up and the user's token is never touched."""
    path = Path(tempfile.gettempdir()) / f"saddlescape-test-token-{os.getpid()}"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return str(path)


def ray_env() -> dict:
    # The venv first on PATH: a submitted job's `python` must be the one with saddlescape's deps.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_TOKEN_PATH=auth_token_file())
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    return env


class RayNode:
    def __init__(self, head_address: str | None = None, num_cpus: int = 2, temp_dir: str | None = None,
                 env: dict | None = None):
        ports = free_ports(9)
        workers = free_worker_ports()
        self.port, self.dashboard_port = ports[0], ports[1]
        # Unix socket paths must stay short: a temp dir under /tmp, not pytest's long one.
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="rt", dir="/tmp")
        args = [str(BIN / "ray"), "start", "--block", f"--num-cpus={num_cpus}",
                f"--node-manager-port={ports[2]}", f"--object-manager-port={ports[3]}",
                f"--dashboard-agent-listen-port={ports[4]}", f"--dashboard-agent-grpc-port={ports[5]}",
                f"--runtime-env-agent-port={ports[6]}", f"--metrics-export-port={ports[7]}",
                f"--min-worker-port={workers}", f"--max-worker-port={workers + WORKER_PORTS}"]
        if head_address is None:
            args += ["--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                     f"--ray-client-server-port={ports[8]}", f"--temp-dir={self.temp_dir}"]
        else:
            # A worker node's temp dir is given too: without it the node takes the head's (the
            # cluster's default), and two nodes of one machine share a runtime-env agent's files.
            args += [f"--address={head_address}", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}"]
        self.log = open(Path(self.temp_dir) / f"node-{self.port}.log", "w")
        self.proc = subprocess.Popen(args, env=env or ray_env(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def wait_for_dashboard(self, timeout: float = 90):
        import urllib.error
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: "
                                   f"{Path(self.log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.dashboard_url + "/api/version", timeout=2)
                return
            except urllib.error.HTTPError:               # 401 without the token: it is up
                return
            except OSError:
                time.sleep(1)
        raise TimeoutError("the Ray dashboard did not come up")

    def stop(self, drain: float = 30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)        # the leader drains its children
            try:
                self.proc.wait(drain)
            except subprocess.TimeoutExpired:
                pass
        kill_session(self.proc.pid)                      # whatever of this node is left
        self.proc.wait()
        self.log.close()

    def kill(self):
        """A node failure: every process of the node at once, no draining."""
        kill_session(self.proc.pid)
        self.proc.wait()
