"""Folder pipeline: ssl-bench's ImageNet-folder loader against torchvision's ImageFolder pipeline.

samples/s (source images, each giving two augmented, normalised views) of the real
:class:`~ssl_bench.data.loaders.TrainLoader` on a folder of synthetic ImageNet-like JPEGs
(:func:`~ssl_bench.perf.synthetic.synthetic_jpeg_folder`, written by the benchmark itself), against
the classic pipeline with the same recipe: ``torchvision.datasets.ImageFolder`` with two
``torchvision.transforms`` views per image (PIL decode at full size, RandomResizedCrop, flip,
jitter, grayscale, blur, solarize, ToTensor, Normalize), in a DataLoader with the same number of
workers and the same batch. On CUDA the loader is also measured with nvJPEG decoding on the GPU.

Shared machines make single timings unreliable, so the pipelines are measured in alternating
rounds (ABAB..., the order flipped every round) and the medians are reported, with the median of
the per-round ratios as the speed-up. Each round starts a fresh DataLoader (as every epoch does)
and times the batches after the first ``2 x workers`` (their start-up and prefetch queue).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ssl_bench.perf.settings import BenchSettings
from ssl_bench.perf.synthetic import synthetic_jpeg_folder

# The ImageNet recipes' view size.
FOLDER_IMAGE_SIZE = 224
# Batch caps: on CPU small enough that a round takes seconds with the classic pipeline; on
# CUDA (many workers) small enough that the folder stays a few thousand files.
CPU_FOLDER_BATCH = 32
CUDA_FOLDER_BATCH = 128


@dataclass
class FolderResult:
    """Throughput of one folder pipeline over the rounds; ``speedup``: vs the classic pipeline."""

    pipeline: str  # "ssl-bench" | "ssl-bench gpu-decode" | "classic"
    recipe: str
    image_size: int
    batch_size: int
    workers: int
    samples_per_s: float | None = None  # median over rounds
    round_samples_per_s: list[float] = field(default_factory=list)
    speedup: float | None = None  # median over rounds of this / classic in the same round
    images: int = 0
    description: str = ""
    error: str | None = None


class _ClassicTwoViews:
    """ImageFolder's ``transform``: the two torchvision.transforms views of one PIL image."""

    def __init__(self, view_a: Callable[[Any], torch.Tensor], view_b: Callable[[Any], torch.Tensor]) -> None:
        self.view_a = view_a
        self.view_b = view_b

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view_a(image), self.view_b(image)


def folder_batch_size(settings: BenchSettings) -> int:
    cap = CUDA_FOLDER_BATCH if settings.device.startswith("cuda") else CPU_FOLDER_BATCH
    return min(settings.batch_size, cap)


def bench_folder_pipeline(kind: str, settings: BenchSettings, log: Callable[[str], None]) -> list[FolderResult]:
    """The loader (and on CUDA its GPU-decode variant) against the classic pipeline, in rounds."""
    from torchvision.datasets import ImageFolder

    from ssl_bench.data.augment import ViewPairAugmentation
    from ssl_bench.data.datasets import dataset_info, load_split
    from ssl_bench.data.loaders import TrainLoader
    from ssl_bench.perf.pipeline import torchvision_view

    device = torch.device(settings.device)
    size = 64 if settings.quick else FOLDER_IMAGE_SIZE
    batch = folder_batch_size(settings)
    workers = settings.workers
    # Untimed: the workers' start-up and the filling of their prefetch queue (2 batches each);
    # timed: a window long enough that batches prefetched before it cannot carry it.
    warmup = 2 * max(1, workers)
    window = 2 if settings.quick else max(8, 2 * workers)
    rounds = max(2, settings.repeats) if not settings.quick else 1
    count = batch * (warmup + window)
    info = dataset_info("imagenet")
    augmentation = ViewPairAugmentation(kind, size, info.mean, info.std).to(device)
    common = dict(recipe=kind, image_size=size, batch_size=batch, workers=workers, images=count)
    results = {
        "ssl-bench": FolderResult(
            "ssl-bench", **common, description="TrainLoader: reduced JPEG decode + crops in workers, batched views"
        ),
        "classic": FolderResult(
            "classic", **common, description="ImageFolder + torchvision.transforms, two views per image"
        ),
    }
    if device.type == "cuda":
        results["ssl-bench gpu-decode"] = FolderResult(
            "ssl-bench gpu-decode", **common, description="TrainLoader: nvJPEG decode + crops on the GPU"
        )

    with tempfile.TemporaryDirectory(prefix="ssl-bench-folder-") as tmp:
        started = time.monotonic()
        root = synthetic_jpeg_folder(Path(tmp), count)
        log(f"  wrote {count} ImageNet-like JPEGs in {time.monotonic() - started:.1f} s")
        data = load_split("imagefolder", root, "train", hold_out_val=False)
        config_a, config_b = augmentation.configs
        classic = ImageFolder(
            str(root / "train"),
            transform=_ClassicTwoViews(
                torchvision_view(config_a, size, info.mean, info.std),
                torchvision_view(config_b, size, info.mean, info.std),
            ),
        )

        def ours(on_device: bool) -> Callable[[int], Generator[Any, None, None]]:
            loader = TrainLoader(
                data,
                augmentation,
                batch,
                seed=0,
                device=device,
                num_workers=workers,
                channels_last=device.type == "cuda",
                decode_on_device=on_device,
            )
            return loader.epoch

        def classic_epoch(epoch: int) -> Generator[Any, None, None]:
            loader = DataLoader(
                classic,
                batch_size=batch,
                shuffle=True,
                drop_last=True,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(epoch),
            )
            for (view_a, view_b), labels in loader:
                # What a training loop does next: the batch to the device.
                yield view_a.to(device, non_blocking=True), view_b.to(device, non_blocking=True), labels

        epochs: dict[str, Callable[[int], Generator[Any, None, None]]] = {
            "ssl-bench": ours(False),
            "classic": classic_epoch,
        }
        if "ssl-bench gpu-decode" in results:
            epochs["ssl-bench gpu-decode"] = ours(True)
        order = list(epochs)
        for round_index in range(rounds):
            for name in order if round_index % 2 == 0 else order[::-1]:
                result = results[name]
                if result.error is not None:
                    continue
                try:
                    rate = _samples_per_s(epochs[name](round_index), batch, warmup, window, device)
                except (RuntimeError, OSError) as error:
                    result.error = f"{type(error).__name__}: {error}"
                    log(f"  {name}: {result.error}")
                    continue
                result.round_samples_per_s.append(rate)
            log(
                f"  round {round_index + 1}/{rounds}: "
                + ", ".join(
                    f"{n} {results[n].round_samples_per_s[-1]:.0f}/s" for n in order if results[n].error is None
                )
            )
    base = results["classic"]
    for result in results.values():
        if result.round_samples_per_s:
            result.samples_per_s = statistics.median(result.round_samples_per_s)
        if result is not base and result.round_samples_per_s and base.round_samples_per_s:
            pairs = zip(result.round_samples_per_s, base.round_samples_per_s)
            result.speedup = statistics.median(ours_rate / classic_rate for ours_rate, classic_rate in pairs)
    return list(results.values())


def _samples_per_s(
    batches: Generator[Any, None, None], batch: int, warmup: int, window: int, device: torch.device
) -> float:
    """Samples/s over ``window`` batches after ``warmup`` untimed ones (the workers' start-up)."""
    for _ in range(warmup):
        next(batches)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(window):
        next(batches)
    _synchronize(device)
    elapsed = time.perf_counter() - start
    batches.close()  # shuts the workers down now, not at garbage collection
    return batch * window / elapsed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
