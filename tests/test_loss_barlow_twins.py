"""Barlow Twins terms and loss against an independent reference, both off-diagonal forms, hand values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.methods.barlow_twins import barlow_twins_loss, barlow_twins_terms

SHAPES = [(8, 4), (6, 16), (32, 32), (3, 50), (20, 7)]
FORMS = [None, "gram", "direct"]  # None: chosen by shape
BN_EPS = 1e-5


def _views(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shift = torch.linspace(-2.0, 2.0, d, dtype=torch.float64)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64) * 1.5 + shift
    z_b = 0.8 * z_a + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z_a.requires_grad_(), z_b.requires_grad_()


def reference_terms(z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official recipe: F.batch_norm in train mode, c = a^T b / N, diagonal and off-diagonal by mask."""
    n, d = z_a.shape
    a = F.batch_norm(z_a, None, None, training=True, eps=BN_EPS)
    b = F.batch_norm(z_b, None, None, training=True, eps=BN_EPS)
    c = torch.einsum("ni,nj->ij", a, b) / n
    eye = torch.eye(d, dtype=torch.bool)
    return {
        "on_diagonal": (1 - c.masked_select(eye)).square().sum(),
        "off_diagonal": c.masked_select(~eye).square().sum(),
    }


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", SHAPES)
def test_terms_match_reference_values_and_gradients(shape, form):
    z_a, z_b = _views(*shape, seed=shape[0] * 100 + shape[1])
    got = barlow_twins_terms(z_a, z_b, form=form)
    want = reference_terms(z_a, z_b)
    assert set(got) == {"on_diagonal", "off_diagonal"}
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)
        g = torch.autograd.grad(got[key], (z_a, z_b), retain_graph=True)
        w = torch.autograd.grad(want[key], (z_a, z_b), retain_graph=True)
        for gi, wi in zip(g, w):
            torch.testing.assert_close(gi, wi, rtol=1e-8, atol=1e-11, msg=key)

    loss = barlow_twins_loss(z_a, z_b, lambd=0.0051, form=form)
    expected = want["on_diagonal"] + 0.0051 * want["off_diagonal"]
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for gi, wi in zip(torch.autograd.grad(loss, (z_a, z_b)), torch.autograd.grad(expected, (z_a, z_b))):
        torch.testing.assert_close(gi, wi, rtol=1e-8, atol=1e-11)


def test_matches_batchnorm1d_module_and_explicit_loops():
    # The official code's module, then c_ij and both sums written out entry by entry.
    n, d = 6, 4
    z_a, z_b = _views(n, d, seed=3)
    bn = torch.nn.BatchNorm1d(d, affine=False).double().train()
    a, b = bn(z_a.detach()), bn(z_b.detach())
    c = [[sum(a[k, i] * b[k, j] for k in range(n)) / n for j in range(d)] for i in range(d)]
    on = sum((1 - c[i][i]) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    for f in ("gram", "direct"):
        terms = barlow_twins_terms(z_a.detach(), z_b.detach(), form=f)
        assert terms["on_diagonal"].item() == pytest.approx(on.item(), rel=1e-12)
        assert terms["off_diagonal"].item() == pytest.approx(off.item(), rel=1e-12)


@pytest.mark.parametrize("shape", [(6, 16), (24, 10)])
def test_gram_and_direct_forms_agree(shape):
    z_a, z_b = _views(*shape, seed=7)
    results = {}
    for f in ("gram", "direct"):
        loss = barlow_twins_loss(z_a, z_b, lambd=0.5, form=f)
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
    assert (d, d) not in _saved_tensor_shapes(lambda: barlow_twins_loss(z_a, z_b))
    assert (n, n) in _saved_tensor_shapes(lambda: barlow_twins_loss(z_a, z_b))
    z_a, z_b = _views(d, n, seed=1)  # N >= D: the direct form builds the D x D matrix c
    assert (n, n) in _saved_tensor_shapes(lambda: barlow_twins_loss(z_a, z_b))


@pytest.mark.parametrize("form", ["gram", "direct"])
@pytest.mark.parametrize("n, d", [(8, 4), (16, 15)])
def test_whitened_identical_views_give_zero(n, d, form):
    # Non-constant columns of a Hadamard matrix: +-1 entries, zero mean, biased variance 1,
    # mutually orthogonal. Normalisation gives a = z / sqrt(1 + eps), so c = I / (1 + eps):
    # no off-diagonal part, and an on-diagonal part D (1 - 1/(1 + eps))^2 ~ 1e-10 D, i.e. zero
    # but for BatchNorm's eps.
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    z = h[:, 1 : d + 1]
    terms = barlow_twins_terms(z, z.clone(), form=form)
    # The direct form zeroes the diagonal (exact); the Gram form subtracts it (rounding left).
    assert terms["off_diagonal"].item() == pytest.approx(0.0, abs=1e-24 if form == "direct" else 1e-12)
    assert terms["on_diagonal"].item() == pytest.approx(d * (1 - 1 / (1 + BN_EPS)) ** 2, rel=1e-6)
    assert barlow_twins_loss(z, z.clone(), form=form).item() < 1e-8


def test_opposite_views_by_hand():
    # z_b = -z_a with whitened columns: c = -I / (1 + eps), on-diagonal D (1 + 1/(1 + eps))^2.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    terms = barlow_twins_terms(z, -z)
    assert terms["on_diagonal"].item() == pytest.approx(2 * (1 + 1 / (1 + BN_EPS)) ** 2, rel=1e-12)
    assert terms["off_diagonal"].item() == pytest.approx(0.0, abs=1e-24)


def test_loss_is_on_plus_lambda_off():
    z_a, z_b = _views(9, 5, seed=4)
    t = barlow_twins_terms(z_a, z_b)
    torch.testing.assert_close(barlow_twins_loss(z_a, z_b, lambd=0.3), t["on_diagonal"] + 0.3 * t["off_diagonal"])


@pytest.mark.parametrize("form", ["gram", "direct"])
def test_gradcheck(form):
    z_a, z_b = _views(4, 6, seed=9)
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, lambd=0.1, form=form), (z_a, z_b))


@pytest.mark.parametrize("form", ["", "Gram", "diagonal"])
def test_rejects_unknown_form(form):
    z_a, z_b = _views(6, 9, seed=5)
    with pytest.raises(ValueError, match="unknown form"):
        barlow_twins_terms(z_a, z_b, form=form)
    with pytest.raises(ValueError, match="unknown form"):
        barlow_twins_loss(z_a, z_b, form=form)


def test_float32():
    z_a, z_b = _views(6, 9, seed=6)
    loss32 = barlow_twins_loss(z_a.float(), z_b.float())
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(barlow_twins_loss(z_a, z_b).item(), rel=1e-5)


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
        barlow_twins_terms(z_a, z_b)
    with pytest.raises(ValueError, match=match):
        barlow_twins_loss(z_a, z_b)


def test_official_ddp_scale_is_a_loss_option_stored_only_when_set(monkeypatch):
    from ssl_bench.methods import barlow_twins as module
    from ssl_bench.recipes import resolve_config
    from ssl_bench.train.assemble import build_method

    base = resolve_config("barlow_twins", "cifar10")
    assert "official_ddp_scale" not in base.loss  # the exact gradient, and the identity it had
    same = resolve_config("barlow_twins", "cifar10", settings=["loss.official_ddp_scale=false"])
    assert same.identity_hash() == base.identity_hash()
    official = resolve_config("barlow_twins", "cifar10", settings=["loss.official_ddp_scale=true"])
    assert official.loss["official_ddp_scale"] is True and official.identity_hash() != base.identity_hash()
    assert resolve_config("barlow_twins", "imagenet").loss["official_ddp_scale"] is True  # main.py:212-216
    # One process: nothing to scale. The method's loss under (pretended) 4 gathering ranks: the same
    # value, a quarter of the gradient.
    z_a, z_b = _views(8, 6, seed=3)
    exact = barlow_twins_loss(z_a, z_b, lambd=0.0051)
    assert torch.equal(barlow_twins_loss(z_a, z_b, lambd=0.0051, official_ddp_scale=True), exact)
    config = resolve_config("barlow_twins", "fashion-mnist", settings=["projector=8,6", "loss.official_ddp_scale=true"])
    method = build_method(config).double()
    monkeypatch.setattr(module, "resolve_gather", lambda gather: True)
    monkeypatch.setattr(module, "world_size", lambda: 4)
    monkeypatch.setattr(module, "gather_with_grad", lambda x: x)
    loss, _ = method.loss(z_a, z_b)
    assert torch.equal(loss.detach(), exact.detach())
    for scaled, full in zip(torch.autograd.grad(loss, (z_a, z_b)), torch.autograd.grad(exact, (z_a, z_b))):
        torch.testing.assert_close(scaled, full / 4, rtol=1e-14, atol=0)
