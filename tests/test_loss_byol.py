"""BYOL's regression loss and its symmetrised method loss against an independent reference."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.methods.byol import BYOL, byol_loss
from ssl_bench.models.backbones import TinyConvNet

SHAPES = [(8, 4), (5, 16), (32, 32), (2, 3)]


def _pair(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.3
    z = p + 0.9 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return p.requires_grad_(), z.requires_grad_()


def reference(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The paper's form: squared distance of the L2-normalised vectors, per sample, then the mean."""
    total = 0
    for p_row, z_row in zip(p, z.detach()):
        p_unit = p_row / torch.sqrt((p_row * p_row).sum())
        z_unit = z_row / torch.sqrt((z_row * z_row).sum())
        total = total + ((p_unit - z_unit) ** 2).sum()
    return total / p.shape[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_value_and_gradient(shape):
    p, z = _pair(*shape, seed=shape[0] * 100 + shape[1])
    loss = byol_loss(p, z)
    expected = reference(p, z)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, p)
    (grad_ref,) = torch.autograd.grad(expected, p)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_no_gradient_reaches_the_target():
    p, z = _pair(6, 5, seed=1)
    loss = byol_loss(p, z)
    grad_p, grad_z = torch.autograd.grad(loss, (p, z), allow_unused=True)
    assert grad_z is None  # stop-gradient: the target is a constant of the loss
    assert grad_p.abs().sum() > 0


def test_hand_computed_values():
    e = torch.eye(3, dtype=torch.float64)
    assert byol_loss(2 * e, 0.5 * e).item() == pytest.approx(0.0, abs=1e-15)  # same directions
    assert byol_loss(e, -3 * e).item() == pytest.approx(4.0, rel=1e-15)  # opposite directions
    assert byol_loss(e, e.roll(1, dims=1)).item() == pytest.approx(2.0, rel=1e-15)  # orthogonal
    # 60 degrees apart: 2 - 2 cos = 1.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z = torch.tensor([[0.5, math.sqrt(3) / 2], [math.sqrt(3) / 2, 0.5]], dtype=torch.float64)
    assert byol_loss(p, z).item() == pytest.approx(1.0, rel=1e-14)


def test_invariant_to_the_scale_of_each_sample():
    p, z = _pair(7, 4, seed=3)
    scales = torch.linspace(0.1, 10.0, 7, dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(byol_loss(p * scales, z / scales), byol_loss(p, z), rtol=1e-12, atol=1e-14)


def test_gradcheck():
    p, z = _pair(4, 3, seed=4)
    assert torch.autograd.gradcheck(lambda x: byol_loss(x, z), (p,))


def test_float32_agrees_with_float64():
    p, z = _pair(16, 8, seed=5)
    loss32 = byol_loss(p.float(), z.float())
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(byol_loss(p, z).item(), rel=1e-5)


@pytest.mark.parametrize(
    "p, z, match",
    [
        (torch.randn(4, 3), torch.randn(4, 5), "same shape"),
        (torch.randn(4), torch.randn(4), "2-D"),
        (torch.randn(1, 3), torch.randn(1, 3), "at least 2"),
    ],
)
def test_rejects_bad_inputs(p, z, match):
    with pytest.raises(ValueError, match=match):
        byol_loss(p, z)


def test_method_loss_is_the_sum_over_both_directions():
    method = BYOL(TinyConvNet((4, 8)), 8, (16, 6), (16, 6), method_params={"momentum_base": 0.99})
    g = torch.Generator().manual_seed(7)
    z_a, z_b, p_a, p_b, t_a, t_b = (torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(6))
    loss, _ = method.loss(z_a, z_b, p_a=p_a, p_b=p_b, target_a=t_a, target_b=t_b)
    expected = reference(p_a, t_b) + reference(p_b, t_a)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
