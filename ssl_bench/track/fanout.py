"""All of a run's trackers as one object: what is logged under which name, and resuming.

Every tracker gets the same scalars, at the same step (optimiser steps done, as in
``metrics.jsonl``):

``train/<name>``  every training step: the loss, each loss term, the lr
``epoch/<name>``  every epoch: that epoch's row of ``metrics.jsonl`` (means over the epoch,
                  throughput, the online probe and collapse diagnostics)
``eval/<name>``   the final evaluation: the numbers of ``result.json`` (linear probe, kNN, ...),
                  at the last step

and the resolved configuration, under the run's name (its directory's) and group
(``<dataset>/<backbone>/e<epochs>``). Each tracker's state (the W&B run id, the MLflow run id)
is kept in the run directory's ``trackers.json``: a resumed run hands it back, so the tracker
run continues where the last checkpoint left it. Only rank 0 tracks.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ssl_bench.config import RunConfig
from ssl_bench.preemption import TrainingStopped
from ssl_bench.store.atomic import atomic_write_json
from ssl_bench.track.base import BACKENDS, Outcome, TrackedRun, Tracker

if TYPE_CHECKING:
    from ssl_bench.run.record import Run

STATE_FILE = "trackers.json"


def is_evaluation_number(key: str) -> bool:
    """result.json's accuracies and the evaluation's cost (the rest repeats config and last epoch)."""
    return key.endswith(("_top1", "_top1_fixed", "_top5")) or key.startswith("eval_")


class Trackers:
    """The trackers ``names`` of one run; with no names, every call does nothing."""

    def __init__(self, names: Sequence[str] = (), run: Run | None = None) -> None:
        if names and run is None:
            raise ValueError("trackers need the run they follow")
        self.names = tuple(dict.fromkeys(names))
        self.run = run
        self.outcome: Outcome = "finished"  # how the run ends when no exception says otherwise
        self._trackers: dict[str, Tracker] | None = None
        self._last_step: int | None = None

    # --- what the trainer and the run's lifecycle call --------------------------------------
    def start(self, step: int) -> None:
        """Open each tracker (once): a new tracker run, or the earlier one continued at ``step``."""
        if self._trackers is not None or not self.names:
            return
        assert self.run is not None
        saved = self._read_state()
        tracked = tracked_run(self.run)
        self._trackers = {}
        for name in self.names:
            backend = importlib.import_module(BACKENDS[name].module)
            resume_step = step if name in saved else None
            self._trackers[name] = backend.open_tracker(tracked, saved.get(name, {}), resume_step)
        atomic_write_json(
            self.run.path / STATE_FILE,
            {**saved, **{name: tracker.state for name, tracker in self._trackers.items()}},
        )

    def log_step(self, step: int, values: Mapping[str, Any]) -> None:
        self._log("train/", values, step)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        self._log("epoch/", {key: value for key, value in row.items() if key != "step"}, row["step"])

    def log_evaluation(self, record: Mapping[str, Any]) -> None:
        """The run's final record (result.json); a failed record ends the tracker run as failed."""
        if not self.names:
            return
        if record.get("status") == "failed":
            self.outcome = "failed"
        numbers = {key: value for key, value in record.items() if is_evaluation_number(key)}
        self._log("eval/", numbers, self._final_step())

    def close(self, outcome: Outcome) -> None:
        trackers, self._trackers = self._trackers or {}, None
        for tracker in trackers.values():
            tracker.close(outcome)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close(self.outcome)
            return
        try:
            self.close("interrupted" if issubclass(kind, (KeyboardInterrupt, TrainingStopped)) else "failed")
        except Exception as close_error:  # the run's own error is the one to see
            if error is not None:
                error.add_note(f"closing the experiment trackers failed too: {close_error!r}")

    # --- internals -------------------------------------------------------------------------
    def _log(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        if not self.names:
            return
        metrics = {prefix + key: float(value) for key, value in values.items() if _is_number(value)}
        if not metrics:
            return
        self.start(step)
        assert self._trackers is not None
        for tracker in self._trackers.values():
            tracker.log(metrics, step)
        self._last_step = step

    def _final_step(self) -> int:
        """The step of the run's last training step, also when this attempt trained nothing."""
        if self._last_step is not None:
            return self._last_step
        assert self.run is not None
        rows = self.run.read_metrics()
        return int(rows[-1]["step"]) if rows else 0

    def _read_state(self) -> dict[str, Any]:
        assert self.run is not None
        path = self.run.path / STATE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}


NO_TRACKERS = Trackers()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_group(config: RunConfig) -> str:
    """The runs one comparison holds: same dataset, backbone and pre-training length."""
    return f"{config.dataset}/{config.backbone}/e{config.epochs}"


def tracked_run(run: Run) -> TrackedRun:
    """What the trackers are told about ``run``."""
    config = run.config
    return TrackedRun(
        name=run.path.name,
        group=run_group(config),
        config=run.resolved_config(),
        tags=(config.method, config.dataset, config.backbone),
        run_dir=run.path,
        results_dir=run.results_dir,
    )


def open_trackers(names: Sequence[str], run: Run) -> Trackers:
    """The trackers ``names`` for ``run``; nothing is opened before the first log."""
    return Trackers(names, run) if names else NO_TRACKERS
