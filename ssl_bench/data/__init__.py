"""Datasets, batched augmentations and the training/evaluation loaders."""
