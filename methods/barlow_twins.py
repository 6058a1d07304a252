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
N = global batch, so every rank computes the global loss. The official code instead sums c
with a non-autograd all_reduce, which leaves each rank's gradient 1/world_size too small
(lightly issue 1977); the autograd gather here gives DDP exactly the global-batch gradient.

Gram form: c is D x D (256 MiB in fp32 at D = 8192). When N < D the off-diagonal penalty is
computed from N x N Gram matrices instead, using ||A^T B||_F^2 = sum((A A^T) * (B B^T)) and
subtracting the diagonal, c_ii = 1/N sum_n a[n, i] b[n, i], which is cheap; when N >= D the
direct D x D form is cheaper and used. ``form="gram"`` or ``form="direct"``
(``barlow_twins_terms``, ``barlow_twins_loss``) forces one form whatever the shape. Same value and
gradient as the direct form (which zeroes the diagonal exactly) up to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_bench.distributed.collectives import gather_with_grad, resolve_gather
from ssl_bench.embeddings import check_embedding_pair
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
    z_a: Tensor, z_b: Tensor, lambd: float = 0.0051, *, gather: bool | None = None, form: str | None = None
) -> Tensor:
    """Barlow Twins loss: on_diagonal + lambd * off_diagonal (see the module docstring).

    ``gather`` and ``form`` as in :func:`barlow_twins_terms`.
    """
    terms = barlow_twins_terms(z_a, z_b, gather=gather, form=form)
    return barlow_twins_weighted_sum(terms, lambd)


def barlow_twins_weighted_sum(terms: dict[str, Tensor], lambd: float) -> Tensor:
    """``on_diagonal + lambd * off_diagonal`` of :func:`barlow_twins_terms`."""
    return terms["on_diagonal"] + lambd * terms["off_diagonal"]


@register_method
class BarlowTwins(Method):
    """Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views pushed to identity."""

    name = "barlow_twins"
    augmentation = "asymmetric"  # the asymmetric BYOL-style pair, as in the official code
    loss_param_names = ("lambd",)
    projector_options = {"hidden_bias": False}  # main.py: every projector Linear without bias

    def loss(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = barlow_twins_terms(z_a, z_b)
        return barlow_twins_weighted_sum(terms, self.loss_params["lambd"]), terms
