"""Simulated crashes of a training run, for resume tests that need no second process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ssl_bench.config import RunConfig
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.trainer import Trainer, pretrain

# 64 generated images of 16 px, batch 16: 4 steps an epoch, checkpoints at steps 3, 4, 6, 8.
TINY_RUN = [
    "batch_size=16",
    "train_subset=64",
    "image_size=16",
    "num_workers=0",
    "device=cpu",
    "checkpoint_every_steps=3",
]


class SimulatedCrash(RuntimeError):
    """Stands for a node failure: the run dies between two steps, after its last checkpoint."""


def crash_before_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make every Trainer raise SimulatedCrash when it reaches ``step`` (until monkeypatch undoes it)."""
    real_train_step = Trainer.train_step

    def crashing(self: Trainer, *args, **kwargs):
        if self.step == step:
            raise SimulatedCrash(f"simulated crash before step {step}")
        return real_train_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", crashing)


def crash_and_resume(config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict]:
    """Run ``config`` (2 epochs of TINY_RUN) straight and with a crash before step 7 then a resume;
    assert both end with the same weights, state and loss. Returns the straight run's result and
    its final method state."""
    straight = pretrain(Run.of(tmp_path / "straight", config), progress=False, log=lambda _: None)
    assert straight.status == "finished"
    crash_before_step(monkeypatch, 7)
    with pytest.raises(SimulatedCrash):
        pretrain(Run.of(tmp_path / "crashed", config), progress=False, log=lambda _: None)
    monkeypatch.undo()
    resumed = pretrain(Run.of(tmp_path / "crashed", config), progress=False, log=lambda _: None)
    assert resumed.status == "finished" and resumed.resumed_from_step == 6
    reference = RunDir(straight.run_dir).load_checkpoint()["method"]
    state = RunDir(resumed.run_dir).load_checkpoint()["method"]
    for name in reference:
        assert torch.equal(state[name], reference[name]), name
    assert resumed.final_loss == straight.final_loss
    return straight, reference
