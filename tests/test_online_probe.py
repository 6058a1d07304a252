"""solo-learn's online classifier, as the CIFAR rows (and the demo rows built on them) train it.

vturrisi/solo-learn at commit 9187ea39, ``solo/methods/base.py``: ``nn.Linear(features_dim,
num_classes)`` on the detached backbone output of each large crop, cross-entropy ignoring label
-1, averaged over the crops and added to the method's loss; its parameters a group of the main
optimiser with lr ``classifier_lr`` x batch / 256 and weight decay 0, under the run's LARS
(``solo/utils/lars.py``: the weight adapted, the bias left out) and warmup + cosine schedule. The
step is held against that description written out by hand in float64, not against ssl-bench's
own code.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import UsageError
from ssl_bench.eval.online import online_probe_from_state
from ssl_bench.recipes import load_recipe_table, resolve_config
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.assemble import build_method, build_run_optimizer
from ssl_bench.train.monitor import OnlineProbe, TrainingMonitor
from ssl_bench.train.optim import set_scheduled_lr
from ssl_bench.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
# classifier_lr of each CIFAR yaml (scripts/pretrain/cifar/<method>.yaml); TiCo takes SimCLR's.
CLASSIFIER_LR = {"simclr": 0.1, "tico": 0.1, "vicreg": 0.1, "barlow_twins": 0.1, "byol": 0.1, "simsiam": 0.1}
CLASSIFIER_LR["mocov3"] = 0.3
CLASSIFIER_LR["wmse"] = 3e-3
CLASSIFIER_LR["swav"] = 0.1  # swav.yaml:36
CLASSIFIER_LR["mocov2"] = 0.3  # mocov2plus.yaml:36


def _probe_group(optimizer: torch.optim.Optimizer) -> dict:
    (group,) = [g for g in optimizer.param_groups if g["name"] == "online probe"]
    return group


def _lr_by_hand(step: int, total: int, warmup: int, peak: float) -> float:
    """solo-learn's schedule as ssl-bench runs it: linear warmup from 0, cosine to 0 (end 0.0)."""
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize("method", sorted(CLASSIFIER_LR))
def test_cifar_rows_put_the_classifier_in_a_group_of_the_run_optimiser(method):
    config = resolve_config(method, "cifar10")
    assert config.online_probe == "solo_learn" and config.probe_base_lr == CLASSIFIER_LR[method]
    with torch.device("meta"):
        model = build_method(config)
        optimizer = build_run_optimizer(config, model)
    probe = model.online_probe
    assert isinstance(probe, OnlineProbe) and isinstance(probe.norm, nn.Identity)  # a Linear alone
    assert (probe.linear.in_features, probe.linear.out_features) == (512, 10) and probe.linear.bias is not None
    group = _probe_group(optimizer)
    assert [id(p) for p in group["params"]] == [id(p) for p in probe.parameters()]
    others = {id(p) for g in optimizer.param_groups if g is not group for p in g["params"]}
    assert not others & {id(p) for p in probe.parameters()}  # in no other group
    assert group["peak_lr"] == CLASSIFIER_LR[method] * config.batch_size / 256 and group["weight_decay"] == 0.0
    assert not group.get("constant_lr", False)
    if config.optimizer == "adam":  # W-MSE's row: the run's Adam, torch's default betas
        assert group["betas"] == (0.9, 0.999) and type(optimizer) is torch.optim.Adam
    else:
        assert group["momentum"] == 0.9
    if config.optimizer == "lars":  # the run's LARS rule: solo-learn's, eta 0.02, clipped
        assert (group["variant"], group["eta"], group["clip_lr"]) == ("solo-learn", 0.02, True)
    # The run's warmup + cosine schedule, from the classifier's own peak.
    total, warmup = 1000, 100
    for step in (0, 1, 50, 100, 101, 550, 999):
        set_scheduled_lr(optimizer, step, total, warmup, config.lr_end_factor)
        assert group["lr"] == pytest.approx(_lr_by_hand(step, total, warmup, group["peak_lr"]), rel=1e-12, abs=1e-15)


def test_the_demo_rows_inherit_it_and_the_imagenet_rows_keep_their_own_probe():
    for method in load_recipe_table("fashion_mnist").methods:
        config = resolve_config(method, "fashion-mnist")
        assert (config.online_probe, config.probe_base_lr) == ("solo_learn", CLASSIFIER_LR[method])
    for method in load_recipe_table("imagenet").methods:
        config = resolve_config(method, "imagenet")
        assert (config.online_probe, config.probe_base_lr) == ("bn_linear_sgd", None)
        assert "online_probe" not in config.to_dict()  # at its default: the identity it had before
        with torch.device("meta"):
            model = build_method(config)
            optimizer = build_run_optimizer(config, model)
        assert model.online_probe is None and "online probe" not in [g["name"] for g in optimizer.param_groups]


def test_probe_settings_are_checked():
    with pytest.raises(UsageError, match="probe_base_lr"):
        resolve_config("simclr", "cifar10", settings=["probe_base_lr=none"])
    with pytest.raises(UsageError, match="probe_base_lr goes with"):
        resolve_config("simclr", "cifar10", settings=["online_probe=bn_linear_sgd"])
    with pytest.raises(UsageError, match="online_probe"):
        resolve_config("simclr", "cifar10", settings=["online_probe=lightly"])
    with pytest.raises(UsageError, match="known classes"):
        resolve_config("simclr", "imagefolder", settings=["online_probe=solo_learn", "probe_base_lr=0.1"])
    other = resolve_config("simclr", "cifar10", settings=["online_probe=bn_linear_sgd", "probe_base_lr=none"])
    assert other.identity_hash() != resolve_config("simclr", "cifar10").identity_hash()


# --------------------------------------------------------------------------------------------
# One step of the run, against solo-learn's step by hand

TINY = ["projector=32,32", "batch_size=32", "num_workers=0", "device=cpu", "train_subset=256"]


def _trainer(data_root: Path, run_dir: Path, method: str, *settings: str) -> Trainer:
    config = resolve_config(method, "fashion-mnist", {"epochs": 2, "data_root": str(data_root)}, TINY + list(settings))
    return Trainer(config, RunDir(run_dir), progress=False, log=lambda _: None)


def _solo_learn_step(weight, bias, buffers, views, labels, lr, lars: bool):
    """solo-learn's classifier update, by hand: softmax cross-entropy gradients averaged over the
    views, then LARS (eta 0.02, clip_lr, weight decay 0; the bias excluded) or plain SGD, momentum
    0.9 from a zero buffer. Returns the new weight, bias, buffers and the loss."""
    n, classes = len(labels), weight.shape[0]
    onehot = torch.zeros(n, classes, dtype=torch.float64)
    onehot[torch.arange(n), labels] = 1.0
    grad_w, grad_b, loss = torch.zeros_like(weight), torch.zeros_like(bias), 0.0
    for h in views:
        logits = h @ weight.T + bias
        shifted = logits - logits.max(dim=1, keepdim=True).values
        probabilities = shifted.exp() / shifted.exp().sum(dim=1, keepdim=True)
        loss += float(-(onehot * (probabilities.log())).sum() / n) / len(views)
        grad_w += (probabilities - onehot).T @ h / n / len(views)
        grad_b += (probabilities - onehot).sum(dim=0) / n / len(views)
    step_w = grad_w
    if lars:  # solo/utils/lars.py:140-150 with weight_decay 0: r = eta ||p|| / (||g|| + eps), min(r / lr, 1)
        ratio = 0.02 * float(weight.norm()) / (float(grad_w.norm()) + 1e-8)
        step_w = grad_w * min(ratio / lr, 1.0)
    buffer_w, buffer_b = 0.9 * buffers[0] + step_w, 0.9 * buffers[1] + grad_b
    return weight - lr * buffer_w, bias - lr * buffer_b, (buffer_w, buffer_b), loss


@pytest.mark.parametrize("method", ["simclr", "tico", "simsiam"])
def test_two_steps_equal_solo_learns_classifier_step_in_float64(fashion_root, tmp_path, method):
    """simclr: LARS, both views; tico: the online network sees view a only; simsiam: SGD."""
    trainer = _trainer(fashion_root, tmp_path, method, *(["predictor=8,32"] if method == "simsiam" else []))
    trainer.method.double()  # the optimiser keeps the same parameter objects
    probe = trainer.method.online_probe
    assert isinstance(probe, OnlineProbe)
    batches = trainer.loader.epoch(0)
    trainer.step = trainer.warmup_steps + 2  # in the cosine, lr > 0
    buffers = (torch.zeros_like(probe.linear.weight), torch.zeros_like(probe.linear.bias))
    peak = CLASSIFIER_LR[method] * 32 / 256
    for _ in range(2):
        x_a, x_b, labels, _ = next(batches)
        x_a, x_b = x_a.double(), x_b.double()
        weight, bias = probe.linear.weight.detach().clone(), probe.linear.bias.detach().clone()
        before = copy.deepcopy(trainer.method)  # train-mode BatchNorm: the same features again
        with torch.no_grad():
            views = [before.backbone(x_a)] + ([before.backbone(x_b)] if method != "tico" else [])
        lr = _lr_by_hand(trainer.step, trainer.total_steps, trainer.warmup_steps, peak)
        tallies = trainer.monitor.tallies()
        trainer.train_step(x_a, x_b, labels)
        trainer.step += 1
        expected_w, expected_b, buffers, loss = _solo_learn_step(
            weight, bias, buffers, views, labels, lr, lars=trainer.config.optimizer == "lars"
        )
        assert _probe_group(trainer.optimizer)["lr"] == pytest.approx(lr, rel=1e-12)
        torch.testing.assert_close(probe.linear.weight.detach(), expected_w, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(probe.linear.bias.detach(), expected_b, rtol=1e-10, atol=1e-13)
        # The monitor scored the batch before the step: both views' predictions, the mean loss.
        after = trainer.monitor.tallies()
        correct = sum(int(((h @ weight.T + bias).argmax(dim=1) == labels).sum()) for h in views)
        assert after["correct"] - tallies["correct"] == correct
        assert after["labelled"] - tallies["labelled"] == len(labels) * len(views)
        assert after["loss_sum"] - tallies["loss_sum"] == pytest.approx(loss, rel=1e-10)


def test_the_classifier_leaves_the_methods_training_alone(fashion_root, tmp_path):
    """Same initial weights, same updates of every method parameter, bit for bit, with either probe."""
    solo = _trainer(fashion_root, tmp_path / "solo", "vicreg")
    other = _trainer(fashion_root, tmp_path / "other", "vicreg", "online_probe=bn_linear_sgd", "probe_base_lr=none")
    assert other.method.online_probe is None and other.monitor.optimizer is not None
    batches = solo.loader.epoch(0)
    for _ in range(2):
        x_a, x_b, labels, _ = next(batches)
        for trainer in (solo, other):
            trainer.train_step(x_a, x_b, labels)
            trainer.step += 1
    theirs = other.method.state_dict()
    ours = {k: v for k, v in solo.method.state_dict().items() if not k.startswith("online_probe.")}
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    assert not torch.equal(solo.method.online_probe.linear.weight, other.monitor.probe.linear.weight)


# --------------------------------------------------------------------------------------------
# The classifier's loss on unlabelled rows, and reading it back for the evaluation


def _classifier_monitor(all_labelled: bool) -> tuple[TrainingMonitor, OnlineProbe]:
    torch.manual_seed(0)
    probe = OnlineProbe(6, 4, standardise=False).double()
    return TrainingMonitor(6, 4, CPU, seed=0, all_labelled=all_labelled, classifier=probe), probe


def test_classifier_loss_is_solo_learns_cross_entropy_averaged_over_the_views():
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(10, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    labels = torch.tensor([0, 1, 2, 3, -1, 1, -1, 2, 0, 3])
    monitor, probe = _classifier_monitor(all_labelled=False)
    loss = monitor.classifier_loss(views, labels)
    # solo/methods/base.py:469, 521: F.cross_entropy(ignore_index=-1) per crop, mean over crops.
    expected = sum(F.cross_entropy(probe(v), labels, ignore_index=-1) for v in views) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-15)
    grads = torch.autograd.grad(loss, list(probe.parameters()))
    for got, want in zip(grads, torch.autograd.grad(expected, list(probe.parameters()))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    assert monitor.tallies()["labelled"] == 16  # 8 labelled rows, two views
    # Every row labelled: the plain mean, counted without a mask.
    labelled = labels.clamp(min=0)
    monitor, probe = _classifier_monitor(all_labelled=True)
    expected = sum(F.cross_entropy(probe(v), labelled) for v in views) / 2
    torch.testing.assert_close(monitor.classifier_loss(views, labelled), expected, rtol=1e-12, atol=1e-15)
    # No labelled row: a zero loss with zero gradients where solo-learn's mean would be NaN.
    monitor, probe = _classifier_monitor(all_labelled=False)
    loss = monitor.classifier_loss(views, torch.full((10,), -1))
    assert float(loss.detach()) == 0.0
    assert all(float(g.abs().sum()) == 0.0 for g in torch.autograd.grad(loss, list(probe.parameters())))
    assert monitor.tallies()["labelled"] == 0 and monitor.tallies()["loss_batches"] == 1


@pytest.mark.parametrize("standardise", [False, True])
def test_the_evaluation_rebuilds_either_probe_from_the_monitor_state(standardise):
    torch.manual_seed(0)
    classifier = OnlineProbe(6, 4, standardise=False) if not standardise else None
    monitor = TrainingMonitor(6, 4, CPU, seed=0, all_labelled=True, classifier=classifier)
    features = torch.randn(32, 6)
    labels = torch.arange(32) % 4
    if classifier is None:
        monitor.observe(features, None, labels)  # the bn_linear_sgd probe learns (and keeps statistics)
    rebuilt = online_probe_from_state(monitor.state_dict())
    assert rebuilt is not None and isinstance(rebuilt.norm, nn.BatchNorm1d) == standardise
    assert monitor.probe is not None
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(features), monitor.probe.eval()(features), rtol=0, atol=0)
