"""Barlow Twins: redundancy reduction through the cross-correlation matrix.

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021, arXiv:2103.03230. Follows the official code,
facebookresearch/barlowtwins ``main.py``.

Each branch is standardised per dimension over the batch, as ``BatchNorm1d(affine=False)``
does in train mode (batch mean, biased variance, eps = 1e-5):

    a[n, i] = (z_a[n, i] - mean_n z_a[:, i]) / sqrt(Var_n z_a[:, i] + eps)      (b likewise)

then the D x D cross-correlation and the loss are

    c_ij = 1/N sum_n a[n, i] b[n, j]
    L    = sum_i (1 - c_ii)^2  +  lambda * sum_{i != j} c_ij^2,        lambda = 0.0051

Distributed: the normalisation and c use the batch gathered (with gradients) from all ranks,
N = global batch, so every rank computes the global loss and DDP gets exactly the global-batch
gradient. The official code (``main.py`` lines 212-216) instead divides each rank's c by the
global batch and sums it over ranks with ``torch.distributed.all_reduce(c)``, outside autograd:
each rank's loss is the global one, but its gradient flows only through its own share of c, so
after DDP's averaging (``main.py`` line 98) every parameter's gradient is 1/world_size of the
exact one (lightly issue 1977). The loss option ``official_ddp_scale`` reproduces that: the same
loss value, its gradient multiplied by 1/world_size (:func:`official_ddp_gradient`). The scale
changes training wherever a step is not invariant to it. Under LARS, with the exact gradient
(the default) the biases and norm parameters, left out of the trust ratio, step world_size times
farther than in the official code, and the weight decay added to the weights' gradient before
the trust ratio weighs world_size times less against it.

Gram form: c is D x D (256 MiB in fp32 at D = 8192). When N < D the off-diagonal penalty is
computed from N x N Gram matrices instead, using ||A^T B||_F^2 = sum((A A^T) * (B B^T)) and
subtracting the diagonal, c_ii = 1/N sum_n a[n, i] b[n, i], which is cheap; when N >= D the
direct D x D form is cheaper and used. ``form="gram"`` or ``form="direct"``
(``barlow_twins_terms``, ``barlow_twins_loss``) forces one form whatever the shape. Same value and
gradient as the direct form (which zeroes the diagonal exactly) up to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ssl_bench.distributed.collectives import gather_with_grad, resolve_gather, world_size
from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.errors import UsageError
from ssl_bench.method import Method, register_method

_BN_EPS = 1e-5  # BatchNorm1d's default, as in the official code


def _standardise(z: Tensor) -> Tensor:
    """Affine-free batch normalisation in train mode: batch mean, biased variance, eps 1e-5."""
    var, mean = torch.var_mean(z, dim=0, correction=0)
    return (z - mean) * torch.rsqrt(var + _BN_EPS)


def _off_diagonal_sq_sum(a: Tensor, b: Tensor, c_diag: Tensor, form: str | None = None) -> Tensor:
    """sum_{i != j} c_ij^2 with c = A^T B / N, for A, B of shape (N, D).

    ``form``: "gram" (N x N) or "direct" (D x D); None takes the cheaper, "gram" when N < D.
    """
    n, d = a.shape
    if form is None:
        form = "gram" if n < d else "direct"
    if form == "gram":
        # sum_ij (A^T B)_ij^2 = trace(A^T B B^T A) = sum_nm (A A^T)_nm (B B^T)_nm: N x N only;
        # then remove the diagonal c_ii, already computed cheaply by the caller.
        return ((a @ a.T) * (b @ b.T)).sum() / n**2 - c_diag.square().sum()
    if form == "direct":
        # Zero the diagonal rather than subtract it: exact, and D x D is affordable when N >= D.
        eye = torch.eye(d, dtype=torch.bool, device=a.device)
        return (a.T @ b / n).masked_fill(eye, 0.0).square().sum()
    raise ValueError(f"unknown form {form!r}")


def barlow_twins_terms(
    z_a: Tensor, z_b: Tensor, *, gather: bool | None = None, form: str | None = None
) -> dict[str, Tensor]:
    """``on_diagonal`` = sum_i (1 - c_ii)^2 and ``off_diagonal`` = sum_{i != j} c_ij^2 (unweighted).

    ``gather``: compute on the batch of all ranks; None = whenever torch.distributed runs with
    more than one rank. ``form``: how the off-diagonal sum is computed, "gram" or "direct";
    None chooses by shape (see the module docstring). Any other value is a ValueError.
    """
    check_embedding_pair(z_a, z_b)
    if resolve_gather(gather):
        z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
    n = z_a.shape[0]
    a, b = _standardise(z_a), _standardise(z_b)
    c_diag = (a * b).sum(dim=0) / n
    on_diagonal = (1.0 - c_diag).square().sum()
    off_diagonal = _off_diagonal_sq_sum(a, b, c_diag, form)
    return {"on_diagonal": on_diagonal, "off_diagonal": off_diagonal}


def barlow_twins_loss(
    z_a: Tensor,
    z_b: Tensor,
    lambd: float = 0.0051,
    *,
    gather: bool | None = None,
    form: str | None = None,
    official_ddp_scale: bool = False,
) -> Tensor:
    """Barlow Twins loss: on_diagonal + lambd * off_diagonal (see the module docstring).

    ``gather`` and ``form`` as in :func:`barlow_twins_terms`; ``official_ddp_scale``: the official
    code's gradient, 1/world_size of the exact one when gathering (:func:`official_ddp_gradient`).
    """
    terms = barlow_twins_terms(z_a, z_b, gather=gather, form=form)
    loss = barlow_twins_weighted_sum(terms, lambd)
    return official_ddp_gradient(loss, gather) if official_ddp_scale else loss


def official_ddp_gradient(loss: Tensor, gather: bool | None = None) -> Tensor:
    """``loss`` with its value unchanged and its gradient divided by the world size.

    On the gathered batch every rank's loss is the global one and the gather sends each rank the
    whole gradient of its rows; the official code's non-autograd all_reduce of c sends each rank
    only its own share of it, 1/world_size of the whole once DDP has averaged (module docstring).
    ``loss.detach() + s (loss - loss.detach())`` keeps the value exactly (the difference is 0)
    and has gradient s. Identity without gathering (``gather`` as in :func:`barlow_twins_terms`).
    """
    if not resolve_gather(gather):
        return loss
    constant = loss.detach()
    return constant + (loss - constant) / world_size()


def barlow_twins_weighted_sum(terms: dict[str, Tensor], lambd: float) -> Tensor:
    """``on_diagonal + lambd * off_diagonal`` of :func:`barlow_twins_terms`."""
    return terms["on_diagonal"] + lambd * terms["off_diagonal"]


@register_method
class BarlowTwins(Method):
    """Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views pushed to identity."""

    name = "barlow_twins"
    augmentation = "asymmetric"  # the asymmetric BYOL-style pair, as in the official code
    loss_param_names = ("lambd",)
    # True: the official code's DDP gradient, 1/world_size of the exact one (module docstring).
    loss_param_defaults = {"official_ddp_scale": False}
    projector_options = {"hidden_bias": False}  # main.py: every projector Linear without bias
    # Multi-crop, an option of the harness (the paper trains on two views): with local crops the
    # loss is averaged over each global crop's pairs (Method.crop_pairs_loss).
    loss_over_crop_pairs = True

    @classmethod
    def check_loss_params(cls, loss_params: Mapping[str, Any]) -> None:
        super().check_loss_params(loss_params)
        if not isinstance(loss_params["official_ddp_scale"], bool):
            raise UsageError(
                "loss.official_ddp_scale of barlow_twins must be true or false, "
                f"got {loss_params['official_ddp_scale']!r}"
            )

    def loss(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = barlow_twins_terms(z_a, z_b)
        loss = barlow_twins_weighted_sum(terms, self.loss_params["lambd"])
        return official_ddp_gradient(loss) if self.loss_params["official_ddp_scale"] else loss, terms
