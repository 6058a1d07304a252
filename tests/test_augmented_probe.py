"""The augmented offline linear probe (``linear_aug``): schedule, augmentation, learning, and the record."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from ssl_bench.data.images import TensorImages
from ssl_bench.eval.augmented import _head, augmented_linear_probe, lr_at_epoch, probe_view
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
from ssl_bench.run.record import read_result
from ssl_bench.store.rundir import RunDir
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


def _probe(backbone: nn.Module, train: TensorImages, val, test, config: AugmentedProbeConfig, seed: int = 0):
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


def test_a_run_records_linear_aug_where_its_protocol_has_it(fashion_root, tmp_path):
    config = resolve_config(
        "simclr",
        "fashion-mnist",
        {"epochs": 1, "data_root": str(fashion_root), "batch_size": 64},
        ["train_subset=none", "projector=32,16"],
    )
    pretrain(config, tmp_path, progress=False, log=lambda _: None)
    probe = dataclasses.replace(VICREG_LINEAR, epochs=2, batch_size=64)
    protocol = EvalProtocol(name="with augmented probe", augmented=probe)
    record = evaluate_run(config, tmp_path, protocol, log=lambda _: None)
    assert record["status"] == "finished"
    scores = record["linear_aug_scores"]
    assert record["linear_aug_top1"] == scores["test_top1"] and 0 <= scores["val_top1"] <= 100
    assert record["eval_protocol"]["augmented"]["epochs"] == 2
    assert read_result(RunDir.for_config(tmp_path, config))["linear_aug_top1"] == record["linear_aug_top1"]
    # Without it in the protocol: no such number.
    plain = evaluate_run(config, tmp_path, EvalProtocol(name="plain"), log=lambda _: None)
    assert plain["status"] == "finished" and plain["linear_aug_top1"] is None and plain["linear_aug_scores"] is None
