"""SimSiam's negative cosine loss with stop-gradient, against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.methods.simsiam import SimSiam, simsiam_loss
from ssl_bench.models.backbones import TinyConvNet

SHAPES = [(8, 4), (5, 16), (32, 32), (2, 3)]


def _pair(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, d, generator=g, dtype=torch.float64) - 0.2
    z = p + torch.randn(n, d, generator=g, dtype=torch.float64)
    return p.requires_grad_(), z.requires_grad_()


def reference(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) of the paper, eq. 1, per sample: -(p . z) / (||p|| ||z||), z a constant; the mean."""
    total = 0
    for p_row, z_row in zip(p, z.detach()):
        total = total - torch.dot(p_row, z_row) / (torch.linalg.norm(p_row) * torch.linalg.norm(z_row))
    return total / p.shape[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_value_and_gradient(shape):
    p, z = _pair(*shape, seed=shape[0] * 100 + shape[1])
    loss = simsiam_loss(p, z)
    expected = reference(p, z)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, p)
    (grad_ref,) = torch.autograd.grad(expected, p)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_matches_the_official_formula():
    # main_simsiam.py: -(CosineSimilarity(p1, z2).mean() + CosineSimilarity(p2, z1).mean()) * 0.5
    p1, z2 = _pair(9, 6, seed=11)
    p2, z1 = _pair(9, 6, seed=12)
    official = -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) * 0.5
    ours = 0.5 * (simsiam_loss(p1, z2) + simsiam_loss(p2, z1))
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-12)


def test_no_gradient_reaches_the_stop_gradient_branch():
    p, z = _pair(6, 5, seed=1)
    grad_p, grad_z = torch.autograd.grad(simsiam_loss(p, z), (p, z), allow_unused=True)
    assert grad_z is None and grad_p.abs().sum() > 0


def test_hand_computed_values_and_range():
    e = torch.eye(4, dtype=torch.float64)
    assert simsiam_loss(3 * e, e).item() == pytest.approx(-1.0, rel=1e-15)
    assert simsiam_loss(e, -e).item() == pytest.approx(1.0, rel=1e-15)
    assert simsiam_loss(e, e.roll(1, dims=1)).item() == pytest.approx(0.0, abs=1e-15)
    p, z = _pair(50, 3, seed=2)
    assert -1.0 <= simsiam_loss(p, z).item() <= 1.0


def test_gradcheck():
    p, z = _pair(4, 3, seed=4)
    assert torch.autograd.gradcheck(lambda x: simsiam_loss(x, z), (p,))


@pytest.mark.parametrize(
    "p, z, match",
    [
        (torch.randn(4, 3), torch.randn(4, 5), "same shape"),
        (torch.randn(1, 3), torch.randn(1, 3), "at least 2"),
    ],
)
def test_rejects_bad_inputs(p, z, match):
    with pytest.raises(ValueError, match=match):
        simsiam_loss(p, z)


def test_method_loss_halves_both_directions_and_never_differentiates_z():
    method = SimSiam(TinyConvNet((4, 8)), 8, (16, 6), (3, 6), method_params={"fixed_predictor_lr": True})
    g = torch.Generator().manual_seed(7)
    z_a, z_b, p_a, p_b = (torch.randn(5, 6, generator=g, dtype=torch.float64).requires_grad_() for _ in range(4))
    loss, _ = method.loss(z_a, z_b, p_a=p_a, p_b=p_b)
    torch.testing.assert_close(loss, 0.5 * (reference(p_a, z_b) + reference(p_b, z_a)), rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(loss, (z_a, z_b, p_a, p_b), allow_unused=True)
    assert grads[0] is None and grads[1] is None  # z only ever enters as stopgrad(z)
    assert all(g.abs().sum() > 0 for g in grads[2:])


def test_fixed_predictor_lr_selects_exactly_the_predictor():
    kwargs = dict(backbone=TinyConvNet((4, 8)), feature_dim=8, projector_dims=(16, 6), predictor_dims=(3, 6))
    fixed = SimSiam(**kwargs, method_params={"fixed_predictor_lr": True})
    assert {id(p) for p in fixed.constant_lr_parameters()} == {id(p) for p in fixed.predictor.parameters()}
    assert SimSiam(**kwargs, method_params={"fixed_predictor_lr": False}).constant_lr_parameters() == []
