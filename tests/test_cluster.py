"""Clusters: a real Ray head on 127.0.0.1 owned by the test (token authentication left on), the
smoke sweep submitted with `ray job submit --working-dir .`, and the addresses and tokens a user gets
wrong, each one line and exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from raycluster import BIN, RayNode, free_ports, ray_env

from workflows import run_sweep
from workflows.spec import SweepError

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["-m", "workflows", "run", "sweeps.yaml", "--sweep", "smoke", "--no-analyze"]


@pytest.fixture
def ray_head():
    node = RayNode()
    try:
        node.wait_for_dashboard()
        yield node
    finally:
        node.stop()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_runs_the_smoke_sweep(ray_head, tmp_path):
    storage = tmp_path / "store"
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head.dashboard_url, "--working-dir", str(ROOT),
         "--", "python", "-m", "workflows", "run", "sweeps.yaml", "--sweep", "smoke",
         "--storage", str(storage), "--no-analyze"],
        env=ray_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sweep smoke: 6/6 cells stored" in result.stdout
    meta = json.loads((storage / "smoke" / "meta.json").read_text())
    assert meta["cells"]["done"] == 6 and meta["run"]["address"]      # it ran on the cluster, not a local Ray
    rows = pd.read_parquet(storage / "smoke" / "rows.parquet")
    assert len(rows) == 6 * 64 and rows.escaped.any()


@pytest.mark.ray
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


@pytest.mark.ray
@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_an_address_nothing_answers_at_is_one_line_and_exit_2(tmp_path, how):
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
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"error: {where}: no Ray cluster answers there (connection refused); allowed: a running Ray head's "
        "HOST:PORT (`ray start --head` prints it; 6379 by default), ray://HOST:PORT (Ray Client) or auto, or no "
        "address for an embedded local Ray"]
    assert not (tmp_path / "s").exists()


@pytest.mark.ray
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

