"""Datasets, batched augmentations and the training/evaluation loaders."""

from ssl_bench._torchvision_compat import import_torchvision

# torchvision's datasets and transforms: make their import work on CPU-only torch first.
import_torchvision()
