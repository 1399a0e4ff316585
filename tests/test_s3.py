"""Results on an S3 object store: a local server (moto's, on 127.0.0.1, started and stopped by the
test), its endpoint given by the environment (AWS_ENDPOINT_URL) or in the URI's query, from the
driver and from trial workers on a second Ray node that lacks the driver's environment; and the
object-store requests a stored cell costs, counted from the server's own request log."""
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from raycluster import RayNode, free_ports, kill_session, ray_env

from workflows.cli import main
from workflows.store import Store, explicit_root

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "results"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
SWEEP = """
sweeps:
  s3:
    parameters:
      problem: {name: quadratic_saddle, dim: 2}
      optimizer: {name: sgd}
      optimizer.lr: {values: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]}
      problem.anisotropy: {values: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]}
      seeds: 4
      budget: 50
"""
N_CELLS = 96
KEY = ["cell_id", "seed"]


class S3Server:
    """moto's S3 server on 127.0.0.1 in a session of its own, its requests logged to a file."""

    def __init__(self, folder: Path):
        self.port = free_ports(1)[0]
        self.log = folder / "s3-requests.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.1)
        self.filesystem().create_dir(BUCKET)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", region="us-east-1",
                                 access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], allow_bucket_creation=True,
                                 secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def requests(self) -> list[str]:
        """The server's request lines so far: 'PUT /results/...' and so on."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text())          # werkzeug colours some lines
        return re.findall(r'"([A-Z]+ \S+) HTTP/1\.[01]"', text)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        kill_session(self.proc.pid)
        self.proc.wait()


@pytest.fixture
def s3(tmp_path, monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    server = S3Server(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweeps.yaml"
    path.write_text(textwrap.dedent(SWEEP))
    return path


def read_rows(server: S3Server, prefix: str) -> pd.DataFrame:
    fs = server.filesystem()
    with fs.open_input_file(f"{BUCKET}/{prefix}/s3/rows.parquet") as f:
        return pd.read_parquet(f).sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("local")
    assert main(["run", str(sweep_file(tmp)), "--storage", str(tmp / "r"), "--no-analyze", "--backend", "local"]) == 0
    return pd.read_parquet(tmp / "r" / "s3" / "rows.parquet").sort_values(KEY).reset_index(drop=True)


def test_the_endpoint_reaches_the_workers_in_the_uri():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1", "AWS_SECRET_ACCESS_KEY": "x"}
    assert explicit_root("s3://b/p", env) == "s3://b/p?endpoint_override=127.0.0.1%3A9000&scheme=http&region=eu-west-1"
    given = "s3://b/p?endpoint_override=10.0.0.1:9000&scheme=http"
    assert explicit_root(given, env) == given + "&region=eu-west-1"       # what the URI names stays
    assert explicit_root("s3://b/p", {}) == "s3://b/p" and explicit_root("/tmp/x", env) == "/tmp/x"
    assert "x" not in explicit_root("s3://b/p", env).split("region=")[0]     # never a credential


def test_a_uri_with_query_parameters_names_the_sweep_folder_before_them(s3):
    store = Store(f"s3://{BUCKET}/deep/prefix?endpoint_override=127.0.0.1:{s3.port}&scheme=http", "sweep")
    assert store.uri == f"s3://{BUCKET}/deep/prefix/sweep" and store.base == f"{BUCKET}/deep/prefix/sweep"
    store.write_json("meta.json", {"ok": True})
    assert store.read_json("meta.json") == {"ok": True}


@pytest.mark.parametrize("given", ["environment", "uri"])
def test_a_sweep_stored_on_s3_from_the_driver_and_rerun(s3, tmp_path, monkeypatch, reference, given):
    """Local backend, every cell written and read from the driver: the rows are a local run's, a
    rerun computes nothing, and the requests per cell stay within issue 25's goals: at most 3 to
    write a stored cell, at most 1 to check one on a rerun."""
    root = f"s3://{BUCKET}/{given}"
    if given == "environment":
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    else:
        root += f"?endpoint_override=127.0.0.1:{s3.port}&scheme=http"
    args = ["run", str(sweep_file(tmp_path)), "--storage", root, "--no-analyze", "--backend", "local"]
    before = len(s3.requests())
    assert main(args) == 0
    first = s3.requests()[before:]
    pd.testing.assert_frame_equal(read_rows(s3, given), reference)
    assert main(args) == 0
    rerun = s3.requests()[before + len(first):]
    print(f"{given}: {len(first)} requests for {N_CELLS} cells, the rerun {len(rerun)}")
    assert len(first) <= 3 * N_CELLS and len(rerun) <= N_CELLS, (first, rerun)
    assert not [r for r in rerun if r.startswith(("PUT /results/" + given + "/s3/rows", "PUT /results/" + given + "/s3/cells"))]
    pd.testing.assert_frame_equal(read_rows(s3, given), reference)


@pytest.mark.ray
@pytest.mark.slow
def test_trial_workers_on_a_second_node_reach_s3_by_the_drivers_endpoint(s3, tmp_path, reference):
    """A head with no CPU for trials and a second node whose environment has the credentials but
    not the endpoint: every cell runs there. With the endpoint in the driver's environment, and
    with it in the URI, every cell is stored (before: 100 of 100 cells failed)."""
    base = {**ray_env(), **CREDENTIALS, "AWS_REGION": "us-east-1"}
    base.pop("AWS_ENDPOINT_URL", None)
    head = RayNode(num_cpus=0, env=base)
    worker = None
    try:
        head.wait_for_dashboard()
        worker = RayNode(head_address=head.gcs_address, num_cpus=2, env=base)
        for given in ("environment", "uri"):
            root = f"s3://{BUCKET}/cluster-{given}"
            env = dict(base, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
            if given == "environment":
                env["AWS_ENDPOINT_URL"] = s3.endpoint
            else:
                root += f"?endpoint_override=127.0.0.1:{s3.port}&scheme=http"
            done = subprocess.run([sys.executable, "-m", "workflows", "run", str(sweep_file(tmp_path)), "--storage", root,
                                   "--no-analyze", "--address", head.gcs_address], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=400)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"{N_CELLS}/{N_CELLS} cells stored" in done.stdout, done.stdout
            pd.testing.assert_frame_equal(read_rows(s3, f"cluster-{given}"), reference)
    finally:
        if worker is not None:
            worker.stop()
        head.stop()
