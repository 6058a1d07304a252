"""TensorBoard: event files in the run directory, written with torch's ``SummaryWriter``.

``tensorboard --logdir <results>`` then shows every run, named by its directory
(``<dataset>/<run>/tensorboard``). The resolved configuration and the run's group are text
summaries. A resumed run appends a new event file to the same directory with ``purge_step`` at
its first new step, so TensorBoard hides whatever the interrupted attempt logged past its last
checkpoint (those steps are trained again).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from ssl_bench.track.base import Outcome, TrackedRun

LOG_DIR = "tensorboard"


class TensorBoardTracker:
    def __init__(self, run: TrackedRun, resume_step: int | None) -> None:
        log_dir = run.run_dir / LOG_DIR
        purge_step = None if resume_step is None else resume_step + 1  # the first step trained again
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        if resume_step is None:
            # Indented: TensorBoard renders text summaries as Markdown, and this keeps the JSON verbatim.
            config = "\n".join("    " + line for line in json.dumps(run.config, indent=2, sort_keys=True).splitlines())
            self.writer.add_text("config", config, 0)
            self.writer.add_text("group", run.group, 0)
        self.state: dict[str, Any] = {"log_dir": str(log_dir)}

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self, outcome: Outcome) -> None:
        self.writer.close()


def open_tracker(run: TrackedRun, saved: dict[str, Any], resume_step: int | None) -> TensorBoardTracker:
    return TensorBoardTracker(run, resume_step)
