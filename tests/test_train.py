"""The pre-training loop: records, resume after a kill mid-epoch, NaN handling."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_bench.config import RunConfig
from ssl_bench.recipes import resolve_config
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.trainer import pretrain

# 600 generated images, 540 without the validation split: batch 64 -> 8 steps per epoch.
TINY = ["projector=64,32", "batch_size=64", "num_workers=0", "device=cpu"]


def tiny_config(method: str, data_root: Path, epochs: int = 2, extra: list[str] = ()):
    return resolve_config(
        method, "fashion-mnist", {"epochs": epochs, "data_root": str(data_root)}, TINY + ["train_subset=none", *extra]
    )


def test_pretrain_writes_the_run_records(fashion_root, tmp_path):
    config = tiny_config("vicreg", fashion_root)
    result = pretrain(Run.of(tmp_path, config), progress=False, log=lambda _: None)
    assert result.status == "finished" and result.epochs_done == 2
    run = RunDir(result.run_dir)
    assert RunConfig.read(run.path) == config
    status = run.read_status()
    assert status["status"] == "finished" and status["final_loss"] == pytest.approx(result.final_loss)
    env = json.loads((run.path / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("loss", "invariance", "variance", "covariance", "lr", "samples_per_second"):
            assert key in row and row[key] == row[key]  # present and not NaN
    p = config.loss
    weighted = (
        p["sim_coeff"] * rows[0]["invariance"]
        + p["std_coeff"] * rows[0]["variance"]
        + p["cov_coeff"] * rows[0]["covariance"]
    )
    assert rows[0]["loss"] == pytest.approx(weighted, rel=1e-5)
    # The second invocation recognises the finished run instead of training again.
    again = pretrain(Run.of(tmp_path, config), progress=False, log=lambda _: None)
    assert again.status == "finished" and again.final_loss == pytest.approx(result.final_loss)


def _cli(args: list[str], env_root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_bench.launch.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=env_root,
    )


def _final_weights(results: Path) -> dict[str, torch.Tensor]:
    (checkpoint,) = results.glob("fashion-mnist/tico-*/checkpoint.pt")
    return torch.load(checkpoint, weights_only=False)["method"]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(fashion_root, tmp_path):
    args = [
        "run",
        "tico",
        "--epochs",
        "3",
        "--data-root",
        str(fashion_root),
        "--no-progress",
        *[a for s in TINY + ["train_subset=none", "checkpoint_every_steps=4"] for a in ("--set", s)],
    ]
    straight = tmp_path / "straight"
    proc = _cli([*args, "--results-dir", str(straight)], tmp_path)
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    interrupted = tmp_path / "interrupted"
    proc = _cli([*args, "--results-dir", str(interrupted)], tmp_path)
    deadline = time.time() + 120
    checkpoint = None
    while time.time() < deadline and proc.poll() is None:
        found = list(interrupted.glob("fashion-mnist/tico-*/checkpoint.pt"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.02)
    assert checkpoint is not None, "no checkpoint appeared"
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up, like a node failure
    proc.wait()
    run_dir = checkpoint.parent
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"
    killed_at = torch.load(checkpoint, weights_only=False)["step"]
    assert killed_at % 8 != 0, "the kill should land mid-epoch"

    proc = _cli([*args, "--results-dir", str(interrupted)], tmp_path)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert f"resuming at step {killed_at}/24" in output
    resumed, reference = _final_weights(interrupted), _final_weights(straight)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    # Per-epoch losses too: the interrupted epoch's running sums were checkpointed with it.
    losses = [row["loss"] for row in RunDir(run_dir).read_metrics()]
    assert losses == [row["loss"] for row in RunDir(next(straight.glob("fashion-mnist/tico-*"))).read_metrics()]


def test_nan_loss_fails_that_run_and_records_step_and_terms(fashion_root, tmp_path, monkeypatch):
    import ssl_bench.methods.vicreg

    real_terms = ssl_bench.methods.vicreg.vicreg_terms

    def poisoned(z_a, z_b, eps=1e-4, **kwargs):
        terms = real_terms(z_a, z_b, eps, **kwargs)
        terms["covariance"] = terms["covariance"] * float("nan")
        return terms

    monkeypatch.setattr(ssl_bench.methods.vicreg, "vicreg_terms", poisoned)
    result = pretrain(Run.of(tmp_path, tiny_config("vicreg", fashion_root)), progress=False, log=lambda _: None)
    assert result.status == "failed"
    status = RunDir(result.run_dir).read_status()
    assert status["status"] == "failed" and status["failed_step"] == 0
    assert status["terms"]["covariance"] is None  # non-finite: strict JSON null, the error names it
    assert math.isfinite(status["terms"]["invariance"]) and status["terms"]["invariance"] > 0  # finite ones too
    assert "non-finite loss at step 0" in status["error"]
