"""VICReg terms and loss against an independent reference, both covariance forms, hand values."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.methods.vicreg import vicreg_loss, vicreg_terms

SHAPES = [(8, 4), (6, 16), (32, 32), (3, 50), (20, 7)]
FORMS = [None, "gram", "direct"]  # None: chosen by shape


def _views(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Small, uneven column scales so that some stds fall below 1 and the hinge is active.
    scale = torch.linspace(0.2, 1.5, d, dtype=torch.float64)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    z_b = z_a + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    return z_a.requires_grad_(), z_b.requires_grad_()


def reference_terms(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """Straight from the formulas: torch.cov, its diagonal, and its off-diagonal entries selected."""
    n, d = z_a.shape
    invariance = torch.linalg.vector_norm(z_a - z_b) ** 2 / (n * d)
    off_diagonal = ~torch.eye(d, dtype=torch.bool)

    def variance(z):
        std = torch.sqrt(torch.cov(z.T).diagonal() + eps)  # torch.cov: unbiased, rows = variables
        return torch.clamp(1 - std, min=0).sum() / d

    def covariance(z):
        return torch.cov(z.T).masked_select(off_diagonal).square().sum() / d

    return {
        "invariance": invariance,
        "variance": (variance(z_a) + variance(z_b)) / 2,
        "covariance": covariance(z_a) + covariance(z_b),
    }


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", SHAPES)
def test_terms_match_reference_values_and_gradients(shape, form):
    z_a, z_b = _views(*shape, seed=shape[0] * 100 + shape[1])
    got = vicreg_terms(z_a, z_b, form=form)
    want = reference_terms(z_a, z_b)
    assert set(got) == {"invariance", "variance", "covariance"}
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)
        if key == "invariance":
            continue  # no batch statistics; its gradient is checked through the total below
        g = torch.autograd.grad(got[key], (z_a, z_b), retain_graph=True)
        w = torch.autograd.grad(want[key], (z_a, z_b), retain_graph=True)
        for gi, wi in zip(g, w):
            torch.testing.assert_close(gi, wi, rtol=1e-9, atol=1e-12, msg=key)

    loss = vicreg_loss(z_a, z_b, form=form)
    expected = 25 * want["invariance"] + 25 * want["variance"] + want["covariance"]
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for gi, wi in zip(torch.autograd.grad(loss, (z_a, z_b)), torch.autograd.grad(expected, (z_a, z_b))):
        torch.testing.assert_close(gi, wi, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 16), (24, 10)])
def test_gram_and_direct_forms_agree(shape):
    z_a, z_b = _views(*shape, seed=7)
    results = {}
    for f in ("gram", "direct"):
        loss = vicreg_loss(z_a, z_b, form=f)
        results[f] = (loss, *torch.autograd.grad(loss, (z_a, z_b)))
    for g, d in zip(results["gram"], results["direct"]):
        torch.testing.assert_close(g, d, rtol=1e-11, atol=1e-13)


def _saved_tensor_shapes(fn) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


def test_gram_form_is_chosen_when_n_below_d_and_keeps_no_d_by_d_tensor():
    n, d = 5, 40
    z_a, z_b = _views(n, d, seed=1)
    assert (d, d) not in _saved_tensor_shapes(lambda: vicreg_loss(z_a, z_b))
    assert (n, n) in _saved_tensor_shapes(lambda: vicreg_loss(z_a, z_b))
    # And the direct form, chosen when N >= D, does build the D x D covariance.
    z_a, z_b = _views(d, n, seed=1)
    assert (n, n) in _saved_tensor_shapes(lambda: vicreg_loss(z_a, z_b))


def test_identical_views_have_zero_invariance():
    z_a, _ = _views(10, 6, seed=2)
    terms = vicreg_terms(z_a, z_a.detach().clone())
    assert terms["invariance"].item() == 0.0


@pytest.mark.parametrize("n, d", [(8, 4), (3, 8)])
def test_whitened_batch_has_no_variance_or_covariance_penalty(n, d):
    # Centred columns that are orthogonal with squared norm N - 1: covariance exactly I,
    # so std = sqrt(1 + eps) > 1 (no hinge) and no off-diagonal entries. Needs d <= n - 1.
    d_eff = min(d, n - 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_eff, generator=g, dtype=torch.float64)
    x = x - x.mean(0)
    q, _ = torch.linalg.qr(x)
    z = q * math.sqrt(n - 1)
    terms = vicreg_terms(z, z.clone())
    assert terms["variance"].item() == 0.0
    assert terms["covariance"].item() == pytest.approx(0.0, abs=1e-20 + 1e-12)


def test_collapsed_batch_by_hand():
    # Constant embeddings: std = sqrt(eps) in every dimension, no covariance.
    z = torch.ones(5, 3, dtype=torch.float64)
    terms = vicreg_terms(z, z.clone(), eps=1e-4)
    assert terms["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-12)
    assert terms["covariance"].item() == 0.0


def test_covariance_by_explicit_loops_on_small_d():
    # A second, loop-by-loop reference for the covariance term on a small D.
    n, d = 7, 5
    z_a, _z_b = _views(n, d, seed=8)
    z = z_a.detach()
    mean = [sum(z[k, j] for k in range(n)) / n for j in range(d)]
    cov = [
        [sum((z[k, i] - mean[i]) * (z[k, j] - mean[j]) for k in range(n)) / (n - 1) for j in range(d)] for i in range(d)
    ]
    off = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    for f in ("gram", "direct"):
        got = vicreg_terms(z, z.clone(), form=f)["covariance"]
        assert got.item() == pytest.approx(2 * off.item(), rel=1e-12)


def test_perfectly_correlated_pair_by_hand():
    # z = [[1, 1], [-1, -1]]: unbiased var 2, cov 2 -> C = [[2, 2], [2, 2]];
    # off-diagonal squares 2 * 4 = 8, / D = 4 per branch, 8 for the two branches.
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    for f in ("gram", "direct"):
        terms = vicreg_terms(z, z.clone(), form=f)
        assert terms["covariance"].item() == pytest.approx(8.0, rel=1e-12)
        assert terms["variance"].item() == 0.0  # std = sqrt(2 + eps) > 1


def test_loss_is_weighted_sum_of_terms():
    z_a, z_b = _views(9, 5, seed=4)
    t = vicreg_terms(z_a, z_b, eps=1e-3)
    expected = 2.0 * t["invariance"] + 3.0 * t["variance"] + 0.5 * t["covariance"]
    got = vicreg_loss(z_a, z_b, sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5, eps=1e-3)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("form", ["gram", "direct"])
def test_gradcheck(form):
    z_a, z_b = _views(4, 6, seed=9)
    assert torch.autograd.gradcheck(lambda a, b: vicreg_loss(a, b, form=form), (z_a, z_b))


@pytest.mark.parametrize("form", ["", "Gram", "diagonal"])
def test_rejects_unknown_form(form):
    z_a, z_b = _views(6, 9, seed=5)
    with pytest.raises(ValueError, match="unknown form"):
        vicreg_terms(z_a, z_b, form=form)
    with pytest.raises(ValueError, match="unknown form"):
        vicreg_loss(z_a, z_b, form=form)


def test_float32():
    z_a, z_b = _views(6, 9, seed=6)
    loss32 = vicreg_loss(z_a.float(), z_b.float())
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(vicreg_loss(z_a, z_b).item(), rel=1e-5)


@pytest.mark.parametrize(
    "z_a, z_b, match",
    [
        (torch.randn(4, 3), torch.randn(4, 5), "same shape"),
        (torch.randn(4), torch.randn(4), "2-D"),
        (torch.randn(1, 3), torch.randn(1, 3), "at least 2"),
    ],
)
def test_rejects_bad_input(z_a, z_b, match):
    with pytest.raises(ValueError, match=match):
        vicreg_terms(z_a, z_b)
    with pytest.raises(ValueError, match=match):
        vicreg_loss(z_a, z_b)
