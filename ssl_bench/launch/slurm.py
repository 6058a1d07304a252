"""Running a sweep on a SLURM cluster: one job array, one task per run, resumable and requeued.

``ssl-bench run ... --executor slurm`` checks everything it can before it submits (sbatch
present, partition known, the global batch splits over the GPUs, datasets readable), then
submits every entry of the sweep as ONE submitit job array (a single entry: one job): either
the whole array is accepted or nothing is. Each array task runs
:func:`ssl_bench.run.lifecycle.run_entry`, the very function a local run calls, into the same run
directory, with the same experiment trackers (``--logger``).

Inside a task, one process per GPU (``srun`` starts ``tasks_per_node`` of them per node) joins a
process group built from the SLURM environment (NCCL on GPUs, gloo on CPUs) and trains with DDP.

Preemption and time limits: SLURM sends USR2 90 s before the time limit (submitit's
``--signal=USR2@90``) and a preempting scheduler can send it too. The job's handler only raises
a flag; before the next step the trainer saves a checkpoint of the current step, and the job
hands the signal to submitit, which requeues it (``scontrol requeue``). The requeued attempt
resumes from that checkpoint; batches are a pure function of (seed, epoch, batch, rank), so
the final weights equal those of an uninterrupted run. Requeues are bounded twice: submitit's
``max_num_timeout`` counts time-limit requeues, and the job itself refuses to requeue past
``--max-requeues`` restarts of any kind (SLURM_RESTART_COUNT).

Where things go, under the results directory:
    slurm/jobs.jsonl                   one line per submitted task: job id, entry, run dir, logs
    slurm/<array id>/<job>_<task>_log.{out,err}   each task's stdout/stderr (submitit)
    <dataset>/<run>/status.json        also records ``slurm`` (job id, restarts, logs) and ``log``
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import submitit

from ssl_bench.config import RunConfig
from ssl_bench.distributed import collectives, ddp
from ssl_bench.errors import UsageError, unknown_name_message
from ssl_bench.launch.slurm_options import SlurmOptions, slurm_minutes
from ssl_bench.preemption import StopRequest, TrainingStopped
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir

MANIFEST = Path("slurm") / "jobs.jsonl"
# SLURM states in which a job may still run (or run again): a run directory with such a job is
# not submitted a second time.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "STAGE_OUT",
        "SIGNALING",
        "PREEMPTED",
    }
)
_COMMAND_TIMEOUT_S = 60


# ------------------------------------------------------------------------------------------
# Options and submit-time checks
# ------------------------------------------------------------------------------------------


def _slurm_command(argv: list[str], timeout: float = _COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def check_cluster(options: SlurmOptions) -> None:
    """SLURM's client commands work and the partition exists; a UsageError otherwise."""
    missing = [name for name in ("sbatch", "sinfo", "squeue") if shutil.which(name) is None]
    if missing:
        raise UsageError(f"--executor slurm needs SLURM's client commands on PATH; not found: {', '.join(missing)}")
    try:
        # --all: hidden partitions too. %P marks the default partition with "*"; %l is its MaxTime,
        # %c the CPUs of its nodes (one line per kind of node).
        listing = _slurm_command(["sinfo", "--all", "-h", "-o", "%P|%l|%c"])
    except subprocess.TimeoutExpired:
        raise UsageError("sinfo did not answer in time: is the SLURM controller reachable?") from None
    if listing.returncode != 0:
        raise UsageError(f"sinfo failed: {_last_line(listing.stderr) or f'exit status {listing.returncode}'}")
    partitions = _partition_limits(listing.stdout)
    if options.partition is not None and options.partition not in partitions:
        raise UsageError(unknown_name_message("partition", options.partition, sorted(partitions)))
    name = options.partition or next((p for p, limits in partitions.items() if limits.default), None)
    if name is not None:
        check_limits(options, name, partitions[name])


@dataclass
class PartitionLimits:
    """What a job on one partition can get: its MaxTime (None: unlimited) and the most CPUs of any node."""

    max_time_min: int | None = None
    max_cpus_per_node: int | None = None
    default: bool = False


def _partition_limits(sinfo_output: str) -> dict[str, PartitionLimits]:
    """``sinfo -h -o "%P|%l|%c"`` lines, per partition."""

    partitions: dict[str, PartitionLimits] = {}
    for line in sinfo_output.splitlines():
        name, _, rest = line.strip().partition("|")
        if not name:
            continue
        time_limit, _, cpus = rest.partition("|")
        limits = partitions.setdefault(name.rstrip("*"), PartitionLimits(default=name.endswith("*")))
        with contextlib.suppress(UsageError):  # "infinite", "n/a": no limit to check
            limits.max_time_min = slurm_minutes(time_limit)
        digits = re.match(r"\d+", cpus.strip())
        if digits:
            limits.max_cpus_per_node = max(limits.max_cpus_per_node or 0, int(digits.group()))
    return partitions


def check_limits(options: SlurmOptions, partition: str, limits: PartitionLimits) -> None:
    """A request the partition can never satisfy would pend forever: refuse it before submitting."""
    if limits.max_time_min is not None and options.time_min > limits.max_time_min:
        raise UsageError(
            f"--time {options.time_min} min exceeds partition {partition}'s time limit of {limits.max_time_min} min; "
            "ask for less (a longer run is checkpointed and requeued at each attempt's limit)"
        )
    cpus = (options.cpus_per_task or 1) * options.processes_per_node
    if limits.max_cpus_per_node is not None and cpus > limits.max_cpus_per_node:
        raise UsageError(
            f"{cpus} CPUs per node ({options.processes_per_node} process(es) x --cpus-per-task "
            f"{options.cpus_per_task or 1}) exceed the {limits.max_cpus_per_node} CPUs of partition {partition}'s "
            "largest node"
        )


def check_datasets(entries: Sequence[RunConfig]) -> None:
    """The datasets load (a UsageError names what is missing), before any job waits in a queue."""
    from ssl_bench.data.datasets import dataset_info, load_split

    checked: set[tuple[str, str]] = set()
    for config in entries:
        key = (config.dataset, config.data_root)
        if key in checked:
            continue
        checked.add(key)
        # In-memory datasets load in seconds; a folder tree (ImageNet) is only listed by the job.
        if dataset_info(config.dataset).in_memory:
            load_split(config.dataset, config.data_root, "pretrain", download=config.download)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """What one array task runs."""

    config: RunConfig
    results_dir: str
    max_requeues: int
    method_files: tuple[str, ...] = ()  # `--method-file`s: the job must register those methods too
    loggers: tuple[str, ...] = ()  # `--logger`s: the experiment trackers rank 0 logs the run to (ssl_bench.track)


class RunFailed(RuntimeError):
    """The run ended failed (e.g. a NaN loss) without an exception of its own."""


def _usr_signal() -> int:
    """The signal submitit asks SLURM to send before the time limit (USR2 unless overridden)."""
    return int(getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG))


def task_record() -> dict[str, Any]:
    """The SLURM facts of this task for status.json: job id, attempt, host and log files."""
    env = submitit.JobEnvironment()
    paths = env.paths
    return {
        "job_id": env.job_id,
        "array_job_id": env.array_job_id,
        "array_task_id": env.array_task_id,
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
        "host": env.hostname,
        "world_size": env.num_tasks,
        "stdout": str(paths.stdout),
        "stderr": str(paths.stderr),
    }


class SweepJob(submitit.helpers.Checkpointable):
    """One array task: join the process group, run the entry, requeue on a stop signal.

    Checkpointable, so submitit resubmits the same call on requeue: all state that matters is
    in the run directory (checkpoint.pt), which :func:`ssl_bench.train.trainer.pretrain` resumes from.
    """

    def __call__(self, spec: JobSpec) -> dict[str, Any]:
        from ssl_bench.method import load_method_file
        from ssl_bench.run.lifecycle import run_entry

        config = spec.config
        for path in spec.method_files:
            load_method_file(path)
        process = ddp.slurm_env()
        if process is not None:
            ddp.init_process_group(process, ddp.backend_for(config.device))
        record = task_record()
        stop = StopRequest()
        try:
            with stop.catching(_usr_signal()):
                try:
                    run = Run.of(spec.results_dir, config, status_extra={"slurm": record, "log": record["stderr"]})
                    result = run_entry(run, progress=False, should_stop=lambda: stop.requested, loggers=spec.loggers)
                except TrainingStopped as stopped:
                    self._requeue(stop, stopped, spec, record)
                    raise  # not requeued (not rank 0, or no submitit handler): the task ends here
        finally:
            ddp.destroy_process_group()
        if result.status != "finished":
            raise RunFailed(f"{config.method} run {result.status}: {result.error} (run directory {result.run_dir})")
        return {
            "method": config.method,
            "run_dir": str(result.run_dir),
            "status": result.status,
            "final_loss": result.final_loss,
            "resumed_from_step": result.resumed_from_step,
            "slurm": record,
        }

    @staticmethod
    def _requeue(stop: StopRequest, stopped: TrainingStopped, spec: JobSpec, record: dict[str, Any]) -> None:
        """Requeue the job (rank 0, through submitit's own handler) unless it was requeued enough."""
        if collectives.rank() != 0:
            # Rank 0 requeues the whole job, which ends this task; leaving first could make
            # srun tear the step down while rank 0 is still at it.
            time.sleep(300)
            return
        if record["restart_count"] >= spec.max_requeues:
            raise RuntimeError(
                f"{stopped}, but the job was already requeued {record['restart_count']} times "
                f"(--max-requeues {spec.max_requeues}); run the same command again to resume"
            ) from None
        print(
            f"[{spec.config.method}] requeuing on {stop.reason} "
            f"(restart {record['restart_count'] + 1} of at most {spec.max_requeues})",
            flush=True,
        )
        # submitit's handler: calls checkpoint() (resubmit this same call), `scontrol requeue`, exit.
        stop.forward_to_previous_handler()


# ------------------------------------------------------------------------------------------
# Submitting, waiting, status
# ------------------------------------------------------------------------------------------


@dataclass
class SubmittedJob:
    """One line of slurm/jobs.jsonl."""

    job_id: str
    method: str
    dataset: str
    seed: int
    run_dir: str
    stdout: str
    stderr: str
    submitted: float = field(default_factory=time.time)

    @classmethod
    def from_dict(cls, data: Any) -> SubmittedJob:
        """A job from one manifest line; TypeError or ValueError unless it is one."""
        if not isinstance(data, dict):
            raise TypeError(f"not a JSON object: {data!r}")
        names = {f.name for f in fields(cls)}
        job = cls(**{key: value for key, value in data.items() if key in names})
        texts = all(isinstance(getattr(job, name), str) for name in ("job_id", "method", "dataset", "run_dir"))
        numbers = isinstance(job.seed, int) and isinstance(job.submitted, (int, float))
        if not (texts and numbers):
            raise ValueError(f"not a job: {data!r}")
        return job

    @property
    def log_paths(self) -> str:
        """Both logs in one short string: <dir>/<job>_0_log.{out,err}."""
        stem = self.stdout.removesuffix(".out")
        return f"{stem}.{{out,err}}" if self.stderr == stem + ".err" else f"{self.stdout} {self.stderr}"


def read_manifest(results_dir: str | Path, *, warn: Callable[[str], None] | None = None) -> list[SubmittedJob]:
    """The jobs of slurm/jobs.jsonl. The file is appended to, so a crash or a full disk can leave
    a line cut short: lines that are not a job are skipped, and named in one line to ``warn``
    (default: a warning on stderr)."""
    path = Path(results_dir) / MANIFEST
    if not path.is_file():
        return []
    jobs, skipped = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            jobs.append(SubmittedJob.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, ValueError):
            skipped.append(number)
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        message = f"skipped {len(skipped)} unreadable line(s) of {path} (line {shown})"
        (warn or (lambda text: print(f"ssl-bench: warning: {text}", file=sys.stderr)))(message)
    return jobs


def _append_manifest(results_dir: Path, jobs: Sequence[SubmittedJob]) -> None:
    path = results_dir / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(job), sort_keys=True) + "\n" for job in jobs)
    with open(path, "a") as handle:  # one write: concurrent submissions do not interleave lines
        handle.write(text)


def latest_jobs(results_dir: str | Path) -> dict[str, SubmittedJob]:
    """The most recent job of each run directory."""
    return {job.run_dir: job for job in sorted(read_manifest(results_dir), key=lambda job: job.submitted)}


def _expand_job_ids(field_value: str) -> list[str]:
    """'12_[3-5,7%2]' -> ['12_3', '12_4', '12_5', '12_7'] (squeue/sacct's pending array tasks)."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", field_value)
    if not match:
        return [field_value]
    base, spec = match.group(1), match.group(2).split("%")[0]
    ids = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        ids.extend(f"{base}_{i}" for i in range(int(low), int(high or low) + 1))
    return ids


def _query(command: list[str]) -> list[tuple[str, str]]:
    """(job id, rest of the line) per job of `sacct -P` or `squeue` output ("ID|..." lines), pending
    array tasks expanded; [] if the command can't run."""
    if not shutil.which(command[0]):
        return []
    try:
        out = _slurm_command(command)
    except subprocess.TimeoutExpired:
        return []
    if out.returncode != 0:
        return []
    rows = []
    for line in out.stdout.splitlines():
        job_field, _, rest = line.partition("|")
        rows.extend((job_id, rest.strip()) for job_id in _expand_job_ids(job_field.strip()))
    return rows


def _job_states(command: list[str]) -> dict[str, str]:
    """Job id -> state from `sacct -P` or `squeue` output ("ID|STATE" lines); {} if it can't run."""
    return {job_id: state.split()[0] if state else "UNKNOWN" for job_id, state in _query(command)}  # "CANCELLED by 0"


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM state per job id ("123" or "123_4"): squeue for live jobs, sacct for ended ones.

    Jobs neither command knows read UNKNOWN (e.g. a cluster without accounting, after the
    job left squeue).
    """
    if not job_ids:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    states: dict[str, str] = {}
    # squeue second: fresher than accounting for jobs still in the queue.
    states.update(_job_states(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)]))
    states.update(_job_states(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)]))
    return {job_id: states.get(job_id, "UNKNOWN") for job_id in job_ids}


# States in which a job waits for something; squeue's reason (%r) says what.
WAITING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"})


def pending_reasons(job_ids: Sequence[str]) -> dict[str, str]:
    """Why each queued job of ``job_ids`` waits, as squeue says it ("Resources", "Priority",
    "BeginTime" after a requeue, "JobArrayTaskLimit", ...); jobs without a reason are left out."""
    if not job_ids:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    wanted = set(job_ids)
    reasons = _query(["squeue", "-h", "-r", "-o", "%i|%r", "-j", ",".join(arrays)])
    # A running job's reason is "None".
    return {job_id: reason for job_id, reason in reasons if job_id in wanted and reason not in ("", "None")}


def submit_sweep(
    entries: Sequence[RunConfig],
    results_dir: str | Path,
    options: SlurmOptions,
    *,
    method_files: Sequence[str | Path] = (),
    loggers: Sequence[str] = (),
    folder: str | Path | None = None,
) -> list[SubmittedJob]:
    """Check, then submit the entries that still need work as one job array (one entry: one job);
    returns its jobs. ``loggers``: the experiment trackers each run logs to, as a local run does.

    Raises UsageError (nothing submitted) on any problem found before or by ``sbatch``.
    """
    results_dir = Path(results_dir).resolve()
    options.validate()
    for config in entries:
        ddp.local_batch_size(config.batch_size, options.world_size)
    check_cluster(options)
    # Jobs may start in another working directory: every path they get is absolute.
    entries = [_absolute_paths(config) for config in entries]
    check_datasets(entries)

    running = latest_jobs(results_dir)
    live = slurm_states([job.job_id for job in running.values()])
    todo: list[Run] = []
    for run in (Run.of(results_dir, config) for config in entries):
        run_dir = str(run.path)
        previous = running.get(run_dir)
        if previous is not None and live.get(previous.job_id) in ACTIVE_STATES:
            print(f"[{run.config.method}] already queued as job {previous.job_id} ({live[previous.job_id]}): {run_dir}")
        elif run.is_done():
            print(f"[{run.config.method}] already finished: {run_dir}")
        else:
            todo.append(run)
    if not todo:
        return []

    log_folder = Path(folder or results_dir / "slurm" / "%A")
    executor = submitit.SlurmExecutor(folder=log_folder, max_num_timeout=options.max_requeues)
    executor.update_parameters(**options.executor_parameters())
    job = SweepJob()
    files = tuple(str(Path(path).resolve()) for path in method_files)
    what = submission_name(len(todo))
    with _undo_on_failure(submitit.core.utils.JobPaths.get_first_id_independent_folder(log_folder)) as sbatch_stderr:
        try:
            with executor.batch():
                handles = [
                    executor.submit(
                        job, JobSpec(run.config, str(results_dir), options.max_requeues, files, tuple(loggers))
                    )
                    for run in todo
                ]
        except Exception as error:  # sbatch refused the array: nothing was submitted
            message = _last_line(sbatch_stderr.getvalue()) or _last_line(str(error)) or type(error).__name__
            raise UsageError(
                f"sbatch refused the {what}, nothing was submitted: {message.removeprefix('sbatch: error: ')}"
            ) from None
    submitted = [
        SubmittedJob(
            job_id=str(handle.job_id),
            method=run.config.method,
            dataset=run.config.dataset,
            seed=run.config.seed,
            run_dir=str(run.path),
            stdout=str(handle.paths.stdout),
            stderr=str(handle.paths.stderr),
        )
        for handle, run in zip(handles, todo)
    ]
    _append_manifest(results_dir, submitted)
    return submitted


def describe_submission(jobs: Sequence[SubmittedJob]) -> str:
    """What was submitted: "job array 12: 3 runs", or "job 13: 1 run" (a single run is a plain job)."""
    ids = sorted({job.job_id.split("_")[0] for job in jobs})
    runs = f"{len(jobs)} run" + ("s" if len(jobs) > 1 else "")
    return f"{submission_name(len(jobs))} {', '.join(ids)}: {runs}"


def submission_name(tasks: int) -> str:
    """What a submission of ``tasks`` runs is to SLURM: submitit submits a single one as a plain job."""
    return "job array" if tasks > 1 else "job"


@contextmanager
def _undo_on_failure(staging: Path) -> Iterator[io.StringIO]:
    """Leave no trace of a refused submission: submitit's staged pickles and scripts go, and
    sbatch's error text (which submitit prints) is captured for a one-line message instead."""
    created = [path for path in (staging, *staging.parents) if not path.exists()]
    before = set(staging.iterdir()) if staging.is_dir() else set()
    captured = io.StringIO()
    try:
        with redirect_stderr(captured):
            yield captured
    except BaseException:
        for path in (set(staging.iterdir()) if staging.is_dir() else set()) - before:
            if path.is_file() or path.is_symlink():
                path.unlink()
        for path in created:  # innermost first; only the directories this call made, if empty
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise


def _absolute_paths(config: RunConfig) -> RunConfig:
    from dataclasses import replace

    return replace(config, data_root=str(Path(config.data_root).resolve()))


def wait_for(jobs: Sequence[SubmittedJob], *, poll_s: float = 2.0, log=print) -> dict[str, str]:
    """Block until no job is queued or running any more (requeues included); final states."""
    last: dict[str, str] = {}
    idle_polls = 0
    while True:
        states = slurm_states([job.job_id for job in jobs])
        for job in jobs:
            if states[job.job_id] != last.get(job.job_id):
                log(f"job {job.job_id} ({job.method}, {job.dataset}, seed {job.seed}): {states[job.job_id]}")
        last = states
        # Two quiet polls in a row: a requeue passes through states squeue may briefly not show.
        idle_polls = idle_polls + 1 if not any(state in ACTIVE_STATES for state in states.values()) else 0
        if idle_polls >= 2:
            return states
        time.sleep(poll_s)


def status_rows(results_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run directory with a job (its latest job): SLURM state (and why it waits), run state, logs."""
    jobs = latest_jobs(results_dir)
    states = slurm_states([job.job_id for job in jobs.values()])
    reasons = pending_reasons([job_id for job_id, state in states.items() if state in WAITING_STATES])
    rows = []
    for job in sorted(jobs.values(), key=lambda job: (job.dataset, job.method, job.seed, job.job_id)):
        run_dir = RunDir(Path(job.run_dir))
        status = run_dir.read_status()
        state = states[job.job_id]
        run_status, progress = run_state(status, run_dir.read_result(), state)
        restarts = (status.get("slurm") or {}).get("restart_count")
        reason = reasons.get(job.job_id)
        rows.append(
            {
                "job": job.job_id,
                "method": job.method,
                "dataset": job.dataset,
                "seed": job.seed,
                "slurm state": f"{state} ({reason})" if reason else state,
                "restarts": restarts if restarts is not None else "",
                "run status": run_status,
                "progress": progress,
                "logs": job.log_paths,
                "run directory": _shown(job.run_dir, results_dir),
            }
        )
    return rows


def run_state(status: dict[str, Any], record: dict[str, Any] | None, slurm_state: str) -> tuple[str, str]:
    """The run's state and progress, as `ssl-bench status` shows them.

    From status.json (``status``: pre-training), result.json (``record``: the evaluation that
    follows it) and the job's SLURM state. status.json reads "finished" once pre-training is done
    (at once for the random-init baseline, which has none), while result.json says "running" until
    the evaluation ends: such a run is "evaluating".
    """
    run_status = status.get("status", "missing")
    record = record or {}
    evaluation = record.get("status")
    if run_status == "finished" and evaluation == "failed":  # "evaluation failed: ..."
        return "failed", str(record.get("error"))
    progress = ""
    if run_status == "failed":
        error, step = str(status.get("error")), status.get("failed_step")
        progress = error if step is None or f"step {step}" in error else f"step {step}: {error}"
    elif "step" in status:
        total = status.get("total_steps")
        progress = f"step {status['step']}" + (f"/{total}" if total else "")
    elif "epochs_done" in status:
        progress = f"{status['epochs_done']} epochs"
    if run_status == "finished" and evaluation != "finished":
        run_status = "evaluating"
    if run_status in ("running", "evaluating") and slurm_state in ENDED_STATES:  # the job ended without a word
        run_status = f"stopped ({slurm_state.lower()})"
    return run_status, progress


# SLURM states of a job that will not run again (sacct's names).
ENDED_STATES = frozenset(
    {"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)


def _shown(path: str, results_dir: str | Path) -> str:
    """A path as the status table shows it: relative to the results directory where it lies below it."""
    root = str(Path(results_dir).resolve()) + os.sep
    return path.removeprefix(root)


def format_status(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False)
