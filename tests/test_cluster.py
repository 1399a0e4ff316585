"""Cluster submission: a real Ray head on 127.0.0.1 owned by the test, the smoke sweep
submitted with `ray job submit --working-dir .`, token authentication left on."""
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from raycluster import BIN, RayNode, ray_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ray_head():
    node = RayNode()
    try:
        node.wait_for_dashboard()
        yield node
    finally:
        node.stop()


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


def test_a_client_without_the_token_is_refused(ray_head):
    env = ray_env()
    env["RAY_AUTH_MODE"] = "disabled"
    env["HOME"] = "/nonexistent"                       # no ~/.ray/auth_token either
    env.pop("RAY_AUTH_TOKEN_PATH")
    result = subprocess.run([str(BIN / "ray"), "job", "list", "--address", ray_head.dashboard_url],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "token" in (result.stdout + result.stderr).lower()
