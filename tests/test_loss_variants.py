"""The loss variants the studies compare: SimCLR's NT-Logistic and margin triplet losses, and
VICReg's variance term on the variance instead of the standard deviation.

Each is checked against a float64 reference written with explicit loops from the definitions
in the modules' docstrings (SimCLR's Table 2; VICReg's variance term), then through the
recipe machinery: `--set loss.<name>=...` selects it, and the default is not stored.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.errors import UsageError
from ssl_bench.methods.simclr import margin_triplet_loss, nt_logistic_loss, nt_xent_loss, simclr_loss
from ssl_bench.methods.vicreg import vicreg_terms
from ssl_bench.recipes import resolve_config
from ssl_bench.train.assemble import build_method


def _pairs(seed: int, n: int = 5, d: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def _unit_rows(z_a: torch.Tensor, z_b: torch.Tensor) -> list[list[float]]:
    rows = torch.cat([z_a, z_b]).tolist()
    return [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in rows]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v))


def _anchors(z_a: torch.Tensor, z_b: torch.Tensor):
    """(u_i, u_p(i), [u_k for the 2N - 2 negatives]) for every anchor i, in plain floats."""
    u = _unit_rows(z_a, z_b)
    n = len(z_a)
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        yield u[i], u[p], [u[k] for k in range(2 * n) if k not in (i, p)]


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def reference_nt_logistic(z_a, z_b, tau: float) -> float:
    total = 0.0
    for u, pos, negatives in _anchors(z_a, z_b):
        negative_term = sum(_log_sigmoid(-_dot(u, v) / tau) for v in negatives) / len(negatives)
        total += -_log_sigmoid(_dot(u, pos) / tau) - negative_term
    return total / (2 * len(z_a))


def reference_margin_triplet(z_a, z_b, m: float) -> float:
    total = 0.0
    for u, pos, negatives in _anchors(z_a, z_b):
        total += sum(max(0.0, _dot(u, v) - _dot(u, pos) + m) for v in negatives) / len(negatives)
    return total / (2 * len(z_a))


def reference_nt_xent(z_a, z_b, tau: float) -> float:
    total = 0.0
    for u, pos, negatives in _anchors(z_a, z_b):
        denominator = math.exp(_dot(u, pos) / tau) + sum(math.exp(_dot(u, v) / tau) for v in negatives)
        total += -math.log(math.exp(_dot(u, pos) / tau) / denominator)
    return total / (2 * len(z_a))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_logistic_matches_the_hand_computed_reference(seed, tau):
    z_a, z_b = _pairs(seed)
    assert float(nt_logistic_loss(z_a, z_b, tau)) == pytest.approx(reference_nt_logistic(z_a, z_b, tau), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.0, 0.5, 1.5])
def test_margin_triplet_matches_the_hand_computed_reference(seed, margin):
    z_a, z_b = _pairs(seed)
    expected = reference_margin_triplet(z_a, z_b, margin)
    assert float(margin_triplet_loss(z_a, z_b, margin)) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_the_margin_is_active_in_some_triplets_and_not_in_others():
    """The hinge is exercised on both sides in the reference cases above (neither all-zero nor all-linear)."""
    z_a, z_b = _pairs(0)
    gaps = [_dot(u, v) - _dot(u, pos) + 0.5 for u, pos, negatives in _anchors(z_a, z_b) for v in negatives]
    assert any(g > 0 for g in gaps) and any(g < 0 for g in gaps)


def test_simclr_loss_dispatches_on_the_objective():
    z_a, z_b = _pairs(3)
    assert float(simclr_loss(z_a, z_b, 0.2)) == pytest.approx(reference_nt_xent(z_a, z_b, 0.2), rel=1e-12)
    assert float(simclr_loss(z_a, z_b, 0.2, "nt_xent")) == float(nt_xent_loss(z_a, z_b, 0.2))
    assert float(simclr_loss(z_a, z_b, 0.2, "nt_logistic")) == float(nt_logistic_loss(z_a, z_b, 0.2))
    assert float(simclr_loss(z_a, z_b, 0.2, "margin_triplet", 0.3)) == float(margin_triplet_loss(z_a, z_b, 0.3))
    with pytest.raises(ValueError, match="objective must be one of"):
        simclr_loss(z_a, z_b, 0.2, "hinge")


def test_perfectly_aligned_well_separated_views_score_zero_margin_loss():
    # Orthogonal pairs: each positive has similarity 1, every negative 0, so a margin below 1 is met.
    z = torch.eye(4, dtype=torch.float64)
    assert float(margin_triplet_loss(z, z.clone(), 0.9)) == 0.0
    assert float(margin_triplet_loss(z, z.clone(), 1.5)) == pytest.approx(0.5)


def reference_variance_term(z: torch.Tensor, eps: float, form: str) -> float:
    n, d = z.shape
    total = 0.0
    for j in range(d):
        column = [float(z[i, j]) for i in range(n)]
        mean = sum(column) / n
        var = sum((x - mean) ** 2 for x in column) / (n - 1)
        total += max(0.0, 1.0 - (math.sqrt(var + eps) if form == "std" else var))
    return total / d


@pytest.mark.parametrize("form", ["std", "var"])
def test_vicreg_variance_term_matches_the_reference_in_both_forms(form):
    g = torch.Generator().manual_seed(0)
    # Columns of spread on both sides of 1, so that the hinge is active for some and not others.
    scale = torch.tensor([0.2, 0.5, 0.9, 1.1, 2.0, 0.05], dtype=torch.float64)
    z_a = torch.randn(9, 6, generator=g, dtype=torch.float64) * scale
    z_b = torch.randn(9, 6, generator=g, dtype=torch.float64) * scale
    terms = vicreg_terms(z_a, z_b, eps=1e-4, variance_form=form)
    expected = 0.5 * (reference_variance_term(z_a, 1e-4, form) + reference_variance_term(z_b, 1e-4, form))
    assert float(terms["variance"]) == pytest.approx(expected, rel=1e-12)


def test_vicreg_var_form_differs_from_std_form_and_leaves_other_terms_alone():
    z_a, z_b = _pairs(4, n=8, d=6)
    std, var = vicreg_terms(z_a * 0.3, z_b * 0.3), vicreg_terms(z_a * 0.3, z_b * 0.3, variance_form="var")
    assert float(std["variance"]) != pytest.approx(float(var["variance"]))
    assert float(std["invariance"]) == float(var["invariance"])
    assert float(std["covariance"]) == float(var["covariance"])
    with pytest.raises(ValueError, match="variance_form"):
        vicreg_terms(z_a, z_b, variance_form="variance")


def test_the_var_form_gradient_vanishes_for_a_collapsing_dimension_where_the_std_form_does_not():
    """The paper's reason for the std: near collapse the variance hinge gives almost no signal."""
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(16, 1, generator=g, dtype=torch.float64) * 1e-3).requires_grad_()
    grads = {}
    for form in ("std", "var"):
        (z_grad,) = torch.autograd.grad(vicreg_terms(z, z.detach(), variance_form=form)["variance"], z)
        grads[form] = float(z_grad.norm())
    assert grads["var"] < 0.05 * grads["std"]


# --- through the recipes ---------------------------------------------------------------------


def test_set_selects_a_loss_variant_and_the_default_is_not_stored():
    default = resolve_config("simclr", "fashion-mnist")
    explicit = resolve_config("simclr", "fashion-mnist", settings=["loss.objective=nt_xent"])
    margin = resolve_config("simclr", "fashion-mnist", settings=["loss.objective=margin_triplet", "loss.margin=0.3"])
    assert "objective" not in default.loss and explicit.loss == default.loss
    assert explicit.identity_hash() == default.identity_hash()
    assert margin.loss == {**default.loss, "objective": "margin_triplet", "margin": 0.3}
    assert margin.identity_hash() != default.identity_hash()
    method = build_method(margin)
    assert method.loss_params["objective"] == "margin_triplet" and method.loss_params["margin"] == 0.3
    # The method sees the defaults it was not given.
    assert build_method(default).loss_params["objective"] == "nt_xent"
    vicreg = resolve_config("vicreg", "fashion-mnist", settings=["loss.variance_form=var"])
    assert build_method(vicreg).loss_params["variance_form"] == "var"


@pytest.mark.parametrize(
    "method, setting, message",
    [
        ("simclr", "loss.objective=hinge", "loss.objective of simclr must be one of nt_xent, nt_logistic"),
        ("simclr", "loss.margin=-1", "loss.margin of simclr must be >= 0"),
        ("vicreg", "loss.variance_form=variance", "loss.variance_form of vicreg must be one of std, var"),
        ("vicreg", "loss.objective=nt_xent", "unknown loss parameter of vicreg"),
    ],
)
def test_bad_variants_are_usage_errors(method, setting, message):
    with pytest.raises(UsageError, match=message):
        resolve_config(method, "fashion-mnist", settings=[setting])


@pytest.mark.parametrize("objective", ["nt_xent", "nt_logistic", "margin_triplet"])
def test_every_objective_trains_a_step_through_the_method(objective):
    config = resolve_config(
        "simclr", "fashion-mnist", settings=[f"loss.objective={objective}", "projector=16,8", "backbone=tiny_convnet"]
    )
    torch.manual_seed(0)
    method = build_method(config)
    x = torch.randn(6, 3, 28, 28)
    out = method(x, x + 0.1 * torch.randn_like(x))
    out.loss.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert torch.isfinite(out.loss) and grads and any(float(g.abs().sum()) > 0 for g in grads)
