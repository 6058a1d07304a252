"""Timing and peak memory of a block of work on one device.

Timing (:class:`DeviceTimer`): on CUDA every timed block is bracketed by CUDA events and
synchronised, so queued kernels are billed to the block that launched them; on CPU it is
``time.perf_counter``. Callers exclude warm-up calls and report the :func:`median` of repeats.

Memory (:class:`MemoryProbe`): the peak is reset through :mod:`ssl_bench.memory`. On CUDA
the figure is ``torch.cuda.max_memory_allocated`` (tensors); on CPU the process's resident-set
high-water mark (``VmHWM``), so "extra" figures are the growth over the resident set before
the block: allocator-cached memory that is reused does not show, fresh large tensors do.
"""

from __future__ import annotations

import gc
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ssl_bench.memory import peak_memory_mb, reset_peak_memory


class DeviceTimer:
    """Seconds taken by a block of work on ``device``, queued kernels included.

    On CUDA the block is bracketed by CUDA events and synchronised at both ends (work queued
    before it is not billed to it, work it queued is); on CPU it is ``time.perf_counter``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], Any], calls: int = 1) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        start_s = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - start_s


def _proc_status_mb(key: str) -> float | None:
    """A ``Vm*`` field of /proc/self/status in MB, None where there is no such file (not Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


class MemoryProbe:
    """Peak memory of a block: ``with probe: ...`` then ``probe.peak_mb`` and ``probe.extra_mb``.

    CUDA: ``max_memory_allocated`` (all live tensors: weights, optimizer state, activations) and
    its growth over what was allocated before the block. CPU: the resident-set high-water mark
    reset before the block (Linux >= 4.0) and its growth over the resident set before it;
    None where that reset is unavailable. The CPU peak is read from ``VmHWM`` rather than
    ``getrusage``, whose maximum also keeps the peaks of exited threads, which the reset does
    not lower.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "cpu peak resident set (VmHWM)"
        self.peak_mb: float | None = None
        self.extra_mb: float | None = None
        self._before: float | None = None

    def __enter__(self) -> MemoryProbe:
        gc.collect()
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        if not reset_peak_memory(self.device):
            self._before = None
        elif cuda:
            self._before = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self._before = _proc_status_mb("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = peak_memory_mb(self.device)
        elif self._before is not None:
            self.peak_mb = _proc_status_mb("VmHWM")
        if self.peak_mb is not None and self._before is not None:
            self.extra_mb = max(0.0, self.peak_mb - self._before)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def release_memory(device: torch.device) -> None:
    """Collect garbage and, on CUDA, hand cached blocks back: the next measurement starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
