"""Loaded machine: what one busy core beside a run costs the training step.

A *burner* (a separate process spinning on one core, like another job on a shared node) is
started and stopped while ``Trainer.train_step`` is timed: alternating rounds of idle and
loaded steps, the slowdown being the median over rounds of loaded / idle step time. With one
of N cores taken, a compute-bound run that shares fairly slows by about N / (N - 1) (2x on 2
cores); OpenMP threads that spin while they wait for the thread on the busy core make it far
worse (see :mod:`ssl_bench.device`), which is what this measures.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_bench.perf.settings import BackboneSpec, BenchSettings
from ssl_bench.perf.timing import DeviceTimer

# Steps timed per idle or loaded block (their median), and the burner's settle time.
STEPS_PER_BLOCK = 3
BURNER_SETTLE_S = 0.3


@dataclass
class LoadResult:
    """Training-step time with and without a burner on one core."""

    method: str
    backbone: str
    image_size: int
    batch_size: int
    torch_threads: int
    burner_cpu: int | None
    omp_wait_policy: str | None
    idle_step_ms: float | None = None
    loaded_step_ms: float | None = None
    slowdown: float | None = None  # median over rounds of loaded / idle step time
    rounds: int = 0
    error: str | None = None


@contextmanager
def burner(cpu: int | None) -> Iterator[subprocess.Popen]:
    """A process spinning on ``cpu`` (any core if None) for the duration of the block."""
    pin = f"os.sched_setaffinity(0, {{{cpu}}})\n" if cpu is not None else ""
    process = subprocess.Popen([sys.executable, "-c", f"import os\n{pin}while True:\n    pass\n"])
    try:
        time.sleep(BURNER_SETTLE_S)
        yield process
    finally:
        process.kill()
        process.wait()


def _burner_cpu() -> int | None:
    """The last core this process may use (None where affinity is not available)."""
    try:
        return max(os.sched_getaffinity(0))
    except AttributeError:
        return None


def bench_under_load(
    method: str, spec: BackboneSpec, settings: BenchSettings, log: Callable[[str], None]
) -> LoadResult:
    """Idle and loaded blocks of training steps on one batch, alternating, ``settings.repeats`` rounds."""
    from ssl_bench.perf.step import bench_config, build_synthetic_trainer, set_step_lr

    cpu = _burner_cpu()
    result = LoadResult(
        method,
        spec.name,
        spec.image_size,
        settings.batch_size,
        torch.get_num_threads(),
        cpu,
        os.environ.get("OMP_WAIT_POLICY"),
    )
    config = bench_config(method, spec, settings)
    with tempfile.TemporaryDirectory(prefix="ssl-bench-load-") as tmp:
        trainer = build_synthetic_trainer(config, Path(tmp))
        x_a, x_b, labels, _ = next(iter(trainer.loader.epoch(0)))
        trainer.step = 1
        set_step_lr(trainer)
        timer = DeviceTimer(trainer.device)

        def block() -> float:
            times = [timer(lambda: trainer.train_step(x_a, x_b, labels)) for _ in range(STEPS_PER_BLOCK)]
            return statistics.median(times)

        idle: list[float] = []
        loaded: list[float] = []
        try:
            for _ in range(settings.warmup):
                trainer.train_step(x_a, x_b, labels)
            for _ in range(settings.repeats):
                idle.append(block())
                with burner(cpu):
                    loaded.append(block())
        except RuntimeError as error:
            result.error = f"{type(error).__name__}: {error}"
            log(f"  {method} / {spec}: {result.error}")
            return result
    result.idle_step_ms = statistics.median(idle) * 1000
    result.loaded_step_ms = statistics.median(loaded) * 1000
    result.slowdown = statistics.median(b / a for a, b in zip(idle, loaded))
    result.rounds = len(idle)
    return result
