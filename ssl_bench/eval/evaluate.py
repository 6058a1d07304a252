"""Offline evaluation of a finished run, its random-init baseline, and the run's final record.

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

The random-init baseline
------------------------
The same protocol on the untrained backbone every method of that seed starts from (the trainer
seeds torch with the run's seed, then builds the backbone first), recorded as its own run
directory: method ``random_init``, epochs 0, every method-specific field blanked
(:func:`random_init_config`), so all methods of one dataset/backbone/image size/seed share it.
It is recognised and reused like any run.

The record: ``result.json``
---------------------------
Written atomically into every run directory (the baseline's included) by :func:`evaluate_run`,
:func:`evaluate_baseline`, :func:`record_running` and :func:`record_failure`; read it with
:func:`read_result`. ``ssl-bench table`` reads exactly these fields, whose names are stable:

==========================  ============================================================
``schema_version``          1
``status``                  ``"finished"`` (pre-trained and evaluated), ``"failed"``, or
                            ``"running"`` (pre-training or evaluation not done yet)
``method``                  method name; ``"random_init"`` for the baseline
``dataset``, ``backbone``   as in the run's config
``epochs``, ``seed``        as in the run's config (epochs 0 for the baseline)
``identity_hash``           ``RunConfig.identity_hash()``: the hash in the directory name
``linear_top1``             offline linear probe, test top-1 in % (null unless finished)
``knn_top1``                weighted kNN, test top-1 in % (null unless finished)
``epochs_done``             epochs pre-trained
``final_loss``              mean loss of the last epoch (null for the baseline)
``online_probe_top1``       last epoch's online-probe train accuracy in % (see monitor.py)
``embedding_std``           last epoch's mean per-dimension std of normalised embeddings
``rankme_representation``   last epoch's RankMe of the representation
``rankme_embedding``        last epoch's RankMe of the embedding
``pretrain_seconds``        wall time in training steps over all resumptions (0 for baseline)
``samples_per_second``      pre-training throughput (null for the baseline)
``peak_memory_mb``          peak memory of pre-training: CUDA ``max_memory_allocated``, or
                            the process's peak RSS on CPU (see memory.py); null for baseline
``eval_seconds``            wall time of the evaluation that produced the numbers
``eval_peak_memory_mb``     peak memory of that evaluation, measured like ``peak_memory_mb``
``eval_details``            ``train_samples``, ``test_samples``, ``feature_dim``,
                            ``features_cached`` (reused features.pt), ``extract_seconds``,
                            ``linear_seconds``, ``knn_seconds``
``eval_protocol``           the :class:`EvalProtocol` used, as a dict
``eval_protocol_hash``      short hash of ``eval_protocol``
``device``                  the device evaluation ran on (null before evaluation)
``config``                  the resolved RunConfig, as in config.json
``error``                   the error message of a failed run or evaluation, else null
``updated``                 Unix time of the write
==========================  ============================================================

Re-running is safe: a run whose record is finished for the same identity and protocol is
skipped. A record is never replaced silently: a finished record of another protocol is kept
as ``result-<its protocol hash>.json`` before the new one is written, with a log line.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.config import RunConfig
from ssl_bench.data.datasets import balanced_subset, dataset_info, load_split
from ssl_bench.data.images import ImageData
from ssl_bench.data.loaders import eval_batches
from ssl_bench.perf.memory import peak_memory_mb, reset_peak_memory
from ssl_bench.models.backbones import build_backbone
from ssl_bench.run.rundir import RunDir, atomic_torch_save, atomic_write_json
from ssl_bench.run.assemble import build_method
from ssl_bench.train.trainer import resolve_device

SCHEMA_VERSION = 1
RESULT = "result.json"
FEATURES = "features.pt"
RANDOM_INIT = "random_init"
# Images per forward pass when extracting features; eval mode makes the features independent of it.
EXTRACT_BATCH_SIZE = 256

Log = Callable[[str], None]


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
        return {"train_samples": self.train_samples, "test_samples": self.test_samples,
                "subset_seed": self.subset_seed}


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


# --------------------------------------------------------------------------------------------
# Features


@dataclass
class SplitFeatures:
    """(N, D) float32 features and (N,) int64 labels of one split, on the CPU."""

    features: Tensor
    labels: Tensor


@torch.no_grad()
def extract_features(backbone: nn.Module, data: ImageData, *, image_size: int, mean: tuple[float, ...],
                     std: tuple[float, ...], device: torch.device, batch_size: int = 256,
                     num_workers: int = 0) -> SplitFeatures:
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


def cached_features(run_dir: RunDir, config: RunConfig, protocol: EvalProtocol, load_backbone: Callable[[], nn.Module],
                    device: torch.device, *, epochs_done: int, log: Log) -> tuple[dict[str, SplitFeatures], bool]:
    """Train and test features of the run, from ``features.pt`` when it matches, else extracted.

    Returns the two splits and whether the cache was used. The cache key is the run's identity
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
    for split, samples in (("train", protocol.train_samples), ("test", protocol.test_samples)):
        data = _eval_split(config, split, samples, protocol.subset_seed)
        splits[split] = extract_features(backbone, data, image_size=config.image_size, mean=info.mean, std=info.std,
                                         device=device, batch_size=EXTRACT_BATCH_SIZE,
                                         num_workers=config.num_workers)
    atomic_torch_save({"key": key, "splits": {s: asdict(f) for s, f in splits.items()}}, path)
    return splits, False


# --------------------------------------------------------------------------------------------
# Linear probe and kNN


def standardize(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Centre and scale every tensor with the per-dimension mean and std of ``train``."""
    mean = train.mean(dim=0)
    std = train.std(dim=0).clamp_min(1e-6)  # a constant dimension becomes 0, not NaN
    return tuple((x - mean) / std for x in (train, *others))


def linear_probe(train: SplitFeatures, test: SplitFeatures, config: LinearProbeConfig, *, num_classes: int,
                 seed: int, device: torch.device = torch.device("cpu")) -> float:
    """Train a linear classifier on ``train`` (see LinearProbeConfig); test top-1 accuracy in %."""
    train_x, test_x = train.features.to(device), test.features.to(device)
    if config.standardize:
        train_x, test_x = standardize(train_x, test_x)
    train_y, test_y = train.labels.to(device), test.labels.to(device)
    head = nn.Linear(train_x.shape[1], num_classes).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    order_rng = torch.Generator().manual_seed(seed)
    n = len(train_x)
    with torch.enable_grad():
        for epoch in range(config.epochs):
            # Cosine decay per epoch, as torch's CosineAnnealingLR(T_max=epochs) in VICReg.
            for group in optimizer.param_groups:
                group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
            order = torch.randperm(n, generator=order_rng).to(device)
            for start in range(0, n, config.batch_size):  # the last, smaller batch is kept
                index = order[start:start + config.batch_size]
                loss = F.cross_entropy(head(train_x[index]), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    with torch.no_grad():
        predictions = head(test_x).argmax(dim=1)
    return 100.0 * int((predictions == test_y).sum()) / len(test_y)


def knn_scores(train: SplitFeatures, queries: Tensor, config: KnnConfig, *, num_classes: int,
               chunk_size: int | None = None) -> Tensor:
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
        query = F.normalize(queries[start:start + chunk_size].float().to(bank.device), dim=1)
        similarity, index = (query @ bank.T).topk(k, dim=1)
        # float64: exp(1 / T) overflows float32 for T below about 0.012.
        weights = (similarity.double() / config.temperature).exp()
        votes = torch.zeros(len(query), num_classes, dtype=torch.float64, device=bank.device)
        scores.append(votes.scatter_add_(1, labels[index], weights))
    return torch.cat(scores)


def knn_top1(train: SplitFeatures, test: SplitFeatures, config: KnnConfig, *, num_classes: int,
             device: torch.device = torch.device("cpu")) -> float:
    """Weighted kNN test top-1 accuracy in %."""
    train = SplitFeatures(train.features.to(device), train.labels.to(device))
    predictions = knn_scores(train, test.features.to(device), config, num_classes=num_classes).argmax(dim=1)
    return 100.0 * int((predictions == test.labels.to(device)).sum()) / len(test.labels)


# --------------------------------------------------------------------------------------------
# The random-init baseline


def random_init_config(config: RunConfig) -> RunConfig:
    """The baseline's config: ``config``'s dataset, backbone (and its init), image size and seed.

    Built from those fields and the execution settings only (every other field empty or at its
    default), so that every method of one seed maps to one baseline, whatever fields RunConfig
    grows.
    """
    execution = {name: getattr(config, name) for name in RunConfig.EXECUTION_FIELDS}
    return RunConfig(
        method=RANDOM_INIT, dataset=config.dataset, backbone=config.backbone, image_size=config.image_size,
        seed=config.seed, zero_init_residual=config.zero_init_residual, projector=(), batch_size=0, epochs=0, warmup_epochs=0, optimizer="none",
        base_lr=0.0, weight_decay=0.0, loss={},
        recipe="random-init baseline: the untrained backbone every run of this seed starts from",
        **execution,
    )


def initial_backbone(config: RunConfig) -> nn.Module:
    """The backbone as initialised for ``config.seed``, before any training step.

    The trainer calls ``torch.manual_seed(seed)`` and then builds the method, whose backbone is
    built first; repeating the seed and the backbone build gives the same weights. The global
    RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone, _ = build_backbone(config.backbone, config.zero_init_residual)
    return backbone


def pretrained_backbone(config: RunConfig, run_dir: RunDir) -> nn.Module:
    """The backbone of the run's last checkpoint."""
    state = run_dir.load_checkpoint(map_location="cpu")
    if state["identity_hash"] != config.identity_hash():
        raise RuntimeError(f"checkpoint in {run_dir.path} belongs to another configuration")
    with torch.random.fork_rng(devices=[]):  # building draws initial weights we overwrite anyway
        method = build_method(config)
    method.load_state_dict(state["method"])
    return method.backbone


# --------------------------------------------------------------------------------------------
# Records


def read_result(run_dir: RunDir | str | Path) -> dict[str, Any] | None:
    """The run's ``result.json``, or None when it has none."""
    path = _as_run_dir(run_dir).path / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def _as_run_dir(run_dir: RunDir | str | Path) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


def _is_done(record: dict[str, Any] | None, config: RunConfig, protocol: EvalProtocol) -> bool:
    return (record is not None and record["status"] == "finished"
            and record["identity_hash"] == config.identity_hash()
            and record["eval_protocol_hash"] == protocol.identity_hash())


def _base_record(config: RunConfig, run_dir: RunDir, protocol: EvalProtocol, status: str) -> dict[str, Any]:
    """Every field of the record; what the run directory already knows is filled in."""
    run_status = run_dir.read_status()
    last = (run_dir.read_metrics() or [{}])[-1]
    is_baseline = config.method == RANDOM_INIT
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "method": config.method,
        "dataset": config.dataset,
        "backbone": config.backbone,
        "epochs": config.epochs,
        "seed": config.seed,
        "identity_hash": config.identity_hash(),
        "linear_top1": None,
        "knn_top1": None,
        "epochs_done": run_status.get("epochs_done", len(run_dir.read_metrics())),
        "final_loss": run_status.get("final_loss"),
        "online_probe_top1": last.get("online_probe_top1"),
        "embedding_std": last.get("embedding_std"),
        "rankme_representation": last.get("rankme_representation"),
        "rankme_embedding": last.get("rankme_embedding"),
        "pretrain_seconds": 0.0 if is_baseline else run_status.get("train_seconds"),
        "samples_per_second": run_status.get("samples_per_second"),
        "peak_memory_mb": run_status.get("peak_memory_mb"),
        "eval_seconds": None,
        "eval_peak_memory_mb": None,
        "eval_details": None,
        "eval_protocol": protocol.to_dict(),
        "eval_protocol_hash": protocol.identity_hash(),
        "device": None,
        "config": config.to_dict(),
        "error": None,
        "updated": time.time(),
    }


def _write_record(run_dir: RunDir, record: dict[str, Any], log: Log) -> None:
    """Write ``result.json``, first setting aside a finished record of another protocol."""
    path = run_dir.path / RESULT
    previous = read_result(run_dir)
    if (previous is not None and previous["status"] == "finished"
            and previous.get("eval_protocol_hash") != record["eval_protocol_hash"]):
        kept = run_dir.path / f"result-{previous.get('eval_protocol_hash')}.json"
        atomic_write_json(kept, previous)
        log(f"[{record['method']}] kept the record of protocol {previous.get('eval_protocol_hash')} as {kept}")
    atomic_write_json(path, record)


def record_running(config: RunConfig, results_dir: str | Path, protocol: EvalProtocol | None = None, *,
                   log: Log = print) -> None:
    """Mark the run as running (before pre-training starts), unless it is already finished."""
    protocol = protocol or protocol_for(config.dataset)
    run_dir = RunDir.for_config(results_dir, config)
    if not _is_done(read_result(run_dir), config, protocol):
        _write_record(run_dir, _base_record(config, run_dir, protocol, "running"), log)


def record_failure(config: RunConfig, results_dir: str | Path, error: str, protocol: EvalProtocol | None = None, *,
                   log: Log = print) -> dict[str, Any]:
    """Write a failed record with ``error`` (a crash the caller caught); returns the record."""
    protocol = protocol or protocol_for(config.dataset)
    run_dir = RunDir.for_config(results_dir, config)
    record = {**_base_record(config, run_dir, protocol, "failed"), "error": error}
    _write_record(run_dir, record, log)
    return record


# --------------------------------------------------------------------------------------------
# Evaluating


def _finished_record(run_dir: RunDir, config: RunConfig, protocol: EvalProtocol, log: Log) -> dict[str, Any] | None:
    """The run's record if it is already evaluated under this protocol (then it is reused)."""
    existing = read_result(run_dir)
    if not _is_done(existing, config, protocol):
        return None
    log(f"[{config.method}] already evaluated in {run_dir.path}: linear {existing['linear_top1']:.2f}%, "
        f"kNN {existing['knn_top1']:.2f}%")
    return existing


def evaluate_run(config: RunConfig, results_dir: str | Path, protocol: EvalProtocol | None = None, *,
                 log: Log = print) -> dict[str, Any]:
    """Evaluate the pre-trained run of ``config`` and write its ``result.json``; returns the record.

    Whatever state the run is in, it leaves a record: finished (evaluated now, or earlier with the
    same protocol: then nothing is recomputed), failed (pre-training failed: its error from
    status.json), or running (pre-training not finished). An evaluation error is recorded as a
    failure and raised.
    """
    protocol = protocol or protocol_for(config.dataset)
    run_dir = RunDir.for_config(results_dir, config)
    existing = _finished_record(run_dir, config, protocol, log)
    if existing is not None:
        return existing
    status = run_dir.read_status()
    if status["status"] == "failed":
        record = {**_base_record(config, run_dir, protocol, "failed"), "error": status.get("error")}
        _write_record(run_dir, record, log)
        return record
    if status["status"] != "finished":
        record = _base_record(config, run_dir, protocol, "running")
        _write_record(run_dir, record, log)
        return record
    return _evaluate(run_dir, config, protocol, lambda: pretrained_backbone(config, run_dir),
                     epochs_done=status.get("epochs_done", config.epochs), log=log)


def evaluate_baseline(config: RunConfig, results_dir: str | Path, protocol: EvalProtocol | None = None, *,
                      log: Log = print) -> dict[str, Any]:
    """Evaluate the random-init baseline of ``config`` (its own run directory); returns its record."""
    protocol = protocol or protocol_for(config.dataset)
    baseline = random_init_config(config)
    run_dir = RunDir.for_config(results_dir, baseline)
    existing = _finished_record(run_dir, baseline, protocol, log)
    if existing is not None:
        return existing
    if run_dir.read_status()["status"] != "finished":
        device = resolve_device(config.device)
        run_dir.write_config(baseline)
        run_dir.write_environment(device)
        # Nothing to train: "finished" at once, so that it reads like any finished run.
        run_dir.write_status("finished", epochs_done=0, train_seconds=0.0)
    return _evaluate(run_dir, baseline, protocol, lambda: initial_backbone(baseline), epochs_done=0, log=log)


def _evaluate(run_dir: RunDir, config: RunConfig, protocol: EvalProtocol, load_backbone: Callable[[], nn.Module], *,
              epochs_done: int, log: Log) -> dict[str, Any]:
    device = resolve_device(config.device)
    record = _base_record(config, run_dir, protocol, "running")
    _write_record(run_dir, record, log)  # a reader sees "running" while this evaluation goes on
    try:
        reset_peak_memory(device)
        start = time.perf_counter()
        splits, was_cached = cached_features(run_dir, config, protocol, load_backbone, device,
                                             epochs_done=epochs_done, log=log)
        extracted = time.perf_counter()
        train, test = splits["train"], splits["test"]
        # Classes from the labels present (ImageFolder data has no fixed class count).
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        linear = linear_probe(train, test, protocol.linear, num_classes=num_classes, seed=config.seed, device=device)
        probed = time.perf_counter()
        knn = knn_top1(train, test, protocol.knn, num_classes=num_classes, device=device)
        done = time.perf_counter()
    except Exception as error:
        record.update(status="failed", error=f"evaluation failed: {type(error).__name__}: {error}",
                      updated=time.time())
        _write_record(run_dir, record, log)
        (run_dir.path / "error.log").write_text(traceback.format_exc())
        raise
    record.update(
        status="finished", linear_top1=linear, knn_top1=knn, eval_seconds=done - start,
        eval_peak_memory_mb=peak_memory_mb(device), device=str(device), updated=time.time(),
        eval_details={
            "train_samples": len(train.labels), "test_samples": len(test.labels),
            "feature_dim": train.features.shape[1], "features_cached": was_cached,
            "extract_seconds": extracted - start, "linear_seconds": probed - extracted, "knn_seconds": done - probed,
        },
    )
    _write_record(run_dir, record, log)
    log(f"[{config.method}] linear probe {linear:.2f}%, kNN {knn:.2f}% ({len(train.labels)} train / "
        f"{len(test.labels)} test images, {done - start:.1f}s{', cached features' if was_cached else ''})")
    return record


__all__ = [
    "EvalProtocol",
    "KnnConfig",
    "LinearProbeConfig",
    "PROTOCOLS",
    "RANDOM_INIT",
    "SplitFeatures",
    "cached_features",
    "evaluate_baseline",
    "evaluate_run",
    "extract_features",
    "initial_backbone",
    "knn_scores",
    "knn_top1",
    "linear_probe",
    "protocol_for",
    "random_init_config",
    "read_result",
    "record_failure",
    "record_running",
]
