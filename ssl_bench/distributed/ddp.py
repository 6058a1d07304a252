"""Data-parallel training: process-group set-up, the DDP wrapper and the trainer's collectives.

One process per GPU (or per CPU slot, with gloo), started either by SLURM (``srun`` inside a
submitit job: one task per GPU) or by ``torchrun`` on one machine. Every helper here is a no-op
in a single process, so the trainer calls them unconditionally.

Batch size under DDP: ``RunConfig.batch_size`` is the **global** batch, as in the published
recipes (VICReg's 2048 is over 32 GPUs); each of the ``world_size`` ranks takes
``batch_size / world_size`` samples per step, and the lr follows the global batch. A batch that
does not split evenly is refused (:func:`local_batch_size`) rather than silently rounded.

BatchNorm: with more than one rank the backbone's and projector's BatchNorm layers become
``nn.SyncBatchNorm``, so batch statistics are those of the global batch, as in the official
VICReg / Barlow Twins code. torch's SyncBatchNorm only runs on accelerators: on CPU its forward
raises ``ValueError`` and its kernels (``torch.batch_norm_stats``) have no CPU implementation
(checked on torch 2.13), so multi-process CPU (gloo) runs keep plain per-rank BatchNorm. That
is fine for testing the plumbing, but such runs are not equivalent to a single process on the
global batch (see tests/test_ddp.py).
"""

from __future__ import annotations

import datetime
import os
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssl_bench.device import resolve_device
from ssl_bench.distributed import collectives
from ssl_bench.errors import UsageError

# Device types whose SyncBatchNorm kernels exist (torch.nn.SyncBatchNorm.forward's own list).
SYNC_BN_DEVICE_TYPES = frozenset({"cuda", "hpu", "xpu"})
# How long the other ranks wait for rank 0's evaluation between two runs of a sweep (a full
# ImageNet evaluation takes hours); a rank that dies ends the others sooner (torchrun, srun).
RANK0_WAIT = datetime.timedelta(hours=24)
# Range for a job-derived rendezvous port: below Linux's default ephemeral range (32768-60999),
# so an outgoing connection on the node is unlikely to hold it already.
_PORT_BASE, _PORT_SPAN = 20000, 12000


@dataclass(frozen=True)
class ProcessEnv:
    """Where this process sits in a multi-process run, and how the ranks find each other."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" | "slurm"


def torchrun_env() -> ProcessEnv | None:
    """The process's place under ``torchrun`` (RANK, WORLD_SIZE, ... set), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return ProcessEnv(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        master_addr=os.environ.get("MASTER_ADDR", "127.0.0.1"),
        master_port=int(os.environ.get("MASTER_PORT", 29500)),
        launcher="torchrun",
    )


def slurm_env() -> ProcessEnv | None:
    """The process's place in a SLURM job step (one task per GPU), else None.

    Only inside an ``srun`` step (SLURM_STEP_ID set): a batch script itself also sees
    SLURM_NTASKS but is a single process, and would wait forever for ranks that never start.
    The rendezvous port is derived from the job id and its restart count, so all tasks agree on
    it without talking, and a requeued attempt does not collide with sockets the previous
    attempt may have left in TIME_WAIT.
    """
    if "SLURM_STEP_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        return None
    world_size = int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))
    job_id = os.environ.get("SLURM_JOB_ID", "0")
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    port = _PORT_BASE + zlib.crc32(f"{job_id}/{restart}".encode()) % _PORT_SPAN
    return ProcessEnv(
        rank=int(os.environ["SLURM_PROCID"]),
        world_size=world_size,
        local_rank=int(os.environ.get("SLURM_LOCALID", 0)),
        master_addr=_first_slurm_host(),
        master_port=port,
        launcher="slurm",
    )


def _first_slurm_host() -> str:
    """Rank 0's host: the first node of the step (submitit parses SLURM's compressed node list)."""
    from submitit.slurm.slurm import _parse_node_list

    node_list = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
    hosts = _parse_node_list(node_list) if node_list else []
    return hosts[0] if hosts else "127.0.0.1"


def backend_for(device: str) -> str:
    """NCCL for GPU runs, gloo for CPU ones (``device`` is RunConfig.device: auto, cpu, cuda...)."""
    return "nccl" if resolve_device(device).type == "cuda" else "gloo"


def init_process_group(env: ProcessEnv, backend: str, timeout_s: float = 600) -> None:
    """Join the default process group (no-op for a single process or when already joined)."""
    if env.world_size <= 1 or collectives.is_distributed():
        return
    if backend == "nccl":
        # Pick this rank's GPU by index rather than rewriting CUDA_VISIBLE_DEVICES: SLURM may
        # already have restricted it, and "cuda" then means the current device everywhere.
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def destroy_process_group() -> None:
    global _wait_group
    _wait_group = None
    if collectives.is_distributed():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Each rank's share of the global batch; a UsageError when it does not split evenly."""
    if global_batch % world_size:
        raise UsageError(
            f"batch size {global_batch} (the global batch) does not divide over {world_size} processes/GPUs"
        )
    return global_batch // world_size


def sync_batchnorm(module: nn.Module, device: torch.device, enabled: bool = True) -> nn.Module:
    """BatchNorm -> SyncBatchNorm when ``enabled``, there are several ranks and the device supports it."""
    if enabled and collectives.world_size() > 1 and device.type in SYNC_BN_DEVICE_TYPES:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several ranks, else ``module``.

    Keep using the unwrapped module for state dicts and attribute access; call the wrapper for
    the forward pass, whose backward then averages gradients over ranks.
    """
    if collectives.world_size() <= 1:
        return module
    device_ids = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    )
    return DistributedDataParallel(module, device_ids=device_ids)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalars over ranks (identity in one process), in one all_reduce.

    Per-rank loss values are means over that rank's rows (the losses gather only what needs the
    global batch); their average is the loss of the global batch. Every rank also sees the same
    numbers, so a NaN on one rank stops all of them at the same step instead of leaving the
    others blocked in the next collective.
    """
    if collectives.world_size() <= 1 or not values:
        return values
    keys = sorted(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= collectives.world_size()
    return dict(zip(keys, tensor.tolist()))


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (identity in one process)."""
    if collectives.world_size() <= 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier() -> None:
    if collectives.world_size() > 1:
        dist.barrier()


_wait_group: dist.ProcessGroup | None = None


def wait_for_rank0() -> None:
    """Every rank waits here until all arrive: rank 0 comes last, after evaluating a run alone.

    The default group's timeout is sized for training steps, so the wait goes through a gloo
    group of its own (gloo also for NCCL runs: nothing to move, and it needs no GPU stream)
    whose timeout is :data:`RANK0_WAIT`. Identity in one process.
    """
    global _wait_group
    if collectives.world_size() <= 1:
        return
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=RANK0_WAIT)
    dist.barrier(group=_wait_group)
