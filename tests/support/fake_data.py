"""Small datasets in the real on-disk formats, for end-to-end tests without real data.

`write_fashion_mnist(root)` writes gzipped big-endian IDX files exactly as the Fashion-MNIST
release ships them, into `<root>/FashionMNIST/raw/`, where ssl-bench's loader looks first. The
images are not noise: each class is a bright bar at its own angle plus noise, so a few steps of
pre-training learn something and evaluation accuracies are meaningful.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IMAGE_SIDE = 28


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX format: zero, zero, type 0x08 (uint8), number of dimensions, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def bar_images(labels: np.ndarray, seed: int, num_classes: int = 10) -> np.ndarray:
    """(N, 28, 28) uint8: class k is a bar through the centre at angle k * 180 / num_classes."""
    rng = np.random.default_rng(seed)
    coords = np.arange(IMAGE_SIDE) - (IMAGE_SIDE - 1) / 2
    y, x = np.meshgrid(coords, coords, indexing="ij")
    angles = labels * np.pi / num_classes + rng.normal(0, 0.08, len(labels))
    shifts = rng.normal(0, 1.5, (len(labels), 2))
    distance = np.abs(
        (x[None] - shifts[:, 0, None, None]) * np.sin(angles)[:, None, None]
        - (y[None] - shifts[:, 1, None, None]) * np.cos(angles)[:, None, None]
    )
    images = 220 * np.exp(-(distance**2) / 4.0) + rng.normal(20, 12, (len(labels), IMAGE_SIDE, IMAGE_SIDE))
    return np.clip(images, 0, 255).astype(np.uint8)


def write_fashion_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write a Fashion-MNIST-format dataset with balanced labels under `root`; returns root."""
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count, split_seed in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        np.random.default_rng(split_seed).shuffle(labels)
        images = bar_images(labels, split_seed)
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images), compresslevel=1))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels), compresslevel=1))
    return Path(root)
