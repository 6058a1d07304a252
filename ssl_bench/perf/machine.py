"""The machine a benchmark ran on, and the load other processes put on its CPU meanwhile.

Every report carries :func:`machine_info` (device, CPU, threads, versions, code revision), so
that figures from different machines and commits can be compared, and the result of a
:class:`LoadMonitor`: a run during which other processes used more than ``LOAD_THRESHOLD`` of
the CPU is marked ``under_load``.

Importing this module does not import torch (:func:`usable_cpus` serves the argument defaults).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Other processes using more than this share of the CPU during the run mark it "under load".
LOAD_THRESHOLD = 0.10


def usable_cpus() -> int:
    """CPU cores this process may run on (the affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_info(device: torch.device) -> dict[str, Any]:
    """Device, CPU, threads, versions and code revision: what a reader needs to compare figures."""
    import torch

    from ssl_bench.provenance import environment

    info = environment(device)
    info["cpu_cores_usable"] = usable_cpus()
    # How OpenMP threads wait (ssl_bench.device sets PASSIVE before torch loads, unless the user chose).
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
    else:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def machine_slug(info: dict[str, Any]) -> str:
    """A file name for this machine's figures: ``cpu-amd-epyc-2threads``, ``cuda-nvidia-h100-80gb-hbm3``."""
    if str(info.get("device", "")).startswith("cuda"):
        label = f"cuda-{info.get('device_name', 'gpu')}"
    else:
        label = f"cpu-{info.get('cpu_model', 'cpu')}-{info.get('cpu_threads', 0)}threads"
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


class LoadMonitor:
    """How much of the CPU other processes used while the benchmark ran.

    Busy CPU time of the whole machine (/proc/stat) minus this process's own and its reaped
    children's (the baseline's DataLoader workers), as a share of the cores over the wall time.
    """

    def __init__(self) -> None:
        self.load_start = self._loadavg()
        self._machine_start = self._machine_busy_s()
        self._own_start = self._own_cpu_s()
        self._wall_start = time.monotonic()

    @staticmethod
    def _loadavg() -> list[float] | None:
        try:
            return [round(x, 2) for x in os.getloadavg()]
        except OSError:
            return None

    @staticmethod
    def _machine_busy_s() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        ticks = [int(x) for x in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        # guest time is already counted in user time: leave those columns out of the total.
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_cpu_s() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def finish(self) -> dict[str, Any]:
        wall = time.monotonic() - self._wall_start
        machine_end = self._machine_busy_s()
        own = self._own_cpu_s() - self._own_start
        other_share = None
        if machine_end is not None and self._machine_start is not None and wall > 0:
            other = (machine_end - self._machine_start) - own
            other_share = round(max(0.0, other) / (wall * (os.cpu_count() or 1)), 3)
        return {
            "load_average_start": self.load_start,
            "load_average_end": self._loadavg(),
            "other_processes_cpu_share": other_share,
            # CPU time of the benchmark itself (and its workers): with the run's wall time, a
            # hint of how long it would take alone on this machine.
            "own_cpu_seconds": round(own, 1),
            "under_load": other_share is not None and other_share > LOAD_THRESHOLD,
        }
