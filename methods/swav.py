"""SwAV: swapped prediction of online cluster codes, with multi-crop.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, arXiv:2006.09882, sections 3.1-3.2. Follows the
official code, facebookresearch/swav at commit 06b1b7c (``main_swav.py`` ``train`` and
``distributed_sinkhorn``, ``src/resnet50.py``), and solo-learn's port for the CIFAR row
(vturrisi/solo-learn 9187ea39, ``solo/methods/swav.py``, ``solo/losses/swav.py``).

Each crop's embedding is L2-normalised, z = proj(f(x)) / ||proj(f(x))||, and scored against K
prototypes c_k, unit vectors (the rows of a bias-free Linear): scores s = z C^T. The codes of
a global crop come from its scores by Sinkhorn-Knopp, without gradient (equal use of every
prototype over the batch, entropy 1/epsilon):

    Q = exp(S^T / epsilon)                  (K x B; normalised to sum 1)
    repeat n times: rows to 1/K each, then columns to 1/B each
    codes = B Q^T                           (every sample's code sums to 1)

and every other crop predicts them (the swapped prediction, with temperature tau):

    l(v, s) = - 1/B sum_i sum_k q_ik^(s) log softmax(z_i^(v) C^T / tau)_k
    L = 1/|G| sum_{s in G} 1/(V - 1) sum_{v != s} l(v, s)

over the global crops G (``crops_for_assign``, both 224-pixel crops) and all V crops. The
official defaults: tau 0.1, epsilon 0.05, 3 iterations, 3000 prototypes, an embedding of 128.

Prototypes are projected back onto the unit sphere after every optimiser step (the official
code normalises them before every forward pass: the same values at every forward), and get no
update during the first ``freeze_prototypes_epochs`` (their gradients dropped before the step,
``freeze_prototypes_niters``; solo-learn counts ``freeze_prototypes_epochs``). solo-learn
reparametrises them with ``weight_norm`` at a fixed norm instead, so its gradient is projected
onto the sphere; the CIFAR row names that difference.

Crops: two global views and, with ``local_crops`` (multi-crop), the small ones. As in the
official forward (``ResNet.forward``), the crops of one resolution go through the backbone as
one batch, and every crop through the projection head at once, so BatchNorm statistics are taken
over all of them.

Distributed: as ``distributed_sinkhorn``, the sums of Q are all-reduced over ranks, so the codes
equipartition the global batch; each rank's loss is the mean over its own samples, and DDP's
gradient averaging gives the global mean.

The queue (``method_params.queue_size`` > 0, solo-learn's rule, ``solo/methods/swav.py``
``get_assignments`` and ``training_step``): with small batches the codes are computed over the
batch and the last ``queue_size`` global-crop embeddings of each global crop together, and only
the batch's rows are kept, so that equipartition holds over more samples than a batch has:

    codes^(s) = Sinkhorn([S^(s); Z_queue^(s) C^T])[:B]

The queue is filled (newest first) at every training step from the start, and joins the
Sinkhorn batch from epoch ``epoch_queue_starts``. The official code (``main_swav.py``) creates
it at that epoch and uses it once it is full, ``queue_length / batch`` steps later. Each rank
keeps its own embeddings (``queue_size / ranks`` of them), as both sources do; here every rank
holds all ranks' blocks (gathered each step, without gradient) and takes its own, so that the
buffer is the same on every rank, as DDP's buffer broadcast and the rank-0 checkpoint need.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.data.augment import view_pair_configs
from ssl_bench.distributed.collectives import gather_with_grad, rank, resolve_gather, world_size
from ssl_bench.embeddings import is_whole_number
from ssl_bench.errors import UsageError
from ssl_bench.method import Method, register_method

# The official MultiCropDataset: RandomResizedCrop, flip 0.5, colour distortion s = 1 (jitter
# 0.8, 0.8, 0.8, 0.2 with p 0.8, grayscale 0.2), PIL blur p 0.5 on every crop; the global
# crops' area range is --min_scale_crops 0.14 to --max_scale_crops 1.
_SWAV_VIEWS = tuple(
    dataclasses.replace(view, crop_scale=(0.14, 1.0)) for view in view_pair_configs("symmetric", small_images=False)
)


def _all_reduce_sum(x: Tensor, distributed: bool) -> Tensor:
    if distributed:
        torch.distributed.all_reduce(x)
    return x


def sinkhorn_codes(scores: Tensor, epsilon: float, iterations: int, *, gather: bool | None = None) -> Tensor:
    """SwAV's codes (B, K) for prototype scores (B, K): Sinkhorn-Knopp (call it without gradient).

    ``gather``: equipartition over the batches of all ranks (their sums all-reduced); None =
    whenever torch.distributed runs with more than one rank.
    """
    distributed = resolve_gather(gather)
    q = torch.exp(scores / epsilon).T  # (K, B)
    prototypes = q.shape[0]
    samples = q.shape[1] * (world_size() if distributed else 1)
    q /= _all_reduce_sum(q.sum(), distributed)
    for _ in range(iterations):
        q /= _all_reduce_sum(q.sum(dim=1, keepdim=True), distributed)  # each prototype's total: 1/K
        q /= prototypes
        q /= q.sum(dim=0, keepdim=True)  # each sample's total: 1/B
        q /= samples
    return (q * samples).T


def swav_loss(
    global_scores: Sequence[Tensor],
    local_scores: Sequence[Tensor],
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    *,
    queue_scores: Sequence[Tensor] = (),
    gather: bool | None = None,
) -> Tensor:
    """SwAV's swapped prediction: each global crop's codes predicted by every other crop.

    ``global_scores``: (B, K) prototype scores of the crops whose codes are computed (the
    global ones); ``local_scores``: those of the other crops (multi-crop's small ones), which
    only predict. Scores are z . c_k of unit vectors. ``queue_scores``: none, or one (L, K)
    per global crop, the scores of its queue of earlier embeddings, which join its Sinkhorn
    batch (their own codes are dropped).
    """
    if len(global_scores) < 1 or len(global_scores) + len(local_scores) < 2:
        raise ValueError("swav_loss needs a global crop and at least one other crop")
    if queue_scores and len(queue_scores) != len(global_scores):
        raise ValueError(f"one queue per global crop: {len(global_scores)}, got {len(queue_scores)}")
    crops = [*global_scores, *local_scores]
    total = crops[0].new_zeros(())
    for assigned, scores_a in enumerate(global_scores):
        with torch.no_grad():  # the codes are targets: no gradient flows through them
            batch = torch.cat([scores_a, queue_scores[assigned].to(scores_a.dtype)]) if queue_scores else scores_a
            codes = sinkhorn_codes(batch, epsilon, iterations, gather=gather)[: scores_a.shape[0]]
        predictions = [
            -(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1).mean()
            for crop, scores in enumerate(crops)
            if crop != assigned
        ]
        total = total + sum(predictions) / len(predictions)
    return total / len(global_scores)


@register_method
class SwAV(Method):
    """SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes over prototypes, multi-crop."""

    name = "swav"
    augmentation = _SWAV_VIEWS
    loss_param_names = ("temperature", "epsilon", "sinkhorn_iterations")
    positive_loss_params = ("temperature", "epsilon")
    method_param_names = ("prototypes", "freeze_prototypes_epochs")
    uses_local_crops = True
    views_in_one_pass = True
    # src/resnet50.py projection_head: Linear-BN-ReLU-Linear, both Linears with their bias.
    projector_options = {"last_bias": True}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A bias-free Linear whose rows are the prototypes (src/resnet50.py), on the unit sphere
        # from the start: the official code normalises them before the first forward pass.
        self.prototypes = nn.Linear(self.embedding_dim, int(self.method_params["prototypes"]), bias=False)
        self.normalise_prototypes()
        params = {**self.optional_method_params(), **self.method_params}
        self.queue_size = int(params["queue_size"])
        self.epoch_queue_starts = float(params["epoch_queue_starts"])
        if self.queue_size:
            ranks = world_size()
            if self.queue_size % ranks:
                raise UsageError(
                    f"method_params.queue_size of swav ({self.queue_size}) must be a multiple of the {ranks} ranks: "
                    "each rank keeps an equal share of the queue"
                )
            # Per global crop, the ranks' blocks of queue_size / ranks rows one after another (rank
            # 0's first), zeros until filled (solo-learn's start). Three dimensions: a 4-d buffer
            # would be turned channels-last with the network.
            self.queue_ranks = ranks
            self.register_buffer("queue", torch.zeros(2, self.queue_size, self.embedding_dim))
            # Whether this step's codes use the queue: set for the next step in before_optimizer_step
            # (the step's epoch is known there), a buffer so that a resumed run has it.
            self.register_buffer("queue_in_use", torch.tensor(self.epoch_queue_starts == 0))

    @classmethod
    def optional_method_params(cls) -> dict[str, Any]:
        # solo-learn's --queue_size (0: no queue, as the official --queue_length 0) and
        # --epoch_queue_starts default (15, the official default too).
        return {"queue_size": 0, "epoch_queue_starts": 15}

    @classmethod
    def check_loss_params(cls, loss_params: Mapping[str, Any]) -> None:
        super().check_loss_params(loss_params)
        iterations = loss_params["sinkhorn_iterations"]
        if not is_whole_number(iterations) or iterations < 1:
            raise UsageError(f"loss.sinkhorn_iterations of swav must be a positive whole number, got {iterations!r}")

    @classmethod
    def check_method_params(cls, method_params: Mapping[str, Any]) -> None:
        prototypes = method_params["prototypes"]
        if not is_whole_number(prototypes) or prototypes < 1:
            raise UsageError(f"method_params.prototypes of swav must be a positive whole number, got {prototypes!r}")
        for name in ("freeze_prototypes_epochs", "epoch_queue_starts"):
            epochs = method_params.get(name, 0)
            if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 <= epochs < math.inf:
                raise UsageError(f"method_params.{name} of swav must be >= 0, got {epochs!r}")
        size = method_params.get("queue_size", 0)
        if not is_whole_number(size) or size < 0:
            raise UsageError(f"method_params.queue_size of swav must be a whole number >= 0, got {size!r}")

    @torch.no_grad()
    def normalise_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def before_optimizer_step(self, step: int, steps_per_epoch: int) -> None:
        # main_swav.py: "cancel gradients for the prototypes" while iteration < the frozen count.
        if step < round(float(self.method_params["freeze_prototypes_epochs"]) * steps_per_epoch):
            self.prototypes.weight.grad = None
        if self.queue_size:
            # solo-learn: the queue joins from epoch epoch_queue_starts (current_epoch >= it).
            self.queue_in_use.fill_(step + 1 >= round(self.epoch_queue_starts * steps_per_epoch))

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        super().after_optimizer_step(step, total_steps)
        self.normalise_prototypes()

    def scores(self, z: Tensor) -> Tensor:
        """Prototype scores of embeddings: the normalised embedding against each prototype."""
        weight = self.prototypes.weight.to(z.dtype)  # float64 in the reference tests
        return F.normalize(z, dim=1) @ weight.T

    def loss(self, z_a: Tensor, z_b: Tensor, *, z_local: Sequence[Tensor] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.loss_params
        queue_scores: list[Tensor] = []
        # One read of a flag per step, only in runs with a queue.
        if self.queue_size and bool(self.queue_in_use):
            with torch.no_grad():
                weight = self.prototypes.weight.to(z_a.dtype)
                queue_scores = [earlier.to(z_a.dtype) @ weight.T for earlier in self.queue_blocks()[:, rank()]]
        value = swav_loss(
            [self.scores(z_a), self.scores(z_b)],
            [self.scores(z) for z in z_local],
            float(p["temperature"]),
            float(p["epsilon"]),
            int(p["sinkhorn_iterations"]),
            queue_scores=queue_scores,
        )
        if self.queue_size and self.training:
            self.enqueue(torch.stack([F.normalize(z_a.detach(), dim=1), F.normalize(z_b.detach(), dim=1)]))
        return value, {}

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor) -> None:
        """This step's unit-length global-crop embeddings (2, B_local, D) at the front of each
        rank's block, its oldest rows dropped (solo-learn's shift); gathered from every rank."""
        if resolve_gather(None):
            # (B_local, 2, D) gathered along the batch, rank 0's rows first.
            embeddings = gather_with_grad(embeddings.transpose(0, 1).contiguous()).transpose(0, 1)
        blocks = self.queue_blocks()
        new = embeddings.reshape(2, self.queue_ranks, -1, embeddings.shape[-1]).to(self.queue.dtype)
        blocks.copy_(torch.cat([new, blocks], dim=2)[:, :, : blocks.shape[2]])

    def queue_blocks(self) -> Tensor:
        """The queue as (2, ranks, queue_size / ranks, D), a view: each rank's own embeddings."""
        return self.queue.view(2, self.queue_ranks, -1, self.queue.shape[-1])
