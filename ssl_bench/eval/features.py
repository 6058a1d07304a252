"""Features of a frozen backbone on the labelled splits, extracted once per run and cached.

``features.pt`` in the run directory is keyed by the run's identity, its epochs done and the
protocol's data fields; every later evaluation of that run reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from ssl_bench.config import RunConfig
from ssl_bench.data.datasets import balanced_subset, dataset_info, load_split
from ssl_bench.data.images import ImageData
from ssl_bench.data.loaders import eval_batches
from ssl_bench.eval.probes import EvalProtocol, SplitFeatures
from ssl_bench.run.rundir import RunDir, atomic_torch_save

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


def _eval_split(config: RunConfig, split: str, samples: int | None, seed: int) -> ImageData:
    data = load_split(config.dataset, config.data_root, split, download=config.download)
    if samples is not None and samples < len(data):
        data = balanced_subset(data, total=samples, seed=seed)
    return data


def cached_features(
    run_dir: RunDir,
    config: RunConfig,
    protocol: EvalProtocol,
    load_backbone: Callable[[], nn.Module],
    device: torch.device,
    *,
    epochs_done: int,
    log: Log,
) -> tuple[dict[str, SplitFeatures], bool]:
    """Train, validation and test features of the run, from ``features.pt`` when it matches, else extracted.

    Returns the three splits and whether the cache was used. The cache key is the run's identity
    hash, its epochs done and the protocol's data fields; extraction settings that cannot change
    the features (batch size, workers, device) are not part of it.
    """
    key = {"identity_hash": config.identity_hash(), "epochs_done": epochs_done, **protocol.features_key()}
    path = run_dir.path / FEATURES
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
        data = _eval_split(config, split, samples, protocol.subset_seed)
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
