"""NT-Xent (SimCLR) loss against an independent per-anchor reference, hand values, gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.methods.simclr import nt_xent_loss

SHAPES = [(8, 4), (6, 16), (32, 32), (3, 50), (2, 3)]


def _views(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64)
    z_b = z_a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z_a.requires_grad_(), z_b.requires_grad_()


def reference_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """One cross-entropy per anchor over an explicit list of the 2N - 1 other samples."""
    n = z_a.shape[0]
    samples = [row / row.norm() for row in torch.cat([z_a, z_b])]
    losses = []
    for i in range(2 * n):
        positive = i + n if i < n else i - n
        others = [k for k in range(2 * n) if k != i]
        logits = torch.stack([samples[i].dot(samples[k]) / temperature for k in others])
        target = torch.tensor([others.index(positive)])
        losses.append(F.cross_entropy(logits.unsqueeze(0), target))
    return torch.stack(losses).sum() / (2 * n)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_reference_value_and_gradients(shape, temperature):
    z_a, z_b = _views(*shape, seed=shape[0] * 100 + shape[1])
    loss = nt_xent_loss(z_a, z_b, temperature=temperature)
    expected = reference_nt_xent(z_a, z_b, temperature)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)

    got = torch.autograd.grad(loss, (z_a, z_b))
    want = torch.autograd.grad(expected, (z_a, z_b))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_two_identical_orthogonal_pairs_by_hand():
    # u = e1, e2 in both views: each anchor sees its positive at similarity 1 and two
    # negatives at similarity 0, so l = -log(e^{1/t} / (e^{1/t} + 2)) = log(1 + 2 e^{-1/t}).
    t = 0.5
    z = torch.tensor([[3.0, 0.0], [0.0, 0.2]], dtype=torch.float64)  # norms differ: normalisation
    loss = nt_xent_loss(z, z.clone(), temperature=t)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / t)), rel=1e-12)


def test_two_swapped_pairs_by_hand():
    # Views a = (e1, e2), b = (e2, e1): the positive has similarity 0, one negative has 1,
    # the other 0, so l = -log(1 / (1 + 1 + e^{1/t})) = log(2 + e^{1/t}) for every anchor.
    t = 0.2
    e = torch.eye(2, dtype=torch.float64)
    loss = nt_xent_loss(e, e.flip(0), temperature=t)
    assert loss.item() == pytest.approx(math.log(2 + math.exp(1 / t)), rel=1e-12)


def test_invariant_to_scaling_each_embedding():
    z_a, z_b = _views(5, 7, seed=3)
    scale = torch.linspace(0.5, 3.0, 5, dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(nt_xent_loss(z_a * scale, z_b), nt_xent_loss(z_a, z_b))


def test_gradcheck():
    z_a, z_b = _views(4, 3, seed=11)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, temperature=0.3), (z_a, z_b))


def test_float32_and_no_gather_outside_distributed():
    z_a, z_b = _views(6, 5, seed=5)
    loss32 = nt_xent_loss(z_a.float(), z_b.float())
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(nt_xent_loss(z_a, z_b).item(), rel=1e-5)
    # Without a process group, gather=True has nothing to gather.
    torch.testing.assert_close(nt_xent_loss(z_a, z_b, gather=True), nt_xent_loss(z_a, z_b, gather=False))


@pytest.mark.parametrize(
    "z_a, z_b, match",
    [
        (torch.randn(4, 3), torch.randn(4, 5), "same shape"),
        (torch.randn(4, 3), torch.randn(5, 3), "same shape"),
        (torch.randn(4), torch.randn(4), "2-D"),
        (torch.randn(2, 4, 3), torch.randn(2, 4, 3), "2-D"),
        (torch.randn(1, 3), torch.randn(1, 3), "at least 2"),
        (torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long), "floating"),
    ],
)
def test_rejects_bad_input(z_a, z_b, match):
    with pytest.raises(ValueError, match=match):
        nt_xent_loss(z_a, z_b)


def test_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0)
