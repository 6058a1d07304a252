"""TiCo's two readings of one loss, numerically (float64): contrastive and redundancy reduction.

Zhu et al. 2022 (arXiv:2206.10698) present TiCo as both a contrastive method and a redundancy-
reduction method. With u_n the L2-normalised embeddings of view a, v_n of view b, and
C_t = beta C_{t-1} + (1 - beta) U^T U / N, the covariance-contrast term can be written

- contrastive (N x N, similarities between samples): every sample is pushed away from every
  sample of the batch by the square of their similarity, and from the memory C_{t-1}:

      1/N sum_n u_n^T C_t u_n = beta/N sum_n u_n^T C_{t-1} u_n + (1 - beta)/N^2 sum_{n,m} (u_n . u_m)^2

- redundancy reduction (D x D, statistics between dimensions): the inner product of the running
  covariance with the batch's, which at beta = 0 is the squared Frobenius norm of the batch's
  second-moment matrix, its off-diagonal (redundancy) plus diagonal entries, as Barlow Twins'
  redundancy term penalises the off-diagonal of its cross-correlation:

      1/N sum_n u_n^T C_t u_n = <C_t, U^T U / N>_F,   = ||U^T U / N||_F^2 at beta = 0

The tests compute each form on its own and compare with ``tico_terms``, values and gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.methods.tico import tico_terms, tico_weighted_sum


def _views(seed: int, n: int = 12, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z_a, z_a + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)


def contrastive_form(z_a, z_b, c_prev, beta, rho):
    u, v = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    n = len(u)
    invariance = -(u * v).sum(dim=1).mean()
    similarities = u @ u.T  # (N, N): every pair of samples, itself included
    memory = torch.einsum("nd,de,ne->n", u, c_prev, u).mean()
    contrast = beta * memory + (1 - beta) * similarities.square().sum() / n**2
    return invariance + rho * contrast


def redundancy_form(z_a, z_b, c_prev, beta, rho):
    u, v = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    n = len(u)
    invariance = -(u * v).sum(dim=1).mean()
    second_moment = u.T @ u / n  # (D, D): statistics between dimensions
    c_t = beta * c_prev + (1 - beta) * second_moment
    contrast = (c_t * second_moment).sum()
    return invariance + rho * contrast


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_both_forms_equal_ticos_loss_and_gradient_over_several_steps(beta):
    rho = 8.0
    c = torch.zeros(6, 6, dtype=torch.float64)
    for step in range(4):
        z_a, z_b = _views(step)
        z_a.requires_grad_()
        terms, c_next = tico_terms(z_a, z_b, c, beta=beta, gather=False)
        loss = tico_weighted_sum(terms, rho)
        (grad,) = torch.autograd.grad(loss, z_a)
        for form in (contrastive_form, redundancy_form):
            other = form(z_a, z_b, c, beta, rho)
            (other_grad,) = torch.autograd.grad(other, z_a)
            assert other.item() == pytest.approx(loss.item(), rel=1e-12, abs=1e-14)
            assert torch.allclose(other_grad, grad, rtol=1e-10, atol=1e-13)
        c = c_next  # the memory carried to the next step, as the method does
    assert float(c.abs().sum()) > 0 or beta == 0.0


def test_without_memory_the_contrast_is_the_frobenius_norm_of_the_second_moment_matrix():
    """beta = 0: the redundancy reading, ||U^T U / N||_F^2 = off-diagonal + diagonal redundancy."""
    z_a, z_b = _views(7)
    terms, _ = tico_terms(z_a, z_b, torch.zeros(6, 6, dtype=torch.float64), beta=0.0, gather=False)
    u = F.normalize(z_a, dim=1)
    m = u.T @ u / len(u)
    off_diagonal = (m - torch.diag(torch.diagonal(m))).square().sum()
    diagonal = torch.diagonal(m).square().sum()
    assert float(terms["contrast"]) == pytest.approx(float(off_diagonal + diagonal), rel=1e-12)
    # ... and the contrastive reading of the same number: mean squared similarity over all pairs.
    assert float(terms["contrast"]) == pytest.approx(float((u @ u.T).square().mean()), rel=1e-12)
    # Decorrelated embeddings score lower than redundant ones (all rows alike): the contrast is
    # smallest when the second-moment matrix is spread over all dimensions.
    redundant = z_a[:1].expand_as(z_a)
    terms_redundant, _ = tico_terms(redundant, redundant, torch.zeros(6, 6, dtype=torch.float64), 0.0, gather=False)
    assert float(terms_redundant["contrast"]) == pytest.approx(1.0) and float(terms["contrast"]) < 1.0
