"""Two gloo processes train like one process on the global batch: the harness's DDP step.

What is compared. Each of 2 ranks builds the real :class:`ssl_bench.train.trainer.Trainer` (same config,
same seed, so the same initial weights), takes its own shard of the first two batches from its
loader, and runs ``Trainer.train_step`` twice: DDP forward, losses gathering across ranks,
backward with gradient averaging, LARS step with the lr of the global batch. One process then
builds the same Trainer without a process group and runs ``train_step`` on the concatenation of
the two ranks' inputs (rank 0's rows, then rank 1's: the order the gathers use). Per step, the
logged loss and each loss term must agree (the ranks average theirs, ssl_bench.distributed.ddp), as must the
parameter gradients after each step and the weights after both.

Why that can hold. A loss that needs global statistics gathers the embeddings with gradients,
so each rank's gradient / world_size is its share of the global-batch gradient and DDP's
averaging sums them back (test_losses_distributed.py checks the losses alone). The global
batch is 32 either way, so the lr is the same, and step 2 starts from the same step-1 update.

Why BatchNorm must go. The backbone and projector normalise with *batch* statistics. With one
process those are the 32 rows' statistics; with two processes and plain BatchNorm each rank
normalises its 16 rows with their own mean and variance: a different function, so no tolerance
could make the numbers agree. On GPUs the trainer converts to SyncBatchNorm, which computes the
global statistics; torch has no CPU SyncBatchNorm (its forward refuses CPU tensors and
``batch_norm_stats`` has no CPU kernel), so here the comparison builds the method with every
BatchNorm replaced by the identity. A second variant keeps plain BatchNorm and checks that the
first step's loss then does *differ*, which shows the comparison can tell the two apart.

One launch of the two processes runs every case (process start-up dominates the runtime).
"""

from __future__ import annotations

import datetime
import socket
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ssl_bench.data.loaders import TrainBatch
from ssl_bench.distributed import collectives, ddp
from ssl_bench.recipes import resolve_config
from ssl_bench.store.rundir import RunDir
from ssl_bench.train import trainer as train_module
from ssl_bench.train.trainer import Trainer

WORLD = 2
GLOBAL_BATCH = 32
STEPS = 2
# (method, keep BatchNorm). simclr: negatives from the other rank, with two small crops per image
# (multi-crop for a pair loss: the loss over each global crop's pairs); vicreg: variance and
# covariance of the global batch, invariance local; mocov2: the keys of both ranks enqueued in
# rank order (the queue is compared with the weights), the second step's negatives among them;
# swav: Sinkhorn's sums over the global batch, two small crops per image through the same network,
# and a queue of one global batch from the first step (each rank's own block, gathered: the queue
# is compared with the weights), zeros in the first step's codes and the first batch in the second's.
CASES = [("vicreg", False), ("simclr", False), ("mocov2", False), ("vicreg", True), ("swav", False)]
LOCAL_CROPS = {"count": 2, "size": 12, "crop_scale": [0.1, 0.4]}


def _config(method: str, data_root: Path):
    # warmup 0: step 0 already has a non-zero lr. No bias on the last Linear: VICReg's loss is
    # blind to it (every term compares or centres the embeddings), so its gradient is rounding
    # noise that no two summation orders share. The lr and weight decay are the test's own, not
    # the demo rows' tuned values, which can move it: at base_lr 0.065 and weight decay 1.8e-6 the
    # first step's gradients agree to 1e-6 of their scale, the second step's VICReg gradients
    # only to 4e-3, past any float32 tolerance (a non-smooth point of the loss, such as the hinge
    # max(0, 1 - std), crossed by rounding).
    settings = [
        "base_lr=0.3",
        "weight_decay=1e-4",
        "projector=64,32",
        f"batch_size={GLOBAL_BATCH}",
        "num_workers=0",
        "device=cpu",
        "train_subset=none",
        "warmup_epochs=0",
        "projector_options.last_bias=false",
    ]
    if method == "swav":  # prototypes trained from the first step
        settings += [
            "method_params.prototypes=16",
            "method_params.freeze_prototypes_epochs=0",
            f"method_params.queue_size={GLOBAL_BATCH}",
            "method_params.epoch_queue_starts=0",
        ]
    config = resolve_config(method, "fashion-mnist", {"epochs": 1, "data_root": str(data_root)}, settings)
    if method in ("swav", "simclr"):
        config.local_crops = {**config.view_a, **LOCAL_CROPS}
    return config


# Methods compared with a smooth activation in place of ReLU. The two runs' convolutions round
# differently (batches of 16 and of 32); in MoCo v2's second step a pre-activation within that
# rounding of 0 falls on the other side of ReLU's kink in one run, and that unit's gradient reaches
# the backbone's in that run only (1e-3 of the gradient's scale). With Softplus the runs agree to
# 1e-7 of it: nothing else differs.
SMOOTH_ACTIVATION = {"mocov2"}


def _without_batchnorm(module: nn.Module, smooth: bool = False) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        elif smooth and isinstance(child, nn.ReLU):
            setattr(module, name, nn.Softplus(beta=20.0))
        else:
            _without_batchnorm(child, smooth)
    return module


def _trainer(method: str, keep_bn: bool, data_root: Path, run_dir: Path) -> Trainer:
    build = train_module.build_method
    smooth = method in SMOOTH_ACTIVATION
    patched = build if keep_bn else (lambda config: _without_batchnorm(build(config), smooth))
    with mock.patch.object(train_module, "build_method", patched):
        return Trainer(_config(method, data_root), RunDir(run_dir), progress=False, log=lambda _: None)


def _steps(trainer: Trainer, inputs: list[tuple[torch.Tensor, ...]]) -> dict:
    """train_step on each batch; the values and gradients of every step, final weights."""
    values, grads = [], []
    for batch in inputs:
        values.append(trainer.train_step(*batch))
        trainer.step += 1
        grads.append({name: p.grad.clone() for name, p in trainer.method.named_parameters() if p.grad is not None})
    return {"values": values, "grads": grads, "weights": {k: v.clone() for k, v in trainer.method.state_dict().items()}}


def _worker(rank: int, port: int, data_root: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on a 2-core machine
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = {}
        for method, keep_bn in CASES:
            trainer = _trainer(method, keep_bn, Path(data_root), Path(out_dir) / f"run{rank}")
            batches = trainer.loader.epoch(0)
            inputs = [next(batches) for _ in range(STEPS)]
            results[(method, keep_bn)] = {
                "inputs": inputs,
                "local_batch": trainer.local_batch,
                "peak_lr": trainer.peak_lr,
                "wrapped": type(trainer.model).__name__,
                **_steps(trainer, inputs),
            }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_method() -> str:
    # A forked child starts in well under a second, a spawned one re-imports torch (5-10 s).
    # Fork only where that is safe: Linux, and no other Python thread whose locks could be held.
    if sys.platform == "linux" and "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


@pytest.fixture(scope="module")
def ranks(fashion_root, tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out_dir = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(
        _worker,
        args=(_free_port(), str(fashion_root), str(out_dir)),
        nprocs=WORLD,
        join=False,
        start_method=_start_method(),
    )
    deadline = time.monotonic() + 180  # a stuck collective must fail the test, not hang the suite
    while not context.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail("the 2-process gloo run did not finish within 180 s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _single_process(method: str, keep_bn: bool, ranks: list[dict], data_root: Path, run_dir: Path) -> dict:
    """The same steps in this process, on the concatenation of the ranks' inputs."""
    assert not collectives.is_distributed()
    per_rank = [r[(method, keep_bn)]["inputs"] for r in ranks]
    inputs = [
        TrainBatch(
            *(torch.cat(parts) for parts in zip(*(batch[:3] for batch in steps))),
            tuple(torch.cat(crops) for crops in zip(*(batch.local_views for batch in steps))),
        )
        for steps in zip(*per_rank)
    ]
    trainer = _trainer(method, keep_bn, data_root, run_dir)
    assert trainer.local_batch == GLOBAL_BATCH and trainer.model is trainer.method
    return {"peak_lr": trainer.peak_lr, **_steps(trainer, inputs)}


@pytest.mark.parametrize("method", ["vicreg", "simclr", "mocov2", "swav"])
def test_two_ranks_equal_one_process_on_the_global_batch(ranks, method, fashion_root, tmp_path):
    single = _single_process(method, False, ranks, fashion_root, tmp_path)
    for rank in ranks:
        result = rank[(method, False)]
        assert result["wrapped"] == "DistributedDataParallel"
        assert result["local_batch"] == GLOBAL_BATCH // WORLD
        assert result["peak_lr"] == single["peak_lr"]  # lr of the global batch, whatever the world size
        for step in range(STEPS):
            # Every rank logs the same, global-batch values (terms too), equal to one process's.
            assert result["values"][step].keys() == single["values"][step].keys()
            for key, value in single["values"][step].items():
                assert result["values"][step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)
            for name, grad in single["grads"][step].items():
                torch.testing.assert_close(result["grads"][step][name], grad, rtol=1e-4, atol=1e-6, msg=name)
        for name, weight in single["weights"].items():
            torch.testing.assert_close(result["weights"][name], weight, rtol=1e-5, atol=1e-7, msg=name)
    # The inputs really were two different halves, not the same batch twice.
    assert not torch.equal(ranks[0][(method, False)]["inputs"][0][0], ranks[1][(method, False)]["inputs"][0][0])


def test_plain_batchnorm_on_cpu_ranks_is_not_the_global_batch(ranks, fashion_root, tmp_path):
    """Per-rank BatchNorm statistics change the function: the check above would catch it."""
    single = _single_process("vicreg", True, ranks, fashion_root, tmp_path)
    two = ranks[0][("vicreg", True)]
    assert two["values"][0]["loss"] != pytest.approx(single["values"][0]["loss"], rel=1e-3)


def test_batch_size_is_the_global_batch():
    assert ddp.local_batch_size(256, 8) == 32
    with pytest.raises(Exception, match="does not divide over 3"):
        ddp.local_batch_size(256, 3)


def test_sync_batchnorm_only_where_torch_has_it():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    # One process: nothing to synchronise, on any device.
    assert ddp.sync_batchnorm(net, torch.device("cpu")) is net
    assert ddp.wrap(net, torch.device("cpu")) is net
    assert "cpu" not in ddp.SYNC_BN_DEVICE_TYPES


def test_slurm_and_torchrun_environments(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert ddp.torchrun_env() is None and ddp.slurm_env() is None
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert ddp.slurm_env() is None  # a batch script, not an srun step: one process
    env = {
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "3",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_ID": "812",
        "SLURM_RESTART_COUNT": "0",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    first = ddp.slurm_env()
    assert (first.rank, first.world_size, first.local_rank, first.master_addr) == (3, 4, 1, "gpu07")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert ddp.slurm_env().master_port != first.master_port  # a requeued attempt rendezvous elsewhere
    assert ddp.backend_for("cpu") == "gloo"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ddp.torchrun_env().rank == 1
