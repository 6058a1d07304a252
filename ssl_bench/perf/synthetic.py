"""Synthetic data for the benchmark (in-memory images, a folder of JPEGs), and whose recipe a
synthetic run borrows."""

from __future__ import annotations

import io
from pathlib import Path
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


# ImageNet-like JPEGs: ILSVRC-2012 train images average about 400 x 350 pixels (most are
# 500 x 375 or 375 x 500, with a long tail of small and large ones) and are stored at
# quality settings around 75-95.
JPEG_MEAN_SIZE = (400, 350)
JPEG_SIZE_SPREAD = (90, 80)
JPEG_SIZE_RANGE = (128, 1024)
JPEG_QUALITY = (75, 95)


def synthetic_jpeg_folder(root: Path, count: int, num_classes: int = 10, seed: int = 0, distinct: int = 128) -> Path:
    """``count`` ImageNet-like JPEGs in ``root/train/<class>/``; returns ``root``.

    Sizes are drawn around :data:`JPEG_MEAN_SIZE` (normal, clipped), quality uniformly from
    :data:`JPEG_QUALITY`. The content is photo-like for the codec (which decodes noise far
    slower than photos): a smooth colour field, mid-frequency texture and per-pixel grain.
    Only ``distinct`` images are encoded (~15 ms each); the other files repeat their bytes,
    which costs a loader the same to read and decode, so a GPU-sized folder is written in seconds.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    low, high = JPEG_SIZE_RANGE
    for label in range(num_classes):
        (root / "train" / f"class{label:03d}").mkdir(parents=True, exist_ok=True)
    encoded: list[bytes] = []
    for index in range(count):
        target = root / "train" / f"class{index % num_classes:03d}" / f"{index:06d}.JPEG"
        if index >= distinct:
            target.write_bytes(encoded[index % distinct])
            continue
        width, height = (
            int(np.clip(rng.normal(mean, spread), low, high)) for mean, spread in zip(JPEG_MEAN_SIZE, JPEG_SIZE_SPREAD)
        )
        field = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        texture = rng.integers(0, 256, (max(height // 6, 2), max(width // 6, 2), 3), dtype=np.uint8)
        pixels = 0.6 * np.asarray(Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC), np.float32)
        pixels += 0.4 * np.asarray(
            Image.fromarray(texture).resize((width, height), Image.Resampling.BICUBIC), np.float32
        )
        pixels += rng.normal(0.0, 10.0, (height, width, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        encoded.append(buffer.getvalue())
        target.write_bytes(encoded[-1])
    return root
