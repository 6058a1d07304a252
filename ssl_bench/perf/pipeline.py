"""Data pipeline: the ssl-bench loader against per-sample PIL + torchvision.transforms.

samples/s of the real :class:`~ssl_bench.data.loaders.TrainLoader` (index, transfer, two
augmented views) on synthetic uint8 images, against the classic per-sample pipeline with the
same recipe: PIL + ``torchvision.transforms`` in a DataLoader with worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ssl_bench.perf.settings import BenchSettings
from ssl_bench.perf.synthetic import recipe_dataset, source_side, synthetic_images
from ssl_bench.perf.timing import DeviceTimer, median

if TYPE_CHECKING:
    from ssl_bench.data.augment import ViewConfig


def torchvision_view(
    config: ViewConfig, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any], Tensor]:
    """One view of ``config`` (a ViewConfig) as the classic per-sample torchvision.transforms."""
    from torchvision import transforms as T

    from ssl_bench.data.augment import BLUR_SIGMA, CROP_RATIO, blur_kernel_size

    ops: list[Any] = [T.RandomResizedCrop(image_size, scale=config.crop_scale, ratio=CROP_RATIO, antialias=True)]
    if config.flip_p > 0:
        ops.append(T.RandomHorizontalFlip(config.flip_p))
    if config.jitter_p > 0 and any(config.jitter):
        ops.append(T.RandomApply([T.ColorJitter(*config.jitter)], p=config.jitter_p))
    if config.grayscale_p > 0:
        ops.append(T.RandomGrayscale(config.grayscale_p))
    if config.blur_p > 0:
        kernel = blur_kernel_size(image_size)
        ops.append(T.RandomApply([T.GaussianBlur(kernel, sigma=BLUR_SIGMA)], p=config.blur_p))
    if config.solarize_p > 0:
        ops.append(T.RandomSolarize(128, p=config.solarize_p))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class PerSampleTwoViews(Dataset):
    """uint8 tensor images -> PIL image -> two torchvision.transforms views (per sample)."""

    def __init__(self, images: Tensor, view_a: Callable[[Any], Tensor], view_b: Callable[[Any], Tensor]) -> None:
        self.images = images
        self.view_a = view_a
        self.view_b = view_b

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        # As torchvision's CIFAR dataset does: HWC uint8 array -> PIL, then the transforms.
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        return self.view_a(image), self.view_b(image)


@dataclass
class PipelineResult:
    """Throughput of one data pipeline: source images per second, each giving two views."""

    pipeline: str  # "ssl-bench" | "per-sample"
    recipe: str  # the augmentation kind (a name in ssl_bench.data.augment.KINDS)
    image_size: int
    batch_size: int
    workers: int  # DataLoader worker processes (0 for the ssl-bench loader on tensor data)
    samples_per_s: float | None = None
    batch_ms: float | None = None
    repeats: int = 0
    description: str = ""
    error: str | None = None


def augmentation_kinds(methods: Sequence[str]) -> list[str]:
    """The distinct named recipe augmentations (``augment.KINDS``) of ``methods``, in order.

    A method whose augmentation is its own ViewConfig pair has no name here and is left out.
    """
    from ssl_bench.method import get_method

    kinds: list[str] = []
    for method in methods:
        kind = get_method(method).augmentation
        if isinstance(kind, str) and kind not in kinds:
            kinds.append(kind)
    return kinds


def bench_ssl_pipeline(kind: str, image_size: int, settings: BenchSettings) -> PipelineResult:
    """The real TrainLoader on synthetic TensorImages: index, transfer, two augmented views."""
    from ssl_bench.data.augment import ViewPairAugmentation
    from ssl_bench.data.datasets import dataset_info
    from ssl_bench.data.loaders import TrainLoader

    device = torch.device(settings.device)
    window = 2  # batches per timed block
    batches = settings.warmup + settings.repeats * window
    info = dataset_info(recipe_dataset(image_size, settings.dataset))
    data = synthetic_images(settings.batch_size * batches, source_side(image_size))
    augmentation = ViewPairAugmentation(kind, image_size, info.mean, info.std).to(device)
    loader = TrainLoader(
        data, augmentation, settings.batch_size, seed=0, device=device, channels_last=device.type == "cuda"
    )
    stream = loader.epoch(0)
    timer = DeviceTimer(device)

    def one_batch() -> None:
        next(stream)

    for _ in range(settings.warmup):
        one_batch()
    times = [timer(one_batch, calls=window) for _ in range(settings.repeats)]
    return PipelineResult(
        "ssl-bench",
        kind,
        image_size,
        settings.batch_size,
        0,
        samples_per_s=settings.batch_size * window / median(times),
        batch_ms=median(times) / window * 1000,
        repeats=len(times),
        description=f"TrainLoader on TensorImages, batched augmentation on {device.type}",
    )


def bench_per_sample_pipeline(kind: str, image_size: int, settings: BenchSettings) -> PipelineResult:
    """The baseline: the same recipe per sample (PIL + torchvision.transforms) in DataLoader workers."""
    from ssl_bench.data.augment import ViewPairAugmentation
    from ssl_bench.data.datasets import dataset_info

    device = torch.device(settings.device)
    workers = settings.workers
    # Workers deliver whole batches in parallel: a block of 2 x workers batches evens that out.
    window = max(2, 2 * workers)
    warmup = max(settings.warmup, workers)  # the first round also pays the workers' start-up
    batches = warmup + settings.repeats * window
    info = dataset_info(recipe_dataset(image_size, settings.dataset))
    data = synthetic_images(settings.batch_size * batches, source_side(image_size))
    # The ViewConfigs of the ssl-bench pipeline (small-image rule included): the same recipe.
    config_a, config_b = ViewPairAugmentation(kind, image_size, info.mean, info.std).configs
    dataset = PerSampleTwoViews(
        data.images,
        torchvision_view(config_a, image_size, info.mean, info.std),
        torchvision_view(config_b, image_size, info.mean, info.std),
    )
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    stream = iter(loader)
    timer = DeviceTimer(device)

    def one_batch() -> None:
        view_a, view_b = next(stream)
        # What a training loop does next: the batch to the device (pinned, asynchronous).
        view_a.to(device, non_blocking=True)
        view_b.to(device, non_blocking=True)

    for _ in range(warmup):
        one_batch()
    times = [timer(one_batch, calls=window) for _ in range(settings.repeats)]
    stream = None  # type: ignore[assignment]  # shuts the workers down
    return PipelineResult(
        "per-sample",
        kind,
        image_size,
        settings.batch_size,
        workers,
        samples_per_s=settings.batch_size * window / median(times),
        batch_ms=median(times) / window * 1000,
        repeats=len(times),
        description=f"PIL + torchvision.transforms per sample, DataLoader with {workers} workers",
    )
