"""A study's learning-rate ladder: a run whose loss went non-finite is run again at a lower lr.

A study may declare ``lr_ladder = [1.0, 0.5, 0.25]`` in its ``[base]``. Every run starts on the
first rung, its own learning rates. When its record says that it diverged (it failed with a
non-finite loss: ``ssl_bench.errors.NonFiniteLossError``), the study runs it again with
``base_lr`` (and ``bias_norm_base_lr``, where the run has one) times the next rung's factor: an
ordinary run with a run directory of its own, since its config differs in those fields. A retry
that diverges is retried in turn, rung after rung, until one does not diverge or the ladder ends;
the study's numbers for that method, variant and seed are the last rung's, and its report names
every retry.

Where a run stands on its ladder is read from the run records alone: a study run again finds each
diverged rung and goes on from its retry, and ``--dry-run`` and ``--report-only`` see the same
runs as the command that made them. A study without a ladder (``[1.0]``, the default) never
retries.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ssl_bench.config import RunConfig
from ssl_bench.errors import is_divergence
from ssl_bench.run.record import Run
from ssl_bench.study.spec import UNTRAINED, Study, StudyRun


def rung_config(config: RunConfig, factor: float) -> RunConfig:
    """``config`` with its learning rates (given at batch 256) multiplied by ``factor``."""
    retry = copy.deepcopy(config)
    retry.base_lr = config.base_lr * factor
    if config.bias_norm_base_lr is not None:
        retry.bias_norm_base_lr = config.bias_norm_base_lr * factor
    return retry


def diverged(config: RunConfig, results_dir: Path) -> bool:
    """Whether the run of ``config`` failed with a non-finite loss."""
    run = Run.of(results_dir, config)
    record = run.read_result() or {}
    status = run.read_status()
    if str(record.get("status") or status["status"]) != "failed":
        return False
    return is_divergence(str(record.get("error") or status.get("error") or ""))


def next_rung(study: Study, run: StudyRun) -> StudyRun:
    """The retry of ``run``: its first config at the next rung's factor."""
    first = run.diverged[0] if run.diverged else run.config
    factor = study.lr_ladder[run.rung + 1]
    return replace(run, config=rung_config(first, factor), diverged=(*run.diverged, run.config))


def climb(study: Study, runs: Sequence[StudyRun], results_dir: Path) -> list[StudyRun]:
    """Each run moved along its ladder past every rung whose run diverged (the untrained network
    trains nothing, and stays)."""
    climbed = []
    for run in runs:
        while run.rung + 1 < len(study.lr_ladder) and run.variant != UNTRAINED and diverged(run.config, results_dir):
            run = next_rung(study, run)
        climbed.append(run)
    return climbed
