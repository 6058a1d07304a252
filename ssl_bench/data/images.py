"""The two shapes a dataset takes in ssl-bench: all in memory, or files read on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset


@dataclass
class TensorImages:
    """A small dataset held whole as uint8 tensors: no per-sample decoding, batches by indexing.

    images: (N, C, H, W) uint8, C = 1 (grayscale) or 3 (RGB); labels: (N,) int64 (-1 = unlabeled).
    """

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be (N,) and match images")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: Tensor) -> TensorImages:
        return TensorImages(self.images[indices], self.labels[indices], self.classes)


class FolderImages(Dataset):
    """Image files read on demand (ImageNet-sized data).

    ``loader(path) -> PIL image`` decodes a file; None (the default) reads it with PIL, which
    lets the training crops open a file without decoding it, and then decode a JPEG only at
    the resolution its crops need (:mod:`ssl_bench.data.folder`).
    """

    def __init__(
        self, samples: list[tuple[str, int]], classes: list[str], loader: Callable[[str], Image.Image] | None = None
    ) -> None:
        self.samples = samples
        self.classes = classes
        self.loader = loader
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def open(self, index: int) -> Image.Image:
        """Sample ``index``'s image; with the default loader opened but not decoded yet (size,
        mode and format known, pixels read on first use)."""
        path = self.samples[index][0]
        return Image.open(path) if self.loader is None else self.loader(path)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        """(RGB image, label), decoded at full size."""
        return self.open(index).convert("RGB"), self.samples[index][1]

    def subset(self, indices: Tensor) -> FolderImages:
        return FolderImages([self.samples[i] for i in indices.tolist()], self.classes, self.loader)


ImageData = TensorImages | FolderImages
