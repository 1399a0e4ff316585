"""Clusters: README "On a Ray cluster" run as written (a real head on loopback, owned by the test,
token authentication on), and the addresses and tokens a user gets wrong, each one line and exit 2."""
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from raycluster import BIN, WORKER_PORTS, free_ports, free_worker_ports, kill_session, ray_env, session_members

from workflows import run_sweep
from workflows.spec import SweepError

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
SMOKE = ["-m", "workflows", "run", "sweeps.yaml", "--sweep", "smoke", "--no-analyze"]


def readme_one_machine_blocks() -> list[str]:
    """The shell blocks of README "On a Ray cluster", "One machine": start, submit, stop."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## On a Ray cluster\n"):text.index("### Several machines")]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def as_run_here(block: str, gcs: int, dashboard: int, storage: Path, temp_dir: str) -> str:
    """The README's block with this test's ports, temp dir and storage, so that it cannot meet
    another Ray on the machine (every other port of the head chosen free, as tests/raycluster.py
    does); nothing else changed."""
    ports = free_ports(7)
    workers = free_worker_ports()
    own = (f"--node-manager-port={ports[0]} --object-manager-port={ports[1]} "
           f"--dashboard-agent-listen-port={ports[2]} --dashboard-agent-grpc-port={ports[3]} "
           f"--runtime-env-agent-port={ports[4]} --metrics-export-port={ports[5]} --ray-client-server-port={ports[6]} "
           f"--min-worker-port={workers} --max-worker-port={workers + WORKER_PORTS} --temp-dir={temp_dir}")
    block = block.replace("source .venv/bin/activate", f"source {BIN}/activate")
    block = block.replace("ray start --head", f"ray start --head {own}")
    block = block.replace("6379", str(gcs)).replace("8265", str(dashboard))
    return block.replace('"$PWD/results"', f'"{storage}"')


class Shell:
    """One bash, in a session of its own, fed the README's blocks one at a time (one shell, as the
    README says: its exports carry from block to block)."""

    def __init__(self, env: dict):
        self.proc = subprocess.Popen(["bash"], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        self.step = 0

    def run(self, block: str, timeout: float = 400, meanwhile=lambda: None) -> str:
        """Run the block, calling `meanwhile()` until it ends; its output (and `status=N`, the
        status of its last command)."""
        self.step += 1
        marker = f"__block_{self.step}_done__"
        start = len(self.lines)
        self.proc.stdin.write(f"{block}\necho \"{marker} status=$?\"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.lines[start:]):
            assert self.proc.poll() is None, "bash ended:\n" + "".join(self.lines)
            assert time.monotonic() < deadline, f"block {self.step} not done in {timeout} s:\n" + "".join(self.lines)
            meanwhile()
            time.sleep(0.1)
        return "".join(self.lines[start:])

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)
        kill_session(self.proc.pid)                    # whatever of the session is left, the head included


def listening(sid: int) -> set[tuple[str, int, str]]:
    """(address, port, process) of every listening socket of the session's processes."""
    pids = set(session_members(sid))
    out = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                process = psutil.Process(conn.pid)
                name = process.name()
                if name == "python":                           # which of Ray's Python servers
                    script = next((a for a in process.cmdline()[1:] if not a.startswith("-")), "")
                    module = next((a for a in process.cmdline() if a.startswith("ray.")), "")
                    name = f"python {Path(script).name if script.endswith('.py') else module or script}"
                out.add((conn.laddr.ip, conn.laddr.port, name))
            except psutil.NoSuchProcess:
                pass
    return out


def theory_target(report: Path) -> Path:
    link = re.search(r"\]\(([^)]*theory\.md)\)", report.read_text()).group(1)
    return (report.parent / link).resolve()


@pytest.mark.slow
def test_the_readme_cluster_section_as_written_on_loopback(ray_head, tmp_path):
    """Token made before the head starts, every port of the head's processes on 127.0.0.1 while a
    job's workers are up, the smoke sweep submitted as the README does with its report's theory
    link outside Ray's temporary package folder, a client without the loopback switch told so in
    one line, and the README's stop ending every process of this cluster and no other (the
    module's other head, `ray_head`, another cluster of this user, must survive it)."""
    start, submit, stop = readme_one_machine_blocks()
    gcs, dashboard = free_ports(2)
    home, storage = tmp_path / "home", tmp_path / "results"
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")     # Unix socket paths must stay short
    env = ray_env()
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):       # the README sets them
        env.pop(key)
    env["HOME"] = str(home)                                    # the user's own ~/.ray is never touched
    # Ray's two fixed metrics ports, like every other port of this head its own (no flag sets them).
    env["AUTOSCALER_METRIC_PORT"], env["DASHBOARD_METRIC_PORT"] = map(str, free_ports(2))
    home.mkdir()
    shell = Shell(env)
    bystander = ray_head                                       # another cluster of this user: it must survive
    try:
        out = shell.run(as_run_here(start, gcs, dashboard, storage, temp_dir))
        assert "status=0" in out, out
        token = home / ".ray" / "saddlescape" / "token"
        assert token.stat().st_mode & 0o077 == 0 and len(token.read_text().strip()) == 64
        assert not (home / ".ray" / "auth_token").exists()     # the home's token for every Ray: not made

        sockets = listening(shell.proc.pid)                    # sampled while the job runs, and its workers
        out = shell.run(as_run_here(submit, gcs, dashboard, storage, temp_dir),
                        meanwhile=lambda: sockets.update(listening(shell.proc.pid)))
        assert "status=0" in out and "sweep smoke: 6/6 cells stored" in out, out
        names = {name for _, _, name in sockets}
        assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "python dashboard.py",
                "python monitor.py", "python ray.util.client.server"} <= names, sockets
        assert any(name.startswith("ray::") and "Agent" not in name for name in names), sockets    # workers
        assert {(ip, port, name) for ip, port, name in sockets if ip not in LOOPBACK} == set()
        print(f"{len(sockets)} listening sockets of the head's processes, all on loopback: {sorted(sockets)}")

        meta = json.loads((storage / "smoke" / "meta.json").read_text())
        assert meta["cells"]["done"] == 6 and meta["run"]["address"] == f"127.0.0.1:{gcs}"   # on the cluster
        assert len(pd.read_parquet(storage / "smoke" / "rows.parquet")) == 6 * 64
        report = storage / "smoke" / "analysis" / "report.md"
        theory = theory_target(report)
        assert theory == (report.parent / "theory.md").resolve()
        assert theory.read_text() == (ROOT / "docs" / "theory.md").read_text()

        # A client of this loopback head without the README's exports: Ray would connect to the
        # machine's network address for 127.0.0.1.
        plain = ray_env()
        plain.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        plain["RAY_AUTH_TOKEN_PATH"] = str(token)
        done = subprocess.run([sys.executable, *SMOKE, "--storage", str(tmp_path / "plain"), "--address",
                               f"127.0.0.1:{gcs}"], cwd=ROOT, env=plain, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"error: --address 127.0.0.1:{gcs}: the Ray head there listens on loopback only, "
                               "and Ray connects to ")
        assert line.endswith(f" for 127.0.0.1:{gcs}, where nothing answers (connection refused); allowed: "
                             "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in this environment too, as for the head "
                             "(README, On a Ray cluster)")
        assert not (tmp_path / "plain").exists()

        head = [pid for pid in session_members(shell.proc.pid) if pid != shell.proc.pid]
        out = shell.run(as_run_here(stop, gcs, dashboard, storage, temp_dir))
        assert "status=0" in out, out
        deadline = time.monotonic() + 60
        while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in head) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in head if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE] == []
        assert bystander.proc.poll() is None and session_members(bystander.proc.pid)
    finally:
        shell.close()


@pytest.mark.slow
def test_a_client_without_the_token_is_refused(ray_head, tmp_path):
    """Ray's own CLI refuses; `saddlescape run` says so in one line, exit 2, nothing written, for a
    client with no token and for one with another token; and for the dashboard's port given as the
    cluster's address (Ray's client would wait 40 s on it, and retry)."""
    env = ray_env()
    env["RAY_AUTH_MODE"] = "disabled"
    env["HOME"] = "/nonexistent"                       # no ~/.ray/auth_token either
    env.pop("RAY_AUTH_TOKEN_PATH")
    result = subprocess.run([str(BIN / "ray"), "job", "list", "--address", ray_head.dashboard_url],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "token" in (result.stdout + result.stderr).lower()

    where = f"error: --address {ray_head.gcs_address}: "
    allowed = ("allowed: the cluster's token, in the file RAY_AUTH_TOKEN_PATH names, in RAY_AUTH_TOKEN or in "
               "~/.ray/auth_token, with RAY_AUTH_MODE=token (README, On a Ray cluster)")
    missing = tmp_path / "no-such-token"
    other = tmp_path / "other-token"
    other.write_text("0" * 64)
    cases = {
        "none": ({"RAY_AUTH_TOKEN_PATH": str(missing)},
                 f"{where}this client uses token authentication (RAY_AUTH_MODE=token, saddlescape's default) but "
                 f"RAY_AUTH_TOKEN_PATH={missing} names no file, so it has no token; {allowed}"),
        "another": ({"RAY_AUTH_TOKEN_PATH": str(other)},
                    f"{where}the cluster wants a token and refuses this client's: it sends the one in "
                    f"RAY_AUTH_TOKEN_PATH={other}, which is not the cluster's; {allowed}"),
    }
    dashboard = ray_head.dashboard_url.removeprefix("http://")          # the usual wrong port
    cases["dashboard"] = ({}, f"error: --address {dashboard}: what listens there is not a Ray head (it does not speak "
                              "gRPC: the dashboard's port, for one); allowed: a running Ray head's HOST:PORT (`ray start "
                              "--head` prints it; 6379 by default), ray://HOST:PORT (Ray Client) or auto, or no address "
                              "for an embedded local Ray")
    for name, (change, line) in cases.items():
        storage = tmp_path / name
        address = dashboard if name == "dashboard" else ray_head.gcs_address
        done = subprocess.run([sys.executable, *SMOKE, "--storage", str(storage), "--address", address],
                              cwd=ROOT, env={**ray_env(), **change}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.splitlines() == [line], done.stderr
        assert not storage.exists()


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_an_address_nothing_answers_at_is_one_line_and_exit_2(tmp_path, how, ray_drivers):
    (port,) = free_ports(1)                                    # nothing listens there
    env = ray_env()
    args = [sys.executable, *SMOKE, "--storage", str(tmp_path / "s")]
    if how == "--address":
        args += ["--address", f"127.0.0.1:{port}"]
        where = f"--address 127.0.0.1:{port}"
    else:
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        where = f"RAY_ADDRESS=127.0.0.1:{port}"
    # Before: Ray's own lines for minutes (20-40 s per attempt, retried); the timeout only guards.
    done = ray_drivers(args[1:], env)
    assert done.finish(90) == 2, done.output
    assert done.stderr.splitlines() == [
        f"error: {where}: no Ray cluster answers there (connection refused); allowed: a running Ray head's "
        "HOST:PORT (`ray start --head` prints it; 6379 by default), ray://HOST:PORT (Ray Client) or auto, or no "
        "address for an embedded local Ray"]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("address, says", [
    ("http://127.0.0.1:8265", "not a Ray cluster address (the dashboard's address, which `ray job submit` takes)"),
    ("127.0.0.1", "not HOST:PORT"),
    ("ray://127.0.0.1:{port}", "no Ray cluster answers there (connection refused)"),
])
def test_run_sweep_refuses_an_address_of_another_shape_in_one_line(tmp_path, address, says):
    address = address.format(port=free_ports(1)[0])
    with pytest.raises(SweepError) as refused:
        run_sweep(str(ROOT / "sweeps.yaml"), "smoke", storage=tmp_path / "new" / "s", address=address)
    assert str(refused.value).startswith(f"--address {address}: {says}; allowed: ")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "new").exists()                    # not even the folder its lock would need


def test_a_report_written_from_a_ray_jobs_working_directory_carries_its_theory(tmp_path, monkeypatch):
    """Ray deletes a job's uploaded working directory: the report links a copy beside it instead."""
    from analysis import report

    package = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd" / "docs"
    package.mkdir(parents=True)
    (package / "theory.md").write_text((ROOT / "docs" / "theory.md").read_text())
    out = tmp_path / "results" / "smoke" / "analysis"
    out.mkdir(parents=True)
    monkeypatch.setattr(report, "THEORY_DOC", package / "theory.md")
    assert report.theory_link(out) == "theory.md"
    assert (out / "theory.md").read_text() == (ROOT / "docs" / "theory.md").read_text()
    monkeypatch.setattr(report, "THEORY_DOC", ROOT / "docs" / "theory.md")   # a checkout: a relative link
    assert (out / report.theory_link(out)).resolve() == (ROOT / "docs" / "theory.md").resolve()
