"""BYOL: Bootstrap Your Own Latent.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot,
Kavukcuoglu, Munos, Valko, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020, arXiv:2006.07733. Official code: deepmind/deepmind-research ``byol/``
(``byol_experiment.py``; ``utils/helpers.py``, ``regression_loss``).

An online network (backbone f, projector g, predictor q) predicts what a target network, an
exponential moving average of the online f and g, makes of the other view. With p the online
prediction for one view and z' the target's projection of the other view (section 3.1):

    L(p, z') = || p / ||p|| - z' / ||z'|| ||^2 = 2 - 2 <p, z'> / (||p|| ||z'||)

averaged over the batch, with z' a constant (stop-gradient: only the online network is
trained by the loss). It is symmetrised by swapping the views,

    L_BYOL = L(p_a, z'_b) + L(p_b, z'_a)          (a sum, as in the paper and the official code)

so it lies in [0, 8]. After every optimiser step the target moves towards the online network,
xi <- tau xi + (1 - tau) theta, with tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 rising
from tau_base (0.996 on ImageNet) to 1 over the K training steps (section 3.3); the harness does
this generically (``ssl_bench.method.Method.after_optimizer_step``).

Heads (section 3.3): projector and predictor are both Linear(4096)-BN-ReLU-Linear(256); the last
Linear has no bias (``hk.Linear(..., with_bias=False)`` in the official ``utils/networks.py``).
Augmentation: BYOL's asymmetric pair (the "asymmetric" kind: blur p 1.0 / 0.1, solarize p 0.0 / 0.2;
appendix B).

Nothing in L itself penalises collapse: any constant output with p = z' scores the minimum 0.
BYOL avoids collapse through the predictor and the slowly moving target, so
``loss_penalises_collapse`` is False.

Distributed: L is a mean of per-sample terms, so the mean of the ranks' local losses is the
global loss and DDP's gradient averaging gives the global-batch gradient; nothing is gathered.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.method import Method, register_method


def byol_loss(p: Tensor, z_target: Tensor) -> Tensor:
    """BYOL's regression loss 2 - 2 cos(p, z_target), averaged over the batch (range [0, 4]).

    ``p``: online predictions (N, D); ``z_target``: the target network's projections of the
    other view (N, D), used as a constant (detached here, so no gradient can reach it).
    """
    check_embedding_pair(p, z_target)
    cosine = (F.normalize(p, dim=1) * F.normalize(z_target.detach(), dim=1)).sum(dim=1)
    return (2.0 - 2.0 * cosine).mean()


@register_method
class BYOL(Method):
    """BYOL (Grill et al. 2020): predict a momentum target's projection of the other view."""

    name = "byol"
    augmentation = "asymmetric"  # BYOL's own asymmetric pair
    uses_predictor = True
    uses_momentum_target = True  # method_params.momentum_base = tau_base
    loss_penalises_collapse = False

    def loss(
        self, z_a: Tensor, z_b: Tensor, *, p_a: Tensor, p_b: Tensor, target_a: Tensor, target_b: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return byol_loss(p_a, target_b) + byol_loss(p_b, target_a), {}
