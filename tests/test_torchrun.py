"""Local multi-process runs take SLURM's DDP path: the same weights, bit for bit.

The reference is a 2-process SLURM job step as ``ssl-bench run --executor slurm`` runs it:
two processes with the variables ``srun`` gives the tasks of a step (SLURM_PROCID, ...) and
submitit's, each calling :class:`ssl_bench.launch.slurm.SweepJob`, the job's own entry point
(join the process group from the SLURM environment, run the entry, leave), with gloo on CPU.
Only sbatch and srun themselves are missing (tests/test_slurm_runs.py runs real jobs).

Then ``ssl-bench run ... --nproc-per-node 2`` runs the same configuration: torchrun's launcher
starts two processes of the same command, each a rank under torchrun. Every weight of the
final checkpoint must be equal (``torch.equal``) to the SLURM job's, and so must every epoch's
loss. Both use one thread per process, so the reductions are computed the same way.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_bench.distributed import ddp, torchrun
from ssl_bench.errors import UsageError
from ssl_bench.launch.cli import main
from ssl_bench.launch.sweep import resolve_sweep
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir

WORLD = 2
SETTINGS = ["projector=32,32", "num_workers=0", "device=cpu", "train_subset=128"]
OVERRIDES = {"epochs": 1, "batch_size": 32, "backbone": None}  # 4 steps of 16 images per rank


def _config(data_root: Path):
    # As `ssl-bench run` resolves it (the same identity, so the same run directory name).
    (config,) = resolve_sweep(["vicreg"], ["fashion-mnist"], [0], {**OVERRIDES, "data_root": str(data_root)}, SETTINGS)
    return config


def _free_job_id() -> str:
    """A job id whose derived rendezvous port (ssl_bench.distributed.ddp.slurm_env) is free now."""
    for job_id in range(900000 + os.getpid() % 1000, 1000000):
        port = ddp._PORT_BASE + zlib.crc32(f"{job_id}/0".encode()) % ddp._PORT_SPAN
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(job_id)
    raise RuntimeError("no free port")


def _slurm_task(rank: int, job_id: str, data_root: str, results: str, submitit_folder: str) -> None:
    """One task of an srun job step, running what the SLURM job array task runs."""
    from ssl_bench.launch.slurm import JobSpec, SweepJob

    os.environ.update(
        {
            "SLURM_JOB_ID": job_id,
            "SLURM_STEP_ID": "0",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_NTASKS": str(WORLD),
            "SLURM_STEP_NUM_TASKS": str(WORLD),
            "SLURM_JOB_NUM_NODES": "1",
            "SLURM_STEP_NODELIST": "localhost",
            "SLURM_RESTART_COUNT": "0",
            "SUBMITIT_EXECUTOR": "slurm",
            "SUBMITIT_FOLDER": submitit_folder,
        }
    )
    torch.set_num_threads(1)
    result = SweepJob()(JobSpec(_config(Path(data_root)), results, max_requeues=0))
    assert result["status"] == "finished" and result["slurm"]["world_size"] == WORLD


def _start_method() -> str:
    # A forked child starts in well under a second, a spawned one re-imports torch (5-10 s).
    if sys.platform == "linux" and "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


@pytest.fixture(scope="module")
def slurm_run(fashion_root, tmp_path_factory) -> RunDir:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    results = tmp_path_factory.mktemp("slurm-style")
    args = (_free_job_id(), str(fashion_root), str(results), str(results / "submitit"))
    context = mp.start_processes(_slurm_task, args=args, nprocs=WORLD, join=False, start_method=_start_method())
    deadline = time.monotonic() + 300  # a stuck collective must fail the test, not hang the suite
    while not context.join(timeout=1):  # raises if a task failed
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail("the 2-task SLURM-style job did not finish within 300 s")
    return Run.of(results, _config(fashion_root))


def test_nproc_per_node_gives_the_slurm_jobs_weights(slurm_run, fashion_root, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the SLURM-style tasks' one thread
    results = tmp_path / "results"
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    args = ["run", "vicreg", "--epochs", "1", "--batch-size", "32", "--data-root", str(fashion_root)]
    code = main([*args, "--results-dir", str(results), "--no-progress", *sets, "--nproc-per-node", "2"])
    out = capfd.readouterr().out  # the ranks' output: they write to this process's stdout
    assert code == 0, out
    assert "batch 32 (16 x 2 ranks)" in out  # two ranks really shared the global batch
    assert out.count("[vicreg] epoch 1/1") == 1  # rank 0 speaks for the run
    assert any(line.startswith("| vicreg") and "finished" in line for line in out.splitlines())

    local = Run.of(results, _config(fashion_root))
    assert local.path.name == slurm_run.path.name
    assert slurm_run.read_status()["slurm"]["world_size"] == WORLD
    ours, theirs = (run.load_checkpoint() for run in (local, slurm_run))
    assert ours["step"] == theirs["step"] == 4
    assert ours["method"].keys() == theirs["method"].keys()
    for name, tensor in theirs["method"].items():
        assert torch.equal(ours["method"][name], tensor), name
    assert [row["loss"] for row in ours["metrics"]] == [row["loss"] for row in theirs["metrics"]]
    assert local.read_metrics()[0]["loss"] == theirs["metrics"][0]["loss"]


def test_world_checks_before_anything_starts(fashion_root):
    config = _config(fashion_root)
    torchrun.check_world([config], 2)
    with pytest.raises(UsageError, match=r"batch size 32 .* does not divide over 3"):
        torchrun.check_world([config], 3)
    with pytest.raises(UsageError, match="--nproc-per-node must be positive, got 0"):
        torchrun.check_world([config], 0)


def test_bad_nproc_per_node_is_one_line_and_writes_nothing(fashion_root, tmp_path, capsys):
    results = tmp_path / "results"
    base = ["run", "vicreg", "--epochs", "1", "--batch-size", "32", "--data-root", str(fashion_root)]
    base += ["--results-dir", str(results), *[arg for s in SETTINGS for arg in ("--set", s)]]
    assert main([*base, "--nproc-per-node", "3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "ssl-bench: error: batch size 32 (the global batch) does not divide over 3 processes/GPUs"
    ]
    assert main([*base, "--nproc-per-node", "2", "--executor", "slurm"]) == 2
    assert "ssl-bench: error: --nproc-per-node is for local runs" in capsys.readouterr().err
    assert not results.exists()


def test_waiting_for_rank_0_is_nothing_in_one_process():
    ddp.wait_for_rank0()  # no process group: returns at once
    assert torchrun.threads_per_process(len(os.sched_getaffinity(0)) * 4) == 1
