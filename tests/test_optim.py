"""Tests for ssl_bench.train.optim: LARS against an independent reference, the schedule, the groups."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from torch import nn

from ssl_bench.train.optim import (
    LARS,
    build_optimizer,
    parameter_groups,
    set_scheduled_lr,
    warmup_cosine,
)

DTYPE = torch.float64

# name -> (shape, group, how the tensor starts, how its gradient is made)
# Group "a": lr 0.7, weight decay 0.05. Group "b": lr 0.3, no weight decay, eta 0.02.
LAYOUT = {
    "fc.weight": ((6, 5), "a", "random", "random"),
    "fc.bias": ((6,), "a", "random", "random"),
    "conv.weight": ((4, 3, 3, 3), "a", "random", "random"),
    "conv.bias": ((4,), "a", "random", "random"),
    "zeros": ((3, 4), "a", "zeros", "random"),  # ||p|| = 0 at the first step -> factor 1
    "decay_only": ((2, 3), "a", "random", "zero"),  # g = wd * p only -> factor eta / wd
    "bn.weight": ((4,), "b", "random", "random"),
    "head.weight": ((2, 6), "b", "random", "random"),
    "temperature": ((), "b", "random", "random"),  # 0-dim: not 1-D, so it is adapted
    "zero_grad": ((5, 5), "b", "random", "zero"),  # ||g|| = 0 -> factor 1, update 0
    "all_zero": ((3, 3), "b", "zeros", "zero"),  # both norms 0 (0/0 must not give nan)
    "no_grad": ((3, 3), "b", "random", "none"),  # grad None -> skipped
}
HYPER = {"a": {"lr": 0.7, "weight_decay": 0.05, "eta": 0.001}, "b": {"lr": 0.3, "weight_decay": 0.0, "eta": 0.02}}
MOMENTUM = 0.9
STEPS = 10


def make_params(seed: int = 0) -> dict[str, nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, (shape, _, init, _) in LAYOUT.items():
        if init == "zeros":
            value = torch.zeros(shape, dtype=DTYPE)
        else:
            value = torch.randn(shape, generator=gen, dtype=DTYPE)
        params[name] = nn.Parameter(value)
    return params


def make_grads(steps: int = STEPS, seed: int = 1) -> list[dict[str, torch.Tensor | None]]:
    """Fixed gradients, one dict per step, independent of the parameters' values."""
    gen = torch.Generator().manual_seed(seed)
    sequence = []
    for _ in range(steps):
        grads: dict[str, torch.Tensor | None] = {}
        for name, (shape, _, _, kind) in LAYOUT.items():
            if kind == "random":
                grads[name] = torch.randn(shape, generator=gen, dtype=DTYPE) * 3.0
            elif kind == "zero":
                grads[name] = torch.zeros(shape, dtype=DTYPE)
            else:
                grads[name] = None
        sequence.append(grads)
    return sequence


def make_lars(params: dict[str, nn.Parameter], foreach: bool = True) -> LARS:
    groups = [{"params": [p for n, p in params.items() if LAYOUT[n][1] == key], **HYPER[key]} for key in ("a", "b")]
    return LARS(groups, lr=123.0, momentum=MOMENTUM, foreach=foreach)  # lr default unused


def apply_grads(params: dict[str, nn.Parameter], grads: dict[str, torch.Tensor | None]) -> None:
    for name, p in params.items():
        g = grads[name]
        p.grad = None if g is None else g.clone()


def reference_trajectory(
    start: dict[str, torch.Tensor],
    grad_sequence: list[dict[str, torch.Tensor | None]],
) -> list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """LARS written out from the formula, one parameter at a time with Python-float factors.

    Returns, after each step, the parameter values and the momentum buffers.
    """
    values = {n: t.detach().clone() for n, t in start.items()}
    mu: dict[str, torch.Tensor] = {}
    history = []
    for grads in grad_sequence:
        for name, value in values.items():
            raw = grads[name]
            if raw is None:
                continue
            hyper = HYPER[LAYOUT[name][1]]
            step_dir = raw.clone()
            if value.dim() != 1:
                step_dir = step_dir + hyper["weight_decay"] * value
                w_norm = float(torch.linalg.vector_norm(value))
                d_norm = float(torch.linalg.vector_norm(step_dir))
                factor = hyper["eta"] * w_norm / d_norm if w_norm > 0.0 and d_norm > 0.0 else 1.0
                step_dir = factor * step_dir
            previous = mu.get(name, torch.zeros_like(value))
            mu[name] = MOMENTUM * previous + step_dir
            values[name] = value - hyper["lr"] * mu[name]
        history.append(({n: v.clone() for n, v in values.items()}, {n: m.clone() for n, m in mu.items()}))
    return history


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
def test_lars_matches_independent_reference(foreach: bool) -> None:
    params = make_params()
    start = {n: p.detach().clone() for n, p in params.items()}
    grad_sequence = make_grads()
    expected = reference_trajectory(start, grad_sequence)
    optimizer = make_lars(params, foreach=foreach)

    for step, grads in enumerate(grad_sequence):
        apply_grads(params, grads)
        optimizer.step()
        want_values, want_mu = expected[step]
        for name, p in params.items():
            torch.testing.assert_close(
                p.detach(), want_values[name], rtol=0, atol=1e-12, msg=f"{name} after step {step + 1}"
            )
            if name in want_mu:
                buf = optimizer.state[p]["momentum_buffer"]
                torch.testing.assert_close(
                    buf, want_mu[name], rtol=0, atol=1e-12, msg=f"{name} momentum after step {step + 1}"
                )
    # The edge cases did what they should, not merely the same as the reference:
    assert torch.equal(params["no_grad"].detach(), start["no_grad"])
    assert params["no_grad"] not in optimizer.state
    assert torch.equal(params["zero_grad"].detach(), start["zero_grad"])
    assert torch.equal(params["all_zero"].detach(), start["all_zero"])
    assert not torch.equal(params["zeros"].detach(), start["zeros"])
    assert all(torch.isfinite(p).all() for p in params.values())


def test_lars_does_not_modify_grads() -> None:
    params = make_params()
    optimizer = make_lars(params)
    grads = make_grads(steps=1)[0]
    apply_grads(params, grads)
    optimizer.step()
    for name, p in params.items():
        if grads[name] is not None:
            assert torch.equal(p.grad, grads[name]), name


def test_one_dim_params_get_plain_momentum_sgd() -> None:
    """Biases and norm weights: no weight decay, no adaptation -> exactly momentum SGD."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    one_dim = [p for p in model.parameters() if p.ndim == 1]
    assert len(one_dim) == 3  # linear bias, bn weight, bn bias
    twins = [p.detach().clone().requires_grad_() for p in one_dim]
    lars = LARS(one_dim, lr=0.5, weight_decay=0.1, momentum=0.9, eta=0.001)
    sgd = torch.optim.SGD(twins, lr=0.5, momentum=0.9, weight_decay=0.0)
    for _ in range(5):
        for p, q in zip(one_dim, twins):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
        for p, q in zip(one_dim, twins):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-14)


def test_lars_one_step_by_hand() -> None:
    # weight w = [[3, 4]] (||w|| = 5), grad [[0.6, 0.8]], weight_decay 0.1, eta 0.003, lr 2:
    #   g = [0.6 + 0.1*3, 0.8 + 0.1*4] = [0.9, 1.2]           ||g|| = 1.5
    #   factor = 0.003 * 5 / 1.5 = 0.01  ->  g = [0.009, 0.012]
    #   mu = 0.9 * 0 + g = [0.009, 0.012]
    #   w = [3 - 2*0.009, 4 - 2*0.012] = [2.982, 3.976]
    # bias b = [1, -2], grad [0.5, 0.5] (1-D: no decay, no factor):
    #   mu = [0.5, 0.5];  b = [1 - 2*0.5, -2 - 2*0.5] = [0, -3]
    w = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=DTYPE))
    b = nn.Parameter(torch.tensor([1.0, -2.0], dtype=DTYPE))
    w.grad = torch.tensor([[0.6, 0.8]], dtype=DTYPE)
    b.grad = torch.tensor([0.5, 0.5], dtype=DTYPE)
    optimizer = LARS([w, b], lr=2.0, weight_decay=0.1, momentum=0.9, eta=0.003)
    optimizer.step()
    torch.testing.assert_close(w.detach(), torch.tensor([[2.982, 3.976]], dtype=DTYPE))
    torch.testing.assert_close(b.detach(), torch.tensor([0.0, -3.0], dtype=DTYPE))
    torch.testing.assert_close(optimizer.state[w]["momentum_buffer"], torch.tensor([[0.009, 0.012]], dtype=DTYPE))


def test_lars_state_dict_resume_reproduces_trajectory() -> None:
    grad_sequence = make_grads()
    straight = make_params()
    optimizer = make_lars(straight)
    for grads in grad_sequence:
        apply_grads(straight, grads)
        optimizer.step()

    first_half = make_params()
    optimizer = make_lars(first_half)
    for grads in grad_sequence[:5]:
        apply_grads(first_half, grads)
        optimizer.step()
    buffer = io.BytesIO()
    torch.save({"params": {n: p.detach() for n, p in first_half.items()}, "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    resumed = make_params(seed=99)  # different values: everything must come from the checkpoint
    with torch.no_grad():
        for name, p in resumed.items():
            p.copy_(saved["params"][name])
    optimizer = make_lars(resumed)
    optimizer.load_state_dict(saved["optimizer"])
    assert optimizer.param_groups[0]["lr"] == HYPER["a"]["lr"]
    for grads in grad_sequence[5:]:
        apply_grads(resumed, grads)
        optimizer.step()
    for name in LAYOUT:
        assert torch.equal(resumed[name].detach(), straight[name].detach()), name


def test_lars_bf16_under_autocast() -> None:
    """bf16 parameters step without error under autocast and stay close to a float64 run."""
    gen = torch.Generator().manual_seed(3)
    start = [torch.randn(8, 4, generator=gen), torch.randn(8, generator=gen), torch.randn(2, 3, 3, 3, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(3)]
    low = [nn.Parameter(t.to(torch.bfloat16)) for t in start]
    high = [nn.Parameter(t.to(torch.bfloat16).double()) for t in start]
    opt_low = LARS(low, lr=1.0, weight_decay=1e-3, eta=0.01)
    opt_high = LARS(high, lr=1.0, weight_decay=1e-3, eta=0.01)
    for step_grads in grads:
        for p, q, g in zip(low, high, step_grads):
            p.grad, q.grad = g.to(torch.bfloat16), g.to(torch.bfloat16).double()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            opt_low.step()
        opt_high.step()
    for p, q in zip(low, high):
        assert p.dtype == torch.bfloat16
        assert opt_low.state[p]["momentum_buffer"].dtype == torch.bfloat16
        torch.testing.assert_close(p.double(), q.detach(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
def test_lars_fp16_huge_ratio_stays_finite(foreach: bool) -> None:
    # ||p|| = 30, ||g|| = 900 * 1e-5 / 30 = 3e-4: eta * ||p|| / ||g|| = 1e5 > 65504, fp16's max.
    p = nn.Parameter(torch.ones(30, 30, dtype=torch.float16))
    p.grad = torch.full((30, 30), 1e-5, dtype=torch.float16)
    LARS([p], lr=0.1, eta=1.0, foreach=foreach).step()
    assert torch.isfinite(p).all()
    assert (p < 1).all()


def test_lars_mixed_dtypes_and_sparse_grads_follow_dense_path() -> None:
    """Mixed dtypes in one group and sparse gradients give the same result as plain dense ones."""
    torch.manual_seed(0)
    sparse_emb = nn.Embedding(10, 4, sparse=True).double()
    dense_emb = nn.Embedding(10, 4).double()
    dense_emb.load_state_dict(sparse_emb.state_dict())
    # A float32 and a float64 dense parameter next to the sparse one: two foreach buckets.
    extras = [nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(2, 5, dtype=DTYPE))]
    twins = [nn.Parameter(p.detach().clone()) for p in extras]
    opt_sparse = LARS([sparse_emb.weight, *extras], lr=0.5, weight_decay=0.01)
    opt_dense = LARS([dense_emb.weight, *twins], lr=0.5, weight_decay=0.01, foreach=False)
    for _ in range(3):
        index = torch.randint(0, 10, (6,))
        extra_grads = [torch.randn_like(p) for p in extras]
        for emb, opt, params in ((sparse_emb, opt_sparse, extras), (dense_emb, opt_dense, twins)):
            opt.zero_grad()
            emb(index).pow(2).sum().backward()
            for p, g in zip(params, extra_grads):
                p.grad = g.clone()
            opt.step()
    assert sparse_emb.weight.grad.is_sparse
    torch.testing.assert_close(sparse_emb.weight, dense_emb.weight, rtol=0, atol=1e-12)
    for p, q in zip(extras, twins):
        assert p.dtype == q.dtype
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": -0.1},
        {"lr": 0.1, "momentum": 1.0},
        {"lr": 0.1, "momentum": -0.1},
        {"lr": 0.1, "eta": 0.0},
        {"lr": 0.1, "eta": -1e-3},
        {"lr": 0.1, "weight_decay": -1e-6},
        {"lr": float("nan")},
    ],
)
def test_lars_rejects_bad_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.ones(2, 2))], **kwargs)


def test_lars_rejects_bad_group_override() -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        LARS([{"params": [nn.Parameter(torch.ones(2, 2))], "weight_decay": -1.0}], lr=0.1)


# ----------------------------------------------------------------------------- schedule


def expected_lr(step: int, total: int, warmup: int, peak: float, end: float = 0.001) -> float:
    """The official schedule, written out with the decay phase's own step counter."""
    if step < warmup:
        return peak * (step / warmup)
    decay_step, decay_len = step - warmup, total - warmup
    cos_part = (math.cos(math.pi * decay_step / decay_len) + 1.0) / 2.0
    end_lr = peak * end
    return end_lr + (peak - end_lr) * cos_part


def test_warmup_cosine_key_points() -> None:
    total, warmup, peak = 100, 10, 1.6
    assert warmup_cosine(0, total, warmup, peak) == 0.0
    assert warmup_cosine(5, total, warmup, peak) == pytest.approx(0.8, abs=1e-15)
    assert warmup_cosine(10, total, warmup, peak) == pytest.approx(peak, abs=1e-15)
    # Middle of the decay: q = 1/2 -> (peak + end)/2.
    assert warmup_cosine(55, total, warmup, peak) == pytest.approx((1.6 + 0.0016) / 2, abs=1e-15)
    assert warmup_cosine(99, total, warmup, peak) == pytest.approx(expected_lr(99, total, warmup, peak), abs=1e-15)
    assert 0.0016 < warmup_cosine(99, total, warmup, peak) < 0.0016 + 1e-3
    for step in range(total):
        assert warmup_cosine(step, total, warmup, peak) == pytest.approx(
            expected_lr(step, total, warmup, peak), rel=1e-13, abs=1e-15
        ), step


def test_warmup_cosine_imagenet_like_shape() -> None:
    steps_per_epoch, epochs, warmup_epochs, peak = 5, 100, 10, 0.2 * 2048 / 256
    total, warmup = steps_per_epoch * epochs, steps_per_epoch * warmup_epochs
    lrs = [warmup_cosine(s, total, warmup, peak) for s in range(total)]
    assert lrs[0] == 0.0
    assert lrs[warmup] == pytest.approx(peak)
    assert all(a < b for a, b in itertools.pairwise(lrs[: warmup + 1]))  # rising warmup
    assert all(a > b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))  # falling afterwards
    assert lrs[-1] == pytest.approx(expected_lr(total - 1, total, warmup, peak), rel=1e-13)
    assert max(lrs) == pytest.approx(peak)
    assert min(lrs[warmup:]) > 0.001 * peak
    # Past the end the final value holds instead of the cosine climbing back.
    assert warmup_cosine(total, total, warmup, peak) == pytest.approx(0.001 * peak)
    assert warmup_cosine(total + 7, total, warmup, peak) == pytest.approx(0.001 * peak)


def test_warmup_cosine_degenerate_warmups() -> None:
    # No warmup: the first step already has the peak.
    assert warmup_cosine(0, 20, 0, 2.0) == pytest.approx(2.0)
    assert warmup_cosine(10, 20, 0, 2.0, end_factor=0.0) == pytest.approx(1.0)
    # Warmup over the whole run: linear all the way, no division by zero.
    assert [warmup_cosine(s, 4, 4, 2.0) for s in range(4)] == [0.0, 0.5, 1.0, 1.5]
    assert math.isfinite(warmup_cosine(4, 4, 4, 2.0))


@pytest.mark.parametrize(
    "args",
    [
        (0, 0, 0, 1.0),  # total_steps 0
        (0, -5, 0, 1.0),  # negative total
        (0, 10, 11, 1.0),  # warmup > total
        (0, 10, -1, 1.0),  # negative warmup
        (-1, 10, 2, 1.0),  # negative step
        (0, 10, 2, -1.0),  # negative peak
    ],
)
def test_warmup_cosine_rejects_bad_arguments(args: tuple) -> None:
    with pytest.raises(ValueError):
        warmup_cosine(*args)


# ----------------------------------------------------------------------------- groups


def small_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 5, bias=False))
    model[0].bias.requires_grad_(False)  # frozen: must be in no group
    return model


def test_parameter_groups_one_group() -> None:
    model = small_model()
    (group,) = parameter_groups(model, lr=0.3, weight_decay=1e-6)
    assert group["lr"] == group["peak_lr"] == 0.3
    assert group["weight_decay"] == 1e-6
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [id(p) for p in group["params"]] == [id(p) for p in trainable]
    assert all(p is not model[0].bias for p in group["params"])


def test_parameter_groups_barlow_split() -> None:
    model = small_model()
    weights, biases = parameter_groups(model, lr=1.6, weight_decay=1.5e-6, bias_norm_lr=0.0384)
    assert {id(p) for p in weights["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in biases["params"]} == {id(model[1].weight), id(model[1].bias)}
    assert weights["lr"] == weights["peak_lr"] == 1.6
    assert biases["lr"] == biases["peak_lr"] == 0.0384
    assert weights["weight_decay"] == biases["weight_decay"] == 1.5e-6


def test_parameter_groups_rejects_model_without_trainable_params() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError):
        parameter_groups(model, lr=0.1, weight_decay=0.0)


def test_set_scheduled_lr_keeps_group_ratio() -> None:
    model = small_model()
    optimizer = build_optimizer("lars", parameter_groups(model, 1.6, 1.5e-6, bias_norm_lr=0.0384))
    total, warmup = 60, 10
    for step in range(total):
        logged = set_scheduled_lr(optimizer, step, total, warmup)
        weights_lr = optimizer.param_groups[0]["lr"]
        biases_lr = optimizer.param_groups[1]["lr"]
        assert logged == weights_lr
        assert weights_lr == pytest.approx(expected_lr(step, total, warmup, 1.6), rel=1e-13)
        if step > 0:
            assert biases_lr / weights_lr == pytest.approx(0.0384 / 1.6, rel=1e-12)
        # peak_lr is not overwritten, so the schedule never compounds.
        assert optimizer.param_groups[0]["peak_lr"] == 1.6


def test_set_scheduled_lr_needs_peak_lr() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="peak_lr"):
        set_scheduled_lr(optimizer, 0, 10, 2)


# ----------------------------------------------------------------------------- build_optimizer


@pytest.mark.parametrize(
    "name, kind",
    [
        ("lars", LARS),
        ("sgd", torch.optim.SGD),
        ("adamw", torch.optim.AdamW),
        ("adam", torch.optim.Adam),
        ("LARS", LARS),
    ],
)
def test_build_optimizer_kinds_step(name: str, kind: type) -> None:
    torch.manual_seed(0)
    model = small_model()
    groups = parameter_groups(model, lr=0.1, weight_decay=1e-4, bias_norm_lr=0.01)
    optimizer = build_optimizer(name, groups)
    assert isinstance(optimizer, kind)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 1e-4]
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01]
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 3, 4, 4)).pow(2).mean().backward()
    optimizer.step()
    after = list(model.parameters())
    assert not torch.equal(before[0], after[0].detach())  # conv weight moved
    assert torch.equal(before[1], after[1].detach())  # frozen conv bias did not
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.9


def test_build_optimizer_unknown_name_lists_known_ones() -> None:
    groups = parameter_groups(nn.Linear(2, 2), lr=0.1, weight_decay=0.0)
    with pytest.raises(ValueError, match="lars, sgd, adamw, adam"):
        build_optimizer("adagrad", groups)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_adds_the_weight_decay_to_the_gradient_and_adamw_decouples_it(name: str) -> None:
    # Step 1 of Adam: m_hat = g, v_hat = g^2, so p -= lr g / (|g| + eps). torch.optim.Adam (W-MSE's
    # official code, solo-learn) takes g + wd p as the gradient (L2); AdamW shrinks p by lr wd apart.
    lr, wd, eps = 0.1, 0.5, 1e-8
    weight = nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    grad = torch.tensor([0.3, 0.0, -0.2], dtype=torch.float64)
    optimizer = build_optimizer(name, [{"params": [weight], "lr": lr, "weight_decay": wd}])
    start = weight.detach().clone()
    weight.grad = grad.clone()
    optimizer.step()
    if name == "adam":
        g = grad + wd * start
        expected = start - lr * g / (g.abs() + eps)
    else:
        expected = start * (1 - lr * wd) - lr * grad / (grad.abs() + eps)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- solo-learn LARS
# vturrisi/solo-learn solo/utils/lars.py (commit 9187ea39, lines 125-165), written out per
# parameter with Python floats: the reference the "solo-learn" variant must reproduce.

SOLO_LRS = [0.0, 0.4, 2.5, 0.05, 0.4, 1e-3, 0.8, 0.4]  # lr 0 first (warmup), then large and small
SOLO_ETA, SOLO_WD, SOLO_EPS = 0.02, 0.05, 1e-8


def solo_learn_reference(
    start: dict[str, torch.Tensor], grad_sequence: list[dict[str, torch.Tensor | None]], lrs: list[float], clip_lr: bool
) -> list[dict[str, torch.Tensor]]:
    values = {n: t.detach().clone() for n, t in start.items()}
    buffers: dict[str, torch.Tensor] = {}
    history = []
    for grads, lr in zip(grad_sequence, lrs):
        for name, p in values.items():
            g = grads[name]
            if g is None:
                continue
            d_p = g.clone()
            p_norm, g_norm = float(torch.linalg.vector_norm(p)), float(torch.linalg.vector_norm(g))
            if p.ndim != 1:  # noqa: SIM102  (exclude_bias_n_norm=True; nested as in lars.py)
                if p_norm != 0 and g_norm != 0:
                    lars_lr = SOLO_ETA * p_norm / (g_norm + p_norm * SOLO_WD + SOLO_EPS)
                    if clip_lr:
                        lars_lr = min(lars_lr / lr, 1.0) if lr > 0 else 1.0  # x / 0 = inf in torch
                    d_p = (d_p + SOLO_WD * p) * lars_lr
            # solo-learn clones the first update into the buffer: the same as 0.9 * 0 + d_p.
            buffers[name] = d_p.clone() if name not in buffers else MOMENTUM * buffers[name] + d_p
            values[name] = p - lr * buffers[name]
        history.append({n: v.clone() for n, v in values.items()})
    return history


@pytest.mark.parametrize("clip_lr", [True, False], ids=["clip", "no-clip"])
@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
def test_solo_learn_variant_matches_solo_learn_update_rule(foreach: bool, clip_lr: bool) -> None:
    params = make_params()
    start = {n: p.detach().clone() for n, p in params.items()}
    grad_sequence = make_grads(steps=len(SOLO_LRS))
    expected = solo_learn_reference(start, grad_sequence, SOLO_LRS, clip_lr)
    optimizer = LARS(
        list(params.values()),
        lr=SOLO_LRS[0],
        weight_decay=SOLO_WD,
        momentum=MOMENTUM,
        eta=SOLO_ETA,
        variant="solo-learn",
        clip_lr=clip_lr,
        foreach=foreach,
    )
    clipped = unclipped = 0
    for step, (grads, lr) in enumerate(zip(grad_sequence, SOLO_LRS)):
        for group in optimizer.param_groups:
            group["lr"] = lr
        apply_grads(params, grads)
        optimizer.step()
        for name, p in params.items():
            torch.testing.assert_close(
                p.detach(), expected[step][name], rtol=0, atol=1e-12, msg=f"{name} after step {step + 1}"
            )
        # Both sides of the clip were exercised: eta ||p|| / (...) above and below lr.
        w, g = start["fc.weight"], grads["fc.weight"]
        ratio = SOLO_ETA * float(w.norm()) / (float(g.norm()) + SOLO_WD * float(w.norm()))
        clipped += lr > 0 and ratio > lr
        unclipped += ratio < lr
    assert clipped and unclipped


def test_solo_learn_variant_differs_from_the_official_rule() -> None:
    runs = {}
    for variant, eta in (("official", 0.02), ("solo-learn", 0.02)):
        params = make_params()
        optimizer = LARS(
            list(params.values()), lr=0.4, weight_decay=SOLO_WD, momentum=MOMENTUM, eta=eta, variant=variant
        )
        apply_grads(params, make_grads(steps=1)[0])
        optimizer.step()
        runs[variant] = params["fc.weight"].detach().clone()
    assert not torch.allclose(runs["official"], runs["solo-learn"])


def test_build_optimizer_gives_each_variant_its_own_eta() -> None:
    groups = parameter_groups(nn.Linear(3, 2), lr=0.1, weight_decay=0.0)
    official = build_optimizer("lars", groups)
    solo = build_optimizer(
        "lars", parameter_groups(nn.Linear(3, 2), lr=0.1, weight_decay=0.0), lars_variant="solo-learn"
    )
    assert (official.param_groups[0]["eta"], official.param_groups[0]["clip_lr"]) == (0.001, False)
    assert (solo.param_groups[0]["eta"], solo.param_groups[0]["clip_lr"]) == (0.02, True)
    with pytest.raises(ValueError, match="clip_lr belongs to the solo-learn variant"):
        LARS([nn.Parameter(torch.ones(2, 2))], lr=0.1, clip_lr=True)
