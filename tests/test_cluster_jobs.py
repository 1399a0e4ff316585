"""`ray job submit` to a 2-node loopback cluster (issue 25): with each node's own temp dir the sweep
runs; with both nodes in one temp dir the job is refused in one line (each node's runtime-env agent
deletes the job files it did not set up: the job's working directory vanished and the run failed
later, as `cannot write the results: [Errno 2]`)."""
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from raycluster import BIN, RayNode, ray_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


# Ray's answer while the head's job agent has not registered yet (its dashboard is up before it:
# seen at load 10 in a fresh-clone CI run); the job is not created, so submitting again is safe.
NO_AGENT_YET = "No available agent to submit job"


def submit(head: RayNode, storage: Path, sweep: str = "smoke", agent_timeout: float = 180) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + agent_timeout
    while True:
        done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", head.dashboard_url, "--working-dir",
                               str(ROOT), "--", "python", "-m", "workflows", "run", "sweeps.yaml", "--sweep", sweep,
                               "--storage", str(storage), "--no-analyze"], cwd=ROOT, env=ray_env(),
                              capture_output=True, text=True, timeout=600, check=False)
        if NO_AGENT_YET not in done.stderr + done.stdout or time.monotonic() > deadline:
            return done
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.parametrize("temp_dirs", ["own", "shared"])
def test_a_job_on_two_nodes(tmp_path, temp_dirs):
    head = RayNode(num_cpus=1)
    worker = None
    try:
        head.wait_for_dashboard()
        worker = RayNode(head_address=head.gcs_address, num_cpus=1,
                         temp_dir=head.temp_dir if temp_dirs == "shared" else None)
        done = submit(head, tmp_path / "results")
        out = done.stdout + done.stderr
        if temp_dirs == "own":
            assert done.returncode == 0 and "sweep smoke: 6/6 cells stored" in out, out
            assert len(pd.read_parquet(tmp_path / "results" / "smoke" / "rows.parquet")) == 6 * 64
        else:
            assert done.returncode != 0, out
            # One line, the job's; `ray job submit` prints the job's log twice (tailed, then in its
            # status message), so the same line appears twice in its output.
            errors = {line for line in out.splitlines() if line.startswith("error: ")}
            assert len(errors) == 1, out
            assert "2 nodes on one machine share the temp dir" in next(iter(errors)) and "ray start --temp-dir" in next(iter(errors))
            assert "cannot write the results" not in out and not (tmp_path / "results" / "smoke").exists()
    finally:
        if worker is not None:
            worker.stop()
        head.stop()
