"""MoCo v2: contrast each query with its momentum-encoder key and a queue of earlier keys.

Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", 2020,
arXiv:2003.04297 (MoCo v1: He et al., CVPR 2020, arXiv:1911.05722). Follows the official code,
facebookresearch/moco at commit 7397dfe1 (``moco/builder.py``, ``main_moco.py``; the README's
MoCo v2 flags ``--mlp --moco-t 0.2 --aug-plus --cos``), and solo-learn's symmetric variant
"MoCo V2+", vturrisi/solo-learn at commit 9187ea39 (``solo/methods/mocov2plus.py``,
``solo/losses/mocov2plus.py``, ``scripts/pretrain/cifar/mocov2plus.yaml``).

Queries come from the online network, q = proj(f(x)); keys from the momentum encoder, an
exponential moving average of backbone and projector, k = proj'(f'(x')) for the other view x'.
The dictionary is the positive key and a queue of the K keys of earlier steps. With q, k and
the queue's rows n_1..n_K of unit length and T the temperature (builder.py lines 154-168, the
v1 paper's InfoNCE):

    logits_i = [q_i . k_i, q_i . n_1, ..., q_i . n_K] / T      (the positive at index 0)
    L(q, k, queue) = 1/N sum_i -log softmax(logits_i)[0]

Keys and queue are constants (no gradient): the keys are computed under no_grad and the queue
holds keys only. Directions (loss option ``symmetric``):

- false, the official loss: queries from view a, keys from view b, one queue (the online network
  embeds view a only, the momentum encoder view b: ``online_sees_both_views`` False);
- true, solo-learn's (mocov2plus.py lines 186-190): the mean of both directions,
  (L(q_a, k_b, queue of view-b keys) + L(q_b, k_a, queue of view-a keys)) / 2, one queue per view.

The queue is state carried from step to step: the buffer ``queue`` of shape (V, K, D), V = 1
(official) or 2 (symmetric), row queue[i, j] the j-th stored key for direction i: queue[0] holds
view b's keys (the negatives of the view-a queries), queue[1] view a's. (solo-learn's
``queue[0]`` and ``queue[1]`` are indexed by the keys' view instead: its queue[1] is our
queue[0].) It starts as Gaussian vectors normalised to unit length, as both sources draw it
(builder.py lines 49-51, ``randn(dim, K)`` normalised over dim; mocov2plus.py lines 67-69), from
a generator seeded by the method's constructor from the global one, which the trainer seeds with
the run's seed: the same queue for every run of a seed and on every rank, and one number taken
from the global stream whatever the queue's size (the sources draw the queue from it). After the
loss of a training-mode step, the step's unit-length keys, gathered from all ranks in rank order
(the official ``concat_all_gather``, builder.py lines 65-79, 177-189), replace the oldest B
rows, those at the pointer ``queue_ptr``, and the pointer moves on by B modulo K. K must be a
multiple of the global batch B (both sources assert it); a recipe whose batch does not divide it
is a UsageError when its configuration resolves. Evaluation-mode calls read the queue and leave
it. Queue and pointer are buffers: a checkpoint carries them and a resumed run continues with
the same negatives.

Momentum. The official encoder moves with a constant m = 0.999 (main_moco.py ``--moco-m``) at
the start of each forward pass; solo-learn's on a cosine from base_tau 0.99 to final_tau 0.999
over all steps (mocov2plus.yaml lines 23-25; solo/utils/momentum.py lines 76-87) after each
optimiser step. ssl-bench moves it after each optimiser step, solo-learn's order, with the cosine
from ``method_params.momentum_base`` to ``momentum_final`` (equal for a constant m); the official
order applies the same updates to the same weights for a constant m.

Heads: Linear-ReLU-Linear, both Linears with a bias, no BatchNorm (builder.py lines 34-41, the
hidden Linear ahead of torchvision's fc; mocov2plus.py lines 53-57). Augmentation: the v2
paper's "aug+" for both views (main_moco.py lines 326-338): crop scale (0.2, 1), colour jitter
(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur (sigma 0.1-2) with p 0.5, flip.

Not implemented: the official key encoder's shuffle BN (builder.py lines 81-126, 145-152), which
feeds it each GPU's share of a batch shuffled across GPUs so that its per-GPU BatchNorm
statistics do not share samples with the queries'. solo-learn has none either; ssl-bench
normalises with the global batch's statistics (SyncBatchNorm) in multi-GPU runs, and its
recipe rows name this.

Distributed: each rank's loss is the mean over its local queries, against their local positive
keys and the queue, which is the same on every rank; DDP's gradient averaging gives the global
mean's gradient. Only the enqueued keys are gathered, without gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.data.augment import AUG_PLUS
from ssl_bench.distributed.collectives import gather_with_grad, resolve_gather
from ssl_bench.embeddings import check_embedding_pair, is_whole_number
from ssl_bench.errors import UsageError
from ssl_bench.method import Method, register_method


def mocov2_loss(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE: each query against its positive key (logit 0) and the queue's K negatives.

    ``q``: queries (N, D) from the online network; ``k``: keys (N, D) of the other view from the
    momentum encoder, used as constants (detached here); both L2-normalised here. ``queue``:
    (K, D) earlier keys of unit length, a constant too. Returns the mean over the N queries of
    the cross-entropy of [q.k, q.queue^T] / temperature with the label 0.
    """
    n = check_embedding_pair(q, k)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}) like the embeddings; got {tuple(queue.shape)}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.detach().to(q.dtype).T
    logits = torch.cat([positive, negatives], dim=1) / temperature
    labels = torch.zeros(n, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def enqueue(queue: Tensor, pointer: Tensor, keys: Tensor) -> None:
    """First in, first out: ``keys`` (V, B, D) replace rows ``pointer`` .. ``pointer`` + B - 1 of
    ``queue`` (V, K, D), the oldest ones; ``pointer`` (an int64 scalar tensor) moves on by B
    modulo K. In place. B must divide K, so that a batch never straddles the end of the queue."""
    size, batch = queue.shape[1], keys.shape[1]
    if keys.shape[0] != queue.shape[0] or keys.shape[2] != queue.shape[2] or size % batch:
        raise ValueError(
            f"keys {tuple(keys.shape)} do not fit the queue {tuple(queue.shape)}: one key batch per queue, "
            "of the queue's width, and the queue length a multiple of the (global) batch"
        )
    # Rows computed on the queue's device: no read-back of the pointer, no device sync.
    rows = (pointer + torch.arange(batch, device=pointer.device)) % size
    queue.index_copy_(1, rows, keys.to(queue.dtype))
    pointer.copy_((pointer + batch) % size)


@register_method
class MoCoV2(Method):
    """MoCo v2 (Chen, Fan, Girshick, He 2020): momentum-encoder keys against a queue of negatives."""

    name = "mocov2"
    augmentation = (AUG_PLUS, AUG_PLUS)  # main_moco.py lines 326-338 (--aug-plus), for both views
    loss_param_names = ("temperature", "queue_size")
    # True: solo-learn's symmetric loss, one queue per view (module docstring).
    loss_param_defaults = {"symmetric": False}
    positive_loss_params = ("temperature",)  # the logits are divided by it
    uses_momentum_target = True  # method_params.momentum_base, momentum_final
    # The official direction; an instance with `symmetric` embeds both views online.
    online_sees_both_views = False
    # Linear-ReLU-Linear with biases (builder.py lines 34-41; mocov2plus.py lines 53-57).
    projector_options = {"hidden_norm": False, "last_bias": True}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.online_sees_both_views = self.loss_params["symmetric"]
        directions = 2 if self.online_sees_both_views else 1
        # One draw from the global generator (seeded with the run's seed by the trainer) seeds the
        # queue's own: explicitly on the CPU, so that a build on the meta device draws it too.
        seed = int(torch.randint(0, 2**62, (), device="cpu"))
        generator = torch.Generator(device="cpu").manual_seed(seed)
        size = int(self.loss_params["queue_size"])
        queue = torch.randn(directions, size, self.embedding_dim, generator=generator, device="cpu")
        self.register_buffer("queue", F.normalize(queue, dim=-1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64, device="cpu"))

    @classmethod
    def check_loss_params(cls, loss_params: Mapping[str, Any]) -> None:
        if not is_whole_number(loss_params["queue_size"]) or loss_params["queue_size"] < 1:
            raise UsageError(f"loss.queue_size of mocov2 must be a positive integer, got {loss_params['queue_size']!r}")
        if not isinstance(loss_params["symmetric"], bool):
            raise UsageError(f"loss.symmetric of mocov2 must be true or false, got {loss_params['symmetric']!r}")
        super().check_loss_params(loss_params)

    @classmethod
    def check_batch_size(cls, batch_size: int, loss_params: Mapping[str, Any]) -> None:
        size = int(loss_params["queue_size"])
        if size % batch_size:
            raise UsageError(
                f"loss.queue_size of mocov2 ({size}) must be a multiple of the global batch size ({batch_size}): "
                "every step replaces a whole batch of keys in the queue"
            )

    def loss(
        self, z_a: Tensor, z_b: Tensor | None, *, target_b: Tensor, target_a: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        temperature = float(self.loss_params["temperature"])
        # Direction i: its queries, its positive keys; queue[i] holds that direction's earlier keys.
        directions = [(z_a, target_b)]
        if self.online_sees_both_views:
            assert z_b is not None and target_a is not None
            directions.append((z_b, target_a))
        # A copy: the enqueue below writes the buffer, which the backward pass must still read as
        # it was (builder.py line 159 clones it too).
        negatives = self.queue.clone()
        losses = [mocov2_loss(q, k, negatives[i], temperature) for i, (q, k) in enumerate(directions)]
        if self.training:
            self.enqueue_keys(torch.stack([F.normalize(k.detach(), dim=1) for _, k in directions]))
        return torch.stack(losses).mean(), {}

    @torch.no_grad()
    def enqueue_keys(self, keys: Tensor) -> None:
        """This step's unit-length keys (V, B_local, D), gathered from every rank, into the queue."""
        if resolve_gather(None):
            # (B_local, V, D) gathered along the batch, rank 0's rows first; the keys are detached,
            # so the gather carries no gradient.
            keys = gather_with_grad(keys.transpose(0, 1).contiguous()).transpose(0, 1)
        enqueue(self.queue, self.queue_ptr, keys)
