"""SLURM options: the job array's resources (:class:`SlurmOptions`), the command-line flags that
set them, and SLURM's time syntax.

Kept apart from :mod:`ssl_bench.launch.slurm` (which submits and follows jobs, and imports it) so
that building the parser imports neither torch nor submitit (`ssl-bench --help` stays instant).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any

from ssl_bench.errors import UsageError

DEFAULT_TIME_MIN = 60
DEFAULT_MAX_REQUEUES = 3


@dataclass(frozen=True)
class SlurmOptions:
    """The job array's resources (one array task = one run)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60  # per attempt; a run that needs longer is requeued from its checkpoint
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # processes per node; default: one per GPU, else 1
    cpus_per_task: int | None = None
    mem: str | None = None  # per node, SLURM syntax: "64G"
    constraint: str | None = None
    array_parallelism: int | None = None  # at most this many tasks of the array at once
    setup: tuple[str, ...] = ()  # shell lines run before the job's srun (module load, ...)
    max_requeues: int = 3

    @property
    def processes_per_node(self) -> int:
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return self.gpus_per_node if self.gpus_per_node > 0 else 1

    @property
    def world_size(self) -> int:
        """Processes per run: the global batch is split evenly over them."""
        return self.nodes * self.processes_per_node

    def validate(self) -> None:
        """A UsageError naming the command-line flag of the first bad value."""
        at_least = [
            ("--time", self.time_min, 1),
            ("--nodes", self.nodes, 1),
            ("--gpus-per-node", self.gpus_per_node, 0),
            ("--max-requeues", self.max_requeues, 0),
            ("--tasks-per-node", self.tasks_per_node, 1),
            ("--cpus-per-task", self.cpus_per_task, 1),
            ("--array-parallelism", self.array_parallelism, 1),
        ]
        for flag, value, minimum in at_least:
            if value is not None and value < minimum:
                requirement = "positive" if minimum == 1 else f">= {minimum}"
                raise UsageError(f"{flag} must be {requirement}, got {value}")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise UsageError(
                f"--tasks-per-node {self.tasks_per_node} with --gpus-per-node {self.gpus_per_node}: "
                "DDP runs one process per GPU"
            )
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?B?", self.mem, flags=re.IGNORECASE):
            raise UsageError(f"--mem {self.mem!r}: expected SLURM's syntax, e.g. 64G or 16000M")

    def executor_parameters(self) -> dict[str, Any]:
        """Parameters for ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "job_name": "ssl-bench",
            "time": self.time_min,
            "nodes": self.nodes,
            "ntasks_per_node": self.processes_per_node,
            "setup": list(self.setup),
            # Requeueable even where the cluster's JobRequeue default is 0: the job requeues
            # itself on preemption and at its time limit.
            "additional_parameters": {"requeue": True},
        }
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "cpus_per_task": self.cpus_per_task,
            "mem": self.mem,
            "constraint": self.constraint,
            "array_parallelism": self.array_parallelism,
        }
        params.update({key: value for key, value in optional.items() if value is not None})
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        return params


def add_executor_arguments(run: argparse.ArgumentParser, *, wait: bool = True) -> None:
    """Where the runs execute, and the SLURM job array's resources (`ssl-bench run`; `tune`, which
    always waits for its rounds, without ``--wait``)."""
    run.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="local: run here, one after another (default); slurm: submit one job array, "
        "one task per method x seed x dataset",
    )
    # One more --set: the flag reaches every run (local, torchrun, SLURM) as a config field.
    run.add_argument(
        "--reuse-finished",
        dest="settings",
        action="append_const",
        const="reuse_finished=true",
        help="take finished runs (and resume checkpoints) made by other ssl-bench code as they are; by "
        "default a run whose code hash differs from this code's is measured again",
    )
    if wait:
        run.add_argument(
            "--wait",
            action="store_true",
            help="slurm: wait for the jobs, then print the table (default: return once submitted)",
        )
    group = run.add_argument_group("SLURM options (with --executor slurm)")
    group.add_argument("--partition", help="partition (default: the cluster's default)")
    group.add_argument("--account", help="account to charge")
    group.add_argument("--qos", help="quality of service")
    group.add_argument(
        "--time",
        default=str(DEFAULT_TIME_MIN),
        metavar="TIME",
        help=f"time limit of each attempt: minutes, or SLURM's MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS "
        f"(default: {DEFAULT_TIME_MIN}); a longer run checkpoints before the limit and is requeued",
    )
    group.add_argument("--nodes", type=int, default=1, help="nodes per run (default: 1)")
    group.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node; one process each (default: 0)")
    group.add_argument(
        "--tasks-per-node", type=int, help="processes per node (default: one per GPU, else 1; CPU-only runs use gloo)"
    )
    group.add_argument("--cpus-per-task", type=int, help="CPU cores per process")
    group.add_argument("--mem", help="memory per node, SLURM syntax (e.g. 64G)")
    group.add_argument("--constraint", help="node features required (SLURM --constraint)")
    group.add_argument("--array-parallelism", type=int, help="at most this many runs at once")
    group.add_argument(
        "--slurm-setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before the job starts (repeatable), e.g. 'module load cuda'",
    )
    group.add_argument(
        "--max-requeues",
        type=int,
        default=DEFAULT_MAX_REQUEUES,
        help=f"requeues (preemption or time limit) before a run gives up (default: {DEFAULT_MAX_REQUEUES})",
    )


def add_status_parser(commands: argparse._SubParsersAction, default_results_dir: str) -> None:
    status = commands.add_parser("status", help="the SLURM jobs of a results directory: job state, run state, logs")
    status.add_argument(
        "results_dir",
        nargs="?",
        default=default_results_dir,
        metavar="RESULTS_DIR",
        help=f"results directory (default: {default_results_dir})",
    )


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    return SlurmOptions(
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time_min=slurm_minutes(args.time),
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        tasks_per_node=args.tasks_per_node,
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        constraint=args.constraint,
        array_parallelism=args.array_parallelism,
        setup=tuple(args.slurm_setup),
        max_requeues=args.max_requeues,
    )


_SLURM_TIME = re.compile(
    r"(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)"
)


def slurm_minutes(text: str) -> int:
    """``--time`` in whole minutes (seconds round up), from any of sbatch's formats: M, M:S,
    H:M:S, D-H, D-H:M, D-H:M:S (man sbatch, --time)."""
    match = _SLURM_TIME.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--time {text!r}: expected minutes or SLURM's format, e.g. 90, 1:30:00 or 2-00:00:00")
    numbers = {key: int(value) for key, value in match.groupdict().items() if value is not None}
    if "days" in numbers:
        seconds = numbers["days"] * 86400 + numbers["dh"] * 3600 + numbers.get("dm", 0) * 60 + numbers.get("ds", 0)
    elif "c" in numbers:
        seconds = numbers["a"] * 3600 + numbers["b"] * 60 + numbers["c"]
    else:
        seconds = numbers["a"] * 60 + numbers.get("b", 0)
    return -(-seconds // 60)
