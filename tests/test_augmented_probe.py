"""The augmented offline linear probe (``linear_aug``): schedule, augmentation, learning, and the record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import ssl_bench.eval.augmented as augmented_module
from ssl_bench.data.images import TensorImages
from ssl_bench.eval.augmented import (
    AUGMENTED_CHECKPOINT,
    _head,
    augmented_linear_probe,
    checkpoint_key,
    lr_at_epoch,
    probe_view,
)
from ssl_bench.eval.probes import (
    SOLO_LEARN_LINEAR,
    VICREG_LINEAR,
    AugmentedProbeConfig,
    EvalProtocol,
    SplitFeatures,
    protocol_for,
)
from ssl_bench.recipes import resolve_config
from ssl_bench.run.lifecycle import evaluate_run
from ssl_bench.run.record import Run
from ssl_bench.train.trainer import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _torch_lrs(config: AugmentedProbeConfig) -> list[float]:
    """The per-epoch lr of torch's own schedulers, stepped once per epoch (as VICReg and solo-learn do)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    lrs = []
    for _ in range(config.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("config", [VICREG_LINEAR, SOLO_LEARN_LINEAR], ids=["vicreg-cosine", "solo-learn-step"])
def test_schedule_matches_torchs_schedulers(config):
    ours = [lr_at_epoch(config, epoch) for epoch in range(config.epochs)]
    assert ours == pytest.approx(_torch_lrs(config), rel=1e-12, abs=1e-15)


def test_the_published_configs():
    # facebookresearch/vicreg evaluate.py defaults; solo-learn scripts/linear/imagenet-100/*.yaml.
    assert (VICREG_LINEAR.epochs, VICREG_LINEAR.batch_size, VICREG_LINEAR.lr, VICREG_LINEAR.weight_decay) == (
        100,
        256,
        0.3,
        1e-6,
    )
    assert VICREG_LINEAR.schedule == "cosine" and VICREG_LINEAR.momentum == 0.9
    assert (SOLO_LEARN_LINEAR.lr, SOLO_LEARN_LINEAR.weight_decay, SOLO_LEARN_LINEAR.milestones) == (0.3, 0.0, (60, 80))
    assert protocol_for("imagenet").augmented == VICREG_LINEAR
    assert protocol_for("imagenet100").augmented == SOLO_LEARN_LINEAR
    # The CPU demo and CIFAR do not run it: their published rows (if any) are other protocols.
    assert protocol_for("fashion-mnist").augmented is None and protocol_for("cifar10").augmented is None
    # A protocol without it keeps the identity it had before the field existed.
    assert "augmented" not in protocol_for("cifar10").to_dict()


def test_only_crop_and_flip_augment_the_train_images():
    view = probe_view(VICREG_LINEAR)
    assert view.crop_scale == (0.08, 1.0) and view.flip_p == 0.5
    assert view.jitter_p == view.grayscale_p == view.blur_p == view.solarize_p == 0.0


def _colour_classes(n: int, seed: int) -> tuple[TensorImages, SplitFeatures]:
    """Class c = images of one flat grey level (plus noise): any crop or flip keeps the class visible."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    levels = (40 + 50 * labels).view(n, 1, 1, 1).float()
    images = (levels + 8 * torch.randn(n, 3, 16, 16, generator=generator)).clamp(0, 255).to(torch.uint8)
    return TensorImages(images, labels, ["a", "b", "c", "d"]), labels


class _MeanColour(nn.Module):
    """A 'backbone' whose feature is the normalised mean of each channel (crop- and flip-invariant),
    with a BatchNorm whose buffers must stay untouched by the frozen-backbone probe."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(images).mean(dim=(2, 3)) * self.scale


def _features(backbone: nn.Module, data: TensorImages) -> SplitFeatures:
    with torch.no_grad():
        backbone.eval()
        images = (data.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        return SplitFeatures(backbone(images), data.labels)


def _probe(
    backbone: nn.Module,
    train: TensorImages,
    val,
    test,
    config: AugmentedProbeConfig,
    seed: int = 0,
    checkpoint: Path | None = None,
    log=lambda _: None,
):
    return augmented_linear_probe(
        backbone,
        train,
        val,
        test,
        config,
        image_size=16,
        mean=MEAN,
        std=STD,
        num_classes=4,
        seed=seed,
        device=torch.device("cpu"),
        checkpoint=checkpoint,
        log=log,
    )


def test_learns_separable_classes_deterministically_and_leaves_the_backbone_alone():
    train, _ = _colour_classes(256, seed=0)
    backbone = _MeanColour()
    before = {name: value.clone() for name, value in backbone.state_dict().items()}
    val = _features(backbone, _colour_classes(64, seed=1)[0])
    test = _features(backbone, _colour_classes(64, seed=2)[0])
    config = dataclasses.replace(VICREG_LINEAR, epochs=30, batch_size=64, lr=1.0)
    first = _probe(backbone, train, val, test, config)
    assert first.val_top1 >= 95 and first.test_top1 >= 95
    assert first == _probe(backbone, train, val, test, config)
    # Frozen: no parameter or buffer (BatchNorm running statistics included) changed.
    after = backbone.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not backbone.training


def test_with_lr_zero_the_head_is_its_init_and_scores_like_it():
    train, _ = _colour_classes(64, seed=0)
    backbone = _MeanColour()
    test = _features(backbone, _colour_classes(64, seed=2)[0])
    result = _probe(backbone, train, test, test, dataclasses.replace(VICREG_LINEAR, epochs=2, batch_size=32, lr=0.0))
    # The init by hand: N(0, 0.01) weights from the probe's seed stream, zero bias.
    head = _head(3, 4, seed=0)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.6) and torch.all(head.bias == 0)
    expected = 100.0 * int((head(test.features).argmax(dim=1) == test.labels).sum()) / len(test.labels)
    assert result.test_top1 == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Resuming from the epoch checkpoint


class _Preempted(Exception):
    """Stands for the job being killed right after an epoch's checkpoint reached the disk."""


def _stop_after_epoch(monkeypatch, epochs_done: int) -> None:
    """The probe's checkpoint writes go through; the one of ``epochs_done`` is the last."""
    save = augmented_module.atomic_torch_save

    def save_then_stop(state, path):
        save(state, path)
        if state["epochs_done"] == epochs_done:
            raise _Preempted(f"killed after epoch {epochs_done}")

    monkeypatch.setattr(augmented_module, "atomic_torch_save", save_then_stop)


def _epochs_trained(monkeypatch) -> list[int]:
    """The epochs the probe trains from now on (it sets each epoch's lr once)."""
    epochs: list[int] = []

    def spy(config, epoch):
        epochs.append(epoch)
        return lr_at_epoch(config, epoch)

    monkeypatch.setattr(augmented_module, "lr_at_epoch", spy)
    return epochs


def _resume_setting():
    train, _ = _colour_classes(128, seed=0)
    backbone = _MeanColour()
    val = _features(backbone, _colour_classes(64, seed=1)[0])
    test = _features(backbone, _colour_classes(64, seed=2)[0])
    # A large lr and few images: the head is far from converged, so any difference would show.
    config = dataclasses.replace(VICREG_LINEAR, epochs=5, batch_size=32, lr=3.0)
    return backbone, train, val, test, config


def test_an_interrupted_probe_resumes_and_ends_bit_identical(tmp_path, monkeypatch):
    backbone, train, val, test, config = _resume_setting()
    whole = tmp_path / "whole" / AUGMENTED_CHECKPOINT
    uninterrupted = _probe(backbone, train, val, test, config, checkpoint=whole)
    # Checkpointing changes nothing: the same numbers as a probe without a checkpoint.
    assert uninterrupted == _probe(backbone, train, val, test, config)

    resumed_path = tmp_path / "resumed" / AUGMENTED_CHECKPOINT
    with monkeypatch.context() as patch:
        _stop_after_epoch(patch, epochs_done=2)
        with pytest.raises(_Preempted):
            _probe(backbone, train, val, test, config, checkpoint=resumed_path)
    assert torch.load(resumed_path, weights_only=True)["epochs_done"] == 2
    messages: list[str] = []
    epochs = _epochs_trained(monkeypatch)
    resumed = _probe(backbone, train, val, test, config, checkpoint=resumed_path, log=messages.append)
    assert epochs == [2, 3, 4]  # continued after epoch 2, not started over
    assert any("after epoch 2" in message for message in messages)
    assert resumed == uninterrupted
    final, reference = (torch.load(path, weights_only=True) for path in (resumed_path, whole))
    assert final["epochs_done"] == reference["epochs_done"] == config.epochs
    for name, tensor in reference["head"].items():
        assert torch.equal(final["head"][name], tensor), name
    buffers = [state["momentum_buffer"] for state in reference["optimizer"]["state"].values()]
    resumed_buffers = [state["momentum_buffer"] for state in final["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(resumed_buffers, buffers, strict=True))

    # Kept after the last epoch: a later call scores the trained head again without training it.
    epochs.clear()
    assert _probe(backbone, train, val, test, config, checkpoint=resumed_path) == uninterrupted
    assert epochs == []


def test_a_checkpoint_of_other_settings_or_weights_is_not_resumed(tmp_path, monkeypatch):
    backbone, train, val, test, config = _resume_setting()
    path = tmp_path / AUGMENTED_CHECKPOINT
    with monkeypatch.context() as patch:
        _stop_after_epoch(patch, epochs_done=2)
        with pytest.raises(_Preempted):
            _probe(backbone, train, val, test, config, checkpoint=path)
    other_lr = dataclasses.replace(config, lr=0.5)
    other_weights = _MeanColour()
    with torch.no_grad():
        other_weights.scale.mul_(2.0)
    for changed_backbone, changed_config in ((backbone, other_lr), (other_weights, config)):
        fresh = _probe(changed_backbone, train, val, test, changed_config)
        messages: list[str] = []
        with monkeypatch.context() as patch:
            epochs = _epochs_trained(patch)
            _stop_after_epoch(patch, epochs_done=2)  # leaves a checkpoint of these settings at epoch 2
            with pytest.raises(_Preempted):
                _probe(changed_backbone, train, val, test, changed_config, checkpoint=path, log=messages.append)
        assert epochs == [0, 1] and any("starting afresh" in message for message in messages)
        assert _probe(changed_backbone, train, val, test, changed_config, checkpoint=path) == fresh
        # Back to the first setting for the next round: its own checkpoint was replaced.
        _stop_after_epoch(monkeypatch, epochs_done=2)
        with pytest.raises(_Preempted):
            _probe(backbone, train, val, test, config, checkpoint=path)
        monkeypatch.undo()


def test_the_checkpoint_key_follows_what_the_probe_depends_on():
    backbone, train, _, _, config = _resume_setting()

    def key(backbone=backbone, train=train, config=config, seed=0, image_size=16, mean=MEAN):
        return checkpoint_key(
            backbone, train, config, image_size=image_size, mean=mean, std=STD, num_classes=4, seed=seed
        )

    base = key()
    assert key() == base and key(backbone=_MeanColour()) == base  # the same weights, another object
    other_buffer = _MeanColour()
    other_buffer.norm.running_mean.add_(1.0)  # buffers count, not just parameters
    other_images = TensorImages(train.images.clone(), train.labels, train.classes)
    other_images.images[0, 0, 0, 0] ^= 1
    other_labels = TensorImages(train.images, train.labels.roll(1), train.classes)
    changed = [
        key(backbone=other_buffer),
        key(train=other_images),
        key(train=other_labels),
        key(config=dataclasses.replace(config, epochs=6)),
        key(config=dataclasses.replace(config, crop_scale=(0.2, 1.0))),
        key(seed=1),
        key(image_size=32),
        key(mean=(0.4, 0.5, 0.5)),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_a_run_records_linear_aug_where_its_protocol_has_it(fashion_root, tmp_path):
    config = resolve_config(
        "simclr",
        "fashion-mnist",
        {"epochs": 1, "data_root": str(fashion_root), "batch_size": 64},
        ["train_subset=none", "projector=32,16"],
    )
    pretrain(Run.of(tmp_path, config), progress=False, log=lambda _: None)
    probe = dataclasses.replace(VICREG_LINEAR, epochs=2, batch_size=64)
    protocol = EvalProtocol(name="with augmented probe", augmented=probe)
    record = evaluate_run(Run.of(tmp_path, config, protocol), log=lambda _: None)
    assert record["status"] == "finished"
    scores = record["linear_aug_scores"]
    assert record["linear_aug_top1"] == scores["test_top1"] and 0 <= scores["val_top1"] <= 100
    assert record["eval_protocol"]["augmented"]["epochs"] == 2
    run_dir = Run.of(tmp_path, config)
    assert run_dir.read_result()["linear_aug_top1"] == record["linear_aug_top1"]
    # The probe's epoch checkpoint is in the run directory, at its last epoch.
    assert torch.load(run_dir.path / AUGMENTED_CHECKPOINT, weights_only=True)["epochs_done"] == 2
    # Without it in the protocol: no such number.
    plain = evaluate_run(Run.of(tmp_path, config, EvalProtocol(name="plain")), log=lambda _: None)
    assert plain["status"] == "finished" and plain["linear_aug_top1"] is None and plain["linear_aug_scores"] is None
