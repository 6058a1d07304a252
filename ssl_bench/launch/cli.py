"""The `ssl-bench` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ssl_bench.device import configure_cpu_runtime
from ssl_bench.errors import UsageError
from ssl_bench.launch.checkpoint_cli import add_checkpoint_parsers, cmd_eval, cmd_export
from ssl_bench.launch.slurm_options import (
    add_executor_arguments,
    add_status_parser,
)
from ssl_bench.perf.cli import add_bench_parser, cmd_bench
from ssl_bench.preemption import Terminated, TrainingStopped, terminate_as_interrupt
from ssl_bench.study.runner import add_study_parser, cmd_study
from ssl_bench.track import TRACKER_NAMES

if TYPE_CHECKING:
    from ssl_bench.config import RunConfig

DEFAULT_DATASET = "fashion-mnist"
DEFAULT_RESULTS_DIR = "runs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-bench", description="Compare self-supervised learning methods under one harness."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="pre-train (and evaluate) methods, then print a comparison table")
    run.add_argument("methods", nargs="+", metavar="METHOD", help="method names (see `ssl-bench methods`)")
    run.add_argument(
        "--dataset",
        action="append",
        metavar="DATASET",
        help=f"dataset name, repeatable: one run per dataset (default: {DEFAULT_DATASET})",
    )
    run.add_argument("--epochs", type=int, help="pre-training epochs (default: the recipe's)")
    run.add_argument(
        "--backbone", help="backbone name: resnet18, resnet18_cifar, resnet50, tiny_convnet or any timm model"
    )
    run.add_argument(
        "--batch-size", type=int, help="global batch size, split evenly over processes/GPUs (default: the recipe's)"
    )
    run.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    run.add_argument(
        "--seeds", type=int, nargs="+", metavar="SEED", help="several seeds: one run per seed (overrides --seed)"
    )
    run.add_argument("--data-root", default="data", help="where datasets live (default: ./data)")
    run.add_argument(
        "--results-dir",
        default=DEFAULT_RESULTS_DIR,
        help=f"where run directories go (default: ./{DEFAULT_RESULTS_DIR})",
    )
    run.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set base_lr=0.5 --set loss.temperature=0.5",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--method-file",
        dest="method_files",
        action="append",
        default=[],
        metavar="PATH",
        help="load methods from a Python file outside the repo (repeatable); see docs/adding-a-method.md",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print each run's resolved configuration (heads, optimiser groups, schedule, views, "
        "deviations from the cited source) and run nothing",
    )
    run.add_argument("--json", action="store_true", help="with --dry-run: one JSON object per run, one per line")
    run.add_argument(
        "--logger",
        dest="loggers",
        action="append",
        default=[],
        choices=TRACKER_NAMES,
        help="also log each run to this experiment tracker (repeatable): tensorboard, wandb (offline unless "
        "WANDB_MODE says otherwise), mlflow",
    )
    run.add_argument(
        "--nproc-per-node",
        type=int,
        metavar="N",
        help="data-parallel over N processes on this machine (one per GPU; gloo on CPU), started as torchrun does",
    )
    add_executor_arguments(run)

    commands.add_parser("methods", help="list the methods and print the recipe table")
    commands.add_parser("datasets", help="list the datasets")
    add_status_parser(commands, DEFAULT_RESULTS_DIR)
    add_bench_parser(commands)
    add_study_parser(commands)
    add_checkpoint_parsers(commands, DEFAULT_DATASET, DEFAULT_RESULTS_DIR)

    tune = commands.add_parser(
        "tune", help="the same trial budget per method over its recipe's search space, chosen on validation data"
    )
    tune.add_argument("methods", nargs="+", metavar="METHOD", help="method names (see `ssl-bench methods`)")
    tune.add_argument("--budget", type=int, default=8, help="trials per method (default: 8)")
    tune.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset name (default: {DEFAULT_DATASET})")
    tune.add_argument("--epochs", type=int, help="pre-training epochs of every trial (default: the recipe's)")
    tune.add_argument(
        "--seed", type=int, default=100, help="the trials' seed, never one of --final-seeds (default: 100)"
    )
    tune.add_argument(
        "--final-seeds", type=int, nargs="+", default=[], metavar="SEED", help="then run the best values over these"
    )
    tune.add_argument("--data-root", default="data", help="where datasets live (default: ./data)")
    tune.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=f"(default: ./{DEFAULT_RESULTS_DIR})")
    tune.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    tune.add_argument("--no-progress", action="store_true", help="no progress bars")
    tune.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="trials per method and round: a round's trials are proposed together, then run "
        "(with --executor slurm: as one job array) before the next round learns from them (default: 1)",
    )
    add_executor_arguments(tune, wait=False)

    table = commands.add_parser("table", help="comparison table (markdown, CSV, LaTeX) and plots of run directories")
    table.add_argument(
        "results_dirs",
        nargs="*",
        default=[DEFAULT_RESULTS_DIR],
        metavar="RESULTS_DIR",
        help=f"directories holding run directories (default: {DEFAULT_RESULTS_DIR})",
    )
    table.add_argument("--output-dir", help="where table.md/.csv/.tex and plots/ go (default: the first RESULTS_DIR)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before any command imports torch: OpenMP's wait policy is read when torch loads.
    configure_cpu_runtime()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `run --nproc-per-node` starts it again
    try:
        with terminate_as_interrupt():  # SIGTERM cleans up as Ctrl-C does (status.json, this message)
            return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"ssl-bench: error: {error}", file=sys.stderr)
        return 2
    except TrainingStopped as stop:  # Ctrl-C or SIGTERM while training: stopped at a step boundary
        print(f"ssl-bench: {stop}; run the same command again to resume", file=sys.stderr)
        return 128 + (stop.signal_number or signal.SIGINT)
    except KeyboardInterrupt as interrupt:
        print("ssl-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
    except OSError as error:  # the machine's refusal (a full disk, a read-only directory), not a bug
        print(f"ssl-bench: error: {error}", file=sys.stderr)
        return 1


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from ssl_bench.distributed.ddp import torchrun_env
    from ssl_bench.distributed.torchrun import check_world, launch
    from ssl_bench.launch import executor as executors
    from ssl_bench.launch.sweep import resolve_sweep
    from ssl_bench.launch.validate import check_local_sweep
    from ssl_bench.method import get_method, load_method_file
    from ssl_bench.models.backbones import check_backbone_name
    from ssl_bench.report.output import print_table

    for name, value in [("--epochs", args.epochs), ("--batch-size", args.batch_size)]:
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be positive, got {value}")
    for path in args.method_files:  # before the names are checked: they may name its methods
        load_method_file(path)
    # Check every name before the first run starts: a typo in the last method must not
    # surface after the first one has trained for an hour.
    for name in args.methods:
        get_method(name)
    overrides = {
        "epochs": args.epochs,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "data_root": args.data_root,
    }
    configs = resolve_sweep(
        args.methods, args.dataset or [DEFAULT_DATASET], args.seeds or [args.seed], overrides, args.settings
    )
    check_backbone_name(configs[0].backbone)
    check_trackers(args)
    if args.json and not args.dry_run:
        raise UsageError("--json goes with --dry-run")
    if args.dry_run:
        return print_dry_run(configs, as_json=args.json)
    process = torchrun_env()
    if args.executor == "local":
        # Device, data, batch sizes and results directory, before the first run directory is made.
        check_local_sweep(executors.with_baselines(configs), args.results_dir)
        if process is not None:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", process.world_size))
            if args.nproc_per_node is not None and args.nproc_per_node != local_world:
                raise UsageError(
                    f"--nproc-per-node {args.nproc_per_node} under torchrun, which started {local_world} per node"
                )
        elif args.nproc_per_node is not None:
            check_world(configs, args.nproc_per_node)
            if args.nproc_per_node > 1:
                return launch(args.argv, args.nproc_per_node)

    results_dir = Path(args.results_dir)
    executor = executors.executor_for(args)
    outcomes = executor.execute(configs, results_dir)
    if any(outcome.status == executors.SUBMITTED for outcome in outcomes):
        print(f"follow with: ssl-bench status {args.results_dir}")
        return 0
    if process is not None and process.rank != 0:  # rank 0 prints the table
        return 0
    print()
    if args.executor == "slurm":
        from ssl_bench.launch import slurm

        print(slurm.format_status(slurm.status_rows(results_dir.resolve())))
        print()
    # The same table `ssl-bench table <results-dir>` prints: earlier runs there (other seeds,
    # other methods) stand beside the ones just run.
    print_table([args.results_dir])
    return 0 if all(outcome.finished for outcome in outcomes) else 1


def check_trackers(args: argparse.Namespace) -> None:
    """The trackers' libraries are installed (a SLURM job runs in this same environment), and
    --nproc-per-node goes with local runs."""
    from ssl_bench.track import check_installed

    check_installed(args.loggers)
    if args.executor == "slurm" and args.nproc_per_node is not None:
        raise UsageError("--nproc-per-node is for local runs; SLURM jobs take --gpus-per-node, --tasks-per-node")


def print_dry_run(configs: Sequence[RunConfig], as_json: bool) -> int:
    """Each run's resolved configuration, as ``ssl_bench.run.describe`` reads it from the built run."""
    import json

    from ssl_bench.run.describe import describe_run, dry_run_text

    for index, config in enumerate(configs):
        description = describe_run(config)
        if as_json:
            print(json.dumps(description, sort_keys=False))
        else:
            print(("\n" if index else "") + dry_run_text(description))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    import pandas as pd

    from ssl_bench.method import available_methods, get_method
    from ssl_bench.recipes import recipe_rows

    print("Methods:")
    for name in available_methods():
        doc = (get_method(name).__doc__ or "").strip().splitlines()
        print(f"  {name:<14} {doc[0] if doc else ''}")
    print()
    print(pd.DataFrame(recipe_rows()).to_markdown(index=False))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from ssl_bench.data.datasets import available_datasets, dataset_info

    for name in available_datasets():
        info = dataset_info(name)
        print(f"  {name:<14} {info.description}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from ssl_bench.report.output import print_table

    missing = [d for d in args.results_dirs if not Path(d).is_dir()]
    if missing:
        raise UsageError(f"no results directory {missing[0]!r}")
    return print_table(args.results_dirs, args.output_dir)


def cmd_status(args: argparse.Namespace) -> int:
    """`ssl-bench status [RESULTS_DIR]`."""
    from ssl_bench.launch import slurm

    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise UsageError(f"no results directory {str(results_dir)!r}")
    rows = slurm.status_rows(results_dir)
    if not rows:
        print(f"no SLURM jobs recorded in {results_dir / slurm.MANIFEST}", file=sys.stderr)
        return 0
    print(slurm.format_status(rows))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import shlex

    from ssl_bench.launch import executor as executors
    from ssl_bench.launch.tune import tune
    from ssl_bench.method import get_method

    for name in args.methods:
        get_method(name)
    if args.epochs is not None and args.epochs <= 0:
        raise UsageError(f"--epochs must be positive, got {args.epochs}")
    overrides = {"epochs": args.epochs, "data_root": args.data_root, "seed": args.seed}
    command = "ssl-bench " + " ".join(shlex.quote(part) for part in sys.argv[1:])
    tune(
        args.methods,
        args.dataset,
        args.budget,
        args.results_dir,
        overrides,
        args.settings,
        executor=executors.executor_for(args, wait=True),  # each round waits for its trials
        parallel=args.parallel,
        final_seeds=args.final_seeds,
        progress=not args.no_progress,
        command=command,
    )
    if args.final_seeds:
        from ssl_bench.report.output import print_table

        print_table([args.results_dir])
    return 0


COMMANDS = {
    "run": cmd_run,
    "tune": cmd_tune,
    "methods": cmd_methods,
    "datasets": cmd_datasets,
    "table": cmd_table,
    "status": cmd_status,
    "bench": cmd_bench,
    "study": cmd_study,
    "eval": cmd_eval,
    "export": cmd_export,
}


if __name__ == "__main__":
    raise SystemExit(main())
