"""Job functions for the SLURM tests.

submitit pickles functions and classes *by reference* (module + name), so they must live at
module level in a module that the job's Python (the venv's, ``sys.executable``) can import.
``SlurmClusterInfo.executor()`` exports the directory that makes this module importable
(``tests/`` for ``support.slurm_jobs``) on the job's PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import submitit


def add(a: int, b: int) -> dict:
    """A trivial job: returns the sum plus where/how it ran."""
    return {
        "sum": a + b,
        "host": socket.gethostname().split(".")[0],
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
    }


def fail(message: str) -> None:
    """A job that raises."""
    raise ValueError(message)


def _save_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)  # atomic: readers (and a resumed job) never see half a file


class SlowCounter(submitit.helpers.Checkpointable):
    """Counts to ``total_steps``, one step per ``step_s`` seconds, saving progress after every
    step to ``progress_file``. On preemption (USR2) submitit calls ``checkpoint`` (inherited:
    resubmit the same call) and requeues; the requeued attempt resumes from the saved step.

    Returns ``{"count": n, "history": [(attempt, start_step), ...], "checkpoints": [...]}``.
    """

    def __call__(self, total_steps: int, progress_file: str, step_s: float = 0.5) -> dict:
        path = Path(progress_file)
        state = json.loads(path.read_text()) if path.exists() else {"step": 0, "history": []}
        attempt = len(state["history"])
        state["history"].append([attempt, state["step"]])
        state.setdefault("restart_counts", []).append(os.environ.get("SLURM_RESTART_COUNT", "0"))
        _save_json(path, state)
        while state["step"] < total_steps:
            time.sleep(step_s)
            state["step"] += 1
            _save_json(path, state)
        checkpoints_file = path.with_name(path.name + ".checkpoints")
        checkpoints = json.loads(checkpoints_file.read_text()) if checkpoints_file.exists() else []
        return {
            "count": state["step"],
            "history": [tuple(h) for h in state["history"]],
            "checkpoints": checkpoints,
            "restart_counts": state["restart_counts"],
        }

    def checkpoint(self, total_steps: int, progress_file: str, step_s: float = 0.5):
        # Progress is already on disk; record that (and at which step) we were checkpointed.
        path = Path(progress_file)
        step = json.loads(path.read_text())["step"] if path.exists() else 0
        checkpoints_file = path.with_name(path.name + ".checkpoints")
        done = json.loads(checkpoints_file.read_text()) if checkpoints_file.exists() else []
        _save_json(checkpoints_file, [*done, step])
        return super().checkpoint(total_steps, progress_file, step_s)
