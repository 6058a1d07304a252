"""The one way a command carries out runs: an executor.

``ssl-bench run``, ``tune`` and ``study`` hand their run configurations to an executor, which adds
the random-init baselines they need (each once, first), carries out every run with
:func:`ssl_bench.run.lifecycle.run_entry` where it executes, and returns each run's outcome, read
from its record. Three executors:

- :class:`LocalExecutor`: here, one run after another; a crash is recorded in its run directory,
  named in one line, and the next run goes on.
- :class:`RankExecutor`: one rank of a torchrun world (``--nproc-per-node N``, or a command that
  torchrun started): every rank carries out every run together, rank 0 evaluates and records;
  a crash on any rank ends the command (the ranks share every step).
- :class:`SlurmExecutor`: the runs still to do as one SLURM job array
  (:func:`ssl_bench.launch.slurm.submit_sweep`), then, when it waits, their outcomes (Ctrl-C
  stops the waiting, not the jobs: their outcomes are then ``submitted``).

:func:`executor_for` chooses from a command's arguments; the commands reach it through this
module, so a test can hand them another.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ssl_bench.config import RunConfig
from ssl_bench.errors import UsageError

if TYPE_CHECKING:
    from ssl_bench.distributed.ddp import ProcessEnv
    from ssl_bench.launch.slurm_options import SlurmOptions
    from ssl_bench.run.record import Run

SUBMITTED = "submitted"  # the outcome of a SLURM job not waited for


@dataclass(frozen=True)
class Outcome:
    """Where a run stands after the executor: its record's status (``finished``, ``failed``,
    ``running``, ``interrupted``, ``missing``) or ``submitted``."""

    config: RunConfig
    run_dir: Path
    status: str

    @property
    def finished(self) -> bool:
        return self.status == "finished"


class Executor(Protocol):
    def execute(self, configs: Sequence[RunConfig], results_dir: Path) -> list[Outcome]:
        """Carry out the runs (and their baselines); the outcome of each, baselines first."""
        ...


def with_baselines(configs: Sequence[RunConfig]) -> list[RunConfig]:
    """The random-init baselines the configs need, then the configs: each run once, in that order."""
    from ssl_bench.run.lifecycle import is_baseline, random_init_config

    baselines = [random_init_config(config) for config in configs if not is_baseline(config)]
    return list({config.identity_hash(): config for config in [*baselines, *configs]}.values())


def entry_runs(configs: Sequence[RunConfig], results_dir: Path) -> list[Run]:
    """The runs an executor carries out for ``configs``: :func:`with_baselines`, each in ``results_dir``."""
    from ssl_bench.run.record import Run

    return [Run.of(results_dir, config) for config in with_baselines(configs)]


def outcomes(runs: Sequence[Run], *, submitted: bool = False) -> list[Outcome]:
    found = []
    for run in runs:
        record = run.read_result() or {}
        status = str(record.get("status") or run.read_status()["status"])
        found.append(Outcome(run.config, run.path, SUBMITTED if submitted and status != "finished" else status))
    return found


@dataclass
class LocalExecutor:
    progress: bool = True
    loggers: Sequence[str] = ()

    def execute(self, configs: Sequence[RunConfig], results_dir: Path) -> list[Outcome]:
        from ssl_bench.preemption import TrainingStopped
        from ssl_bench.run.lifecycle import run_entry
        from ssl_bench.run.record import ERROR_LOG

        runs = entry_runs(configs, results_dir)
        for index, run in enumerate(runs, start=1):
            config = run.config
            print(f"[{index}/{len(runs)}] {config.method} seed {config.seed}: {run.path}")
            try:
                run_entry(run, progress=self.progress, loggers=self.loggers)
            except (UsageError, TrainingStopped):
                raise
            except Exception as error:  # one run's crash must not cost the others their runs
                log = run.path / ERROR_LOG
                where = f" (traceback: {log})" if log.is_file() else ""
                print(f"ssl-bench: {config.method} failed: {type(error).__name__}: {error}{where}", file=sys.stderr)
        return outcomes(runs)


@dataclass
class RankExecutor:
    process: ProcessEnv
    progress: bool = True
    loggers: Sequence[str] = ()

    def execute(self, configs: Sequence[RunConfig], results_dir: Path) -> list[Outcome]:
        from ssl_bench.distributed import ddp
        from ssl_bench.run.lifecycle import run_entry

        runs = entry_runs(configs, results_dir)
        main = self.process.rank == 0
        ddp.init_process_group(self.process, ddp.backend_for(runs[0].config.device))
        try:
            for run in runs:
                run_entry(run, progress=main and self.progress, log=print if main else _quiet, loggers=self.loggers)
                ddp.wait_for_rank0()  # rank 0 alone evaluates
        finally:
            ddp.destroy_process_group()
        return outcomes(runs)


def _quiet(text: str) -> None:
    """Rank 0 speaks for the run; the other ranks' lines would repeat it."""


@dataclass
class SlurmExecutor:
    options: SlurmOptions
    wait: bool = True
    method_files: Sequence[str] = ()
    loggers: Sequence[str] = ()
    submitted: list = field(default_factory=list)  # every SubmittedJob so far

    def execute(self, configs: Sequence[RunConfig], results_dir: Path) -> list[Outcome]:
        from ssl_bench.launch import slurm

        results_dir = Path(results_dir).resolve()
        runs = entry_runs(configs, results_dir)
        entries = [run.config for run in runs]
        jobs = slurm.submit_sweep(
            entries, results_dir, self.options, method_files=self.method_files, loggers=self.loggers
        )
        self.submitted += jobs
        if jobs:
            print(
                f"submitted {slurm.describe_submission(jobs)}, {self.options.world_size} process(es) each, "
                f"{self.options.time_min} min per attempt"
            )
            for job in jobs:
                print(f"  {job.job_id:<12} {job.method:<14} {job.dataset:<14} seed {job.seed:<4} logs: {job.log_paths}")
            print(f"run directories: {results_dir}; job list: {results_dir / slurm.MANIFEST}")
        else:
            print("nothing to submit: every run is finished or already queued")
        waited = False
        if jobs and self.wait:
            try:
                slurm.wait_for(jobs)
                waited = True
            except KeyboardInterrupt:  # only the waiting stops: the jobs are SLURM's now
                print(f"stopped waiting; the jobs keep running: ssl-bench status {results_dir}", file=sys.stderr)
        return outcomes(runs, submitted=bool(jobs) and not waited)


def executor_for(args: argparse.Namespace, *, wait: bool | None = None) -> Executor:
    """The executor a command's arguments ask for: ``--executor slurm`` (waiting as ``--wait``
    says, or as ``wait`` forces), one rank of a torchrun world, or here."""
    from ssl_bench.distributed.ddp import torchrun_env

    loggers = tuple(getattr(args, "loggers", ()))
    if args.executor == "slurm":
        from ssl_bench.launch.slurm_options import slurm_options

        return SlurmExecutor(
            slurm_options(args),
            wait=getattr(args, "wait", False) if wait is None else wait,
            method_files=tuple(getattr(args, "method_files", ())),
            loggers=loggers,
        )
    if (process := torchrun_env()) is not None:
        return RankExecutor(process, progress=not args.no_progress, loggers=loggers)
    return LocalExecutor(progress=not args.no_progress, loggers=loggers)
