"""MoCo v3's contrastive loss (InfoNCE x 2 tau, keys as constants) against an independent reference."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.methods.mocov3 import MoCoV3, mocov3_loss
from ssl_bench.models.backbones import TinyConvNet

SHAPES = [(8, 4), (5, 16), (32, 32), (2, 3)]


def _pair(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    k = q + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return q.requires_grad_(), k.requires_grad_()


def reference(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """Algorithm 1's ctr written per query: -log softmax of the positive key, mean, times 2 tau."""
    k = k.detach()
    total = 0
    for i, q_row in enumerate(q):
        q_unit = q_row / torch.linalg.norm(q_row)
        sims = [torch.dot(q_unit, k_row / torch.linalg.norm(k_row)) / tau for k_row in k]
        denominator = sum(torch.exp(s) for s in sims)
        total = total - torch.log(torch.exp(sims[i]) / denominator)
    return 2 * tau * total / q.shape[0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [1.0, 0.2])
def test_matches_reference_value_and_gradient(shape, tau):
    q, k = _pair(*shape, seed=shape[0] * 100 + shape[1])
    loss = mocov3_loss(q, k, temperature=tau)
    expected = reference(q, k, tau)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, q)
    (grad_ref,) = torch.autograd.grad(expected, q)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_no_gradient_reaches_the_keys():
    q, k = _pair(6, 5, seed=1)
    grad_q, grad_k = torch.autograd.grad(mocov3_loss(q, k), (q, k), allow_unused=True)
    assert grad_k is None and grad_q.abs().sum() > 0


def test_hand_computed_values():
    # q = k = orthonormal rows, tau = 1: logits = I, each query's loss is log(e + N - 1) - 1.
    e = torch.eye(3, dtype=torch.float64)
    assert mocov3_loss(2 * e, e, temperature=1.0).item() == pytest.approx(2 * (math.log(math.e + 2) - 1), rel=1e-14)
    # Collapse: every key equally similar, the loss is 2 tau log N whatever tau.
    same = torch.ones(6, 4, dtype=torch.float64)
    for tau in (1.0, 0.2):
        assert mocov3_loss(same, same, temperature=tau).item() == pytest.approx(2 * tau * math.log(6), rel=1e-14)


def test_invariant_to_permuting_queries_and_keys_together():
    q, k = _pair(10, 6, seed=2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mocov3_loss(q[perm], k[perm], 0.3), mocov3_loss(q, k, 0.3), rtol=1e-12, atol=1e-14)


def test_gradcheck():
    q, k = _pair(4, 3, seed=4)
    assert torch.autograd.gradcheck(lambda x: mocov3_loss(x, k, temperature=0.5), (q,))


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_rejects_non_positive_temperature(tau):
    with pytest.raises(ValueError, match="temperature"):
        mocov3_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=tau)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        mocov3_loss(torch.randn(4, 3), torch.randn(5, 3))


def test_method_loss_is_the_symmetrised_sum():
    method = MoCoV3(
        TinyConvNet((4, 8)),
        8,
        (16, 6),
        (16, 6),
        loss_params={"temperature": 0.5},
        method_params={"momentum_base": 0.99},
    )
    g = torch.Generator().manual_seed(7)
    z_a, z_b, p_a, p_b, t_a, t_b = (torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(6))
    loss, _ = method.loss(z_a, z_b, p_a=p_a, p_b=p_b, target_a=t_a, target_b=t_b)
    torch.testing.assert_close(loss, reference(p_a, t_b, 0.5) + reference(p_b, t_a, 0.5), rtol=1e-12, atol=1e-12)
