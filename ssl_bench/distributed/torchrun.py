"""Data-parallel runs on one machine: ``ssl-bench run --nproc-per-node N``, or under ``torchrun``.

``--nproc-per-node N`` hands the very same command to torchrun's launcher
(``torch.distributed.launcher.api.elastic_launch``, what the ``torchrun`` command runs, here
as ``torchrun --standalone``): N processes of ``python -m ssl_bench.launch.cli <same
arguments>``. Each of them, like any ``ssl-bench run`` started by ``torchrun``, finds
torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT) and runs as one rank
(:class:`ssl_bench.launch.executor.RankExecutor`): it joins the process group
(:func:`ssl_bench.distributed.ddp.init_process_group`: NCCL on GPUs, gloo on CPUs) and carries
out each sweep entry with
:func:`ssl_bench.run.lifecycle.run_entry`, the function a SLURM array task runs after joining
the group the same way. So the DDP path (global batch split over the ranks, SyncBatchNorm on
GPUs, losses gathered over ranks, rank 0 writing the run directory) is SLURM's, and the weights
are the same (tests/test_torchrun.py).

After each entry the other ranks wait for rank 0, which alone evaluates
(:func:`ssl_bench.distributed.ddp.wait_for_rank0`). A crash on any rank ends the command:
the ranks share every step, so no rank can go on to the next entry alone; run the same
command again to resume.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Sequence

from ssl_bench.config import RunConfig
from ssl_bench.device import resolve_device
from ssl_bench.distributed import ddp
from ssl_bench.errors import UsageError


def check_world(configs: Sequence[RunConfig], nproc: int) -> None:
    """A UsageError unless ``nproc`` processes can share every run of the sweep on this machine."""
    if nproc < 1:
        raise UsageError(f"--nproc-per-node must be positive, got {nproc}")
    for config in configs:
        ddp.local_batch_size(config.batch_size, nproc)
        device = resolve_device(config.device)
        if device.type == "cuda":
            import torch

            if nproc > torch.cuda.device_count():
                raise UsageError(
                    f"--nproc-per-node {nproc}: DDP runs one process per GPU, and {torch.cuda.device_count()} "
                    "are visible here"
                )


def threads_per_process(nproc: int) -> int:
    """CPU threads for each of ``nproc`` processes: the cores this process may use, shared out."""
    return max(1, len(os.sched_getaffinity(0)) // nproc)


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run ``ssl-bench <argv>`` as ``nproc`` ranks on this machine; the exit status of the worst rank."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ssl_bench.preemption import Terminated

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free port on this machine
        max_restarts=0,  # a crashed run resumes when the command is run again
    )
    # N processes must not each start a thread per core (torchrun sets 1; a CPU run uses more).
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    try:
        elastic_launch(config, sys.executable)("-m", "ssl_bench.launch.cli", *argv)
    except ChildFailedError as error:
        # Each rank has printed its own error; say which one failed first, and exit as it did.
        rank, failure = min(error.failures.items(), key=lambda item: item[1].timestamp)
        if set(error.failures) == {0} and failure.exitcode == 1:
            return 1  # rank 0 alone, as `ssl-bench run` does when a run failed: its table says which
        if failure.exitcode < 0:  # killed by a signal: the shell's 128 + signal number
            how, status = f"was killed by {signal.Signals(-failure.exitcode).name}", 128 - failure.exitcode
        else:
            how, status = f"exited with status {failure.exitcode}", failure.exitcode
        print(f"ssl-bench: rank {rank} of {nproc} {how}; run the same command again to resume", file=sys.stderr)
        return status
    except SignalException as stop:  # Ctrl-C or SIGTERM reached the launcher, which stopped the ranks
        raise (Terminated() if stop.sigval == signal.SIGTERM else KeyboardInterrupt()) from None
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    return 0
