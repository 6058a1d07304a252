"""TiCo: Transformation Invariance and Covariance Contrast.

Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun, "TiCo: Transformation Invariance and
Covariance Contrast for Self-Supervised Visual Representation Learning", 2022,
arXiv:2206.10698. The loss follows the paper's Algorithm 1.

With z_a, z_b L2-normalised rows of the two views' embeddings (N x D) and C a running D x D
estimate of the embeddings' second-moment matrix carried between steps (C_0 = 0):

    C_t = beta * C_{t-1} + (1 - beta) * Z_a^T Z_a / N
    L   = -1/N sum_n z_a[n] . z_b[n]  +  rho * 1/N sum_n z_a[n]^T C_t z_a[n]

The first term pulls the two views together (transformation invariance); the second pushes
each embedding away from the directions that recent batches already occupy (covariance
contrast), like a momentum-averaged memory bank of unlimited size (the paper calls TiCo a
variant of MoCo).

Gradients flow through the current batch's term Z_a^T Z_a / N inside C_t (only C_{t-1} is a
constant), as in Algorithm 1 and the unofficial port sayannag/TiCo-pytorch (``TiCo/main.py``
lines 72-77); C_t is detached before it is handed to the next step. lightly's ``TiCoLoss``
(lightly-ai/lightly commit e8d317fc, ``lightly/loss/tico_loss.py`` line 124) detaches the batch
term as well and writes the invariance as 1 - mean(z_a . z_b) (line 133): the constant only
shifts the reported value, but the detach halves the gradient of the batch term
(1 - beta) rho / N^2 ||Z_a Z_a^T||_F^2. The loss option ``detach_batch_covariance`` (default
false, the paper's) takes lightly's gradient.

Architecture and views. The paper's implementation section was not available to us, so where a
detail is not in the algorithm we follow its two public implementations, which agree:
lightly's ImageNet benchmark (``benchmarks/imagenet/resnet50/tico.py``) and the unofficial
port. Both take z_b from a momentum encoder, an EMA copy of backbone and projector (momentum
0.99 rising to 1 on a cosine over the run in lightly, per step), and take the loss in one
direction only: the online network embeds view a, the momentum encoder view b
(``online_sees_both_views = False``). lightly feeds them BYOL's asymmetric pair (blur 1.0 / 0.1, solarize
0 / 0.2) and a projector Linear(4096, no bias)-BN-ReLU-Linear(256, bias). rho: lightly's loss
defaults to 8 (``tico_loss.py`` lines 46-51) and its ImageNet benchmark builds it with beta 0.9,
rho 8 (``benchmarks/imagenet/resnet50/tico.py`` line 33); the port defaults to 20
(``TiCo/main.py`` line 88), its help text naming 8 as the paper's recommendation.

Distributed: the C update and both terms use the batch gathered (with gradients) from all
ranks, N = global batch; every rank computes the same loss and the same C_t.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.distributed.collectives import gather_with_grad, resolve_gather
from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.errors import UsageError
from ssl_bench.method import Method, register_method


def tico_terms(
    z_a: Tensor,
    z_b: Tensor,
    C: Tensor,
    beta: float = 0.9,
    *,
    gather: bool | None = None,
    detach_batch_covariance: bool = False,
) -> tuple[dict[str, Tensor], Tensor]:
    """TiCo's two terms and the updated covariance estimate.

    Returns ``({"invariance": -mean_n(z_a . z_b), "contrast": mean_n(z_a^T C_t z_a)}, C_t)``,
    with z L2-normalised and C_t = beta C + (1 - beta) Z_a^T Z_a / N. ``C`` is the previous
    estimate (D x D; zeros at the first step), used as a constant and cast to z's dtype and
    device; the returned C_t is detached, ready to be passed in at the next step.
    ``gather``: use the batch of all ranks; None = whenever torch.distributed runs with more
    than one rank. ``detach_batch_covariance``: Z_a^T Z_a / N a constant too, as lightly has it
    (the module docstring); the values are the same, the gradient of the contrast is not.
    """
    check_embedding_pair(z_a, z_b)
    d = z_a.shape[1]
    if not isinstance(C, Tensor) or C.shape != (d, d):
        shape = tuple(C.shape) if isinstance(C, Tensor) else type(C).__name__
        raise ValueError(f"C must be a {d} x {d} tensor (torch.zeros({d}, {d}) at the first step); got {shape}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1]; got {beta}")

    u_a = F.normalize(z_a, dim=1)
    u_b = F.normalize(z_b, dim=1)
    if resolve_gather(gather):
        u_a, u_b = gather_with_grad(u_a), gather_with_grad(u_b)
    n = u_a.shape[0]

    c_prev = C.detach().to(dtype=u_a.dtype, device=u_a.device)
    # The paper's Algorithm 1 keeps the graph through this batch's term; lightly cuts it.
    batch = (u_a.T @ u_a) / n
    c_t = beta * c_prev + (1.0 - beta) * (batch.detach() if detach_batch_covariance else batch)

    invariance = -(u_a * u_b).sum(dim=1).mean()
    contrast = ((u_a @ c_t) * u_a).sum(dim=1).mean()
    return {"invariance": invariance, "contrast": contrast}, c_t.detach()


def tico_loss(
    z_a: Tensor,
    z_b: Tensor,
    C: Tensor,
    beta: float = 0.9,
    rho: float = 20.0,
    *,
    gather: bool | None = None,
    detach_batch_covariance: bool = False,
) -> tuple[Tensor, Tensor]:
    """TiCo loss ``invariance + rho * contrast`` and the detached C_t for the next step."""
    terms, c_next = tico_terms(z_a, z_b, C, beta=beta, gather=gather, detach_batch_covariance=detach_batch_covariance)
    return tico_weighted_sum(terms, rho), c_next


def tico_weighted_sum(terms: dict[str, Tensor], rho: float) -> Tensor:
    """``invariance + rho * contrast`` from :func:`tico_terms`' terms."""
    return terms["invariance"] + rho * terms["contrast"]


@register_method
class TiCo(Method):
    """TiCo (Zhu et al. 2022): transformation invariance + covariance contrast with a running C."""

    name = "tico"
    augmentation = "asymmetric"  # BYOL's asymmetric pair: view a online, view b to the momentum encoder
    loss_param_names = ("beta", "rho")
    # True: lightly's gradient, the batch's term of C_t a constant (module docstring).
    loss_param_defaults = {"detach_batch_covariance": False}
    uses_momentum_target = True  # method_params.momentum_base
    online_sees_both_views = False
    projector_options = {"hidden_bias": False, "last_bias": True}  # lightly's TiCoProjectionHead

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The running covariance is state of the loss: a buffer, so it is checkpointed with the
        # weights and a resumed run continues with the same C.
        self.register_buffer("C", torch.zeros(self.embedding_dim, self.embedding_dim))

    @classmethod
    def check_loss_params(cls, loss_params: Mapping[str, Any]) -> None:
        super().check_loss_params(loss_params)
        if not isinstance(loss_params["detach_batch_covariance"], bool):
            raise UsageError(
                "loss.detach_batch_covariance of tico must be true or false, "
                f"got {loss_params['detach_batch_covariance']!r}"
            )

    def loss(self, z_a: Tensor, z_b: None, *, target_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.loss_params
        terms, C_next = tico_terms(
            z_a, target_b, self.C, beta=p["beta"], detach_batch_covariance=p["detach_batch_covariance"]
        )
        if self.training:
            self.C.copy_(C_next)
        return tico_weighted_sum(terms, p["rho"]), terms
