"""SimCLR: the NT-Xent (normalised temperature-scaled cross-entropy) loss, and the paper's alternatives.

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

The paper's other losses (its Table 2, compared in its Table 4 and section 5.1), selected by the
loss parameter ``objective``: ``"nt_xent"`` (the default, above), ``"nt_logistic"`` or
``"margin_triplet"``. Table 2 gives each as the objective of one anchor u with its positive v+
and one negative v-, on L2-normalised vectors (as here for all three):

    NT-Logistic      log sigma(u . v+ / tau) + log sigma(-u . v- / tau)
    Margin Triplet   -max(u . v- - u . v+ + m, 0)

ssl-bench minimises their negatives, averaged over the anchor's 2N - 2 negatives, then over the
2N anchors as above:

    l_logistic(i) = -log sigma(s(i, p(i))) - 1/(2N - 2) sum_{k != i, p(i)} log sigma(-s(i, k))
    l_margin(i)   = 1/(2N - 2) sum_{k != i, p(i)} max(0, u_i . u_k - u_i . u_p(i) + m)

with sigma the logistic function and the margin m (loss parameter ``margin``, 0.5 by default:
our choice, the paper tuned it and reports only the best result) on cosine similarities, without
the temperature. The paper's better numbers for both use semi-hard negative mining ("sh" in its
Table 4), which is not implemented here: every negative counts.

Distributed: every rank scores its own 2n local anchors against the 2N global samples
gathered (with gradients) from all ranks, and averages over its local anchors. The mean of
the per-rank losses is then the global loss above, and DDP's gradient averaging yields the
global-batch gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.distributed.collectives import gather_with_grad, rank, resolve_gather, world_size
from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.errors import UsageError
from ssl_bench.method import Method, register_method

OBJECTIVES = ("nt_xent", "nt_logistic", "margin_triplet")


@dataclass(frozen=True)
class _PairScores:
    """Cosine similarities of this rank's 2n anchors to all 2N samples, and where each anchor's
    positive and negatives sit (see the module docstring for the layout)."""

    similarity: Tensor  # (2n, 2N)
    positive: Tensor  # (2n,) similarity of each anchor to its positive
    is_negative: Tensor  # (2n, 2N) bool: neither the anchor itself nor its positive
    is_self: Tensor  # (2n, 2N) bool: the anchor itself


def _pair_scores(z_a: Tensor, z_b: Tensor, gather: bool | None) -> _PairScores:
    n = check_embedding_pair(z_a, z_b)
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
    similarity = anchors @ candidates.T  # (2n, 2N)

    # Column of each local anchor itself, and of its positive, in the global layout.
    idx = torch.arange(n, device=z_a.device) + offset
    self_col = torch.cat([idx, idx + n_global])
    pos_col = torch.cat([idx + n_global, idx])
    rows = torch.arange(2 * n, device=z_a.device)
    is_self = torch.zeros_like(similarity, dtype=torch.bool)
    is_self[rows, self_col] = True
    is_negative = ~is_self
    is_negative[rows, pos_col] = False
    return _PairScores(similarity, similarity[rows, pos_col], is_negative, is_self)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")


def _mean_over_negatives(values: Tensor, is_negative: Tensor) -> Tensor:
    """Per anchor, the mean of ``values`` over its negatives (2N - 2 of them)."""
    return (values * is_negative).sum(dim=1) / is_negative.sum(dim=1)


def nt_xent_loss(z_a: Tensor, z_b: Tensor, temperature: float = 0.1, *, gather: bool | None = None) -> Tensor:
    """NT-Xent loss of two views ``z_a``, ``z_b`` of shape (N, D); see the module docstring.

    ``temperature`` is tau (0.1 for batch 4096 on ImageNet, 0.5 is common on CIFAR).
    ``gather``: use negatives from all ranks; None = whenever torch.distributed runs with
    more than one rank. Local batch sizes must then be equal on all ranks.
    """
    _check_temperature(temperature)
    scores = _pair_scores(z_a, z_b, gather)
    # -inf removes the anchor from its own softmax denominator (exp(-inf) = 0, zero gradient).
    logits = (scores.similarity / temperature).masked_fill(scores.is_self, float("-inf"))
    # Cross-entropy with the positive as target: logsumexp over candidates minus positive logit.
    per_anchor = torch.logsumexp(logits, dim=1) - scores.positive / temperature
    return per_anchor.mean()


def nt_logistic_loss(z_a: Tensor, z_b: Tensor, temperature: float = 0.1, *, gather: bool | None = None) -> Tensor:
    """NT-Logistic loss (SimCLR's Table 2), averaged over negatives; see the module docstring."""
    _check_temperature(temperature)
    scores = _pair_scores(z_a, z_b, gather)
    negatives = -F.logsigmoid(-scores.similarity / temperature)
    per_anchor = -F.logsigmoid(scores.positive / temperature) + _mean_over_negatives(negatives, scores.is_negative)
    return per_anchor.mean()


def margin_triplet_loss(z_a: Tensor, z_b: Tensor, margin: float = 0.5, *, gather: bool | None = None) -> Tensor:
    """Margin triplet loss (SimCLR's Table 2) on cosine similarities, averaged over negatives."""
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    scores = _pair_scores(z_a, z_b, gather)
    hinge = F.relu(scores.similarity - scores.positive[:, None] + margin)
    return _mean_over_negatives(hinge, scores.is_negative).mean()


def simclr_loss(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.1,
    objective: str = "nt_xent",
    margin: float = 0.5,
    *,
    gather: bool | None = None,
) -> Tensor:
    """The loss ``objective`` names (:data:`OBJECTIVES`), with its own parameters."""
    if objective == "nt_xent":
        return nt_xent_loss(z_a, z_b, temperature, gather=gather)
    if objective == "nt_logistic":
        return nt_logistic_loss(z_a, z_b, temperature, gather=gather)
    if objective == "margin_triplet":
        return margin_triplet_loss(z_a, z_b, margin, gather=gather)
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")


@register_method
class SimCLR(Method):
    """SimCLR (Chen et al. 2020): NT-Xent over two symmetric views, negatives from the batch."""

    name = "simclr"
    augmentation = "symmetric"
    loss_param_names = ("temperature",)
    loss_param_defaults = {"objective": "nt_xent", "margin": 0.5}
    loss_param_choices = {"objective": OBJECTIVES}
    positive_loss_params = ("temperature",)  # the logits are divided by it
    # Multi-crop, an option of the harness (the paper trains on two views): with local crops the
    # loss is averaged over each global crop's pairs (Method.crop_pairs_loss).
    loss_over_crop_pairs = True

    @classmethod
    def check_loss_params(cls, loss_params: Mapping[str, Any]) -> None:
        super().check_loss_params(loss_params)
        if not loss_params["margin"] >= 0:
            raise UsageError(f"loss.margin of simclr must be >= 0, got {loss_params['margin']}")

    def loss(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return simclr_loss(z_a, z_b, **self.loss_params), {}
