"""SimCLR: the NT-Xent (normalised temperature-scaled cross-entropy) loss.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv:2002.05709. Official code: google-research/simclr
(``objective.py``, ``add_contrastive_loss``).

Let u_1 .. u_2N be the L2-normalised rows of [z_a; z_b] (N pairs, 2N samples), and
s(i, k) = u_i . u_k / tau. The positive p(i) of anchor i is the other view of the same image
(i <-> i + N). Each anchor is contrasted with the 2N - 1 samples other than itself:

    l(i) = -log( exp(s(i, p(i))) / sum_{k != i} exp(s(i, k)) )
    L    = 1/(2N) * sum_{i=1..2N} l(i)

i.e. one positive and 2N - 2 negatives per anchor, the anchor's own similarity (always 1/tau)
excluded. ssl-bench averages over the 2N anchors (as in the paper's Algorithm 1); the
official TensorFlow code adds the two views' means, which is exactly twice this value.

Distributed: every rank scores its own 2n local anchors against the 2N global samples
gathered (with gradients) from all ranks, and averages over its local anchors. The mean of
the per-rank losses is then the global loss above, and DDP's gradient averaging yields the
global-batch gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.distributed.collectives import gather_with_grad, rank, resolve_gather, world_size
from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.method import Method, register_method


def nt_xent_loss(z_a: Tensor, z_b: Tensor, temperature: float = 0.1, *, gather: bool | None = None) -> Tensor:
    """NT-Xent loss of two views ``z_a``, ``z_b`` of shape (N, D); see the module docstring.

    ``temperature`` is tau (0.1 for batch 4096 on ImageNet, 0.5 is common on CIFAR).
    ``gather``: use negatives from all ranks; None = whenever torch.distributed runs with
    more than one rank. Local batch sizes must then be equal on all ranks.
    """
    n = check_embedding_pair(z_a, z_b)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")

    u_a = F.normalize(z_a, dim=1)
    u_b = F.normalize(z_b, dim=1)
    if resolve_gather(gather):
        n_ranks, offset = world_size(), rank() * n
        all_a, all_b = gather_with_grad(u_a), gather_with_grad(u_b)
    else:
        n_ranks, offset = 1, 0
        all_a, all_b = u_a, u_b
    n_global = n_ranks * n

    anchors = torch.cat([u_a, u_b])  # (2n, D): this rank's anchors
    candidates = torch.cat([all_a, all_b])  # (2N, D): view a of all ranks, then view b
    logits = anchors @ candidates.T / temperature  # (2n, 2N)

    # Column of each local anchor itself, and of its positive, in the global layout.
    idx = torch.arange(n, device=z_a.device) + offset
    self_col = torch.cat([idx, idx + n_global])
    pos_col = torch.cat([idx + n_global, idx])
    rows = torch.arange(2 * n, device=z_a.device)

    # -inf removes the anchor from its own softmax denominator (exp(-inf) = 0, zero gradient).
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, self_col] = True
    logits = logits.masked_fill(is_self, float("-inf"))

    # Cross-entropy with the positive as target: logsumexp over candidates minus positive logit.
    per_anchor = torch.logsumexp(logits, dim=1) - logits[rows, pos_col]
    return per_anchor.mean()


@register_method
class SimCLR(Method):
    """SimCLR (Chen et al. 2020): NT-Xent over two symmetric views, negatives from the batch."""

    name = "simclr"
    augmentation = "symmetric"
    loss_param_names = ("temperature",)

    def loss(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return nt_xent_loss(z_a, z_b, **self.loss_params), {}
