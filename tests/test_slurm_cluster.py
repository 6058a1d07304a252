"""End-to-end checks of the local single-node SLURM cluster, driven through submitit.

The ``slurm_cluster`` fixture (tests/conftest.py) starts the cluster when it can, or skips.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from support import local_slurm, slurm_jobs

pytestmark = pytest.mark.slurm


def _wait_for_state(job, wanted: set[str], timeout: float = 60) -> str:
    """Poll sacct (forced, not submitit's cached back-off) until the job reaches a wanted state."""
    deadline = time.monotonic() + timeout
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = job.get_info(mode="force").get("State") or "UNKNOWN"
        if state.split()[0] in wanted:  # e.g. "CANCELLED by 0"
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job.job_id} never reached {wanted}; last state {state!r}")


def _wait_done(job, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            raise AssertionError(
                f"job {job.job_id} not done after {timeout:.0f}s (state {job.state});\n"
                f"stdout:\n{job.stdout()}\nstderr:\n{job.stderr()}"
            )
        time.sleep(0.5)


def test_sbatch_wrap_hostname(slurm_cluster):
    out = slurm_cluster.workdir / "hostname-%j.out"
    res = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--wait",
            "-p",
            slurm_cluster.partition,
            "-o",
            str(out),
            "--wrap",
            "hostname",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip().split(";")[0]
    text = Path(str(out).replace("%j", job_id)).read_text().strip()
    assert text.split(".")[0] == slurm_cluster.node


def test_submitit_result_and_accounting(slurm_cluster):
    executor = slurm_cluster.executor(slurm_cluster.workdir / "result")
    job = executor.submit(slurm_jobs.add, 2, 3)
    _wait_done(job, timeout=60)
    out = job.result()
    assert out["sum"] == 5
    assert out["job_id"] == job.job_id
    assert out["partition"] == slurm_cluster.partition
    # accounting (slurmdbd) works: sacct reports the final state, which submitit then caches
    _wait_for_state(job, {"COMPLETED"}, timeout=30)
    assert job.state == "COMPLETED"


def test_checkpointable_job_is_requeued_and_resumes(slurm_cluster):
    total_steps = 16
    progress = slurm_cluster.workdir / "counter-progress.json"
    executor = slurm_cluster.executor(slurm_cluster.workdir / "preempt", timeout_min=60)
    job = executor.submit(slurm_jobs.SlowCounter(), total_steps, str(progress), 0.5)

    # let it make some progress, then preempt it the way SLURM does (USR2 to the job's steps)
    deadline = time.monotonic() + 60
    step = 0
    while step < 3:
        assert time.monotonic() < deadline, f"no progress; stderr:\n{job.stderr()}"
        assert not job.done(), f"job ended early: {job.stderr()}"
        if progress.exists():
            step = json.loads(progress.read_text())["step"]
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)

    _wait_done(job, timeout=90)
    out = job.result()
    assert out["count"] == total_steps  # same final count as an uninterrupted run
    assert len(out["checkpoints"]) == 1 and out["checkpoints"][0] >= 3
    (attempt0, start0), (attempt1, start1) = out["history"]
    assert (attempt0, start0) == (0, 0)
    assert attempt1 == 1 and start1 >= out["checkpoints"][0]  # resumed from the saved step
    assert out["restart_counts"] == ["0", "1"]  # SLURM itself requeued it
    _wait_for_state(job, {"COMPLETED"}, timeout=30)


def test_failing_job_reports_failure(slurm_cluster):
    executor = slurm_cluster.executor(slurm_cluster.workdir / "fail")
    job = executor.submit(slurm_jobs.fail, "boom from a SLURM job")
    _wait_done(job, timeout=60)
    exc = job.exception()
    assert exc is not None
    assert "ValueError: boom from a SLURM job" in str(exc)
    with pytest.raises(Exception, match="boom from a SLURM job"):
        job.result()
    _wait_for_state(job, {"FAILED"}, timeout=30)


def test_second_start_is_a_no_op(slurm_cluster):
    handle = local_slurm.start()
    assert handle.started == []  # nothing new was started...
    assert local_slurm.stop(handle) == ["nothing to stop (no daemon was started by this module)"]
    assert local_slurm.cluster_responds(slurm_cluster.slurm_conf)  # ...and nothing was stopped
