"""MLflow: one MLflow run per ssl-bench run, in a tracking store beside the run directories.

Defaults (each one the MLflow environment variable overrides): ``MLFLOW_TRACKING_URI`` =
``sqlite:///<results dir>/mlflow.db``, MLflow's own default kind of local store (MLflow 3 keeps
its plain-directory store behind ``MLFLOW_ALLOW_FILE_STORE=true``), which
``mlflow ui --backend-store-uri sqlite:///<results dir>/mlflow.db`` serves;
``MLFLOW_EXPERIMENT_NAME`` = ``ssl-bench``. SQLite wants one writer at a time on a local disk:
the runs of one command take turns, but for concurrent jobs point ``MLFLOW_TRACKING_URI`` at a
tracking server.

The run is named after the run directory and tagged with its group, method, dataset and
backbone; the resolved configuration is its parameters (nested fields flattened with dots).
Metrics are sent in batches (``log_batch``) at most every few seconds and at the end, through
MLflow's background logging, so a training step does not wait for the store. Resuming: the
MLflow run id is kept in trackers.json, and a resumed attempt logs into that run again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.async_logging.run_operations import RunOperations
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from ssl_bench.track.base import Outcome, TrackedRun

DEFAULT_EXPERIMENT = "ssl-bench"
FLUSH_SECONDS = 10.0
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def tracking_uri(run: TrackedRun) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run.results_dir / 'mlflow.db').resolve()}"


class MlflowTracker:
    def __init__(self, run: TrackedRun, saved: dict[str, Any]) -> None:
        uri = tracking_uri(run)
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = saved.get("run_id") if saved.get("tracking_uri") == uri else None
        if self.run_id is not None and self._exists(self.run_id):
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            self.run_id = self._create(run, uri)
        self.state: dict[str, Any] = {"run_id": self.run_id, "tracking_uri": uri}
        self._pending: list[Metric] = []
        self._sending: list[RunOperations] = []
        self._flushed = time.monotonic()

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def _create(self, run: TrackedRun, uri: str) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            # With the default store, artifacts also stay in the results directory (MLflow's
            # default is a folder in the current directory).
            artifact_location = None
            if "MLFLOW_TRACKING_URI" not in os.environ:
                artifact_location = (run.results_dir / "mlartifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(name, artifact_location=artifact_location)
        tags = {"group": run.group, "method": run.tags[0], "dataset": run.tags[1], "backbone": run.tags[2]}
        created = self.client.create_run(experiment_id, run_name=run.name, tags={**tags, "run_dir": str(run.run_dir)})
        run_id = created.info.run_id
        params = [Param(key, value[:MAX_PARAM_VAL_LENGTH]) for key, value in _flatten(run.config)]
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])
        return run_id

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending.extend(Metric(key, value, now, step) for key, value in metrics.items())
        if len(self._pending) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._flushed > FLUSH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_METRICS_PER_BATCH], self._pending[MAX_METRICS_PER_BATCH:]
            self._sending.append(self.client.log_batch(self.run_id, metrics=batch, synchronous=False))
        self._flushed = time.monotonic()

    def close(self, outcome: Outcome) -> None:
        self._flush()
        for operations in self._sending:
            operations.wait()
        self.client.set_terminated(self.run_id, status=_STATUS[outcome])


def _flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """("loss.temperature", "0.1"), ...: nested tables with dots, lists and None as JSON."""
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value if isinstance(value, str) else json.dumps(value)


def open_tracker(run: TrackedRun, saved: dict[str, Any], resume_step: int | None) -> MlflowTracker:
    return MlflowTracker(run, saved)
