"""Simulated crashes of a training run, for resume tests that need no second process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.trainer import RunResult, Trainer, pretrain

if TYPE_CHECKING:
    from ssl_bench.config import RunConfig

# `--set` values for a run of 8 steps on the generated Fashion-MNIST data (the ``fashion_root``
# fixture) with 2 epochs: 64 images of 16 px, batch 16 -> 4 steps per epoch; a checkpoint every
# 3 steps and at each epoch's end, so a crash before step 7 leaves the checkpoint of step 6.
TINY_RESUMABLE_RUN = [
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


def straight_and_resumed(
    config: RunConfig, root: Path, monkeypatch: pytest.MonkeyPatch, crash_step: int
) -> tuple[RunResult, RunResult]:
    """``config`` pre-trained uninterrupted (in ``root``/straight), and again (in ``root``/crashed)
    with a crash before ``crash_step`` and a second call that resumes it. Undoes ``monkeypatch``."""
    straight = pretrain(Run.of(root / "straight", config), progress=False, log=lambda _: None)
    assert straight.status == "finished"
    crash_before_step(monkeypatch, crash_step)
    with pytest.raises(SimulatedCrash):
        pretrain(Run.of(root / "crashed", config), progress=False, log=lambda _: None)
    monkeypatch.undo()
    resumed = pretrain(Run.of(root / "crashed", config), progress=False, log=lambda _: None)
    assert resumed.status == "finished"
    return straight, resumed


def final_method_state(result: RunResult) -> dict[str, Any]:
    """The method's state dict in the last checkpoint of a finished run."""
    return RunDir(result.run_dir).load_checkpoint()["method"]
