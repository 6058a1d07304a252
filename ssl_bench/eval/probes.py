"""The evaluation protocols: linear probe and weighted kNN on frozen-backbone features.

What is evaluated
-----------------
The *representation* (backbone output, not the projector's embedding), backbone frozen and in
eval mode. Features of the labelled train split and of the test split are extracted once per
run and cached in the run directory (``features.pt``, keyed by the run's identity, its epochs
and the protocol's data fields); every later evaluation of that run reuses them. On them:

- **Linear probe** (offline): a linear layer on the cached features, cross-entropy, SGD with
  momentum 0.9, batch 256, weight decay 1e-6, 100 epochs, cosine decay per epoch: the VICReg
  protocol (facebookresearch/vicreg ``evaluate.py``) and solo-learn's 100 CIFAR epochs. Two deliberate differences,
  both the usual price of probing cached features: no augmentation (VICReg crops and flips each
  epoch), and features standardised with the train split's per-dimension mean and std (like the
  BatchNorm without affine parameters of MAE's probe), so that one lr (0.1) works for every
  backbone, including a random-init one whose features have an arbitrary scale (VICReg uses
  0.3 on raw ResNet features). The head starts at zero (the problem is convex; no RNG needed);
  the batch order is drawn from the run's seed. Reported: test top-1 after the last epoch, no
  model selection on the test split.
- **Weighted kNN** (lightly / InstDisc, Wu et al. 2018): cosine similarity to every train
  feature, the k = 200 most similar vote for their class with weight exp(similarity / T),
  T = 0.1; the class with the largest summed weight wins.

Each dataset's protocol is in :data:`PROTOCOLS` (:func:`protocol_for`). All use the settings
above; the CPU demo (Fashion-MNIST) differs only in probing a class-balanced 10k subset of the
60k train images (all 10k test images are used), which keeps feature extraction to seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------------------------
# Protocols


@dataclass(frozen=True)
class LinearProbeConfig:
    """Offline linear probe on cached features (VICReg's protocol; see the module docstring)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1  # on standardised features; cosine-decayed per epoch to 0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    standardize: bool = True


@dataclass(frozen=True)
class KnnConfig:
    """Weighted kNN: k nearest by cosine similarity, votes weighted by exp(similarity / temperature)."""

    k: int = 200
    temperature: float = 0.1


@dataclass(frozen=True)
class EvalProtocol:
    """How a run is evaluated. Part of the record; a different protocol means a new evaluation."""

    name: str = "standard"
    # Class-balanced subsets of the labelled train / test splits (None = the whole split),
    # drawn with subset_seed (not the run's seed: every run is scored on the same images).
    train_samples: int | None = None
    test_samples: int | None = None
    subset_seed: int = 0
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]

    def features_key(self) -> dict[str, Any]:
        """The fields that decide which features are extracted (the cache key's protocol part)."""
        return {"train_samples": self.train_samples, "test_samples": self.test_samples, "subset_seed": self.subset_seed}


STANDARD_PROTOCOL = EvalProtocol()

# Per dataset; absent datasets use STANDARD_PROTOCOL (whole splits, the settings above).
PROTOCOLS: dict[str, EvalProtocol] = {
    # The CPU demo: a balanced 10k of the 60k train images for the probe and kNN (extraction
    # stays at seconds per run on 2 cores); the full 10k test split.
    "fashion-mnist": EvalProtocol(name="fashion-mnist cpu demo", train_samples=10_000),
}


def protocol_for(dataset: str) -> EvalProtocol:
    """The evaluation protocol of ``dataset``."""
    return PROTOCOLS.get(dataset, STANDARD_PROTOCOL)


@dataclass
class SplitFeatures:
    """(N, D) float32 features and (N,) int64 labels of one split, on the CPU."""

    features: Tensor
    labels: Tensor


# --------------------------------------------------------------------------------------------
# Linear probe and kNN


def standardize(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Centre and scale every tensor with the per-dimension mean and std of ``train``."""
    mean = train.mean(dim=0)
    std = train.std(dim=0).clamp_min(1e-6)  # a constant dimension becomes 0, not NaN
    return tuple((x - mean) / std for x in (train, *others))


def linear_probe(
    train: SplitFeatures,
    test: SplitFeatures,
    config: LinearProbeConfig,
    *,
    num_classes: int,
    seed: int,
    device: torch.device = torch.device("cpu"),
) -> float:
    """Train a linear classifier on ``train`` (see LinearProbeConfig); test top-1 accuracy in %."""
    train_x, test_x = train.features.to(device), test.features.to(device)
    if config.standardize:
        train_x, test_x = standardize(train_x, test_x)
    train_y, test_y = train.labels.to(device), test.labels.to(device)
    head = nn.Linear(train_x.shape[1], num_classes).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    order_rng = torch.Generator().manual_seed(seed)
    n = len(train_x)
    with torch.enable_grad():
        for epoch in range(config.epochs):
            # Cosine decay per epoch, as torch's CosineAnnealingLR(T_max=epochs) in VICReg.
            for group in optimizer.param_groups:
                group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
            order = torch.randperm(n, generator=order_rng).to(device)
            for start in range(0, n, config.batch_size):  # the last, smaller batch is kept
                index = order[start : start + config.batch_size]
                loss = F.cross_entropy(head(train_x[index]), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    with torch.no_grad():
        predictions = head(test_x).argmax(dim=1)
    return 100.0 * int((predictions == test_y).sum()) / len(test_y)


def knn_scores(
    train: SplitFeatures, queries: Tensor, config: KnnConfig, *, num_classes: int, chunk_size: int | None = None
) -> Tensor:
    """(Q, num_classes) float64 votes: sum of exp(cos / T) over each query's k nearest train features.

    Queries go in chunks whose similarity matrix holds about 2**26 floats (256 MB) by default,
    so an ImageNet-sized bank fits next to it on one GPU.
    """
    bank = F.normalize(train.features.float(), dim=1)
    labels = train.labels.to(bank.device)
    k = min(config.k, len(bank))
    chunk_size = chunk_size or max(1, 2**26 // len(bank))
    scores = []
    for start in range(0, len(queries), chunk_size):
        query = F.normalize(queries[start : start + chunk_size].float().to(bank.device), dim=1)
        similarity, index = (query @ bank.T).topk(k, dim=1)
        # float64: exp(1 / T) overflows float32 for T below about 0.012.
        weights = (similarity.double() / config.temperature).exp()
        votes = torch.zeros(len(query), num_classes, dtype=torch.float64, device=bank.device)
        scores.append(votes.scatter_add_(1, labels[index], weights))
    return torch.cat(scores)


def knn_top1(
    train: SplitFeatures,
    test: SplitFeatures,
    config: KnnConfig,
    *,
    num_classes: int,
    device: torch.device = torch.device("cpu"),
) -> float:
    """Weighted kNN test top-1 accuracy in %."""
    train = SplitFeatures(train.features.to(device), train.labels.to(device))
    predictions = knn_scores(train, test.features.to(device), config, num_classes=num_classes).argmax(dim=1)
    return 100.0 * int((predictions == test.labels.to(device)).sum()) / len(test.labels)
