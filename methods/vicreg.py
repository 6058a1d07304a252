"""VICReg: Variance-Invariance-Covariance Regularization.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, arXiv:2105.04906. Follows the official code,
facebookresearch/vicreg ``main_vicreg.py``.

For two views Z_a, Z_b of shape (N, D):

    invariance  s(Z_a, Z_b) = 1/(N D) sum_{n,j} (z_a[n, j] - z_b[n, j])^2
    variance    v(Z)  = 1/D sum_j max(0, 1 - sqrt(Var(z_j) + eps))     (unbiased Var)
    covariance  c(Z)  = 1/D sum_{i != j} C(Z)_ij^2,   C(Z) = (Z - mean)^T (Z - mean) / (N - 1)

    L = lambda * s + mu * (v(Z_a) + v(Z_b)) / 2 + nu * (c(Z_a) + c(Z_b))

with lambda = mu = 25, nu = 1, eps = 1e-4. As in the official code the two branches'
variance terms are averaged and their covariance terms summed.

Variance-term variant (loss parameter ``variance_form``, default ``"std"``): the paper hinges
the standard deviation, as above; ``"var"`` hinges the variance itself,

    v_var(Z) = 1/D sum_j max(0, 1 - Var(z_j))                                (unbiased Var)

the paper's ablation of the standard deviation against the variance in this term. Per sample the
var form's gradient, 2 (z - mean) / (N - 1), shrinks with the spread of a collapsing dimension;
the std form's, (z - mean) / ((N - 1) sqrt(Var + eps)), does not (eps keeps the square root
differentiable at 0 and has no role in the var form).

Distributed (as in the official code): the invariance term uses the local batch (with equal
local batch sizes its mean over ranks is the global value); variance and covariance use the
batch gathered from all ranks, N = global batch. The gather carries gradients.

Gram form: C(Z) is D x D, which at D = 8192 costs O(N D^2) time and 256 MiB per fp32 matrix.
Its squared Frobenius norm equals that of the N x N Gram matrix, ||Zc^T Zc||_F = ||Zc Zc^T||_F,
and the diagonal entries are column sums of squares, so when N < D the penalty is computed as
(||Zc Zc^T||_F^2 - sum_j (sum_n zc[n, j]^2)^2) / ((N - 1)^2 D) in O(N^2 D), with no D x D
tensor; when N >= D the direct D x D form is cheaper and used. ``form="gram"`` or
``form="direct"`` (``vicreg_terms``, ``vicreg_loss``) forces one form whatever the shape.
Both forms give the same value and gradient up to rounding. The direct form zeroes the
diagonal exactly; the Gram form subtracts it, which costs no accuracy in practice because with
N < D the covariance has rank below D and cannot be near-diagonal (fp32 relative error about
1e-7 against fp64, even at N = D - 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.distributed.collectives import gather_with_grad, resolve_gather
from ssl_bench.embeddings import check_embedding_pair
from ssl_bench.method import Method, register_method


def _off_diagonal_sq_sum(zc: Tensor, form: str | None = None) -> Tensor:
    """sum_{i != j} (Zc^T Zc)_ij^2 for centred Zc of shape (N, D).

    ``form``: "gram" (N x N) or "direct" (D x D); None takes the cheaper, "gram" when N < D.
    """
    n, d = zc.shape
    if form is None:
        form = "gram" if n < d else "direct"
    if form == "gram":
        # ||Zc^T Zc||_F^2 = ||Zc Zc^T||_F^2 (N x N), minus the diagonal of Zc^T Zc, which is
        # each column's sum of squares.
        return (zc @ zc.T).square().sum() - zc.square().sum(dim=0).square().sum()
    if form == "direct":
        # Zero the diagonal rather than subtract it: exact, and D x D is affordable when N >= D.
        eye = torch.eye(d, dtype=torch.bool, device=zc.device)
        return (zc.T @ zc).masked_fill(eye, 0.0).square().sum()
    raise ValueError(f"unknown form {form!r}")


VARIANCE_FORMS = ("std", "var")


def _variance_penalty(z: Tensor, eps: float, variance_form: str = "std") -> Tensor:
    """1/D sum_j relu(1 - sqrt(Var(z_j) + eps)) ("std") or relu(1 - Var(z_j)) ("var"), unbiased Var."""
    var = z.var(dim=0)
    if variance_form == "std":
        return F.relu(1.0 - torch.sqrt(var + eps)).mean()
    if variance_form == "var":
        return F.relu(1.0 - var).mean()
    raise ValueError(f"variance_form must be one of {', '.join(VARIANCE_FORMS)}; got {variance_form!r}")


def _covariance_penalty(z: Tensor, form: str | None = None) -> Tensor:
    """1/D sum_{i != j} C_ij^2 with C the unbiased covariance of the columns of z."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    return _off_diagonal_sq_sum(zc, form) / ((n - 1) ** 2 * d)


def vicreg_terms(
    z_a: Tensor,
    z_b: Tensor,
    eps: float = 1e-4,
    *,
    gather: bool | None = None,
    form: str | None = None,
    variance_form: str = "std",
) -> dict[str, Tensor]:
    """The three unweighted VICReg terms: ``invariance``, ``variance``, ``covariance``.

    ``variance`` is the mean of the two branches' variance penalties, ``covariance`` the sum
    of their covariance penalties (see the module docstring). ``gather``: compute variance
    and covariance on the batch of all ranks; None = whenever torch.distributed runs with
    more than one rank. ``form``: how the covariance penalty is computed, "gram" or "direct";
    None chooses by shape (see the module docstring). Any other value is a ValueError.
    ``variance_form``: "std" (the paper's) or "var", the variance term's variant (module docstring).
    """
    check_embedding_pair(z_a, z_b)
    invariance = F.mse_loss(z_a, z_b)  # local batch, also under DDP
    if resolve_gather(gather):
        z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
    variance = 0.5 * (_variance_penalty(z_a, eps, variance_form) + _variance_penalty(z_b, eps, variance_form))
    covariance = _covariance_penalty(z_a, form) + _covariance_penalty(z_b, form)
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    *,
    gather: bool | None = None,
    form: str | None = None,
    variance_form: str = "std",
) -> Tensor:
    """VICReg loss: sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance.

    ``gather``, ``form`` and ``variance_form`` as in :func:`vicreg_terms`.
    """
    terms = vicreg_terms(z_a, z_b, eps=eps, gather=gather, form=form, variance_form=variance_form)
    return vicreg_weighted_sum(terms, sim_coeff, std_coeff, cov_coeff)


def vicreg_weighted_sum(terms: dict[str, Tensor], sim_coeff: float, std_coeff: float, cov_coeff: float) -> Tensor:
    """``sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance`` of :func:`vicreg_terms`."""
    return sim_coeff * terms["invariance"] + std_coeff * terms["variance"] + cov_coeff * terms["covariance"]


@register_method
class VICReg(Method):
    """VICReg (Bardes et al. 2022): invariance + variance + covariance regularisation."""

    name = "vicreg"
    augmentation = "asymmetric"
    loss_param_names = ("sim_coeff", "std_coeff", "cov_coeff", "eps")
    loss_param_defaults = {"variance_form": "std"}
    loss_param_choices = {"variance_form": VARIANCE_FORMS}
    # Multi-crop, an option of the harness (the paper trains on two views): with local crops the
    # loss is averaged over each global crop's pairs (Method.crop_pairs_loss).
    loss_over_crop_pairs = True

    def loss(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.loss_params
        terms = vicreg_terms(z_a, z_b, eps=p["eps"], variance_form=p["variance_form"])
        return vicreg_weighted_sum(terms, p["sim_coeff"], p["std_coeff"], p["cov_coeff"]), terms
