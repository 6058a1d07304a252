"""W-MSE's whitening and loss against an independent per-sample reference, its properties, and the
permutation state that makes runs reproducible and resumable."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from support.crash import TINY_RESUMABLE_RUN, final_method_state, straight_and_resumed

from ssl_bench.errors import UsageError
from ssl_bench.methods.wmse import WMSE, whiten, wmse_loss
from ssl_bench.models.backbones import TinyConvNet
from ssl_bench.recipes import resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")

# (N, D, whitening_size): one sub-batch, several, and a sub-batch of exactly D + 1 samples.
SHAPES = [(16, 3, 8), (24, 5, 12), (12, 4, 12), (32, 7, 16), (18, 5, 6)]


def _views(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64)  # correlated dimensions
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + 0.5
    z_b = z_a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z_a.requires_grad_(), z_b.requires_grad_()


def _permutations(n: int, w_iter: int, seed: int) -> list[torch.Tensor]:
    """The permutations wmse_loss draws from a generator seeded with ``seed``: one randperm(N) per iteration."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(w_iter)]


def reference_whiten(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Whitening2d of the official code, sample by sample: centre, unbiased covariance shrunk by
    eps towards I, Cholesky factor L, each centred row multiplied by L^{-1} (an explicit inverse)."""
    m, d = x.shape
    mean = sum(x[i] for i in range(m)) / m
    centred = [x[i] - mean for i in range(m)]
    cov = sum(torch.outer(c, c) for c in centred) / (m - 1)
    shrunk = (1 - eps) * cov + eps * torch.eye(d, dtype=x.dtype)
    inverse = torch.linalg.inv(torch.linalg.cholesky(shrunk))
    return torch.stack([inverse @ c for c in centred])


def reference(z_a, z_b, whitening_size, permutations, eps=0.0, detach_b=False):
    """w_mse.py's loop: per permutation, whiten each view per sub-batch and take norm_mse_loss,
    written as the squared distance of the unit vectors; the mean over permutations."""
    n = z_a.shape[0]
    total = 0.0
    for perm in permutations:
        distances = []
        for start in range(0, n, whitening_size):
            index = perm[start : start + whitening_size]
            white_a = reference_whiten(z_a[index], eps)
            white_b = reference_whiten(z_b[index], eps)
            for u, v in zip(white_a, white_b):
                if detach_b:
                    v = v.detach()
                distances.append(((u / torch.sqrt((u * u).sum()) - v / torch.sqrt((v * v).sum())) ** 2).sum())
        total = total + sum(distances) / n
    return total / len(permutations)


# --- the loss against the reference ----------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w_iter", [1, 3])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_reference_values_and_gradients(shape, w_iter, eps):
    n, d, size = shape
    z_a, z_b = _views(n, d, seed=n * 100 + d)
    loss = wmse_loss(z_a, z_b, size, w_iter, eps, generator=torch.Generator().manual_seed(7))
    expected = reference(z_a, z_b, size, _permutations(n, w_iter, 7), eps)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(torch.autograd.grad(loss, (z_a, z_b)), torch.autograd.grad(expected, (z_a, z_b))):
        # A sub-batch of D + 1 samples has an ill-conditioned covariance: rounding shows at 1e-9.
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_detach_view_b_is_solo_learns_gradient():
    # solo/losses/wmse.py: 2 - 2 cos(z1, z2.detach()): the value, and view a's gradient, are the
    # official loss's; view b gets none.
    z_a, z_b = _views(24, 5, seed=3)
    full = wmse_loss(z_a, z_b, 12, 2, generator=torch.Generator().manual_seed(1))
    solo = wmse_loss(z_a, z_b, 12, 2, generator=torch.Generator().manual_seed(1), detach_view_b=True)
    expected = reference(z_a, z_b, 12, _permutations(24, 2, 1), detach_b=True)
    torch.testing.assert_close(solo, full, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(solo, expected, rtol=1e-10, atol=1e-12)
    grad_a_full, grad_b_full = torch.autograd.grad(full, (z_a, z_b))
    grad_a, grad_b = torch.autograd.grad(solo, (z_a, z_b), allow_unused=True)
    (grad_a_ref,) = torch.autograd.grad(expected, z_a)
    torch.testing.assert_close(grad_a, grad_a_full, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad_a, grad_a_ref, rtol=1e-8, atol=1e-11)
    assert grad_b is None and grad_b_full.abs().sum() > 0


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gradcheck(eps):
    # The whitening matrix carries gradient (neither source detaches it): the analytic gradient of
    # the whole chain, Cholesky factor and its inverse included, against finite differences.
    z_a, z_b = _views(8, 2, seed=11)
    z_a, z_b = z_a.detach().requires_grad_(), z_b.detach().requires_grad_()

    def loss(a, b):
        return wmse_loss(a, b, 4, 2, eps, generator=torch.Generator().manual_seed(5))

    assert torch.autograd.gradcheck(loss, (z_a, z_b), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_the_whitening_matrix_carries_gradient():
    # With the whitening matrix a constant the gradient differs: the contrast gradcheck relies on.
    z_a, z_b = _views(16, 3, seed=2)
    loss = wmse_loss(z_a, z_b, 8, 1, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(loss, z_a)

    def detached_whiten(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=0)
        inverse = torch.linalg.inv(torch.linalg.cholesky(centred.T @ centred / (x.shape[0] - 1)))
        return centred @ inverse.detach().T

    (perm,) = _permutations(16, 1, 0)
    groups = perm.view(-1, 8)
    cosines = torch.cat(
        [torch.nn.functional.cosine_similarity(detached_whiten(z_a[g]), detached_whiten(z_b[g])) for g in groups]
    )
    (grad_detached,) = torch.autograd.grad(2 - 2 * cosines.mean(), z_a)
    torch.testing.assert_close(2 - 2 * cosines.mean(), loss, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(grad, grad_detached, rtol=1e-3, atol=1e-6)


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 3), (64, 16), (129, 128)])
def test_whitened_sub_batches_have_identity_covariance(shape):
    m, d = shape
    g = torch.Generator().manual_seed(m)
    x = torch.randn(3, m, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    white = whiten(x + 2.0)
    for sub_batch in white:
        torch.testing.assert_close(sub_batch.mean(dim=0), torch.zeros(d, dtype=torch.float64), rtol=0, atol=1e-9)
        torch.testing.assert_close(torch.cov(sub_batch.T), torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-7)
    # Cholesky whitening, not another whitening (ZCA, PCA): coordinate j of a whitened row
    # depends on the centred row's coordinates 0..j only, the first one just rescaled.
    centred = x - x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(white[..., 0], centred[..., 0] / centred[..., 0].std(dim=1, keepdim=True))


def test_shrinkage_pulls_the_covariance_towards_the_identity_as_the_source_does():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    eps = 0.3
    cov = torch.cov(x.T)
    shrunk = (1 - eps) * cov + eps * torch.eye(4, dtype=torch.float64)
    # The whitened covariance is L^{-1} cov L^{-T} with L L^T the shrunk covariance.
    inverse = torch.linalg.inv(torch.linalg.cholesky(shrunk))
    torch.testing.assert_close(torch.cov(whiten(x, eps).T), inverse @ cov @ inverse.T)


def test_invariant_to_per_dimension_affine_maps_of_the_embeddings():
    # (x - mean) S for a diagonal S: L becomes S L up to the signs of S, so the whitened rows only
    # change sign per dimension, alike in both views: the cosines stay. Offsets may differ by view.
    z_a, z_b = _views(24, 5, seed=4)
    scale = torch.tensor([3.0, -0.5, 10.0, -2.0, 0.1], dtype=torch.float64)
    loss = wmse_loss(z_a, z_b, 12, 2, generator=torch.Generator().manual_seed(3))
    mapped = wmse_loss(z_a * scale + 4.0, z_b * scale - 1.0, 12, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mapped, loss, rtol=1e-9, atol=1e-11)
    # Not to a mixing of dimensions: each view's whitening then turns its rows differently.
    mixing = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    rotated = wmse_loss(z_a @ mixing, z_b @ mixing, 12, 2, generator=torch.Generator().manual_seed(3))
    assert abs(rotated.item() - loss.item()) > 1e-4


def test_sub_batches_differ_from_whitening_the_whole_batch():
    z_a, z_b = _views(24, 5, seed=5)
    sub = wmse_loss(z_a, z_b, 8, 1, generator=torch.Generator().manual_seed(0))
    whole = wmse_loss(z_a, z_b, 24, 1, generator=torch.Generator().manual_seed(0))
    assert abs(sub.item() - whole.item()) > 1e-4
    # One sub-batch: the permutation is irrelevant.
    again = wmse_loss(z_a, z_b, 24, 1, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(again, whole, rtol=1e-12, atol=1e-14)


def test_agreeing_views_score_zero_and_a_singular_covariance_is_nan():
    z_a, _ = _views(16, 3, seed=6)
    assert wmse_loss(z_a, z_a.clone(), 8, 2, generator=torch.Generator().manual_seed(0)).abs().item() < 1e-12
    repeated = z_a[:4].repeat(4, 1)  # repeated samples are no collapse: 4 distinct rows span 3 dimensions
    assert torch.isfinite(wmse_loss(repeated, repeated + 0.1 * z_a, 16, 1))
    collapsed = torch.ones(16, 3, dtype=torch.float64)
    assert torch.isnan(wmse_loss(collapsed, collapsed.clone(), 8, 1))
    # Where the factorisation fails, what it leaves behind can be finite: the failed sub-batch
    # must come out NaN, not quietly whitened with it, and the others as they are. A shrinkage
    # past 1 makes (1 - eps) cov + eps I indefinite when a variance exceeds eps / (eps - 1) = 3.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, generator=g, dtype=torch.float64) * 0.5
    x[1, :, 2] *= 20.0
    shrunk = -0.5 * torch.stack([torch.cov(sub.T) for sub in x]) + 1.5 * torch.eye(3, dtype=torch.float64)
    assert torch.linalg.cholesky_ex(shrunk).info.tolist() == [0, 3]
    white = whiten(x, eps=1.5)
    assert torch.isfinite(white[0]).all() and torch.isnan(white[1]).all()
    torch.testing.assert_close(white[0], whiten(x[0], eps=1.5))
    # Shrinkage keeps the covariance positive definite: zeros after whitening, the worst score.
    assert wmse_loss(collapsed, collapsed.clone(), 8, 1, eps=0.1).item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(whitening_size=5), "divide"),
        (dict(whitening_size=4), "exceed the embedding width 4"),
        (dict(whitening_size=1), "whitening_size"),
        (dict(whitening_size=8, w_iter=0), "w_iter"),
        (dict(whitening_size=8, eps=1.5), "eps"),
    ],
)
def test_bad_parameters_are_errors(kwargs, match):
    z_a, z_b = _views(16, 4, seed=0)
    with pytest.raises(ValueError, match=match):
        wmse_loss(z_a, z_b, **kwargs)


def test_a_recipe_whose_sub_batch_cannot_whiten_its_embedding_is_a_usage_error():
    with pytest.raises(UsageError, match="exceed the embedding width 64"):
        resolve_config("wmse", "cifar10", settings=["loss.whitening_size=64"])
    resolve_config("wmse", "cifar10", settings=["loss.whitening_size=64", "loss.eps=0.1"])  # shrinkage: fine


# --- the permutations: drawn from the run's seed, state of the method ------------------------


def _method(seed: int, whitening_size: int = 4) -> WMSE:
    torch.manual_seed(seed)
    return WMSE(
        TinyConvNet((4, 8, 8)), 8, (8, 3), loss_params={"whitening_size": whitening_size, "w_iter": 1, "eps": 0.0}
    )


def test_each_training_step_draws_new_permutations_from_the_runs_seed():
    z_a, z_b = _views(16, 3, seed=8)
    method = _method(0).double()
    losses = [method.loss(z_a, z_b)[0].item() for _ in range(3)]
    assert len(set(losses)) == 3  # new sub-batches every training step
    assert int(method.permutation_draws) == 3
    method.eval()
    assert method.loss(z_a, z_b)[0].item() == method.loss(z_a, z_b)[0].item()  # evaluation does not advance
    assert int(method.permutation_draws) == 3
    # The same run seed, the same permutations; another seed, others.
    same, other = _method(0).double(), _method(1).double()
    assert int(same.permutation_seed) == int(method.permutation_seed) != int(other.permutation_seed)
    assert [same.loss(z_a, z_b)[0].item() for _ in range(3)] == losses
    assert [other.loss(z_a, z_b)[0].item() for _ in range(3)] != losses


def test_the_permutation_state_survives_a_state_dict_round_trip():
    z_a, z_b = _views(16, 3, seed=9)
    trained = _method(0).double()
    trained.loss(z_a, z_b)
    restored = _method(1).double()
    restored.load_state_dict(copy.deepcopy(trained.state_dict()))
    assert restored.loss(z_a, z_b)[0].item() == trained.loss(z_a, z_b)[0].item()


# 8 steps in 2 epochs (TINY_RESUMABLE_RUN); sub-batches of 8.
TINY_RUN = ["projector=16,4", "loss.whitening_size=8", "loss.w_iter=2", *TINY_RESUMABLE_RUN]


def test_a_crashed_run_resumes_to_the_same_weights(fashion_root: Path, tmp_path: Path, monkeypatch):
    # The crash before step 7 leaves the mid-epoch checkpoint of step 6; steps 6 and 7 are trained
    # again after the resume and must draw the permutations the uninterrupted run drew.
    config = resolve_config("wmse", "fashion-mnist", {"epochs": 2, "data_root": str(fashion_root)}, TINY_RUN)
    straight, resumed = straight_and_resumed(config, tmp_path, monkeypatch, crash_step=7)
    assert resumed.resumed_from_step == 6
    reference, state = final_method_state(straight), final_method_state(resumed)
    assert int(reference["permutation_draws"]) == 8
    for name in reference:
        assert torch.equal(state[name], reference[name]), name
    assert resumed.final_loss == straight.final_loss


def test_a_batch_that_whitening_sub_batches_do_not_divide_is_a_usage_error():
    resolve_config("wmse", "fashion-mnist", settings=["batch_size=384"])  # 3 sub-batches of 128
    with pytest.raises(UsageError, match="must divide the batch size"):
        resolve_config("wmse", "fashion-mnist", settings=["batch_size=200"])
