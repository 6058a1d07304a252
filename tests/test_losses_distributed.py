"""The losses under a real 2-process gloo group agree with one process on the whole batch.

DDP semantics: each rank computes its loss on its half of the batch (gathering with
gradients where the loss needs global statistics) and backpropagates; the gather's backward
sums every rank's contribution to this rank's rows. Then
  * the mean over ranks of the per-rank loss equals the single-process loss, and
  * each rank's gradient / world_size equals its slice of the single-process gradient,
which is what DDP's gradient averaging turns into the global-batch update. A non-autograd
gather (or all_reduce) fails the second check.

One launch of the two processes runs every case (process start-up dominates the runtime).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import threading
import time
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_bench.distributed import collectives
from ssl_bench.methods.barlow_twins import barlow_twins_loss
from ssl_bench.methods.byol import byol_loss
from ssl_bench.methods.mocov3 import mocov3_loss
from ssl_bench.methods.simclr import nt_xent_loss
from ssl_bench.methods.simsiam import simsiam_loss
from ssl_bench.methods.swav import swav_loss
from ssl_bench.methods.tico import tico_loss
from ssl_bench.methods.vicreg import vicreg_loss, vicreg_terms

WORLD = 2
# (global N, D): N < D exercises the Gram forms on the gathered batch, N > D the direct ones.
SHAPES = [(8, 12), (12, 5)]


def _batch(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n * 1000 + d)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64)
    z_b = z_a + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    return z_a, z_b, m @ m.T / d  # views and a previous TiCo C


LOSSES = {
    # name -> fn(z_a, z_b, c_prev) -> (loss, extra state); the same calls on one process or per rank
    "simclr": lambda z_a, z_b, c: (nt_xent_loss(z_a, z_b, temperature=0.5), None),
    "vicreg": lambda z_a, z_b, c: (vicreg_loss(z_a, z_b), None),
    "barlow_twins": lambda z_a, z_b, c: (barlow_twins_loss(z_a, z_b, lambd=0.05), None),
    "tico": lambda z_a, z_b, c: tico_loss(z_a, z_b, c),  # (loss, C_next)
    # Symmetrised, so that both inputs get gradients (the second argument is a constant).
    "mocov3": lambda z_a, z_b, c: (mocov3_loss(z_a, z_b, 0.5) + mocov3_loss(z_b, z_a, 0.5), None),
    "byol": lambda z_a, z_b, c: (byol_loss(z_a, z_b) + byol_loss(z_b, z_a), None),
    "simsiam": lambda z_a, z_b, c: (simsiam_loss(z_a, z_b) + simsiam_loss(z_b, z_a), None),
    # The views as prototype scores: Sinkhorn's sums are all-reduced, so each rank's codes are its
    # rows of the global batch's codes.
    "swav": lambda z_a, z_b, c: (swav_loss([z_a, z_b], [], 0.5, 0.5, 3), None),
}


def _run_all(z_a_full, z_b_full, c_prev, rank: int, world: int) -> dict:
    """Every loss on this rank's rows of the batch: loss, gradients, state."""
    n = z_a_full.shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    results = {}
    for name, fn in LOSSES.items():
        z_a = z_a_full[rows].clone().requires_grad_()
        z_b = z_b_full[rows].clone().requires_grad_()
        loss, state = fn(z_a, z_b, c_prev)
        grad_a, grad_b = torch.autograd.grad(loss, (z_a, z_b))
        results[name] = {"loss": loss.detach(), "grad_a": grad_a, "grad_b": grad_b, "state": state}
    # As in the official code, VICReg's invariance term stays on the local batch.
    results["vicreg_invariance"] = vicreg_terms(z_a_full[rows], z_b_full[rows])["invariance"]
    return results


def _official_barlow_twins(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float, batch_size: int) -> torch.Tensor:
    """facebookresearch/barlowtwins main.py:207-221 (commit 8e8d284c) on this rank's rows.

    ``self.bn`` is a SyncBatchNorm(affine=False) there (main.py:89): global-batch statistics
    whose backward, like SyncBatchNorm's, sums the other ranks' contributions (an autograd
    all_reduce here). Then c = bn(z1).T @ bn(z2) / batch_size, summed over ranks by a
    non-autograd all_reduce, as the official code does.
    """
    from torch.distributed.nn.functional import all_reduce as all_reduce_with_grad

    def sync_batchnorm(z: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            mean = all_reduce_with_grad(z.sum(dim=0)) / batch_size
            var = all_reduce_with_grad((z - mean).square().sum(dim=0)) / batch_size
        return (z - mean) / torch.sqrt(var + 1e-5)

    c = sync_batchnorm(z_a).T @ sync_batchnorm(z_b)
    c.div_(batch_size)
    dist.all_reduce(c)
    on_diag = (torch.diagonal(c) - 1).square().sum()
    off_diag = (c - torch.diag(torch.diagonal(c))).square().sum()
    return on_diag + lambd * off_diag


def _barlow_twins_official_scale(z_a_full, z_b_full, rank: int) -> dict:
    """The official code's loss and gradients on this rank's rows, and ssl-bench's official_ddp_scale."""
    n = z_a_full.shape[0] // WORLD
    rows = slice(rank * n, (rank + 1) * n)
    forms = {
        "official": lambda a, b: _official_barlow_twins(a, b, 0.05, z_a_full.shape[0]),
        "official_ddp_scale": lambda a, b: barlow_twins_loss(a, b, lambd=0.05, official_ddp_scale=True),
    }
    results = {}
    for name, fn in forms.items():
        z_a = z_a_full[rows].clone().requires_grad_()
        z_b = z_b_full[rows].clone().requires_grad_()
        loss = fn(z_a, z_b)
        grad_a, grad_b = torch.autograd.grad(loss, (z_a, z_b))
        results[name] = {"loss": loss.detach(), "grad_a": grad_a, "grad_b": grad_b}
    return results


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on a 2-core machine
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        info = {
            "is_distributed": collectives.is_distributed(),
            "world_size": collectives.world_size(),
            "rank": collectives.rank(),
        }
        # gather_with_grad alone: values concatenated in rank order; backward sums over ranks.
        x = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
        gathered = collectives.gather_with_grad(x)
        weights = torch.arange(gathered.numel(), dtype=torch.float64).reshape(gathered.shape)
        (gathered * weights * (rank + 1)).sum().backward()
        info["gathered"] = gathered.detach()
        info["gather_grad"] = x.grad

        per_shape, barlow_official = {}, {}
        for n, d in SHAPES:
            z_a, z_b, c_prev = _batch(n, d)
            per_shape[(n, d)] = _run_all(z_a, z_b, c_prev, rank, WORLD)
            barlow_official[(n, d)] = _barlow_twins_official_scale(z_a, z_b, rank)
        torch.save(
            {"info": info, "results": per_shape, "barlow_official": barlow_official},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_method() -> str:
    # "spawn" re-imports torch, torchvision and this module in every child: about 5 s each,
    # 10 s on 2 busy cores. A forked child starts in well under a second. Fork only where it
    # is safe: on Linux, with no other Python thread alive whose locks the child could
    # inherit held (the workers also drop to one intra-op thread).
    if sys.platform == "linux" and "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out_dir = tmp_path_factory.mktemp("dist")
    context = mp.start_processes(
        _worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=False, start_method=_start_method()
    )
    # Bounded wait: a stuck collective must fail the test, not hang the suite.
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail("the 2-process gloo run did not finish within 120 s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_helpers_inside_the_group(rank_results):
    for r, res in enumerate(rank_results):
        info = res["info"]
        assert info["is_distributed"] is True
        assert info["world_size"] == WORLD and info["rank"] == r
        expected = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)]).double()
        torch.testing.assert_close(info["gathered"], expected, rtol=0, atol=0)
        # Rank k's loss is (k + 1) * sum(weights * gathered); rank r's rows are weights[2r:2r+2],
        # so its gradient is (1 + 2) * weights[2r:2r+2], summed over both ranks' losses.
        weights = torch.arange(12, dtype=torch.float64).reshape(4, 3)
        torch.testing.assert_close(info["gather_grad"], 3 * weights[2 * r : 2 * r + 2], rtol=0, atol=0)


def test_helpers_without_a_group():
    assert not collectives.is_distributed()
    assert collectives.world_size() == 1 and collectives.rank() == 0
    x = torch.randn(3, 2)
    assert collectives.gather_with_grad(x) is x
    assert collectives.resolve_gather(None) is False and collectives.resolve_gather(True) is False


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_ranks_reproduce_the_global_batch(rank_results, name, shape):
    n, d = shape
    z_a, z_b, c_prev = _batch(n, d)
    single = _run_all(z_a, z_b, c_prev, rank=0, world=1)[name]
    per_rank = [res["results"][shape][name] for res in rank_results]

    mean_loss = sum(r["loss"] for r in per_rank) / WORLD
    torch.testing.assert_close(mean_loss, single["loss"], rtol=1e-12, atol=1e-12)

    local = n // WORLD
    for r, res in enumerate(per_rank):
        rows = slice(r * local, (r + 1) * local)
        torch.testing.assert_close(res["grad_a"] / WORLD, single["grad_a"][rows], rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(res["grad_b"] / WORLD, single["grad_b"][rows], rtol=1e-10, atol=1e-13)
        if name == "tico":
            torch.testing.assert_close(res["state"], single["state"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_barlow_twins_official_ddp_scale_is_the_official_codes_gradient(rank_results, shape):
    """loss.official_ddp_scale: the official code's loss and gradient on every rank, float64.

    Its non-autograd all_reduce gives each rank 1/world_size of the exact per-rank gradient, so
    after DDP's average every parameter's gradient is 1/world_size of the global-batch one.
    """
    for r, res in enumerate(rank_results):
        official = res["barlow_official"][shape]["official"]
        scaled = res["barlow_official"][shape]["official_ddp_scale"]
        exact = res["results"][shape]["barlow_twins"]
        torch.testing.assert_close(scaled["loss"], official["loss"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(scaled["loss"], exact["loss"], rtol=0, atol=0)  # the same value
        for key in ("grad_a", "grad_b"):
            torch.testing.assert_close(scaled[key], official[key], rtol=1e-10, atol=1e-13, msg=f"rank {r} {key}")
            torch.testing.assert_close(scaled[key], exact[key] / WORLD, rtol=1e-10, atol=1e-13, msg=f"rank {r} {key}")


def test_vicreg_invariance_uses_the_local_batch(rank_results):
    # Gathering for the invariance term would give the same mean and gradients, but costs a
    # collective; the official code keeps it local, and so does ssl-bench.
    for n, d in SHAPES:
        z_a, z_b, _ = _batch(n, d)
        local = n // WORLD
        for r, res in enumerate(rank_results):
            rows = slice(r * local, (r + 1) * local)
            expected = torch.mean((z_a[rows] - z_b[rows]) ** 2)
            torch.testing.assert_close(res["results"][(n, d)]["vicreg_invariance"], expected)
