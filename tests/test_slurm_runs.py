"""`ssl-bench run --executor slurm` against the real single-node cluster (tests/support/local_slurm.py).

Every job is tiny: tiny_convnet on 600 generated Fashion-MNIST-format images, 1-3 epochs.
The cluster is shared with other test sessions, so the tests only ever touch their own job ids.
Bad input that is caught before anything reaches SLURM is tested without the cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_bench.launch import slurm
from ssl_bench.launch.cli import main
from ssl_bench.launch.slurm_options import SlurmOptions
from ssl_bench.recipes import resolve_config
from ssl_bench.store.rundir import RunDir

TINY = ["projector=64,32", "batch_size=64", "num_workers=0", "train_subset=none", "device=cpu"]


def _tiny_args(data_root: Path, results_dir: Path, *settings: str, epochs: int = 1) -> list[str]:
    return [
        "--epochs",
        str(epochs),
        "--data-root",
        str(data_root),
        "--results-dir",
        str(results_dir),
        "--no-progress",
        *[arg for setting in [*TINY, *settings] for arg in ("--set", setting)],
    ]


def _ssl_bench(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command as a user runs it (a fresh process; SLURM_CONF comes from the fixture's env)."""
    return subprocess.run(
        [sys.executable, "-m", "ssl_bench.launch.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _cancel(results_dir: Path) -> None:
    """Leave nothing of ours in the shared queue, whatever happened."""
    ids = [job.job_id for job in slurm.read_manifest(results_dir)]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)


def _logs(jobs) -> str:
    return "\n".join(
        f"--- {path}\n{Path(path).read_text() if Path(path).is_file() else '(none)'}"
        for job in jobs
        for path in (job.stdout, job.stderr)
    )


# ------------------------------------------------------------------------------------------
# Submit-time checks that need no cluster
# ------------------------------------------------------------------------------------------


def test_no_sbatch_on_path_is_one_line_and_submits_nothing(fashion_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    results = tmp_path / "results"
    code = main(["run", "vicreg", *_tiny_args(fashion_root, results), "--executor", "slurm"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "ssl-bench: error: --executor slurm needs SLURM's client commands on PATH; not found: sbatch, sinfo, squeue"
    ]
    assert not results.exists()


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(fashion_root, tmp_path, capsys):
    results = tmp_path / "results"
    code = main(["run", "vicreg", *_tiny_args(fashion_root, results), "--executor", "slurm", "--tasks-per-node", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "ssl-bench: error: batch size 64 (the global batch) does not divide over 3 processes/GPUs"
    ]
    assert not results.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--time", "0"], "--time must be positive, got 0"),
        (["--gpus-per-node", "2", "--tasks-per-node", "4"], "DDP runs one process per GPU"),
        (["--mem", "lots"], "--mem 'lots': expected SLURM's syntax"),
    ],
)
def test_bad_slurm_options_are_one_line(fashion_root, tmp_path, capsys, args, message):
    code = main(["run", "vicreg", *_tiny_args(fashion_root, tmp_path / "r"), "--executor", "slurm", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_status_of_a_missing_directory(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "no results directory" in capsys.readouterr().err


def _fake_slurm(bin_dir: Path, squeue_states: str, squeue_reasons: str, sacct: str = "") -> str:
    """squeue and sacct as shell scripts that print the given lines for the format asked; the PATH to use."""
    bin_dir.mkdir()
    scripts = {
        "squeue": f"case \"$*\" in *'%i|%T'*) printf '{squeue_states}' ;; *'%i|%r'*) printf '{squeue_reasons}' ;; esac",
        "sacct": f"printf '{sacct}'",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_status_shows_why_a_job_waits_and_a_run_being_evaluated(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    jobs = []
    for job_id, method, status, record in [
        ("8_0", "vicreg", None, None),  # queued: nothing written yet
        ("8_1", "simclr", None, None),
        ("8_2", "random_init", "finished", "running"),  # its job evaluates it
        ("8_3", "tico", "finished", "finished"),
    ]:
        run_dir = RunDir(runs / "fashion-mnist" / method)
        run_dir.path.mkdir(parents=True)
        if status is not None:
            run_dir.write_status(status, epochs_done=0)
            (run_dir.path / "result.json").write_text(json.dumps({"status": record}))
        jobs.append(slurm.SubmittedJob(job_id, method, "fashion-mnist", 0, str(run_dir.path), "o.out", "o.err"))
    slurm._append_manifest(runs, jobs)
    path = _fake_slurm(
        tmp_path / "bin",
        squeue_states="8_0|PENDING\\n8_1|PENDING\\n8_2|RUNNING\\n",
        squeue_reasons="8_0|Resources\\n8_1|Priority\\n8_2|None\\n",
        sacct="8_3|COMPLETED\\n",
    )
    monkeypatch.setenv("PATH", path)
    assert main(["status", str(runs)]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()[2:]
    }
    header = [cell.strip() for cell in out.splitlines()[0].split("|")[1:-1]]
    state, run_status = header.index("slurm state"), header.index("run status")
    assert [rows[job][state] for job in ("8_0", "8_1", "8_2", "8_3")] == [
        "PENDING (Resources)",
        "PENDING (Priority)",
        "RUNNING",
        "COMPLETED",
    ], out
    assert [rows[job][run_status] for job in ("8_2", "8_3")] == ["evaluating", "finished"], out


@pytest.mark.parametrize(
    "status, record, slurm_state, expected",
    [
        ({"status": "running", "step": 3, "total_steps": 9}, {"status": "running"}, "RUNNING", ("running", "step 3/9")),
        (
            {"status": "finished", "step": 9, "total_steps": 9},
            {"status": "running"},
            "RUNNING",
            ("evaluating", "step 9/9"),
        ),
        ({"status": "finished", "epochs_done": 0}, None, "UNKNOWN", ("evaluating", "0 epochs")),
        (
            {"status": "finished", "epochs_done": 0},
            {"status": "running"},
            "CANCELLED",
            ("stopped (cancelled)", "0 epochs"),
        ),
        (
            {"status": "finished", "epochs_done": 1},
            {"status": "failed", "error": "evaluation failed: ValueError: x"},
            "FAILED",
            ("failed", "evaluation failed: ValueError: x"),
        ),
        ({"status": "finished", "epochs_done": 1}, {"status": "finished"}, "COMPLETED", ("finished", "1 epochs")),
    ],
)
def test_run_state_reads_pretraining_and_evaluation_together(status, record, slurm_state, expected):
    assert slurm.run_state(status, record, slurm_state) == expected


def test_a_single_run_is_a_job_and_loggers_go_with_the_submission(fashion_root, tmp_path, monkeypatch, capsys):
    """The submission itself is faked: what is checked is what the command hands it and says of it."""
    handed = {}

    def submit(entries, results_dir, options, **kwargs):
        handed.update(kwargs, methods=[config.method for config in entries])
        return [slurm.SubmittedJob("13", "vicreg", "fashion-mnist", 0, str(results_dir / "x"), "o.out", "o.err")]

    monkeypatch.setattr(slurm, "submit_sweep", submit)
    results = tmp_path / "results"
    args = ["run", "vicreg", *_tiny_args(fashion_root, results), "--executor", "slurm", "--logger", "tensorboard"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert list(handed["loggers"]) == ["tensorboard"] and handed["methods"] == ["random_init", "vicreg"]
    assert "submitted job 13: 1 run, 1 process(es) each" in out and "job array" not in out
    assert slurm.submission_name(1) == "job" and slurm.submission_name(2) == "job array"


# ------------------------------------------------------------------------------------------
# Against the cluster
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(slurm_cluster, fashion_root):
    """A 2-method sweep (+ its random-init baseline): one job array, waited for."""
    results = slurm_cluster.workdir / "sweep"
    args = [
        "run",
        "vicreg",
        "simclr",
        *_tiny_args(fashion_root, results),
        *slurm_cluster.cli_args(),
    ]
    start = time.monotonic()
    try:
        proc = _ssl_bench(args, slurm_cluster.workdir)
    finally:
        _cancel(results)
    return results, proc, time.monotonic() - start


@pytest.mark.slurm
def test_sweep_is_one_job_array_and_its_runs_aggregate(sweep, slurm_cluster, fashion_root, capsys):
    results, proc, seconds = sweep
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    jobs = slurm.read_manifest(results)
    assert sorted(job.method for job in jobs) == ["random_init", "simclr", "vicreg"]
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, "one job array for the whole sweep"
    assert f"submitted job array {array_ids.pop()}: 3 runs" in output
    for job in jobs:
        assert job.job_id in output and Path(job.stdout).is_file(), _logs(jobs)
        run_dir = Path(job.run_dir)
        status = json.loads((run_dir / "status.json").read_text())
        result = json.loads((run_dir / "result.json").read_text())
        assert status["status"] == "finished" and result["status"] == "finished", _logs(jobs)
        assert result["linear_top1"] is not None
        if job.method != "random_init":  # pre-trained by the job, which recorded itself
            assert status["slurm"]["job_id"] == job.job_id
            assert status["slurm"]["stdout"] == job.stdout and status["log"] == job.stderr
            assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "metrics.jsonl").is_file()
    # The closing table aggregates the array's runs.
    assert re.search(r"\| vicreg +\| ours +\| finished", output) and re.search(
        r"\| simclr +\| ours +\| finished", output
    )

    assert main(["status", str(results)]) == 0
    status = capsys.readouterr().out
    assert len(re.findall(r"COMPLETED +\|.*\| finished", status)) == 3, status

    # The same command again: every run is finished, nothing goes to the queue.
    again = main(
        [
            "run",
            "vicreg",
            "simclr",
            *_tiny_args(fashion_root, results),
            "--executor",
            "slurm",
            "--partition",
            slurm_cluster.partition,
        ]
    )
    assert again == 0 and "nothing to submit" in capsys.readouterr().out
    assert len(slurm.read_manifest(results)) == 3
    print(f"\nsweep of 3 array tasks: {seconds:.0f} s wall time")


@pytest.mark.slurm
def test_a_failing_job_shows_failed_with_its_log(sweep, slurm_cluster, fashion_root, capsys):
    """lr 1e9 passes every submit-time check and turns the loss NaN in the job (with the official
    LARS: the solo-learn variant's clipping would cap the adapted steps at a sane size)."""
    results, _, _ = sweep
    args = [
        "run",
        "barlow_twins",
        *_tiny_args(fashion_root, results, "base_lr=1e9", "lars_variant=official"),
        *slurm_cluster.cli_args(),
    ]
    try:
        proc = _ssl_bench(args, slurm_cluster.workdir)
    finally:
        _cancel(results)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    (job,) = [job for job in slurm.read_manifest(results) if job.method == "barlow_twins"]
    assert "[random_init] already finished" in output  # the sweep's baseline is reused, not resubmitted

    assert main(["status", str(results)]) == 0
    status = capsys.readouterr().out
    (row,) = [line for line in status.splitlines() if line.startswith("|") and line.split("|")[1].strip() == job.job_id]
    assert "FAILED" in row and "| failed" in row and "non-finite loss at step" in row, status
    log_stem = job.stdout.removesuffix(".out")
    assert f"{log_stem}.{{out,err}}" in row
    assert "RunFailed: barlow_twins run failed: non-finite loss" in Path(job.stderr).read_text()
    run_status = json.loads((Path(job.run_dir) / "status.json").read_text())
    assert run_status["status"] == "failed" and run_status["log"] == job.stderr
    # The comparison table lists it as failed, with the log to read.
    assert re.search(r"\| barlow_twins +\| ours +\| failed .*log: slurm/", output), output


@pytest.mark.slurm
def test_usr2_checkpoints_requeues_and_resumes_to_the_same_weights(slurm_cluster, fashion_root):
    """Two 2-process (gloo) jobs of one config: one runs straight, the other gets USR2 mid-run.

    The signalled job must save the step it was at (not the last periodic checkpoint:
    checkpoint_every_steps is larger than the run), be requeued by SLURM, resume from that step
    and end with bit-identical weights and the same per-epoch losses.
    """
    # 320 images in batches of 16: 20 steps per epoch, 60 in all.
    config = resolve_config(
        "tico",
        "fashion-mnist",
        {"epochs": 3, "data_root": str(fashion_root)},
        [*TINY[:1], "batch_size=16", *TINY[2:], "train_subset=320", "checkpoint_every_steps=100000"],
    )
    options = SlurmOptions(partition=slurm_cluster.partition, time_min=10, tasks_per_node=2, cpus_per_task=1)
    signalled_dir, straight_dir = slurm_cluster.workdir / "signalled", slurm_cluster.workdir / "straight"
    try:
        (signalled,) = slurm.submit_sweep([config], signalled_dir, options)
        (straight,) = slurm.submit_sweep([config], straight_dir, options)
        # Signal once the first epoch is done (its log line), the way SLURM warns a job: 40 steps
        # remain, far more than the signal needs to arrive.
        deadline = time.monotonic() + 120
        while "epoch 1/3" not in (Path(signalled.stdout).read_text() if Path(signalled.stdout).exists() else ""):
            assert time.monotonic() < deadline, f"the job never finished an epoch\n{_logs([signalled])}"
            time.sleep(0.1)
        subprocess.run(["scancel", "--signal=USR2", signalled.job_id], check=True, timeout=30)
        states = slurm.wait_for([signalled, straight], log=lambda _: None)
    finally:
        _cancel(signalled_dir)
        _cancel(straight_dir)
    assert states == {signalled.job_id: "COMPLETED", straight.job_id: "COMPLETED"}, _logs([signalled, straight])

    log = Path(signalled.stdout).read_text()
    total = 3 * (320 // 16)
    stopped = [int(step) for step in re.findall(r"stopped at step (\d+) ", log)]
    resumed = re.findall(r"resuming at step (\d+)/(\d+)", log)
    assert len(stopped) == 1 and total // 3 <= stopped[0] < total, log
    assert resumed == [(str(stopped[0]), str(total))], log
    assert "requeuing on signal SIGUSR2 (restart 1 of at most 3)" in log
    status = json.loads((Path(signalled.run_dir) / "status.json").read_text())
    assert status["status"] == "finished" and status["slurm"]["restart_count"] == 1
    assert status["slurm"]["world_size"] == 2

    signalled_ckpt = torch.load(Path(signalled.run_dir) / "checkpoint.pt", weights_only=False)
    straight_ckpt = torch.load(Path(straight.run_dir) / "checkpoint.pt", weights_only=False)
    assert signalled_ckpt["step"] == straight_ckpt["step"] == total
    assert signalled_ckpt["method"].keys() == straight_ckpt["method"].keys()
    for name, tensor in straight_ckpt["method"].items():
        assert torch.equal(signalled_ckpt["method"][name], tensor), name
    losses = [[row["loss"] for row in ckpt["metrics"]] for ckpt in (signalled_ckpt, straight_ckpt)]
    assert losses[0] == losses[1]
    print(
        f"\njob {signalled.job_id}: USR2 at step {stopped[0]}/{total}, requeued, resumed, weights equal to job "
        f"{straight.job_id}'s"
    )


@pytest.mark.slurm
def test_unknown_partition_and_refused_submissions_leave_nothing(slurm_cluster, fashion_root, tmp_path, capsys):
    results = tmp_path / "results"
    base = ["run", "vicreg", *_tiny_args(fashion_root, results), "--executor", "slurm"]
    assert main([*base, "--partition", "no-such-partition"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ssl-bench: error: unknown partition 'no-such-partition' (known: {slurm_cluster.partition})"]
    # A request sbatch itself refuses: the one array is refused whole, and its staged files go.
    assert main([*base, "--constraint", "no-such-feature"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ssl-bench: error: sbatch refused the job array, nothing was submitted: "
        "Batch job submission failed: Invalid feature specification"
    ]
    assert not results.exists()


@pytest.mark.slurm
def test_a_slurm_run_logs_to_its_tracker_as_a_local_run_does(slurm_cluster, fashion_root):
    """`--logger tensorboard` travels with the job: its event file holds every step, the epoch and
    the final evaluation, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = slurm_cluster.workdir / "tracked"
    args = ["run", "vicreg", *_tiny_args(fashion_root, results), "--logger", "tensorboard", *slurm_cluster.cli_args()]
    try:
        proc = _ssl_bench(args, slurm_cluster.workdir)
    finally:
        _cancel(results)
    jobs = slurm.read_manifest(results)
    assert proc.returncode == 0, proc.stdout + proc.stderr + _logs(jobs)
    assert re.search(r"submitted job array \d+: 2 runs", proc.stdout), proc.stdout
    (job,) = [job for job in jobs if job.method == "vicreg"]
    run_dir = RunDir(Path(job.run_dir))
    rows, record = run_dir.read_metrics(), json.loads((run_dir.path / "result.json").read_text())
    steps = rows[-1]["step"]  # 540 pre-training images in batches of 64: 8 steps, one epoch
    assert record["status"] == "finished" and len(rows) == 1 and steps == 8

    events = EventAccumulator(str(run_dir.path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, steps + 1))
    assert sum(e.value for e in loss) / steps == pytest.approx(rows[0]["loss"], rel=1e-5)
    (epoch_loss,) = events.Scalars("epoch/loss")
    assert (epoch_loss.step, epoch_loss.value) == (steps, pytest.approx(rows[0]["loss"], rel=1e-6))
    (linear,) = events.Scalars("eval/linear_top1")
    assert (linear.step, linear.value) == (steps, pytest.approx(record["linear_top1"], rel=1e-6))
    assert json.loads((run_dir.path / "trackers.json").read_text())["tensorboard"]["log_dir"] == str(
        run_dir.path / "tensorboard"
    )
