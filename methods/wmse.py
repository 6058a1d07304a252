"""W-MSE: the MSE between whitened, L2-normalised embeddings of the two views.

Ermolov, Siarohin, Sangineto, Sebe, "Whitening for Self-Supervised Representation Learning",
ICML 2021, arXiv:2007.06346, section 3. Follows the official code, htdt/self-supervised at commit
d9662c8d (``methods/w_mse.py``, ``methods/whitening.py`` ``Whitening2d``, ``methods/norm_mse.py``),
and solo-learn's port, vturrisi/solo-learn at commit 9187ea39 (``solo/methods/wmse.py``,
``solo/utils/whitening.py``, ``solo/losses/wmse.py``).

Whitening (``Whitening2d``, whitening.py lines 20-47): for a sub-batch X of M embeddings (M x D),
centred by its mean, Xc = X - mean(X), with the unbiased covariance shrunk towards the identity,

    S = (1 - eps) Xc^T Xc / (M - 1) + eps I,      S = L L^T  (Cholesky, L lower triangular)
    W(X) = Xc L^{-T}                               (so that cov(W(X)) = I when eps = 0)

the whitening matrix L^{-1} coming from ``solve_triangular(L, I, upper=False)``. Nothing is
detached: the gradient flows through the mean, the covariance, the Cholesky factor and its
inverse, as in both sources (neither detaches anything in ``Whitening2d``).

Loss (w_mse.py lines 19-36). A random permutation of the N samples is cut into N / w_size
sub-batches of w_size (``whitening_size``) samples; each view is whitened per sub-batch, with the
same sub-batches for both views, so that positives stay paired. With w_a, w_b the whitened rows
and the normalised MSE of norm_mse.py,

    nmse(w_a, w_b) = 1/N sum_n || w_a[n]/||w_a[n]|| - w_b[n]/||w_b[n]|| ||^2
                   = 2 - 2/N sum_n cos(w_a[n], w_b[n])

and L is its mean over ``w_iter`` permutations drawn afresh (``loss /= w_iter * num_pairs``, one
pair of views here). N must be a multiple of w_size (the sources ``view(-1, w_size)`` the
permutation, which fails otherwise), and with eps = 0 w_size must exceed D: the covariance of
w_size samples has rank at most w_size - 1. Both are checked with an error that says so. Defaults
are the official ones (cfg.py lines 74-91): w_size 128, w_iter 1, eps 0.

solo-learn's variant (solo/losses/wmse.py lines 36-37, the default ``simplified=True`` that
solo/methods/wmse.py line 150 uses): ``2 - 2 cos(w_a, w_b.detach())``, the same value with no
gradient through the second view, half the official gradient's paths. The loss option
``detach_view_b`` (default false, the paper's) reproduces it; the CIFAR recipe row, solo-learn's,
sets it.

Collapse. When a sub-batch's covariance is singular (eps = 0 and collapsed or rank-deficient
embeddings), the Cholesky factorisation fails: the sources stop with torch's error; here the
loss is NaN instead, which the trainer reports as a non-finite loss (a diverged run). eps > 0
keeps the covariance positive definite: a collapsed sub-batch then whitens to zeros and scores
2, the worst value of agreeing views.

Randomness. The permutations come from a generator seeded, at every loss evaluation, from a seed
the method draws when built (after ``torch.manual_seed(config.seed)``: the same per run seed) and
the number of training-mode evaluations so far; both are buffers, so a checkpoint carries them
and a resumed run draws the permutations an uninterrupted one would. The sources use torch's
global generator.

Distributed: as solo-learn (``self.batch_size`` is the per-device batch, solo/methods/wmse.py
lines 138-145), each rank whitens sub-batches of its local batch, with no gather; its loss is
the mean over its local samples and DDP's gradient averaging gives the global mean. w_size must
then divide the local batch. Every rank draws the same permutations (the same seed), over
different samples. The official code is written for one GPU (its README; ``nn.DataParallel``
around the backbone only, model.py line 29), whitening sub-batches of the whole batch. The
official head also embeds both views in one pass (``self.head(torch.cat(h))``, w_mse.py line
22), so its BatchNorm statistics mix the views; ssl-bench, like solo-learn, runs each view
through the heads separately.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.data.loaders import derive_seed
from ssl_bench.embeddings import check_embedding_pair, is_whole_number
from ssl_bench.errors import UsageError
from ssl_bench.method import Method, register_method

# Stream constant of the permutation generator's seed (ssl_bench.data.loaders.derive_seed).
_PERMUTATION_STREAM = 0x574D5345  # "WMSE"


def whiten(x: Tensor, eps: float = 0.0) -> Tensor:
    """Cholesky whitening of each (M, D) matrix of ``x`` (..., M, D) over its M rows.

    ``(x - mean) L^{-T}`` with L L^T = (1 - eps) cov + eps I, cov the unbiased covariance (the
    module docstring). Where a covariance is not positive definite the Cholesky factorisation
    fails and that matrix's rows come out NaN (the sources raise instead).
    """
    m, d = x.shape[-2:]
    if m < 2:
        raise ValueError(f"whitening needs at least 2 samples per sub-batch, got {m}")
    centred = x - x.mean(dim=-2, keepdim=True)
    cov = centred.mT @ centred / (m - 1)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    shrunk = (1.0 - eps) * cov + eps * eye
    # cholesky_ex reports a failed factorisation in `info` rather than raising: no device sync on
    # CUDA to check it every step, and a NaN loss that the trainer reports as such.
    factor, info = torch.linalg.cholesky_ex(shrunk)
    factor = torch.where((info == 0)[..., None, None], factor, factor.new_full((), math.nan))
    inverse = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)
    return centred @ inverse.mT


def wmse_loss(
    z_a: Tensor,
    z_b: Tensor,
    whitening_size: int = 128,
    w_iter: int = 1,
    eps: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    detach_view_b: bool = False,
) -> Tensor:
    """W-MSE: 2 - 2 mean cos between the views whitened per sub-batch, averaged over w_iter draws.

    ``z_a``, ``z_b``: (N, D) embeddings of the two views, row n of each from the same image.
    Each of the ``w_iter`` iterations draws ``torch.randperm(N, generator=generator)`` (on the
    CPU, as the sources do) and whitens the sub-batches of ``whitening_size`` consecutive
    entries of it (:func:`whiten` with ``eps``). ``detach_view_b``: solo-learn's gradient, none
    through view b (module docstring). N must be a multiple of ``whitening_size``, and with
    ``eps`` 0 ``whitening_size`` must exceed D.
    """
    n = check_embedding_pair(z_a, z_b)
    d = z_a.shape[1]
    _check_whitening(whitening_size, w_iter, eps, d)
    whitening_size, w_iter = int(whitening_size), int(w_iter)  # `--set` gives numbers as floats
    if n % whitening_size:
        raise ValueError(
            f"W-MSE whitens sub-batches of whitening_size = {whitening_size} samples, which must divide "
            f"the (per-rank) batch of {n}"
        )
    total = z_a.new_zeros(())
    for _ in range(w_iter):
        groups = torch.randperm(n, generator=generator).view(-1, whitening_size).to(z_a.device)
        white_a = whiten(z_a[groups], eps)
        white_b = whiten(z_b[groups], eps)
        if detach_view_b:
            white_b = white_b.detach()
        cosine = (F.normalize(white_a, dim=-1) * F.normalize(white_b, dim=-1)).sum(dim=-1)
        total = total + (2.0 - 2.0 * cosine.mean())
    return total / w_iter


def _check_whitening(whitening_size: Any, w_iter: Any, eps: Any, embedding_dim: int | None) -> None:
    """ValueError unless the whitening parameters make sense for ``embedding_dim`` (if known)."""
    if not is_whole_number(whitening_size) or whitening_size < 2:
        raise ValueError(f"whitening_size must be an integer >= 2, got {whitening_size!r}")
    if not is_whole_number(w_iter) or w_iter < 1:
        raise ValueError(f"w_iter must be a positive integer, got {w_iter!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps!r}")
    if eps == 0 and embedding_dim is not None and whitening_size <= embedding_dim:
        raise ValueError(
            f"whitening_size = {whitening_size} must exceed the embedding width {embedding_dim} with eps = 0: "
            "the covariance of fewer samples is singular"
        )


@register_method
class WMSE(Method):
    """W-MSE (Ermolov et al. 2021): MSE of normalised embeddings whitened per sub-batch."""

    name = "wmse"
    augmentation = "symmetric"  # both sources draw the two views from one distribution
    # Official names w_size, w_iter, w_eps (cfg.py); solo-learn's whitening_size, whitening_iters,
    # whitening_eps (solo/methods/wmse.py lines 46-53).
    loss_param_names = ("whitening_size", "w_iter", "eps")
    loss_param_defaults = {"detach_view_b": False}
    # Linear-BN-ReLU-Linear, every Linear with its bias (official model.py get_head; solo-learn
    # solo/methods/wmse.py lines 56-61).
    projector_options = {"last_bias": True}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Drawn from the global generator, which the trainer seeds with the run's seed just before
        # building the method: the same permutations for every run of a seed. Buffers, so that a
        # checkpoint carries them (int64 on the CPU side of the draw; read once per step).
        seed = int(torch.randint(0, 2**62, (), device="cpu"))
        self.register_buffer("permutation_seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("permutation_draws", torch.tensor(0, dtype=torch.int64))

    @classmethod
    def check_hyperparameters(
        cls,
        projector_dims: Sequence[int],
        predictor_dims: Sequence[int],
        loss_params: Mapping[str, Any],
        method_params: Mapping[str, Any],
        *,
        feature_dim: int | None = None,
    ) -> None:
        super().check_hyperparameters(
            projector_dims, predictor_dims, loss_params, method_params, feature_dim=feature_dim
        )
        p = {**cls.loss_param_defaults, **loss_params}
        embedding_dim = projector_dims[-1] if projector_dims else feature_dim
        try:
            _check_whitening(p["whitening_size"], p["w_iter"], p["eps"], embedding_dim)
        except ValueError as error:
            raise UsageError(f"loss parameters of wmse: {error}") from None
        if not isinstance(p["detach_view_b"], bool):
            raise UsageError(f"loss.detach_view_b of wmse must be true or false, got {p['detach_view_b']!r}")

    @classmethod
    def check_batch_size(cls, batch_size: int, loss_params: Mapping[str, Any]) -> None:
        # Every rank whitens whole sub-batches of its local batch, so at least the global batch
        # must be a multiple of them (the local batch, known only at launch, is checked there).
        size = int(loss_params["whitening_size"])
        if batch_size % size:
            raise UsageError(
                f"loss.whitening_size of wmse ({size}) must divide the batch size ({batch_size}): "
                "the batch is whitened in sub-batches of that size"
            )

    def permutation_generator(self) -> torch.Generator:
        """The generator of this evaluation's permutations; a training-mode call advances the count."""
        draws = int(self.permutation_draws)
        generator = torch.Generator().manual_seed(derive_seed(int(self.permutation_seed), draws, _PERMUTATION_STREAM))
        if self.training:
            self.permutation_draws.fill_(draws + 1)
        return generator

    def loss(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.loss_params
        value = wmse_loss(
            z_a,
            z_b,
            int(p["whitening_size"]),
            int(p["w_iter"]),
            float(p["eps"]),
            generator=self.permutation_generator(),
            detach_view_b=p["detach_view_b"],
        )
        return value, {}
