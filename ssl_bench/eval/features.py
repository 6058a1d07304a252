"""Features of a frozen encoder on the labelled splits, extracted once per run and cached.

What is evaluated (``RunConfig.eval_features``, :data:`EVAL_FEATURES`): the *representation*,
the backbone's output, always; with ``"embedding"`` also the projector's output on top of it
(SimCLR, section 4.2, probes both and finds the representation better; the studies in
experiments/studies test that). Both go through the same protocol (:func:`score_features`).

``features.pt`` (the representation's; ``features-<feature>.pt`` for another) in the run
directory is keyed by the run's identity, its epochs done and the protocol's data fields; every
later evaluation of that run reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_bench.config import EMBEDDING, EVAL_FEATURES, REPRESENTATION, RunConfig
from ssl_bench.data.datasets import balanced_subset, dataset_info, load_split
from ssl_bench.data.images import ImageData
from ssl_bench.data.loaders import eval_batches
from ssl_bench.errors import unknown_name_message
from ssl_bench.eval.probes import Choice, EvalProtocol, SplitFeatures, knn_top1, select_knn, select_linear_probe
from ssl_bench.provenance import code_hash
from ssl_bench.store.atomic import atomic_torch_save
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.monitor import mean_abs_offdiag_correlation

if TYPE_CHECKING:
    from ssl_bench.run.record import Run

FEATURES = "features.pt"
# Images per forward pass when extracting features; eval mode makes the features independent of it.
EXTRACT_BATCH_SIZE = 256

Log = Callable[[str], None]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    data: ImageData,
    *,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
) -> SplitFeatures:
    """The frozen backbone's output on every image of ``data`` (eval mode, no augmentation)."""
    backbone.eval()
    features, labels = [], []
    for images, batch_labels in eval_batches(data, batch_size, image_size, mean, std, device, num_workers=num_workers):
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        features.append(backbone(images).float().cpu())
        labels.append(batch_labels.cpu())
    return SplitFeatures(torch.cat(features), torch.cat(labels).long())


def eval_split_data(config: RunConfig, split: str, samples: int | None, seed: int) -> ImageData:
    """The images of one labelled split that a protocol evaluates on (a balanced subset if ``samples``)."""
    data = load_split(config.dataset, config.data_root, split, download=config.download)
    if samples is not None and samples < len(data):
        data = balanced_subset(data, total=samples, seed=seed)
    return data


def encoder(method: nn.Module, feature: str) -> nn.Module:
    """What produces ``feature`` from an image: the method's backbone, or backbone then projector."""
    if feature == REPRESENTATION:
        return method.backbone
    if feature == EMBEDDING:
        return nn.Sequential(method.backbone, method.projector)
    raise ValueError(unknown_name_message("feature", feature, EVAL_FEATURES))


def features_path(run_dir: RunDir, feature: str = REPRESENTATION) -> Path:
    return run_dir.path / (FEATURES if feature == REPRESENTATION else f"features-{feature}.pt")


def cached_features(
    run: Run,
    load_backbone: Callable[[], nn.Module],
    device: torch.device,
    *,
    epochs_done: int,
    log: Log,
    feature: str = REPRESENTATION,
) -> tuple[dict[str, SplitFeatures], bool]:
    """Train, validation and test features of ``run`` (under its protocol), from ``features.pt``
    when it matches, else extracted.

    Returns the three splits and whether the cache was used. The cache key is the run's identity
    hash, the code hash (ssl_bench.provenance), its epochs done and the protocol's data fields
    (and the feature, for another than the representation); extraction settings that cannot
    change the features (batch size, workers, device) are not part of it. ``load_backbone``
    gives the encoder of ``feature``.
    """
    config, protocol = run.config, run.protocol
    key = {
        "identity_hash": config.identity_hash(),
        "code_hash": code_hash(),
        "epochs_done": epochs_done,
        **protocol.features_key(),
    }
    if feature != REPRESENTATION:
        key["feature"] = feature
    path = features_path(run, feature)
    if path.is_file():
        cache = torch.load(path, map_location="cpu", weights_only=True)
        if cache["key"] == key:
            return {split: SplitFeatures(**tensors) for split, tensors in cache["splits"].items()}, True
        log(f"[{config.method}] {path} holds features of {cache['key']}; extracting them again for {key}")

    info = dataset_info(config.dataset)
    backbone = load_backbone().to(device)
    splits: dict[str, SplitFeatures] = {}
    for split, samples in (
        ("train", protocol.train_samples),
        ("val", protocol.val_samples),
        ("test", protocol.test_samples),
    ):
        data = eval_split_data(config, split, samples, protocol.subset_seed)
        splits[split] = extract_features(
            backbone,
            data,
            image_size=config.image_size,
            mean=info.mean,
            std=info.std,
            device=device,
            batch_size=EXTRACT_BATCH_SIZE,
            num_workers=config.num_workers,
        )
    atomic_torch_save({"key": key, "splits": {s: asdict(f) for s, f in splits.items()}}, path)
    return splits, False


def feature_scores(linear: Choice, knn: Choice, knn_fixed: float, splits: dict[str, SplitFeatures]) -> dict[str, Any]:
    """One feature's entry of the record's ``features``: the protocol's scores, the feature width,
    and the test features' mean |off-diagonal correlation| between dimensions."""
    return {
        "linear_top1": linear.test_top1,
        "knn_top1": knn.test_top1,
        "knn_top1_fixed": knn_fixed,
        "linear_choice": linear.to_dict(),
        "knn_choice": knn.to_dict(),
        "feature_dim": splits["train"].features.shape[1],
        "offdiag_corr": mean_abs_offdiag_correlation(splits["test"].features),
    }


def score_features(
    splits: dict[str, SplitFeatures], protocol: EvalProtocol, *, seed: int, device: torch.device
) -> dict[str, Any]:
    """The protocol on one feature's splits (:func:`feature_scores`): linear probe and kNN chosen
    on the validation split and scored on test, and the fixed-setting kNN."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    num_classes = int(max(train.labels.max(), val.labels.max(), test.labels.max())) + 1
    linear = select_linear_probe(train, val, test, protocol.linear, num_classes=num_classes, seed=seed, device=device)
    knn = select_knn(train, val, test, protocol.knn, num_classes=num_classes, device=device)
    knn_fixed = knn_top1(train, test, protocol.knn, num_classes=num_classes, device=device)
    return feature_scores(linear, knn, knn_fixed, splits)
