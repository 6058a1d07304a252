"""Functional image ops on float batches in [0, 1], with per-sample factors as (B,) tensors.

Each equals torchvision's functional op of the same name applied image by image (the tests hold
them against it), computed for the whole batch on whatever device it is on. The hot paths reuse
buffers in place: fresh multi-MB tensors cost page faults on CPU.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

# torchvision's grayscale weights (ITU-R 601-2 luma).
_LUMA_WEIGHTS = (0.2989, 0.587, 0.114)


def on_device_of(tensor: Tensor, images: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``tensor`` (random parameters, usually drawn on the CPU) on the device of ``images``.

    CPU -> CUDA copies go through pinned memory: a copy from pageable memory would wait for all
    the kernels already queued on the stream (the previous training step, say).
    """
    tensor = tensor if dtype is None else tensor.to(dtype)
    if tensor.device == images.device:
        return tensor
    if images.device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(images.device, non_blocking=True)


def _per_sample(factor: Tensor, images: Tensor) -> Tensor:
    return on_device_of(factor, images, images.dtype).view(-1, 1, 1, 1)


def luma(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) grayscale with torchvision's weights."""
    # One output buffer, accumulated in place: fresh large tensors cost page faults on CPU.
    gray = images[:, 0:1] * _LUMA_WEIGHTS[0]
    gray.add_(images[:, 1:2], alpha=_LUMA_WEIGHTS[1])
    return gray.add_(images[:, 2:3], alpha=_LUMA_WEIGHTS[2])


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_brightness per sample: ``clamp(x * f)``."""
    return (images * _per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_contrast per sample: blend with the mean of the image's luma."""
    f = _per_sample(factor, images)
    mean = luma(images).mean(dim=(1, 2, 3), keepdim=True)
    return torch.addcmul(mean * (1.0 - f), images, f).clamp_(0.0, 1.0)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_saturation per sample: blend with the image's luma (f = 0: grayscale).

    A factor of exactly 1 returns the input bit for bit and 0 exactly its luma (``x * 1 + 0`` and
    ``x * 0 + luma``), which :class:`RandomGrayscale` relies on.
    """
    f = _per_sample(factor, images)
    return torch.addcmul(luma(images).mul_(1.0 - f), images, f).clamp_(0.0, 1.0)


# Per output channel (R, G, B): centre, sign and offset of the hexcone's piecewise-linear profile.
_HUE_PROFILE = ((3.0, 2.0, 4.0), (1.0, -1.0, -1.0), (-1.0, 2.0, 2.0))


@functools.cache
def _hue_profile(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    # Cached per device: building them on every call would be a blocking host-to-GPU copy.
    return tuple(torch.tensor(values, dtype=dtype).view(1, 3, 1, 1).to(device) for values in _HUE_PROFILE)


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_hue per sample: rotate the HSV hue by ``factor`` turns (in [-0.5, 0.5]).

    Equal to the RGB -> HSV -> RGB round trip (to float rounding) without building the HSV image:
    value (max) and chroma (max - min) do not change, and with h the new hue in sextants, [0, 6),
    the channels are ``min + chroma * clamp(|h - 3| - 1)``, ``... * clamp(2 - |h - 2|)`` and
    ``... * clamp(2 - |h - 4|)`` (R, G, B). No ``torch.where`` (slow on CPU): the sextant masks
    enter as multiplications.
    """
    dtype = images.dtype
    max_c = images.amax(dim=1, keepdim=True)
    min_c = images.amin(dim=1, keepdim=True)
    chroma = max_c - min_c
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    # Which channel is the maximum, with torchvision's tie-breaking (red, then green, then blue).
    is_red = max_c == red
    is_green = (max_c == green) & ~is_red
    is_blue = ~(is_red | is_green)
    # hue x chroma in sextants: g - b (red max), b - r + 2c (green max), r - g + 4c (blue max).
    hue = (green - blue).mul_(is_red.to(dtype))
    hue.addcmul_(torch.sub(blue, red).add_(chroma, alpha=2.0), is_green.to(dtype))
    hue.addcmul_(torch.sub(red, green).add_(chroma, alpha=4.0), is_blue.to(dtype))
    # Gray pixels (chroma 0) have a zero numerator: any positive divisor keeps them at hue 0.
    hue.div_(chroma.clamp_min(torch.finfo(dtype).tiny))
    hue.add_(6.0 * _per_sample(factor, images)).remainder_(6.0)
    centre, sign, offset = _hue_profile(images.device, dtype)
    profile = (hue - centre).abs_()
    profile.mul_(sign).add_(offset).clamp_(0.0, 1.0)
    return profile.mul_(chroma).add_(min_c)


def solarize(images: Tensor) -> Tensor:
    """torchvision's Solarize(threshold=128) on [0, 1] floats: pixels >= 0.5 become 1 - x.

    On uint8 data x >= 128 is the same set as x / 255 >= 0.5 (127/255 < 0.5 < 128/255). With the
    threshold at exactly 0.5, "x if x < 0.5 else 1 - x" is ``min(x, 1 - x)`` (both are 0.5 at 0.5).
    """
    return torch.minimum(images, 1.0 - images)


def _resize_weights(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """(B, out_size, in_size) weights resampling [start, start + length) to out_size pixels.

    The weights of torch's antialiased bilinear resize (what torchvision's resized_crop uses on
    tensors): half-pixel centres, a triangle filter widened by the downscale factor, normalised
    over the pixels inside the crop (which also clamps at its borders).
    """
    scale = (length / out_size).view(-1, 1, 1)
    centres = start.view(-1, 1, 1) + scale * (torch.arange(out_size, device=start.device).view(1, -1, 1) + 0.5) - 0.5
    pixels = torch.arange(in_size, device=start.device, dtype=start.dtype).view(1, 1, -1)
    weights = (1.0 - (pixels - centres).abs_() / scale.clamp_min(1.0)).clamp_min_(0.0)
    inside = (pixels >= start.view(-1, 1, 1)) & (pixels < (start + length).view(-1, 1, 1))
    weights = weights * inside
    return weights / weights.sum(dim=-1, keepdim=True)


def resized_crop(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop boxes (B, 4) = (left, top, width, height) in pixels from a batch and resize to size x size.

    Bilinear resampling is separable, so each sample is ``R_y @ image @ R_x^T`` with small
    per-sample weight matrices: two batched matmuls instead of building and sampling a grid, and
    antialiased when a crop is larger than the output (matching torchvision's tensor resize).
    ``flip`` (B,) bool mirrors the chosen samples horizontally, for free: it reverses their R_x.
    """
    batch, channels, height, width = images.shape
    boxes = on_device_of(boxes, images, images.dtype)
    rows = _resize_weights(boxes[:, 1], boxes[:, 3], height, size)  # (B, S, H)
    cols = _resize_weights(boxes[:, 0], boxes[:, 2], width, size)  # (B, S, W)
    if flip is not None:
        flip = on_device_of(flip, images).view(-1, 1, 1)
        cols = torch.where(flip, cols.flip(1), cols)
    # Columns first as one bmm over (C * H) rows; then rows, broadcast over channels. (The
    # fastest order on CPU; a plain broadcast matmul for both copies the weights per channel.)
    resized_cols = torch.bmm(images.reshape(batch, channels * height, width), cols.transpose(1, 2))
    return torch.matmul(rows.unsqueeze(1), resized_cols.view(batch, channels, height, size))


# ----------------------------------------------------------------------------------------------
# Random ops: parameters drawn on the CPU from the global generator, then applied on the device.
