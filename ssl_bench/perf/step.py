"""Training step: the harness's :meth:`~ssl_bench.train.trainer.Trainer.train_step` against a bare loop.

samples/s of ``Trainer.train_step`` (schedule, autocast forward, finite check, backward,
optimizer step, online probe) per method and backbone, on one batch of synthetic in-memory
images that went through the real loader. Interleaved with it, a *bare* PyTorch loop
(:class:`BareLoop`: the same model, loss, optimizer and batch; forward, backward and step,
nothing else) gives the reference; harness / bare samples/s is the harness overhead. Also the
peak memory of one step. :func:`compare_harness_and_bare` checks that both take the same steps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ssl_bench.errors import NonFiniteLossError
from ssl_bench.perf.settings import BackboneSpec, BenchSettings
from ssl_bench.perf.synthetic import recipe_dataset, source_side, synthetic_images
from ssl_bench.perf.timing import DeviceTimer, MemoryProbe, median, release_memory

if TYPE_CHECKING:
    from ssl_bench.config import RunConfig
    from ssl_bench.data.images import ImageData
    from ssl_bench.method import Method
    from ssl_bench.train.trainer import Trainer

# Quick mode caps projector/predictor widths: a smoke test of the whole tool, not a figure.
QUICK_HEAD_WIDTH = 128


def bench_config(method: str, spec: BackboneSpec, settings: BenchSettings) -> RunConfig:
    """The RunConfig of a synthetic run: the recipe of ``method`` with this backbone and batch."""
    from ssl_bench.recipes import recipe_row, recipe_table_for, resolve_config

    dataset = recipe_dataset(spec.image_size, settings.dataset)
    overrides: dict[str, Any] = {
        "backbone": spec.name,
        "batch_size": settings.batch_size,
        "image_size": spec.image_size,
        "device": settings.device,
        "num_workers": 0,
    }
    if settings.quick:
        row = recipe_row(method, recipe_table_for(dataset))
        overrides["projector"] = tuple(min(w, QUICK_HEAD_WIDTH) for w in row.projector)
        overrides["predictor"] = tuple(min(w, QUICK_HEAD_WIDTH) for w in row.predictor)
    config = resolve_config(method, dataset, overrides)
    # resolve_config skips None overrides; no pre-training subset of the synthetic data.
    config.train_subset = None
    return config


def build_synthetic_trainer(config: RunConfig, run_dir: Path) -> Trainer:
    """A real Trainer for ``config`` on one batch of synthetic images (nothing read from disk)."""
    from ssl_bench.data.datasets import dataset_info
    from ssl_bench.store.rundir import RunDir
    from ssl_bench.train.trainer import Trainer

    # The online probe needs two classes at least (imagefolder declares 0: any folders).
    classes = max(2, dataset_info(config.dataset).num_classes)
    data = synthetic_images(config.batch_size, source_side(config.image_size), num_classes=classes)
    return Trainer(config, RunDir(run_dir), progress=False, log=lambda _: None, data=data)


def set_step_lr(trainer: Trainer) -> None:
    """Set the optimizer's lr for ``trainer.step`` as the trainer's own schedule does."""
    from ssl_bench.train.optim import set_scheduled_lr

    set_scheduled_lr(
        trainer.optimizer,
        trainer.step,
        trainer.total_steps,
        trainer.warmup_steps,
        end_factor=trainer.config.lr_end_factor,
    )


class BareLoop:
    """The reference: forward, backward and optimizer step of the same method, nothing else.

    The same module (so the same backbone, heads and loss), optimizer, precision and batch as
    the harness, written the way a minimal training script would: no lr schedule (the groups
    keep their current lr), no loss read-back or finite check, no online probe, no logging.
    A method's own per-step update (the EMA of a momentum target) is kept: any loop training
    that method must do it.
    """

    def __init__(
        self,
        method: Method,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        use_bf16: bool,
        total_steps: int = 1,
    ) -> None:
        self.method = method
        self.optimizer = optimizer
        self.device_type = device.type
        self.use_bf16 = use_bf16
        self.total_steps = total_steps
        self.step_index = 0
        self.method.train()

    def step(self, x_a: Tensor, x_b: Tensor) -> Tensor:
        """One training step; returns the loss (a tensor, not read back: no sync)."""
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.use_bf16):
            loss = self.method(x_a, x_b).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.method.uses_momentum_target:
            self.method.after_optimizer_step(self.step_index, self.total_steps)
        return loss.detach()


@dataclass
class StepResult:
    """Training-step figures of one method and backbone."""

    method: str
    backbone: str
    image_size: int
    batch_size: int
    precision: str
    channels_last: bool
    optimizer: str
    projector: list[int]
    harness_samples_per_s: float | None = None
    bare_samples_per_s: float | None = None
    overhead_ratio: float | None = None  # median over repeats of bare time / harness time
    harness_step_ms: float | None = None
    bare_step_ms: float | None = None
    repeats: int = 0
    peak_memory_mb: float | None = None
    step_memory_mb: float | None = None  # growth during one step over the memory before it
    memory_kind: str = ""
    error: str | None = None


def bench_train_step(
    method: str, spec: BackboneSpec, settings: BenchSettings, log: Callable[[str], None]
) -> StepResult:
    """Harness and bare loop, interleaved step by step on one batch; then one step's peak memory."""
    config = bench_config(method, spec, settings)
    result = StepResult(
        method, spec.name, spec.image_size, settings.batch_size, "", False, config.optimizer, list(config.projector)
    )
    with tempfile.TemporaryDirectory(prefix="ssl-bench-bench-") as tmp:
        trainer = build_synthetic_trainer(config, Path(tmp))
        result.precision = "bf16 autocast" if trainer.use_bf16 else "fp32"
        result.channels_last = trainer.channels_last
        x_a, x_b, labels, _ = next(iter(trainer.loader.epoch(0)))
        # Step 1 of the schedule: lr = peak / warmup steps, small and non-zero, so repeated steps
        # on one batch stay finite; the schedule costs the same at every step.
        trainer.step = 1
        bare = BareLoop(trainer.method, trainer.optimizer, trainer.device, trainer.use_bf16, trainer.total_steps)
        set_step_lr(trainer)
        timer = DeviceTimer(trainer.device)

        def harness_step() -> None:
            trainer.train_step(x_a, x_b, labels)

        def bare_step() -> None:
            bare.step(x_a, x_b)

        harness_s: list[float] = []
        bare_s: list[float] = []
        try:
            for _ in range(settings.warmup):
                harness_step()
                bare_step()
            for r in range(settings.repeats):
                # Alternate the order (ABBA...): a slow drift of the machine's speed then
                # favours neither side.
                if r % 2 == 0:
                    harness_s.append(timer(harness_step))
                    bare_s.append(timer(bare_step))
                else:
                    bare_s.append(timer(bare_step))
                    harness_s.append(timer(harness_step))
            probe = MemoryProbe(trainer.device)
            with probe:
                harness_step()
        except (NonFiniteLossError, RuntimeError) as error:
            result.error = f"{type(error).__name__}: {error}"
            log(f"  {method} / {spec}: {result.error}")
            return result
        finally:
            # Dropped before the memory is released (the closures above keep the cells alive).
            trainer = bare = None  # type: ignore[assignment]
            release_memory(torch.device(settings.device))
    batch = settings.batch_size
    result.harness_step_ms = median(harness_s) * 1000
    result.bare_step_ms = median(bare_s) * 1000
    result.harness_samples_per_s = batch / median(harness_s)
    result.bare_samples_per_s = batch / median(bare_s)
    # Paired ratios: each harness step against the bare step timed right beside it.
    result.overhead_ratio = median([b / h for h, b in zip(harness_s, bare_s)])
    result.repeats = len(harness_s)
    result.peak_memory_mb = probe.peak_mb
    result.step_memory_mb = probe.extra_mb
    result.memory_kind = probe.kind
    return result


def compare_harness_and_bare(config: RunConfig, data: ImageData, steps: int = 2) -> list[tuple[float, float]]:
    """(harness loss, bare loss) for ``steps`` steps on one batch, from identical starting points.

    Two Trainers of one config start from the same weights (the Trainer seeds them); one takes
    :meth:`Trainer.train_step`, the other :class:`BareLoop` steps at the same lr. Equal losses at
    every step show that both do the same forward, backward and optimizer update: the
    benchmark's harness / bare ratio compares like with like.
    """
    from ssl_bench.store.rundir import RunDir
    from ssl_bench.train.trainer import Trainer

    pairs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="ssl-bench-compare-") as tmp:
        harness = Trainer(config, RunDir(Path(tmp) / "a"), progress=False, log=lambda _: None, data=data)
        reference = Trainer(config, RunDir(Path(tmp) / "b"), progress=False, log=lambda _: None, data=data)
        x_a, x_b, labels, _ = next(iter(harness.loader.epoch(0)))
        # Past warmup, so the lr is not 0 and the first update changes what the second step sees.
        harness.step = reference.step = harness.warmup_steps
        set_step_lr(reference)
        bare = BareLoop(
            reference.method, reference.optimizer, reference.device, reference.use_bf16, reference.total_steps
        )
        bare.step_index = reference.step
        for _ in range(steps):
            values = harness.train_step(x_a, x_b, labels)
            harness.step += 1
            bare_loss = bare.step(x_a, x_b)
            bare.step_index += 1
            pairs.append((values["loss"], float(bare_loss)))
    return pairs
