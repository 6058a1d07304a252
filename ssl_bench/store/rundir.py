"""One directory per run: config, environment, metrics, status, record and checkpoints, written atomically.

Layout of a run directory (its place, ``<results>/<dataset>/<name>``, is chosen by ssl_bench.run.record):
    config.json        the resolved run configuration (what the run computes and how it was executed)
    environment.json   versions, device and CPU model, torch build, host, code hash and git commit
    metrics.jsonl      one JSON object per finished epoch
    status.json        running / finished / failed / interrupted (+ the writer's details), and the
                       code hash of the process that wrote it (ssl_bench.provenance)
    result.json        the run's record (its fields: ssl_bench.run.record)
    checkpoint.pt      model, optimiser, step and metrics so far: the point a resumed run continues from
A reader never sees a half-written file: every write goes to a temporary file then `os.replace`.
What the files mean is the business of the layers that write them; other files beside these
(feature caches, tracker state, a crash's traceback) are theirs too.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssl_bench.provenance import code_hash
from ssl_bench.store.atomic import atomic_torch_save, atomic_write_json, atomic_write_text, json_safe

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"


@dataclass
class RunDir:
    path: Path
    # Merged into every status.json written through this object (e.g. a SLURM job's id and logs).
    status_extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    # --- records -------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.path / "config.json", config)

    def write_environment(self, environment: dict[str, Any]) -> None:
        atomic_write_json(self.path / "environment.json", environment)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(
            self.path / "metrics.jsonl",
            "".join(json.dumps(json_safe(row), sort_keys=True, allow_nan=False) + "\n" for row in rows),
        )

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:  # a line cut short by a crash mid-write of an older version
                row = None
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def write_status(self, status: str, **details: Any) -> None:
        record = {"status": status, "updated": time.time(), "code_hash": code_hash(), **self.status_extra, **details}
        atomic_write_json(self.path / "status.json", record)

    def read_status(self) -> dict[str, Any]:
        """status.json; ``{"status": "missing"}`` when there is none or it holds no status."""
        path = self.path / "status.json"
        try:
            status = json.loads(path.read_text()) if path.is_file() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            status = None
        return status if isinstance(status, dict) and "status" in status else {"status": "missing"}

    def read_result(self) -> dict[str, Any] | None:
        """result.json; None when there is none or it holds no record (not JSON, not an object)."""
        path = self.path / RESULT
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def write_result(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / RESULT, record)

    # --- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self, map_location: torch.device | str = "cpu") -> dict[str, Any]:
        """The checkpoint's state; :class:`CorruptCheckpointError` when the file cannot be read as one."""
        try:
            state = torch.load(self.checkpoint_path, map_location=map_location, weights_only=False)
        except FileNotFoundError:
            raise
        except Exception as error:  # torch.load fails in many ways on a damaged file (zip, pickle, EOF)
            raise CorruptCheckpointError(self.checkpoint_path, error) from error
        if not isinstance(state, dict):
            raise CorruptCheckpointError(self.checkpoint_path, TypeError(f"it holds a {type(state).__name__}"))
        return state

    def set_aside_checkpoint(self) -> Path:
        """Move an unreadable checkpoint out of the way as ``checkpoint.pt.corrupt-<time>``; returns where.

        Kept, not deleted: whoever wants to look at it (or recover it) still can.
        """
        kept = self.checkpoint_path.with_name(f"{CHECKPOINT}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(self.checkpoint_path, kept)
        return kept


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that torch cannot load: named, with the way out."""

    def __init__(self, path: Path, error: BaseException) -> None:
        self.path = path
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        super().__init__(f"checkpoint {path} is unreadable ({type(error).__name__}: {reason})")
