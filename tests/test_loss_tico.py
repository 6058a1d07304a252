"""TiCo terms, loss and covariance recursion against an independent per-sample reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.methods.tico import tico_loss, tico_terms

SHAPES = [(8, 4), (6, 16), (32, 32), (3, 50), (20, 7)]


def _views(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5
    z_b = z_a + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z_a.requires_grad_(), z_b.requires_grad_()


def _previous_c(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    return m @ m.T / d  # symmetric PSD, like a real running second-moment estimate


def reference(z_a, z_b, c_prev, beta, detach_batch_term=False):
    """Algorithm 1 written per sample: explicit norms, outer products and quadratic forms."""
    n = z_a.shape[0]
    u_a = [row / torch.sqrt((row * row).sum()) for row in z_a]
    u_b = [row / torch.sqrt((row * row).sum()) for row in z_b]
    batch_term = sum(torch.outer(u, u) for u in u_a) / n
    if detach_batch_term:  # lightly's variant, for contrast
        batch_term = batch_term.detach()
    c_t = beta * c_prev + (1 - beta) * batch_term
    invariance = -sum(torch.dot(ua, ub) for ua, ub in zip(u_a, u_b)) / n
    contrast = sum(torch.dot(u, c_t @ u) for u in u_a) / n
    return invariance, contrast, c_t


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [0.9, 0.0])
def test_matches_reference_values_gradients_and_c(shape, beta):
    n, d = shape
    z_a, z_b = _views(n, d, seed=n * 100 + d)
    c_prev = _previous_c(d, seed=d)
    terms, c_next = tico_terms(z_a, z_b, c_prev, beta=beta)
    inv, con, c_t = reference(z_a, z_b, c_prev, beta)
    assert set(terms) == {"invariance", "contrast"}
    torch.testing.assert_close(terms["invariance"], inv, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms["contrast"], con, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_next, c_t.detach(), rtol=1e-10, atol=1e-13)
    assert not c_next.requires_grad

    loss, c_next2 = tico_loss(z_a, z_b, c_prev, beta=beta, rho=20.0)
    expected = inv + 20.0 * con
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_next2, c_next, rtol=0, atol=0)
    for g, w in zip(torch.autograd.grad(loss, (z_a, z_b)), torch.autograd.grad(expected, (z_a, z_b))):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_gradient_flows_through_the_current_batch_term():
    # The paper differentiates through Z_a^T Z_a / N inside C_t; detaching it (lightly) gives
    # a different gradient for z_a. Guard against silently switching to that variant.
    z_a, z_b = _views(8, 5, seed=1)
    c_prev = torch.zeros(5, 5, dtype=torch.float64)
    loss, _ = tico_loss(z_a, z_b, c_prev)
    inv, con, _ = reference(z_a, z_b, c_prev, 0.9, detach_batch_term=True)
    (grad_paper,) = torch.autograd.grad(loss, z_a)
    (grad_detached,) = torch.autograd.grad(inv + 20.0 * con, z_a)
    assert not torch.allclose(grad_paper, grad_detached, rtol=1e-3, atol=1e-6)


def test_c_recursion_over_several_steps():
    # Thread C through 5 steps and compare with the unrolled recursion
    # C_k = sum_j beta^(k - j) (1 - beta) B_j, B_j = U_j^T U_j / N, C_0 = 0.
    n, d, beta = 6, 4, 0.9
    c = torch.zeros(d, d, dtype=torch.float64)
    batches = []
    for step in range(5):
        z_a, z_b = _views(n, d, seed=50 + step)
        batches.append(z_a.detach())
        loss, c_new = tico_loss(z_a, z_b, c, beta=beta)
        inv, con, _ = reference(z_a, z_b, c, beta)
        torch.testing.assert_close(loss, inv + 20.0 * con, rtol=1e-10, atol=1e-12)

        unrolled = torch.zeros(d, d, dtype=torch.float64)
        for j, z in enumerate(batches):
            u = z / z.norm(dim=1, keepdim=True)
            unrolled += beta ** (step - j) * (1 - beta) * torch.einsum("ni,nj->ij", u, u) / n
        torch.testing.assert_close(c_new, unrolled, rtol=1e-12, atol=1e-14)
        loss.backward()  # the detached state must not link steps' graphs
        c = c_new


def test_hand_computed_values():
    # Orthonormal rows e_1..e_3 in both views, C_prev = 0, beta = 0.5:
    # C_t = 0.5 * I / 3 = I / 6, invariance = -1, contrast = 1/6, loss = -1 + rho / 6.
    z = torch.eye(3, dtype=torch.float64) * torch.tensor([[2.0], [0.5], [7.0]])  # normalisation
    (terms, c_next) = tico_terms(z, z.clone(), torch.zeros(3, 3), beta=0.5)
    assert terms["invariance"].item() == pytest.approx(-1.0, rel=1e-12)
    assert terms["contrast"].item() == pytest.approx(1 / 6, rel=1e-12)
    torch.testing.assert_close(c_next, torch.eye(3, dtype=torch.float64) / 6)
    loss, _ = tico_loss(z, z.clone(), torch.zeros(3, 3), beta=0.5, rho=20.0)
    assert loss.item() == pytest.approx(-1 + 20 / 6, rel=1e-12)


def test_previous_c_is_a_constant_and_left_untouched():
    z_a, z_b = _views(5, 3, seed=2)
    c_prev = _previous_c(3, seed=3).requires_grad_()
    before = c_prev.detach().clone()
    loss, c_next = tico_loss(z_a, z_b, c_prev)
    loss.backward()
    assert c_prev.grad is None
    assert torch.equal(c_prev.detach(), before)
    assert c_next.dtype == torch.float64 and not c_next.requires_grad
    # A float32 C for float64 embeddings is cast, not rejected.
    _, c32 = tico_loss(z_a, z_b, before.float())
    assert c32.dtype == torch.float64


def test_gradcheck():
    z_a, z_b = _views(4, 3, seed=9)
    c_prev = _previous_c(3, seed=4)
    assert torch.autograd.gradcheck(lambda a, b: tico_loss(a, b, c_prev, beta=0.7, rho=3.0)[0], (z_a, z_b))


def test_float32():
    z_a, z_b = _views(6, 9, seed=6)
    c = torch.zeros(9, 9)
    loss32, c32 = tico_loss(z_a.float(), z_b.float(), c)
    assert loss32.dtype == torch.float32 and c32.dtype == torch.float32
    assert loss32.item() == pytest.approx(tico_loss(z_a, z_b, c)[0].item(), rel=1e-5)


@pytest.mark.parametrize(
    "z_a, z_b, match",
    [
        (torch.randn(4, 3), torch.randn(4, 5), "same shape"),
        (torch.randn(4), torch.randn(4), "2-D"),
        (torch.randn(1, 3), torch.randn(1, 3), "at least 2"),
    ],
)
def test_rejects_bad_embeddings(z_a, z_b, match):
    c = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=match):
        tico_terms(z_a, z_b, c)
    with pytest.raises(ValueError, match=match):
        tico_loss(z_a, z_b, c)


@pytest.mark.parametrize("c", [torch.zeros(3, 4), torch.zeros(4, 4), torch.zeros(3), torch.zeros(1, 3, 3), None])
def test_rejects_c_that_is_not_d_by_d(c):
    with pytest.raises(ValueError, match="C must be a 3 x 3 tensor"):
        tico_loss(torch.randn(4, 3), torch.randn(4, 3), c)


def test_rejects_beta_outside_unit_interval():
    with pytest.raises(ValueError, match="beta"):
        tico_loss(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(3, 3), beta=1.5)


# --- the method: C is state carried from step to step ----------------------------------------


def _tico_method():
    from ssl_bench.methods.tico import TiCo
    from ssl_bench.models.backbones import TinyConvNet

    torch.manual_seed(0)
    return (
        TiCo(
            TinyConvNet((4, 8)),
            8,
            (12, 6),
            loss_params={"beta": 0.9, "rho": 8.0},
            method_params={"momentum_base": 0.99},
        )
        .double()
        .train()
    )


def test_method_updates_c_each_training_step_and_uses_it_in_the_next():
    method = _tico_method()
    g = torch.Generator().manual_seed(3)
    steps = [
        (
            torch.randn(10, 3, 12, 12, generator=g, dtype=torch.float64),
            torch.randn(10, 3, 12, 12, generator=g, dtype=torch.float64),
        )
        for _ in range(3)
    ]
    c = torch.zeros(6, 6, dtype=torch.float64)
    for x_a, x_b in steps:
        # What the loss must see: the online embedding of view a, the target's of view b, and
        # the C the previous steps left (train-mode BatchNorm: the same outputs on a re-run).
        with torch.no_grad():
            z_a = method.projector(method.backbone(x_a))
            target_b = method.target_projector(method.target_backbone(x_b))
        expected_loss, c_next = tico_loss(z_a, target_b, c, beta=0.9, rho=8.0)
        out = method(x_a, x_b)
        torch.testing.assert_close(out.loss.detach(), expected_loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(method.C, c_next, rtol=1e-12, atol=1e-12)
        c = c_next
    fresh, _ = tico_loss(z_a, target_b, torch.zeros(6, 6, dtype=torch.float64), beta=0.9, rho=8.0)
    assert not torch.allclose(fresh, expected_loss)  # the carried C changed the loss


def test_method_leaves_c_alone_outside_training():
    method = _tico_method()
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    method(x, x.flip(0))
    c = method.C.clone()
    method.eval()
    method(x.flip(0), x)
    assert torch.equal(method.C, c) and c.abs().sum() > 0


def test_method_takes_view_b_through_the_momentum_encoder_only():
    method = _tico_method()
    seen = {}
    original = method.loss

    def spy(z_a, z_b, **heads):
        seen.update(z_b=z_b, **heads)
        return original(z_a, z_b, **heads)

    method.loss = spy
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    method(x, x.flip(0))
    assert seen["z_b"] is None and set(seen) == {"z_b", "target_b"} and not seen["target_b"].requires_grad


# --- lightly's variant: the batch's covariance term a constant --------------------------------


def lightly_reference(z_a, z_b, c_prev, beta, rho):
    """lightly/loss/tico_loss.py (commit e8d317fc), lines 119-136, without its constant 1:
    B = (Z_a^T Z_a).detach() / N, C = beta C_prev + (1 - beta) B."""
    u_a, u_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    b = torch.mm(u_a.T, u_a).detach() / u_a.shape[0]
    c = beta * c_prev + (1 - beta) * b
    return -(u_a * u_b).sum(dim=1).mean() + rho * (torch.mm(u_a, c) * u_a).sum(dim=1).mean()


@pytest.mark.parametrize("shape", SHAPES)
def test_detach_batch_covariance_is_lightlys_gradient(shape):
    n, d = shape
    z_a, z_b = _views(n, d, seed=n * 10 + d)
    c_prev = _previous_c(d, seed=d + 1)
    loss, c_next = tico_loss(z_a, z_b, c_prev, beta=0.9, rho=8.0, detach_batch_covariance=True)
    expected = lightly_reference(z_a, z_b, c_prev, 0.9, 8.0)
    inv, con, c_t = reference(z_a, z_b, c_prev, 0.9, detach_batch_term=True)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, inv + 8.0 * con, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_next, c_t.detach(), rtol=1e-12, atol=1e-14)  # the same C is carried
    grads = torch.autograd.grad(loss, (z_a, z_b))
    for g, w in zip(grads, torch.autograd.grad(expected, (z_a, z_b))):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    # The paper's gradient differs (the batch term counts twice in it), the value does not.
    paper, _ = tico_loss(z_a, z_b, c_prev, beta=0.9, rho=8.0)
    torch.testing.assert_close(paper, loss, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(torch.autograd.grad(paper, z_a)[0], grads[0], rtol=1e-6)


def test_detach_batch_covariance_is_a_loss_option_stored_only_when_set():
    from ssl_bench.recipes import resolve_config

    base = resolve_config("tico", "cifar10")
    assert "detach_batch_covariance" not in base.loss  # the paper's gradient, as before
    same = resolve_config("tico", "cifar10", settings=["loss.detach_batch_covariance=false"])
    assert same.identity_hash() == base.identity_hash()
    lightly = resolve_config("tico", "cifar10", settings=["loss.detach_batch_covariance=true"])
    assert lightly.loss["detach_batch_covariance"] is True and lightly.identity_hash() != base.identity_hash()
    assert resolve_config("tico", "imagenet").loss["detach_batch_covariance"] is True  # lightly's benchmark
    # The method's loss takes it.
    method = _tico_method()
    method.loss_params["detach_batch_covariance"] = True
    z_a, target_b = _views(8, 6, seed=5)
    loss, _ = method.loss(z_a, None, target_b=target_b.detach())
    expected = lightly_reference(z_a, target_b.detach(), torch.zeros(6, 6, dtype=torch.float64), 0.9, 8.0)
    torch.testing.assert_close(torch.autograd.grad(loss, z_a)[0], torch.autograd.grad(expected, z_a)[0])
