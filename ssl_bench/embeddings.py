"""Shared input checks for the loss functions in methods/."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def check_embedding_pair(z_a: Tensor, z_b: Tensor) -> int:
    """Validate two (N, D) float embedding batches; return N."""
    if not (isinstance(z_a, Tensor) and isinstance(z_b, Tensor)):
        raise ValueError("z_a and z_b must be torch tensors")
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(f"z_a and z_b must be 2-D (N, D); got shapes {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must have the same shape; got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if not (z_a.is_floating_point() and z_b.is_floating_point()) or z_a.dtype != z_b.dtype:
        raise ValueError(f"z_a and z_b must share one floating dtype; got {z_a.dtype} and {z_b.dtype}")
    if z_a.shape[0] < 2:
        raise ValueError(f"need at least 2 samples per batch; got N={z_a.shape[0]}")
    return z_a.shape[0]


def is_whole_number(value: Any) -> bool:
    """An int, or a float with an integral value (what `--set` makes of a number); not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return float(value).is_integer()
