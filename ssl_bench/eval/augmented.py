"""The augmented offline linear probe (``linear_aug``): the protocol of the published ImageNet numbers.

facebookresearch/vicreg ``evaluate.py`` (``--weights freeze``), which Barlow Twins' ``evaluate.py``
follows and solo-learn's ImageNet-100 linear configs resemble: the backbone frozen in eval mode;
each epoch every train image cropped by RandomResizedCrop and flipped afresh; a linear head
(weights N(0, 0.01), bias 0) trained with cross-entropy by SGD with momentum; the lr annealed
per epoch (:class:`~ssl_bench.eval.probes.AugmentedProbeConfig`).

The head after the last epoch scores the validation and test features of the run's feature cache:
the frozen backbone on the resized, centre-cropped images, as VICReg's validation transform. Two
choices differ from ``evaluate.py``, both so that the test split decides nothing: VICReg reports
the best epoch's accuracy on the split it also reports, here the last epoch's is reported; and
the probe trains on the labelled train split less the validation images. The train loader drops
the last incomplete batch of each epoch (VICReg's keeps it). Batches and augmentations are drawn
from the run's seed, so the probe is deterministic on a given device.

Resuming
--------
A 100-epoch ImageNet probe outlives a SLURM time slot. After every epoch the head, the
optimiser (its momentum buffers), the epochs done and that epoch's loss are written atomically to
``linear_aug.pt`` in the run directory (:data:`AUGMENTED_CHECKPOINT`); the next call continues
from there and ends bit-identical to an uninterrupted probe on the same device. Nothing else needs
saving: each epoch's batches and augmentations are a pure function of (seed, epoch, batch)
(``ssl_bench.data.loaders.TrainLoader``, which leaves the global RNG untouched) and its lr a pure
function of the epoch (:func:`lr_at_epoch`). The checkpoint is keyed by a hash of everything the
probe's trajectory depends on (:func:`checkpoint_key`: probe settings, backbone weights, train
images, seed, code); one of another key is not resumed but replaced. It is kept after the last
epoch: it holds the trained head, and an evaluation that fails later, after the probe, scores
that head again on its next call instead of training it anew.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.config import RunConfig
from ssl_bench.data.augment import ViewConfig, ViewPairAugmentation
from ssl_bench.data.datasets import dataset_info
from ssl_bench.data.images import FolderImages, ImageData, TensorImages
from ssl_bench.data.loaders import TrainLoader, derive_seed
from ssl_bench.eval.features import eval_split_data
from ssl_bench.eval.probes import AugmentedProbeConfig, SplitFeatures
from ssl_bench.provenance import code_hash
from ssl_bench.store.atomic import atomic_torch_save

# Keeps the probe's batch order and augmentations apart from the pre-training streams of the same seed.
_PROBE_STREAM = 0x11AE
# The probe's epoch checkpoint, in the run directory.
AUGMENTED_CHECKPOINT = "linear_aug.pt"

Log = Callable[[str], None]


@dataclass(frozen=True)
class AugmentedProbeResult:
    val_top1: float
    test_top1: float
    final_train_loss: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def probe_view(config: AugmentedProbeConfig) -> ViewConfig:
    """The train images' augmentation: the crop and the flip, nothing else."""
    return ViewConfig(
        crop_scale=config.crop_scale,
        flip_p=config.flip_p,
        jitter=(0.0, 0.0, 0.0, 0.0),
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
        solarize_p=0.0,
    )


def lr_at_epoch(config: AugmentedProbeConfig, epoch: int) -> float:
    """The lr of ``epoch`` (0-based): cosine annealing to 0 over the epochs, or step decay."""
    if config.schedule == "cosine":
        # torch.optim.lr_scheduler.CosineAnnealingLR(T_max=epochs, eta_min=0), stepped per epoch.
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return config.lr * config.gamma ** sum(epoch >= milestone for milestone in config.milestones)


def _head(feature_dim: int, num_classes: int, seed: int) -> nn.Linear:
    head = nn.Linear(feature_dim, num_classes)
    generator = torch.Generator().manual_seed(derive_seed(seed, _PROBE_STREAM))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    return head


def _update_with_tensor(digest: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes (any dtype, any device) into ``digest``."""
    digest.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
    digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def checkpoint_key(
    backbone: nn.Module,
    train: ImageData,
    config: AugmentedProbeConfig,
    *,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    seed: int,
) -> str:
    """A hash of what the probe's trajectory depends on: a checkpoint of another key is not resumed.

    The probe settings, the backbone's parameters and buffers, the train images (their pixels
    and labels in memory; their files and labels for folder data) and their preprocessing, the
    seed and the code (ssl_bench.provenance). Not the device or the number of loader workers,
    which do not change what is computed.
    """
    digest = hashlib.sha256()
    settings = {
        "probe": dataclasses.asdict(config),
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "num_classes": num_classes,
        "seed": seed,
        "code_hash": code_hash(),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        _update_with_tensor(digest, tensor)
    if isinstance(train, TensorImages):
        _update_with_tensor(digest, train.images)
    elif isinstance(train, FolderImages):
        digest.update(json.dumps(train.samples).encode())
    _update_with_tensor(digest, train.labels)
    return digest.hexdigest()[:16]


@torch.no_grad()
def _top1(head: nn.Linear, split: SplitFeatures, device: torch.device, batch_size: int = 4096) -> float:
    correct = 0
    for start in range(0, len(split.labels), batch_size):
        logits = head(split.features[start : start + batch_size].to(device))
        correct += int((logits.argmax(dim=1) == split.labels[start : start + batch_size].to(device)).sum())
    return 100.0 * correct / len(split.labels)


def augmented_linear_probe(
    backbone: nn.Module,
    train: ImageData,
    val: SplitFeatures,
    test: SplitFeatures,
    config: AugmentedProbeConfig,
    *,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    seed: int,
    device: torch.device,
    num_workers: int = 0,
    checkpoint: Path | None = None,
    log: Log = lambda _: None,
) -> AugmentedProbeResult:
    """Train the head on augmented ``train`` images through the frozen ``backbone``; score val and test.

    ``val`` and ``test`` are the frozen backbone's features of the un-augmented images (the
    feature cache). The backbone's parameters and buffers are left as they were. With
    ``checkpoint``, each epoch ends by saving the probe's state there, and a call that finds a
    state of the same key (:func:`checkpoint_key`) continues from it (module docstring).
    """
    backbone = backbone.to(device).eval()
    head = _head(val.features.shape[1], num_classes, seed).to(device)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    key: str | None = None
    start_epoch, loss_sum, batches = 0, 0.0, 0
    if checkpoint is not None:
        key = checkpoint_key(
            backbone, train, config, image_size=image_size, mean=mean, std=std, num_classes=num_classes, seed=seed
        )
        start_epoch, loss_sum, batches = _resume(checkpoint, key, head, optimizer, log)
    view = probe_view(config)
    augmentation = ViewPairAugmentation((view, view), image_size, mean, std, small_images=False).to(device)
    loader = TrainLoader(
        train,
        augmentation,
        min(config.batch_size, len(train)),
        seed=derive_seed(seed, _PROBE_STREAM),
        device=device,
        num_workers=num_workers,
    )
    for epoch in range(start_epoch, config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(config, epoch)
        loss_sum, batches = 0.0, 0
        for images, _, labels, _ in loader.epoch(epoch):
            with torch.no_grad():
                features = backbone(images).float()
            loss = F.cross_entropy(head(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach())
            batches += 1
        if checkpoint is not None:
            state = {
                "key": key,
                "epochs_done": epoch + 1,
                "head": head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "loss_sum": loss_sum,  # the last epoch's, for final_train_loss when no epoch is left
                "batches": batches,
            }
            atomic_torch_save(state, checkpoint)
    head.eval()
    return AugmentedProbeResult(
        val_top1=_top1(head, val, device),
        test_top1=_top1(head, test, device),
        final_train_loss=loss_sum / batches if batches else float("nan"),
    )


def _resume(
    checkpoint: Path, key: str, head: nn.Linear, optimizer: torch.optim.Optimizer, log: Log
) -> tuple[int, float, int]:
    """Load the probe's state from ``checkpoint`` when it holds one of ``key``; returns the epochs
    done and the last epoch's loss sum and batch count (0, 0.0, 0 when starting afresh)."""
    if not checkpoint.is_file():
        return 0, 0.0, 0
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if state.get("key") != key:
        log(f"{checkpoint} is a probe of other settings, weights or data (key {state.get('key')}); starting afresh")
        return 0, 0.0, 0
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])  # moves the momentum buffers to the head's device
    log(f"resuming the augmented probe from {checkpoint} after epoch {state['epochs_done']}")
    return int(state["epochs_done"]), float(state["loss_sum"]), int(state["batches"])


def evaluate_augmented(
    config: RunConfig,
    probe: AugmentedProbeConfig,
    load_backbone: Callable[[], nn.Module],
    val: SplitFeatures,
    test: SplitFeatures,
    *,
    train_samples: int | None,
    subset_seed: int,
    num_classes: int,
    device: torch.device,
    checkpoint: Path | None = None,
    log: Log = lambda _: None,
) -> AugmentedProbeResult:
    """:func:`augmented_linear_probe` on the run's labelled train images (the protocol's subset of
    them), resuming from and saving to ``checkpoint`` (the run directory's :data:`AUGMENTED_CHECKPOINT`)."""
    info = dataset_info(config.dataset)
    return augmented_linear_probe(
        load_backbone(),
        eval_split_data(config, "train", train_samples, subset_seed),
        val,
        test,
        probe,
        image_size=config.image_size,
        mean=info.mean,
        std=info.std,
        num_classes=num_classes,
        seed=config.seed,
        device=device,
        num_workers=config.num_workers,
        checkpoint=checkpoint,
        log=lambda text: log(f"[{config.method}] {text}"),
    )
