"""SimSiam: simple Siamese networks with a stop-gradient.

Chen, He, "Exploring Simple Siamese Representation Learning", CVPR 2021, arXiv:2011.10566.
Official code: facebookresearch/simsiam (``simsiam/builder.py``, ``main_simsiam.py``).

One network (backbone f, projector) embeds both views, z = proj(f(x)); a predictor h maps one
view's embedding to p = h(z), which is pulled towards the other view's embedding held constant
(section 3, eq. 1-3):

    D(p, z) = - p / ||p|| . z / ||z||                (negative cosine similarity)
    L       = D(p_a, stopgrad(z_b)) / 2 + D(p_b, stopgrad(z_a)) / 2

averaged over the batch, so L lies in [-1, 1]. The stop-gradient is what prevents collapse
(section 4.1: without it the loss reaches its minimum -1 with a constant output), so the
loss itself does not penalise collapse and ``loss_penalises_collapse`` is False. There is no
momentum target: the "target" is the same network's output, detached.

Heads (section 3, "Baseline settings"; builder.py): the projector is three Linear layers, each
followed by BN, the first two by ReLU, hidden and output 2048 wide, the output BN without
affine parameters; the hidden Linears have no bias. The predictor is a bottleneck Linear(512)-BN-ReLU-Linear(2048)
whose last Linear has a bias.

Optimisation (section 3 and the official README): SGD, lr = 0.05 x batch / 256, cosine decay,
weight decay 1e-4, batch 512, and the predictor's lr fixed at its peak (``--fix-pred-lr``;
section 4.2 finds a non-decayed predictor lr works slightly better). ``method_params``
``fixed_predictor_lr`` switches that (solo-learn does the same with ``static_lr``).

Augmentation (main_simsiam.py, MoCo v2's pipeline): both views alike, RandomResizedCrop scale
(0.2, 1), colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur p 0.5,
horizontal flip: the symmetric SimCLR-style pair with SimCLR's jitter strength halved and a
larger minimum crop. (Small images drop the blur, as everywhere in ssl-bench.)

Distributed: L is a mean of per-sample terms; nothing is gathered (see methods/byol.py).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.data.augment import AUG_PLUS
from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.method import Method, register_method


def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """D(p, z) = -cos(p, stopgrad(z)), averaged over the batch (range [-1, 1]).

    ``p``: predictions for one view (N, D); ``z``: embeddings of the other view (N, D), detached
    here, so no gradient reaches them through this term.
    """
    check_embedding_pair(p, z)
    return -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1).mean()


@register_method
class SimSiam(Method):
    """SimSiam (Chen and He 2021): predict the other view's embedding behind a stop-gradient."""

    name = "simsiam"
    augmentation = (AUG_PLUS, AUG_PLUS)  # main_simsiam.py's augmentation, MoCo v2's, for both views
    method_param_names = ("fixed_predictor_lr",)
    uses_predictor = True
    loss_penalises_collapse = False
    # builder.py: hidden Linears without bias; the projector's last Linear keeps a frozen bias
    # ahead of a BN without affine, which cancels it, so it is left out here.
    projector_options = {"hidden_bias": False, "last_bn": True}
    predictor_options = {"hidden_bias": False, "last_bias": True}

    def constant_lr_parameters(self) -> list[nn.Parameter]:
        if self.predictor is None or not self.method_params["fixed_predictor_lr"]:
            return []
        return list(self.predictor.parameters())

    def loss(self, z_a: Tensor, z_b: Tensor, *, p_a: Tensor, p_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return 0.5 * (simsiam_loss(p_a, z_b) + simsiam_loss(p_b, z_a)), {}
