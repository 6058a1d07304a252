"""MoCo v3 (ResNet variant): contrast predicted queries with momentum-encoder keys.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021,
arXiv:2104.02057. Official code: facebookresearch/moco-v3 (``moco/builder.py``, ``MoCo_ResNet``;
``main_moco.py``; reference set-ups in ``CONFIG.md``).

Queries come from the online network with a predictor, q = pred(proj(f(x))); keys from the
momentum encoder, an exponential moving average of the online backbone and projector,
k = proj'(f'(x)). With q and k L2-normalised and the keys of the whole (global) batch as the
dictionary, the positive of query i is key i (the other view of the same image) and the other
N - 1 keys are its negatives (Algorithm 1, ``ctr``):

    ctr(q, k) = 2 tau * 1/N sum_i -log( exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau) )
    L         = ctr(q_a, k_b) + ctr(q_b, k_a)

The factor 2 tau is the paper's (Algorithm 1) and the code's (``* (2 * self.T)``); the tau in it
cancels the 1/tau that the logits put on the gradient. Keys are constants (no gradient). tau = 1.0
for ResNet-50 (main_moco.py default, CONFIG.md); solo-learn uses 0.2 on CIFAR.

The momentum coefficient follows a half-cycle cosine from m_0 (0.99 for 100 and 300 epochs,
0.996 for 1000) to 1, the schedule BYOL uses (``ssl_bench.method.cosine_momentum``). The
official code updates the momentum encoder at the start of each forward pass with m(step);
ssl-bench updates it right after each optimiser step with m(step) (``Method.after_optimizer_step``),
which applies the same updates to the same parameters with the schedule read one step earlier.

Heads (builder.py, ``MoCo_ResNet``): the projector is Linear(4096)-BN-ReLU-Linear(256)-BN with
the output BN without affine parameters (2 layers as ``MoCo_ResNet`` builds them, where the ViT
variant uses 3); the predictor is Linear(4096)-BN-ReLU-Linear(256) without output BN. No Linear
has a bias (``_build_mlp``).

Augmentation (main_moco.py): BYOL's asymmetric pair (blur p 1.0 / 0.1, solarize p 0.0 / 0.2,
jitter (0.4, 0.4, 0.2, 0.1)) with RandomResizedCrop scale (0.2, 1), the ``--crop-min=.2`` of
every ResNet-50 set-up in CONFIG.md.

Distributed: each rank scores its local queries against the keys gathered from all ranks
(no gradient is needed through keys), with labels offset by rank x local batch, and averages
over its local queries, as the official code does; DDP's gradient averaging then gives the
global-batch gradient.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.data.augment import view_pair_configs
from ssl_bench.distributed.collectives import gather_with_grad, rank, resolve_gather
from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.method import Method, register_method

# BYOL's pair at full size (blur kept; small images drop it later) with MoCo v3's crop scale.
_MOCOV3_VIEWS = tuple(
    dataclasses.replace(view, crop_scale=(0.2, 1.0)) for view in view_pair_configs("asymmetric", small_images=False)
)


def mocov3_loss(q: Tensor, k: Tensor, temperature: float = 1.0, *, gather: bool | None = None) -> Tensor:
    """MoCo v3's ctr(q, k): InfoNCE of queries against the batch's keys, scaled by 2 tau.

    ``q``: queries (N, D) from the online network; ``k``: keys (N, D) of the other view from the
    momentum encoder, used as constants (detached here). Key i is the positive of query i.
    ``gather``: take the keys of all ranks as the dictionary; None = whenever torch.distributed
    runs with more than one rank. Local batch sizes must then be equal on all ranks.
    """
    n = check_embedding_pair(q, k)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    if resolve_gather(gather):
        keys, offset = gather_with_grad(k), rank() * n  # k is detached: the gather carries no gradient
    else:
        keys, offset = k, 0
    logits = q @ keys.T / temperature  # (n, N_global)
    labels = torch.arange(n, device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


@register_method
class MoCoV3(Method):
    """MoCo v3 (Chen, Xie, He 2021), ResNet variant: predicted queries against momentum keys."""

    name = "mocov3"
    augmentation = _MOCOV3_VIEWS
    loss_param_names = ("temperature",)
    positive_loss_params = ("temperature",)  # the logits are divided by it
    uses_predictor = True
    uses_momentum_target = True  # method_params.momentum_base = m_0
    # builder.py _build_mlp: Linears without bias; the projector ends in BN without affine.
    projector_options = {"hidden_bias": False, "last_bn": True}
    predictor_options = {"hidden_bias": False}

    def loss(
        self, z_a: Tensor, z_b: Tensor, *, p_a: Tensor, p_b: Tensor, target_a: Tensor, target_b: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        temperature = self.loss_params["temperature"]
        return mocov3_loss(p_a, target_b, temperature) + mocov3_loss(p_b, target_a, temperature), {}
