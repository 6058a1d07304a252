"""A sweep: the runs one `ssl-bench run` command asks for, and how each one is carried out.

The same :func:`run_entry` runs every entry whether the executor is local (a loop in the
command's process) or SLURM (one array task per entry), so a run directory does not depend on
where it was computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ssl_bench.distributed import collectives
from ssl_bench.config import RunConfig, resolve_config
from ssl_bench.train.trainer import RunResult


def resolve_sweep(methods: Sequence[str], datasets: Sequence[str], seeds: Sequence[int],
                  overrides: dict[str, Any], settings: Sequence[str]) -> list[RunConfig]:
    """One resolved config per dataset x method x seed, in that nesting order."""
    return [
        resolve_config(method, dataset, {**overrides, "seed": seed}, list(settings))
        for dataset in dict.fromkeys(datasets)
        for method in dict.fromkeys(methods)
        for seed in dict.fromkeys(seeds)
    ]


def sweep_entries(configs: Sequence[RunConfig]) -> list[RunConfig]:
    """The random-init baselines the configs need (each once), then the configs themselves."""
    from ssl_bench.eval.evaluate import random_init_config

    baselines = {random_init_config(c).identity_hash(): random_init_config(c) for c in configs}
    return [*baselines.values(), *configs]


def is_baseline(config: RunConfig) -> bool:
    from ssl_bench.eval.evaluate import RANDOM_INIT

    return config.method == RANDOM_INIT


def run_entry(config: RunConfig, results_dir: str | Path, *, progress: bool = True,
              log: Callable[[str], None] = print, should_stop: Callable[[], bool] | None = None,
              status_extra: dict[str, Any] | None = None) -> RunResult:
    """Carry out one sweep entry: a baseline is evaluated; a method is pre-trained, then evaluated.

    Exceptions propagate (the local loop records them and goes on with the next entry; a SLURM
    job fails). In a multi-process run every rank pre-trains, and rank 0 alone evaluates.
    """
    from ssl_bench.eval.evaluate import evaluate_baseline, evaluate_run, record_running
    from ssl_bench.run.rundir import RunDir
    from ssl_bench.train.trainer import pretrain

    run_dir = RunDir.for_config(results_dir, config)
    main = collectives.rank() == 0
    if is_baseline(config):
        status = "finished"
        if main:
            status = evaluate_baseline(config, results_dir, log=log)["status"]
        return RunResult(config.method, run_dir.path, status, train_seconds=0.0)
    if main:
        record_running(config, results_dir, log=log)
    result = pretrain(config, results_dir, progress=progress, log=log, should_stop=should_stop,
                      status_extra=status_extra)
    if main:
        evaluate_run(config, results_dir, log=log)  # records a failed pre-training as failed, too
    return result
