"""Peak memory of a phase (pre-training, evaluation), in MB, on the device that ran it.

On CUDA this is ``torch.cuda.max_memory_allocated`` (tensors only, the allocator's cache not
counted). On CPU it is the process's peak resident set size from ``resource.getrusage``: that
includes the Python interpreter and libraries (a few hundred MB) and any threads, but not
DataLoader worker processes. ``getrusage`` keeps the peak since the process started; on Linux
(>= 4.0) :func:`reset_peak_memory` lowers it to the current RSS (``/proc/self/clear_refs``),
so that a second run in the same ``ssl-bench run`` process reports its own peak rather than the
first run's. Where that reset is unavailable the CPU figure is the process's peak so far.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> bool:
    """Start measuring a new phase's peak on ``device`` (best effort on CPU, see the module doc).

    Returns whether the peak was reset: False on a CPU where ``/proc/self/clear_refs`` is unavailable.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        # "5" resets only the peak-RSS high-water mark (proc(5)); no other effect on the process.
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since the last :func:`reset_peak_memory` (or process start), in MB (2**20 bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
