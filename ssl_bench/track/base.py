"""What every experiment tracker implements, and which trackers there are.

A tracker backend is a module with one function, ``open_tracker(run, saved, resume_step) -> Tracker``:
it starts (or, given the ``saved`` state of an earlier attempt, continues) the tracker's run and
returns an object with the three members of :class:`Tracker`. Importing this module imports no
tracking library: ``ssl-bench run --logger NAME`` checks that the library is installed
(:func:`check_installed`) before anything is written, and the backend module is imported only
when a run opens it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from ssl_bench.errors import UsageError

Outcome = Literal["finished", "failed", "interrupted"]


@dataclass(frozen=True)
class Backend:
    module: str  # the ssl_bench.track module that implements it
    package: str  # the import name of the library it needs
    extra: str  # the ssl-bench extra that installs that library


BACKENDS: dict[str, Backend] = {
    "tensorboard": Backend("ssl_bench.track.tensorboard", "tensorboard", "tensorboard"),
    "wandb": Backend("ssl_bench.track.wandb", "wandb", "wandb"),
    "mlflow": Backend("ssl_bench.track.mlflow", "mlflow", "mlflow"),
}
TRACKER_NAMES = tuple(BACKENDS)


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about the run it follows."""

    name: str  # the run directory's name: method-backbone-e<epochs>-s<seed>-<identity hash>
    group: str  # runs that compare: <dataset>/<backbone>/e<epochs>
    config: dict[str, Any]  # the resolved configuration, as in config.json
    tags: tuple[str, ...]  # method, dataset, backbone
    run_dir: Path
    results_dir: Path


class Tracker(Protocol):
    # What a later attempt of the same run needs to continue this tracker run (kept in the
    # run directory's trackers.json): a run id, where the logs went.
    state: dict[str, Any]

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars at ``step`` (steps only grow, but several calls may share one)."""

    def close(self, outcome: Outcome) -> None:
        """Write out everything buffered and end the tracker run as ``outcome``."""


def check_installed(names: Sequence[str]) -> None:
    """A UsageError naming the extra to install for the first tracker whose library is missing."""
    for name in names:
        backend = BACKENDS[name]
        if importlib.util.find_spec(backend.package) is None:
            raise UsageError(
                f"--logger {name} needs the {backend.package} package: pip install 'ssl-bench[{backend.extra}]'"
            )
