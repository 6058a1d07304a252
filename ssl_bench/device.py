"""Which device a run uses, and how the CPU side of a process is set up before torch loads.

:func:`resolve_device` turns RunConfig.device ("auto", "cpu", "cuda", "cuda:1", ...) into a
``torch.device``. :func:`configure_cpu_runtime` runs first thing in the ``ssl-bench`` command,
before torch is imported, and fixes two costs that dominate CPU runs on small or shared machines:

- **OpenMP threads that spin.** torch's CPU build parallelises ops with GNU OpenMP, whose
  threads busy-wait at the end of every parallel region (``OMP_WAIT_POLICY`` unset: about 300k
  spins) before sleeping. When another process holds one of the cores, the spinning thread
  takes its time slices from the thread that still has work, and every op waits for the
  descheduled one: with a one-core burner beside it a 2-thread ResNet-18 step measured here
  went from 0.44 s to 8 s. ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once) brought the
  same loaded step back to 0.25 s. libgomp reads the variable once, when torch loads it, so
  it has to be set before ``import torch``; a value the user set is kept.
- **Page faults on every large tensor.** glibc serves allocations above its mmap threshold
  (128 kB, raising itself to 32 MB at most) with fresh ``mmap`` pages and unmaps them on
  free, so every large temporary (a 224 px batch is ~77 MB in float32) is faulted in page by
  page again: a multiply into a fresh tensor of that size costs several times the same multiply
  in place. Serving large blocks from the heap and keeping freed memory (``mallopt``:
  ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` = 1 GiB) lets the next batch reuse the pages (the
  folder-pipeline figures of `ssl-bench bench` show the effect on the machine at hand). The
  cost: the resident set stays at its peak instead of shrinking between batches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Freed memory at the top of the heap kept for reuse rather than returned to the system.
_TRIM_THRESHOLD_BYTES = 1 << 30


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; any other name is taken as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _keep_freed_memory() -> bool:
    """glibc only: large blocks from the heap, freed memory kept for reuse. False elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


def configure_cpu_runtime(environ: MutableMapping[str, str] | None = None) -> dict[str, object]:
    """Passive OpenMP waiting and heap reuse for this process and the workers it forks.

    Call it before ``import torch``: the wait policy takes effect only then (the returned
    ``omp_wait_policy_applied`` says whether it did). Values the user set are kept. Returns
    what was set, for a run's environment record.
    """
    environ = os.environ if environ is None else environ
    torch_loaded = "torch" in sys.modules
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return {
        "omp_wait_policy": environ["OMP_WAIT_POLICY"],
        "omp_wait_policy_applied": not torch_loaded,
        "heap_keeps_freed_memory": _keep_freed_memory(),
    }
