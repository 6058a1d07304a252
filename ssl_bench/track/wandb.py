"""Weights & Biases: one W&B run per ssl-bench run, offline unless told otherwise.

Defaults (each one the W&B environment variable overrides): ``WANDB_MODE=offline``, so nothing
leaves the machine and ``wandb sync <run dir>/wandb/offline-run-*`` uploads later;
``WANDB_DIR`` = the run directory (the files go to ``<run dir>/wandb/``); ``WANDB_PROJECT`` =
``ssl-bench``. The run is named after the run directory, grouped by dataset/backbone/epochs,
tagged with method, dataset and backbone; its config is the resolved configuration.

Resuming: the W&B run id is kept in trackers.json, and a resumed attempt opens the same id with
``resume="allow"`` (offline, each attempt writes its own offline-run directory under that id;
``wandb sync`` puts them together).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import wandb

from ssl_bench.track.base import Outcome, TrackedRun

DEFAULT_PROJECT = "ssl-bench"


class WandbTracker:
    def __init__(self, run: TrackedRun, saved: dict[str, Any]) -> None:
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
            name=run.name,
            group=run.group,
            job_type="pretrain",
            tags=list(run.tags),
            config=run.config,
            dir=os.environ.get("WANDB_DIR", str(run.run_dir)),
            mode=None if "WANDB_MODE" in os.environ else "offline",  # None: W&B reads WANDB_MODE
            id=saved.get("run_id"),
            resume="allow",
        )
        self.state: dict[str, Any] = {"run_id": self.run.id, "project": self.run.project}

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self, outcome: Outcome) -> None:
        self.run.finish(exit_code=0 if outcome == "finished" else 1)


def open_tracker(run: TrackedRun, saved: dict[str, Any], resume_step: int | None) -> WandbTracker:
    return WandbTracker(run, saved)
