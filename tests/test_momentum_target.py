"""Momentum (EMA) target networks: the schedule, the update, and the harness around them.

The harness owns the target generically (ssl_bench.method.Method): a copy of backbone and
projector, excluded from the optimiser, moved by Method.after_optimizer_step once per step,
checkpointed with the weights so that a resumed run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import torch
from support.crash import SimulatedCrash, crash_before_step

from ssl_bench.errors import UsageError
from ssl_bench.method import cosine_momentum, ema_update, get_method
from ssl_bench.methods.byol import BYOL
from ssl_bench.models.backbones import TinyConvNet
from ssl_bench.recipes import resolve_config
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.optim import build_optimizer, parameter_groups
from ssl_bench.train.trainer import pretrain

# 64 generated images of 16 px, batch 16 -> 4 steps per epoch, 8 in 2 epochs.
TINY = {
    "byol": ["projector=64,32", "predictor=64,32"],
    "mocov3": ["projector=64,32", "predictor=64,32"],
    "simsiam": ["projector=64,64,32", "predictor=16,32"],
    "tico": ["projector=64,32"],
}
COMMON = ["batch_size=16", "train_subset=64", "image_size=16", "num_workers=0", "device=cpu"]


# Tiny tensors: one intra-op thread (the conftest fixture), for every test here.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(method: str, data_root: Path, extra: list[str] = ()):
    return resolve_config(
        method, "fashion-mnist", {"epochs": 2, "data_root": str(data_root)}, [*TINY[method], *COMMON, *extra]
    )


def _byol(base: float = 0.9) -> BYOL:
    torch.manual_seed(0)
    return BYOL(TinyConvNet((4, 8)), 8, (12, 6), (12, 6), method_params={"momentum_base": base}).double()


# --- the schedule and the update -----------------------------------------------------------


@pytest.mark.parametrize("base", [0.996, 0.99, 0.0])
def test_cosine_schedule_matches_byol_formula(base):
    total = 1000
    for k in [0, 1, 137, 500, 999, 1000]:
        expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2  # BYOL, section 3.3
        assert cosine_momentum(k, total, base) == pytest.approx(expected, rel=1e-15, abs=1e-15)
    assert cosine_momentum(0, total, base) == pytest.approx(base, abs=1e-15)
    assert cosine_momentum(500, total, base) == pytest.approx((1 + base) / 2, abs=1e-15)
    assert cosine_momentum(total, total, base) == 1.0
    assert cosine_momentum(5 * total, total, base) == 1.0  # never past 1
    values = [cosine_momentum(k, total, base) for k in range(total + 1)]
    assert all(a <= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("base, final", [(0.99, 0.999), (0.9, 0.95), (0.999, 0.999)])
def test_cosine_schedule_ends_at_its_final_value(base, final):
    # solo-learn's MomentumUpdater.update_tau (solo/utils/momentum.py:76-87): final_tau - (final_tau
    # - base_tau) (cos(pi k / K) + 1) / 2; final = base is MoCo's constant m.
    total = 1000
    for k in [0, 1, 137, 500, 999, 1000, 3000]:
        expected = final - (final - base) * (math.cos(math.pi * min(k, total) / total) + 1) / 2
        assert cosine_momentum(k, total, base, final) == pytest.approx(expected, rel=1e-15, abs=1e-15)
    assert cosine_momentum(0, total, base, final) == pytest.approx(base, abs=1e-15)
    assert cosine_momentum(total, total, base, final) == final
    if base == final:
        assert {cosine_momentum(k, total, base, final) for k in range(total + 1)} == {base}


def test_the_final_momentum_is_an_optional_method_parameter_of_every_momentum_target():
    # Left out, the schedule ends at 1 and the config stays what it was (the same run identity).
    default = resolve_config("byol", "fashion-mnist")
    assert default.method_params == {"momentum_base": 0.99}
    unchanged = resolve_config("byol", "fashion-mnist", settings=["method_params.momentum_final=1"])
    assert unchanged.method_params == default.method_params and unchanged.identity_hash() == default.identity_hash()
    config = resolve_config("byol", "fashion-mnist", settings=["method_params.momentum_final=0.999"])
    assert config.method_params == {"momentum_base": 0.99, "momentum_final": 0.999}
    assert config.identity_hash() != default.identity_hash()
    method = BYOL(TinyConvNet((4, 8)), 8, (12, 6), (12, 6), method_params=config.method_params)
    assert method.target_momentum(10, 10) == 0.999 and method.target_momentum(0, 10) == 0.99
    with pytest.raises(UsageError, match=r"momentum_final must be in \[momentum_base, 1\]"):
        resolve_config("byol", "fashion-mnist", settings=["method_params.momentum_final=0.9"])
    with pytest.raises(UsageError, match="unknown method_params parameter of simclr 'momentum_final'"):
        resolve_config("simclr", "fashion-mnist", settings=["method_params.momentum_final=0.999"])


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1, 10, 0.9), "step"),
        ((0, 0, 0.9), "total_steps"),
        ((0, 10, 1.5), "base momentum"),
        ((0, 10, 0.9, 0.8), "final momentum"),
        ((0, 10, 0.9, 1.1), "final momentum"),
    ],
)
def test_cosine_schedule_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        cosine_momentum(*args)


def test_ema_update_is_the_convex_combination():
    g = torch.Generator().manual_seed(0)
    online = [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    target = [torch.randn_like(t) for t in online]
    before = [t.clone() for t in target]
    online_before = [o.clone() for o in online]
    ema_update(zip(online, target), 0.9)
    for t, t0, o, o0 in zip(target, before, online, online_before):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * o, rtol=1e-14, atol=1e-15)
        assert torch.equal(o, o0)  # the online network is read, never written
    ema_update(zip(online, target), 1.0)  # tau = 1 leaves the target alone
    ema_update(zip(online, target), 0.0)  # tau = 0 copies the online network
    for t, o in zip(target, online):
        assert torch.equal(t, o)


# --- the method's target network -----------------------------------------------------------


def test_target_starts_as_a_frozen_copy_and_is_checkpointed():
    method = _byol()
    pairs = method.momentum_pairs()
    n_online = len(list(method.backbone.parameters())) + len(list(method.projector.parameters()))
    assert len(pairs) == n_online
    for online, target in pairs:
        assert online is not target and torch.equal(online, target)
        assert online.requires_grad and not target.requires_grad
    keys = method.state_dict().keys()
    assert any(k.startswith("target_backbone.") for k in keys) and any(k.startswith("target_projector.") for k in keys)
    # The optimiser gets the online backbone, projector and predictor, never the target.
    grouped = {id(p) for group in parameter_groups(method, lr=0.1, weight_decay=0.0) for p in group["params"]}
    assert grouped == {id(p) for p in method.parameters() if p.requires_grad}
    assert not grouped & {id(t) for _, t in pairs}
    assert {id(p) for p in method.predictor.parameters()} <= grouped


def test_a_training_step_moves_the_target_by_the_formula():
    method = _byol(base=0.9)
    optimizer = build_optimizer("sgd", parameter_groups(method, lr=0.5, weight_decay=0.0))
    g = torch.Generator().manual_seed(1)
    x_a, x_b = (torch.randn(6, 3, 12, 12, generator=g, dtype=torch.float64) for _ in range(2))
    for step in range(3):  # the target must differ from the online network for a real check
        targets_before = [t.detach().clone() for _, t in method.momentum_pairs()]
        out = method(x_a, x_b)
        optimizer.zero_grad()
        out.loss.backward()
        assert all(t.grad is None for _, t in method.momentum_pairs())  # stop-gradient
        optimizer.step()
        method.after_optimizer_step(step, 10)
        tau = 1 - (1 - 0.9) * (math.cos(math.pi * step / 10) + 1) / 2
        for (online, target), before in zip(method.momentum_pairs(), targets_before):
            torch.testing.assert_close(target, tau * before + (1 - tau) * online.detach(), rtol=1e-12, atol=1e-14)
    assert any(not torch.equal(o, t) for o, t in method.momentum_pairs())


def test_target_outputs_reach_the_loss_without_graph():
    method = _byol()
    seen = {}

    def spy(z_a, z_b, *, p_a, p_b, target_a, target_b):
        seen.update(p_a=p_a, target_a=target_a, target_b=target_b)
        return BYOL.loss(method, z_a, z_b, p_a=p_a, p_b=p_b, target_a=target_a, target_b=target_b)

    method.loss = spy
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    method(x, x.flip(0))
    assert seen["p_a"].requires_grad and not seen["target_a"].requires_grad
    assert seen["target_a"].dtype == torch.float64  # losses never downcast


def test_methods_without_a_target_do_nothing_after_a_step():
    from ssl_bench.methods.vicreg import VICReg

    method = VICReg(
        TinyConvNet((4, 8)),
        8,
        (12, 6),
        loss_params={"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0, "eps": 1e-4},
    )
    before = copy.deepcopy(method.state_dict())
    method.after_optimizer_step(0, 10)
    assert method.momentum_pairs() == [] and method.target_backbone is None
    assert all(torch.equal(v, before[k]) for k, v in method.state_dict().items())


# --- the trainer ---------------------------------------------------------------------------


def _final_state(result_dir: Path) -> dict[str, torch.Tensor]:
    return RunDir(result_dir).load_checkpoint()["method"]


@pytest.mark.parametrize("method", ["byol", "mocov3", "simsiam", "tico"])
def test_a_crashed_run_resumes_to_the_same_weights_target_included(method, fashion_root, tmp_path, monkeypatch):
    # Checkpoints every 3 steps and at each epoch's end (4 steps): the crash before step 7 leaves
    # the mid-epoch checkpoint of step 6, so 6 and 7 are trained again after the resume.
    config = tiny_config(method, fashion_root, ["checkpoint_every_steps=3"])
    straight = pretrain(Run.of(tmp_path / "straight", config), progress=False, log=lambda _: None)
    assert straight.status == "finished"

    # The harness calls the method's per-step hook once after every optimiser step, with the
    # step just taken; a resumed run continues the count from its checkpoint.
    calls: list[tuple[int, int]] = []
    method_cls = get_method(method)
    real_hook = method_cls.after_optimizer_step

    def recording(self, step, total_steps):
        calls.append((step, total_steps))
        real_hook(self, step, total_steps)

    monkeypatch.setattr(method_cls, "after_optimizer_step", recording)
    crash_before_step(monkeypatch, 7)
    with pytest.raises(SimulatedCrash):
        pretrain(Run.of(tmp_path / "crashed", config), progress=False, log=lambda _: None)
    run_dir = Run.of(tmp_path / "crashed", config)
    assert run_dir.read_status()["status"] == "failed"
    assert run_dir.load_checkpoint()["step"] == 6
    assert calls == [(k, 8) for k in range(7)]
    monkeypatch.undo()  # the crash and the recorder
    monkeypatch.setattr(method_cls, "after_optimizer_step", recording)

    calls.clear()
    resumed = pretrain(Run.of(tmp_path / "crashed", config), progress=False, log=lambda _: None)
    assert resumed.status == "finished" and resumed.resumed_from_step == 6
    assert calls == [(6, 8), (7, 8)]
    reference, state = _final_state(straight.run_dir), _final_state(resumed.run_dir)
    assert state.keys() == reference.keys()
    for name in reference:
        assert torch.equal(state[name], reference[name]), name
    assert resumed.final_loss == straight.final_loss
    if method == "tico":  # the running covariance is state too, checkpointed, and it moved
        assert reference["C"].abs().sum() > 0
    if method != "simsiam":  # the EMA target is checkpointed, and it did move away from the online net
        targets = [k for k in reference if k.startswith("target_")]
        assert targets
        moved = [k for k in targets if not torch.equal(reference[k], reference[k.removeprefix("target_")])]
        assert moved
