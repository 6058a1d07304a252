"""The evaluation protocols: linear probe and weighted kNN on frozen-backbone features.

What is evaluated
-----------------
The *representation* (backbone output, not the projector's embedding), backbone frozen and in
eval mode. Features of three splits are extracted once per run and cached in the run directory
(``ssl_bench.eval.features``): the labelled train split without the validation images, the
validation split (``DatasetInfo.val_per_class`` images of every class carved from the labelled
train split, the same for every run; ``ssl_bench.data.datasets.validation_indices``) and the
test split. Everything that is chosen is chosen on the validation split; the test split is only
ever scored, with the settings already chosen.

- **Linear probe** (offline): linear heads on the cached features, cross-entropy, SGD with
  momentum 0.9, batch 256, 100 epochs, cosine decay per epoch: the VICReg protocol
  (facebookresearch/vicreg ``evaluate.py``) and solo-learn's 100 CIFAR epochs. A grid of heads
  (lr x weight decay, :class:`LinearProbeConfig`) is trained in one pass over the same batches,
  as DINOv2 trains its grid of linear heads; the head with the best validation top-1 is chosen
  and its test top-1 reported, with the chosen values. Two deliberate differences from VICReg,
  both the usual price of probing cached features: no augmentation (VICReg crops and flips each
  epoch), and features standardised with the train split's per-dimension mean and std (like the
  BatchNorm without affine parameters of MAE's probe), so that one grid serves every backbone,
  a random-init one included. Heads start at zero (the problem is convex); the batch order is
  drawn from the run's seed.
- **Weighted kNN** (lightly / InstDisc, Wu et al. 2018): cosine similarity to every train
  feature, the k most similar vote for their class with weight exp(similarity / T). k and T are
  chosen on the validation split from a grid (:class:`KnnConfig`); the test top-1 at k = 200,
  T = 0.1 is reported as well, for comparison with lightly's tables.

The grids are meant to bracket the best setting. A choice whose best validation top-1 lies at an
open end of an axis (not a natural bound such as weight decay 0 or k = 1: :func:`open_edges`) is
named in the choice's ``on_edge``: the optimum may lie beyond the grid.

Each dataset's protocol is in :data:`PROTOCOLS` (:func:`protocol_for`). All use the settings
above; the CPU demo (Fashion-MNIST) differs only in probing a class-balanced 10k subset of the
train images (all 5k validation and 10k test images are used), which keeps feature extraction
to seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# --------------------------------------------------------------------------------------------
# Protocols


@dataclass(frozen=True)
class LinearProbeConfig:
    """Offline linear probe on cached features (VICReg's protocol; see the module docstring).

    ``lr`` and ``weight_decay`` are the settings of a single head (:func:`linear_probe`); the
    grids are what :func:`select_linear_probe` chooses from on the validation split.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1  # on standardised features; cosine-decayed per epoch to 0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    standardize: bool = True
    # Up to lr 3 and weight decay 1e-2, so that the choice is interior in the common case: with
    # lr up to 1 and weight decay up to 1e-3 the random-init baseline chose weight decay 1e-3 every
    # time and trained backbones chose an upper end about one time in seven. On the CPU demo's
    # features the best weight decay lies at 1e-4 to 3e-3, hence the half steps there; 1e-6 and
    # 1e-5 are not tried: they scored within half a point of 0 (a natural end: open_edges) at
    # every lr of the grid, and never best. 36 heads, trained in one pass.
    lr_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    weight_decay_grid: tuple[float, ...] = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


@dataclass(frozen=True)
class KnnConfig:
    """Weighted kNN: k nearest by cosine similarity, votes weighted by exp(similarity / temperature).

    ``k`` and ``temperature`` are the fixed, reported-for-comparison setting (lightly's); the
    grids are what :func:`select_knn` chooses from on the validation split.
    """

    k: int = 200
    temperature: float = 0.1
    # Wide enough that the choice is interior in the common case: with k 10-200 and T 0.04-0.2
    # the smallest k was chosen nearly every time, and mostly the smallest T. On the CPU demo's
    # trained features the best validation top-1 lies near k 10-20, T 0.003-0.005 (sharply weighted
    # votes); lightly's and DINO's T (0.07-0.1) stay inside. The random-init network's cosine
    # similarities crowd near 1, its neighbours' similarities a few thousandths apart, and it chose
    # T 0.002 whenever the grid ended there: the grid goes on down to 0.0002. As T falls every k
    # tends to the single nearest neighbour's vote (k = 1, in the grid), so the far end of T is
    # already covered in the limit. The neighbours are found once at the largest k, so each
    # further setting costs only a vote over them.
    k_grid: tuple[int, ...] = (1, 3, 5, 10, 20, 50, 100, 200)
    temperature_grid: tuple[float, ...] = (
        0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.2, 0.5, 1.0,
    )  # fmt: skip

    def __post_init__(self) -> None:
        lowest = min((self.temperature, *self.temperature_grid))
        if not lowest > 0:
            raise ValueError(f"the kNN temperature must be positive, got {lowest:g}")


@dataclass(frozen=True)
class AugmentedProbeConfig:
    """Offline linear probe on the frozen backbone with augmented inputs (``ssl_bench.eval.augmented``).

    The protocol of the published ImageNet numbers: each epoch every train image is cropped
    (RandomResizedCrop, ``crop_scale``) and flipped afresh, passed through the frozen backbone in
    eval mode, and a linear head (init N(0, 0.01), bias 0) learns by SGD with momentum;
    ``schedule`` "cosine" (per epoch, to 0) or "step" (x ``gamma`` at each of ``milestones``).
    The head after the last epoch scores the validation and test images (no augmentation);
    nothing is chosen.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 1e-6
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    source: str = "facebookresearch/vicreg evaluate.py"

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")


# facebookresearch/vicreg evaluate.py (also Barlow Twins' evaluate.py): 100 epochs, batch 256, head
# lr 0.3, weight decay 1e-6, cosine over epochs; RandomResizedCrop(224) + flip.
VICREG_LINEAR = AugmentedProbeConfig()
# solo-learn scripts/linear/imagenet-100/*.yaml: SGD lr 0.3 (no weight decay), batch 256, 100
# epochs, the lr divided by 10 at epochs 60 and 80.
SOLO_LEARN_LINEAR = AugmentedProbeConfig(
    weight_decay=0.0, schedule="step", milestones=(60, 80), source="vturrisi/solo-learn scripts/linear/imagenet-100"
)


@dataclass(frozen=True)
class EvalProtocol:
    """How a run is evaluated. Part of the record; a different protocol means a new evaluation."""

    name: str = "standard"
    # Class-balanced subsets of the labelled train / validation / test splits (None = the whole
    # split), drawn with subset_seed (not the run's seed: every run is scored on the same images).
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None
    subset_seed: int = 0
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    # The augmented offline probe (``linear_aug``), where the published numbers of the setting
    # were measured with it; None: not run (it passes the backbone over the train split each epoch).
    augmented: AugmentedProbeConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """As JSON holds it (grids as lists), so that a record read back compares equal.

        A protocol without the augmented probe has no ``augmented`` key: its identity is the one
        it had before that part of a protocol existed.
        """
        fields = asdict(self)
        if fields["augmented"] is None:
            del fields["augmented"]
        return json.loads(json.dumps(fields))

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]

    def features_key(self) -> dict[str, Any]:
        """The fields that decide which features are extracted (the cache key's protocol part)."""
        return {
            "train_samples": self.train_samples,
            "val_samples": self.val_samples,
            "test_samples": self.test_samples,
            "subset_seed": self.subset_seed,
        }


STANDARD_PROTOCOL = EvalProtocol()

# Per dataset; absent datasets use STANDARD_PROTOCOL (whole splits, the settings above).
PROTOCOLS: dict[str, EvalProtocol] = {
    # The CPU demo: a balanced 10k of the 60k train images for the probe and kNN (extraction
    # stays at seconds per run on 2 cores); the full 10k test split.
    "fashion-mnist": EvalProtocol(name="fashion-mnist cpu demo", train_samples=10_000),
    # The published ImageNet rows (VICReg, Barlow Twins, lightly) are augmented offline probes;
    # so are solo-learn's ImageNet-100 ones. (Its CIFAR rows are online-probe numbers, which
    # every run records: ssl_bench.eval.online.)
    "imagenet": EvalProtocol(name="imagenet", augmented=VICREG_LINEAR),
    "imagenet100": EvalProtocol(name="imagenet100", augmented=SOLO_LEARN_LINEAR),
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


def train_linear_heads(
    train: SplitFeatures,
    config: LinearProbeConfig,
    settings: list[tuple[float, float]],
    *,
    num_classes: int,
    seed: int,
    device: torch.device = torch.device("cpu"),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train one linear head per (lr, weight decay) in ``settings`` on ``train``, all in one pass.

    Every head sees the same batches in the same order (drawn from ``seed``) and takes torch's
    SGD step (g + wd w into the momentum buffer, lr x buffer off the weights; weights and biases
    alike) with its own lr, cosine-decayed per epoch as CosineAnnealingLR(T_max=epochs) in
    VICReg. Returns the weights (G, D, C), biases (G, C), and the train mean and std that
    standardise the features (zeros and ones without ``config.standardize``).
    """
    x = train.features.to(device)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)  # a constant dimension becomes 0, not NaN
    if not config.standardize:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    x = (x - mean) / std
    y = train.labels.to(device)
    heads, dim = len(settings), x.shape[1]
    weight = torch.zeros(heads, dim, num_classes, device=device)
    bias = torch.zeros(heads, num_classes, device=device)
    weight_buf, bias_buf = torch.zeros_like(weight), torch.zeros_like(bias)
    base_lr = torch.tensor([lr for lr, _ in settings], device=device)
    decay = torch.tensor([wd for _, wd in settings], device=device)
    order_rng = torch.Generator().manual_seed(seed)
    n = len(x)
    for epoch in range(config.epochs):
        lr = base_lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
        order = torch.randperm(n, generator=order_rng).to(device)
        for start in range(0, n, config.batch_size):  # the last, smaller batch is kept
            index = order[start : start + config.batch_size]
            batch, target = x[index], y[index]
            logits = torch.einsum("nd,gdc->gnc", batch, weight) + bias[:, None, :]
            # d(mean cross-entropy)/d(logits) per head: (softmax - onehot) / batch size.
            grad_logits = logits.softmax(dim=2)
            grad_logits[:, torch.arange(len(target), device=device), target] -= 1.0
            grad_logits /= len(target)
            grad_weight = torch.einsum("nd,gnc->gdc", batch, grad_logits) + decay[:, None, None] * weight
            grad_bias = grad_logits.sum(dim=1) + decay[:, None] * bias
            weight_buf.mul_(config.momentum).add_(grad_weight)
            bias_buf.mul_(config.momentum).add_(grad_bias)
            weight -= lr[:, None, None] * weight_buf
            bias -= lr[:, None] * bias_buf
    return weight, bias, mean, std


def _head_top1(weight: Tensor, bias: Tensor, mean: Tensor, std: Tensor, split: SplitFeatures) -> Tensor:
    """(G,) top-1 accuracy in % of every head on ``split``."""
    x = (split.features.to(weight.device) - mean) / std
    predictions = (torch.einsum("nd,gdc->gnc", x, weight) + bias[:, None, :]).argmax(dim=2)
    return 100.0 * (predictions == split.labels.to(weight.device)).double().mean(dim=1)


def linear_probe(
    train: SplitFeatures,
    test: SplitFeatures,
    config: LinearProbeConfig,
    *,
    num_classes: int,
    seed: int,
    device: torch.device = torch.device("cpu"),
) -> float:
    """One head with ``config.lr`` and ``config.weight_decay`` trained on ``train``; its top-1 in % on ``test``."""
    heads = train_linear_heads(
        train, config, [(config.lr, config.weight_decay)], num_classes=num_classes, seed=seed, device=device
    )
    return float(_head_top1(*heads, test)[0])


@dataclass(frozen=True)
class Choice:
    """A setting chosen on the validation split, and what it scored there and on test.

    ``on_edge``: the axes of the grid whose best validation top-1 lies at an open end of the
    axis (:func:`open_edges`): there the optimum may lie beyond the grid, and the reported number
    may understate what the representation gives.
    """

    setting: dict[str, float]
    val_top1: float
    test_top1: float
    grid: list[dict[str, float]]  # every setting tried, with its validation top-1
    on_edge: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _best(scores: list[float]) -> int:
    """The index of the best score; the first of equals, so that the grid's order breaks ties."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


# Grid ends that are natural bounds, not open ones: nothing lies beyond them, so a choice there
# says nothing about the grid being too narrow. Weight decay 0 is no regularisation (a negative
# decay is not a setting); k = 1 is the single nearest neighbour (no fewer can vote). The upper
# end of k is natural where it reaches the train-set size, every train feature voting
# (select_knn passes it). Learning rate and temperature have no natural end: a smaller or larger
# value is always a distinct setting.
LINEAR_NATURAL_LOW: dict[str, float] = {"weight_decay": 0.0}
KNN_NATURAL_LOW: dict[str, float] = {"k": 1}


def open_edges(
    grid: list[dict[str, float]],
    axes: Sequence[str],
    *,
    natural_low: Mapping[str, float] = {},
    natural_high: Mapping[str, float] = {},
) -> list[str]:
    """The ``axes`` (of more than one value) whose best validation top-1 is reached only at one
    open end: the smallest value, above its ``natural_low`` if any, or the largest, below its
    ``natural_high``.

    Only where *every* setting of the best score sits at that end: where an interior value ties
    it (temperature does not matter at k = 1, for one), the grid brackets the optimum.
    """
    top = max(point["val_top1"] for point in grid)
    best = [point for point in grid if point["val_top1"] == top]
    edges = []
    for axis in axes:
        values = sorted({point[axis] for point in grid})
        if len(values) < 2:
            continue
        low, high = values[0], values[-1]
        at_low = all(point[axis] == low for point in best) and low > natural_low.get(axis, -math.inf)
        at_high = all(point[axis] == high for point in best) and high < natural_high.get(axis, math.inf)
        if at_low or at_high:
            edges.append(axis)
    return edges


def select_linear_probe(
    train: SplitFeatures,
    val: SplitFeatures,
    test: SplitFeatures,
    config: LinearProbeConfig,
    *,
    num_classes: int,
    seed: int,
    device: torch.device = torch.device("cpu"),
) -> Choice:
    """The grid's heads trained on ``train``, the best on ``val`` chosen, its ``test`` top-1 reported.

    Only the chosen head ever sees the test split, after the choice: test labels cannot change it.
    """
    settings = [(lr, wd) for lr in config.lr_grid for wd in config.weight_decay_grid]
    weight, bias, mean, std = train_linear_heads(
        train, config, settings, num_classes=num_classes, seed=seed, device=device
    )
    val_top1 = _head_top1(weight, bias, mean, std, val).tolist()
    best = _best(val_top1)
    test_top1 = float(_head_top1(weight[best : best + 1], bias[best : best + 1], mean, std, test)[0])
    grid = [{"lr": lr, "weight_decay": wd, "val_top1": top1} for (lr, wd), top1 in zip(settings, val_top1)]
    lr, wd = settings[best]
    edges = open_edges(grid, ("lr", "weight_decay"), natural_low=LINEAR_NATURAL_LOW)
    return Choice({"lr": lr, "weight_decay": wd}, val_top1[best], test_top1, grid, edges)


def _neighbours(bank: Tensor, queries: Tensor, k: int, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """Cosine similarities and indices of each query's k nearest rows of the normalised ``bank``.

    Queries go in chunks whose similarity matrix holds about 2**26 floats (256 MB) by default,
    so an ImageNet-sized bank fits next to it on one GPU.
    """
    chunk_size = chunk_size or max(1, 2**26 // len(bank))
    similarities, indices = [], []
    for start in range(0, len(queries), chunk_size):
        query = F.normalize(queries[start : start + chunk_size].float().to(bank.device), dim=1)
        similarity, index = (query @ bank.T).topk(k, dim=1)
        similarities.append(similarity)
        indices.append(index)
    return torch.cat(similarities), torch.cat(indices)


def _votes(similarity: Tensor, index: Tensor, labels: Tensor, temperature: float, num_classes: int) -> Tensor:
    """Each query's class votes exp((similarity - its highest similarity) / T), float64.

    The shift divides all of a query's votes by one positive factor, exp(highest / T), so the
    class order is that of exp(similarity / T) while the largest weight is exactly 1: nothing
    overflows at any T > 0 (exp(1 / T) alone overflows float64 below T = 0.0014).
    """
    similarity = similarity.double()
    weights = ((similarity - similarity.max(dim=1, keepdim=True).values) / temperature).exp()
    votes = torch.zeros(len(similarity), num_classes, dtype=torch.float64, device=similarity.device)
    return votes.scatter_add_(1, labels[index], weights)


def knn_scores(
    train: SplitFeatures, queries: Tensor, config: KnnConfig, *, num_classes: int, chunk_size: int | None = None
) -> Tensor:
    """(Q, num_classes) float64 votes: sum of exp(cos / T) over each query's k nearest train features,
    each query's row divided by exp(its highest cos / T) (:func:`_votes`), which keeps the order."""
    bank = F.normalize(train.features.float(), dim=1)
    similarity, index = _neighbours(bank, queries, min(config.k, len(bank)), chunk_size)
    return _votes(similarity, index, train.labels.to(bank.device), config.temperature, num_classes)


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


def select_knn(
    train: SplitFeatures,
    val: SplitFeatures,
    test: SplitFeatures,
    config: KnnConfig,
    *,
    num_classes: int,
    device: torch.device = torch.device("cpu"),
) -> Choice:
    """The (k, T) of the grid with the best ``val`` top-1 (train features as the bank); its ``test`` top-1."""
    bank = F.normalize(train.features.float().to(device), dim=1)
    labels, val_labels = train.labels.to(device), val.labels.to(device)
    # The neighbours once, at the largest k; each k of the grid takes its first k of them.
    similarity, index = _neighbours(bank, val.features, min(max(config.k_grid), len(bank)), None)
    settings = [(k, t) for k in config.k_grid for t in config.temperature_grid]
    val_top1 = []
    for k, temperature in settings:
        votes = _votes(similarity[:, :k], index[:, :k], labels, temperature, num_classes)
        val_top1.append(100.0 * int((votes.argmax(dim=1) == val_labels).sum()) / len(val_labels))
    best = _best(val_top1)
    k, temperature = settings[best]
    test_top1 = knn_top1(train, test, KnnConfig(k, temperature), num_classes=num_classes, device=device)
    grid = [{"k": k, "temperature": t, "val_top1": top1} for (k, t), top1 in zip(settings, val_top1)]
    edges = open_edges(grid, ("k", "temperature"), natural_low=KNN_NATURAL_LOW, natural_high={"k": len(bank)})
    return Choice({"k": k, "temperature": temperature}, val_top1[best], test_top1, grid, edges)
