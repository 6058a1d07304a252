"""Synthetic in-memory images for the benchmark, and whose recipe a synthetic run borrows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ssl_bench.data.images import TensorImages


def recipe_dataset(image_size: int, override: str | None = None) -> str:
    """Whose recipe (projector, loss, optimizer) and normalisation a synthetic run borrows."""
    return override or ("cifar10" if image_size <= 96 else "imagenet")


def source_side(image_size: int) -> int:
    """Side of the synthetic source images: the view size for small data (CIFAR: 32 -> 32),
    the evaluation resize for large data (224 -> 256), where crops come from bigger images."""
    if image_size <= 96:
        return image_size
    from ssl_bench.data.loaders import eval_resize_size

    return eval_resize_size(image_size)


def synthetic_images(count: int, side: int, num_classes: int = 10, seed: int = 0) -> TensorImages:
    """``count`` random RGB uint8 images (N, 3, side, side) with random labels, as TensorImages."""
    from ssl_bench.data.images import TensorImages

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    return TensorImages(images, labels, [str(i) for i in range(num_classes)])
