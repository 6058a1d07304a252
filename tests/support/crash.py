"""Simulated crashes of a training run, for resume tests that need no second process."""

from __future__ import annotations

import pytest

from ssl_bench.train.trainer import Trainer


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
