"""`ssl-bench study FILE`: run every (method, variant, seed) of a study, then report it.

Each run is an ordinary run directory, carried out by the executor every command shares
(:mod:`ssl_bench.launch.executor`: here, one run after another, or as SLURM array tasks), so a
study resumes like `run`: a finished and evaluated run is skipped, an interrupted one continues
from its checkpoint. Variants that differ only in what they read from a run share the run. The
report (``ssl_bench.study.report``) is written once every run has a record; with ``--executor
slurm`` and no ``--wait``, run the command again with ``--report-only`` when the jobs are done.

A study with an lr ladder (``ssl_bench.study.ladder``) runs each diverged run again at the next
rung's lr, in rounds, until none is left to retry; without ``--wait`` the retries go out when the
command (not ``--report-only``) runs again.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ssl_bench.errors import UsageError

if TYPE_CHECKING:  # the parser is built at every start: it must not import torch
    from ssl_bench.launch.executor import Executor
    from ssl_bench.study.spec import Study, StudyRun

DEFAULT_STUDIES_DIR = Path("runs") / "studies"


def add_study_parser(commands: argparse._SubParsersAction) -> None:
    from ssl_bench.launch.slurm_options import add_executor_arguments

    study = commands.add_parser(
        "study",
        help="run a study (experiments/studies/*.toml): every variant x method x seed, then its table and plot",
    )
    study.add_argument("study", metavar="STUDY", help="a study file, or the name of one in experiments/studies")
    study.add_argument("--scale", help="which of the study's [scales] to run (default: its first, the CPU demo)")
    study.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="seeds (default: the study's)")
    study.add_argument("--data-root", default="data", help="where datasets live (default: ./data)")
    study.add_argument(
        "--results-dir", help=f"where its run directories and report go (default: ./{DEFAULT_STUDIES_DIR}/<study name>)"
    )
    study.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override for every run, after the study's own (e.g. --set device=cpu)",
    )
    study.add_argument("--dry-run", action="store_true", help="list the runs (and which are done) and run nothing")
    study.add_argument("--report-only", action="store_true", help="run nothing; report the runs recorded so far")
    study.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_arguments(study)


def study_results_dir(study: Study, results_dir: str | None) -> Path:
    return Path(results_dir) if results_dir else DEFAULT_STUDIES_DIR / study.name


def cmd_study(args: argparse.Namespace) -> int:
    from ssl_bench.launch import executor as executors
    from ssl_bench.models.backbones import check_backbone_name
    from ssl_bench.study.ladder import climb
    from ssl_bench.study.report import write_study_report
    from ssl_bench.study.spec import load_study

    study = load_study(args.study)
    if args.seeds is not None and not args.seeds:
        raise UsageError("--seeds needs at least one seed")
    if args.dry_run and args.report_only:
        raise UsageError("--dry-run and --report-only exclude each other")
    runs = study.runs(scale=args.scale, seeds=args.seeds, data_root=args.data_root, extra_settings=args.settings)
    check_backbone_name(runs[0].config.backbone)
    results_dir = study_results_dir(study, args.results_dir)
    scale = study.scale(args.scale).name
    runs = climb(study, runs, results_dir)  # past the runs that diverged, to their retries
    if args.dry_run:
        return print_runs(study, runs, results_dir)
    if not args.report_only:
        runs, submitted = carry_out(study, runs, executors.executor_for(args), results_dir)
        if submitted:
            print(f"when the jobs are done: ssl-bench study {args.study} --report-only --results-dir {results_dir}")
            if len(study.lr_ladder) > 1:
                print("(or the same command again: it runs every diverged run again at a lower lr)")
            return 0
    report = write_study_report(study, runs, results_dir, scale=scale)
    print(report.markdown)
    print(f"study report: {', '.join(path.as_posix() for path in report.files)}")
    return 0 if report.complete else 1


def carry_out(
    study: Study, runs: Sequence[StudyRun], executor: Executor, results_dir: Path
) -> tuple[list[StudyRun], bool]:
    """Carry out the runs, then each diverged run's retry at the next rung of the study's lr
    ladder, round after round; the runs as they then stand, and whether jobs were only submitted
    (SLURM without waiting: the next command, or --report-only, takes up from the records)."""
    from ssl_bench.launch.executor import SUBMITTED
    from ssl_bench.study.ladder import climb
    from ssl_bench.study.spec import unique_configs

    runs = list(runs)
    pending = unique_configs(runs)
    while pending:
        outcomes = executor.execute(pending, results_dir)
        if any(outcome.status == SUBMITTED for outcome in outcomes):
            return runs, True
        climbed = climb(study, runs, results_dir)
        pending = unique_configs([after for before, after in zip(runs, climbed) if after.rung > before.rung])
        if pending:
            print(f"{len(pending)} run(s) diverged: running them again at the next lr of {list(study.lr_ladder)}")
        runs = climbed
    return runs, False


def schedule_text(run: StudyRun, ladder: Sequence[float]) -> str:
    """A run's batch, epochs, warmup epochs and peak lr, and its rung of the lr ladder when it is a retry."""
    config = run.config
    if config.epochs == 0:
        return "not trained"
    text = f"batch {config.batch_size} epochs {config.epochs} warmup {config.warmup_epochs:g} lr {config.lr:.4g}"
    return text + (f" (x{ladder[run.rung]:g}: retry)" if run.rung else "")


def print_runs(study: Study, runs: Sequence[StudyRun], results_dir: Path) -> int:
    """`--dry-run`: one line per run (shared runs once), with its schedule, its run directory and
    whether it is done."""
    from ssl_bench.run.record import Run

    print(f"study {study.name}: {study.question}")
    by_config: dict[str, list[StudyRun]] = {}
    for run in runs:
        by_config.setdefault(run.config.identity_hash(), []).append(run)
    for shared in by_config.values():
        config = shared[0].config
        entry = Run.of(results_dir, config)
        state = "done" if entry.is_done() else "to run"
        variants = "+".join(dict.fromkeys(run.variant for run in shared))  # the untrained network: once
        schedule = schedule_text(shared[0], study.lr_ladder)
        print(f"  {config.method:<14} {variants:<24} seed {config.seed:<4} {schedule:<48} {state:<7} {entry.path}")
    print(f"{len(by_config)} runs ({len(runs)} method x variant x seed entries) in {results_dir}")
    return 0
