"""Pre-training one method: the shared loop every method runs through, resumable at any step."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from ssl_bench import distributed
from ssl_bench.config import RunConfig
from ssl_bench.data.augment import ViewPairAugmentation
from ssl_bench.data.datasets import balanced_subset, dataset_info, load_split
from ssl_bench.data.loaders import TrainLoader
from ssl_bench.errors import NonFiniteLossError
from ssl_bench.method import Method, get_method
from ssl_bench.models import build_backbone
from ssl_bench.optim import build_optimizer, parameter_groups, set_scheduled_lr
from ssl_bench.rundir import RunDir


@dataclass
class RunResult:
    """How a run ended, for the command's closing table."""

    method: str
    run_dir: Path
    status: str  # "finished" | "failed"
    epochs_done: int = 0
    final_loss: float | None = None
    train_seconds: float = 0.0
    samples_per_second: float | None = None
    error: str | None = None
    resumed_from_step: int | None = None


@dataclass
class EpochAccumulator:
    """Running sums over the steps of the current epoch (checkpointed: a resume keeps them)."""

    steps: int = 0
    seconds: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, values: dict[str, float], seconds: float) -> None:
        self.steps += 1
        self.seconds += seconds
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        return {key: total / max(self.steps, 1) for key, total in self.sums.items()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_method(config: RunConfig) -> Method:
    method_cls = get_method(config.method)
    backbone, feature_dim = build_backbone(config.backbone)
    return method_cls(backbone, feature_dim, config.projector, **config.loss)


class Trainer:
    """Owns everything shared: data, model, optimiser, schedule, logging and checkpoints."""

    def __init__(self, config: RunConfig, run_dir: RunDir, *, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.config = config
        self.run_dir = run_dir
        self.progress = progress
        self.log = log
        self.device = resolve_device(config.device)
        self.use_bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.channels_last = self.device.type == "cuda"
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0

        info = dataset_info(config.dataset)
        data = load_split(config.dataset, config.data_root, "pretrain", download=config.download)
        if config.train_subset is not None and config.train_subset < len(data):
            data = balanced_subset(data, total=config.train_subset, seed=config.seed)
        self.num_samples = len(data)

        torch.manual_seed(config.seed)  # the same initial weights for every run of this seed
        self.method = build_method(config).to(self.device)
        if self.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        # lr follows the global batch: base_lr x (per-rank batch x ranks) / 256.
        global_batch = config.batch_size * self.world_size
        self.peak_lr = config.base_lr * global_batch / 256
        bias_norm_lr = None if config.bias_norm_base_lr is None else config.bias_norm_base_lr * global_batch / 256
        groups = parameter_groups(self.method, lr=self.peak_lr, weight_decay=config.weight_decay,
                                  bias_norm_lr=bias_norm_lr)
        self.optimizer = build_optimizer(config.optimizer, groups)
        augmentation = ViewPairAugmentation(self.method.augmentation, config.image_size, info.mean, info.std)
        self.loader = TrainLoader(
            data, augmentation.to(self.device), config.batch_size, seed=config.seed, device=self.device,
            rank=self.rank, world_size=self.world_size, num_workers=config.num_workers,
            channels_last=self.channels_last,
        )
        self.steps_per_epoch = self.loader.steps_per_epoch()
        if self.steps_per_epoch == 0:
            raise ValueError(f"{self.num_samples} samples make no batch of {config.batch_size} per rank")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = self.steps_per_epoch * config.warmup_epochs

        self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self.epoch_acc = EpochAccumulator()
        self.train_seconds = 0.0  # wall time spent in training steps, over all resumptions

    # --- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "metrics": self.metrics,
            "epoch_acc": vars(self.epoch_acc),
            "train_seconds": self.train_seconds,
            "identity_hash": self.config.identity_hash(),
        }

    def save_checkpoint(self) -> None:
        if self.is_main:
            self.run_dir.save_checkpoint(self.state())

    def restore(self) -> int | None:
        """Continue from the run directory's checkpoint, if there is one; returns its step."""
        if not self.run_dir.has_checkpoint():
            return None
        state = self.run_dir.load_checkpoint(map_location=self.device)
        if state["identity_hash"] != self.config.identity_hash():
            raise RuntimeError(f"checkpoint in {self.run_dir.path} belongs to another configuration")
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.metrics = state["metrics"]
        self.epoch_acc = EpochAccumulator(**state["epoch_acc"])
        self.train_seconds = state["train_seconds"]
        return self.step

    # --- the loop ------------------------------------------------------------------------
    def train_step(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, float]:
        lr = set_scheduled_lr(self.optimizer, self.step, self.total_steps, self.warmup_steps)
        self.method.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            out = self.method(x_a, x_b)
        values = {"loss": out.loss.item(), **{name: term.item() for name, term in out.terms.items()}}
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(self.step, values)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        return {**values, "lr": lr}

    def fit(self) -> None:
        config = self.config
        start_epoch = self.step // self.steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"{config.method}", unit="step",
                   disable=not (self.progress and self.is_main and sys.stderr.isatty()), dynamic_ncols=True)
        samples_per_step = config.batch_size * self.world_size
        try:
            for epoch in range(start_epoch, config.epochs):
                batches = self.loader.epoch(epoch, start_batch=self.step - epoch * self.steps_per_epoch)
                tick = time.perf_counter()
                for x_a, x_b, _labels in batches:
                    values = self.train_step(x_a, x_b)
                    now = time.perf_counter()
                    self.epoch_acc.add(values, now - tick)
                    self.train_seconds += now - tick
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.3g}",
                                    samples_s=f"{samples_per_step / max(now - tick, 1e-9):.0f}")
                    if self.step % config.checkpoint_every_steps == 0 and self.step % self.steps_per_epoch:
                        self.save_checkpoint()
                    tick = time.perf_counter()
                self.end_epoch(epoch, samples_per_step)
        finally:
            bar.close()

    def end_epoch(self, epoch: int, samples_per_step: int) -> None:
        means = self.epoch_acc.means()
        row = {
            "epoch": epoch + 1,
            "step": self.step,
            **means,
            "lr": means.get("lr"),
            "samples_per_second": samples_per_step * self.epoch_acc.steps / max(self.epoch_acc.seconds, 1e-9),
            "epoch_seconds": self.epoch_acc.seconds,
        }
        self.metrics.append(row)
        self.epoch_acc = EpochAccumulator()
        self.save_checkpoint()
        if self.is_main:
            self.run_dir.write_metrics(self.metrics)
            terms = " ".join(f"{k}={v:.4g}" for k, v in means.items() if k not in {"loss", "lr"})
            self.log(f"[{self.config.method}] epoch {epoch + 1}/{self.config.epochs} loss={row['loss']:.4f} "
                     f"{terms} lr={row['lr']:.4g} samples/s={row['samples_per_second']:.0f}".replace("  ", " "))


def pretrain(config: RunConfig, results_dir: str | Path, *, progress: bool = True,
             log: Callable[[str], None] = print) -> RunResult:
    """Pre-train `config` into its run directory, resuming it if it was interrupted."""
    run_dir = RunDir.for_config(results_dir, config)
    previous = run_dir.read_status()
    if previous["status"] == "finished":
        log(f"[{config.method}] already finished in {run_dir.path}; not re-running")
        return _result_from_status(config, run_dir, previous)

    trainer = Trainer(config, run_dir, progress=progress, log=log)
    resumed_from = trainer.restore()
    if trainer.is_main:
        run_dir.write_config(config)
        run_dir.write_environment(trainer.device)
        run_dir.write_status("running", step=trainer.step)
    log(f"[{config.method}] {run_dir.path}: {config.backbone}, {trainer.num_samples} images, "
        f"batch {config.batch_size} x {trainer.world_size}, lr {trainer.peak_lr:.4g} "
        f"(base {config.base_lr:g} x batch / 256), {config.epochs} epochs on {trainer.device}"
        + (f"; resuming at step {resumed_from}/{trainer.total_steps}" if resumed_from else ""))
    try:
        trainer.fit()
    except NonFiniteLossError as error:
        run_dir.write_status("failed", error=str(error), failed_step=error.step, terms=error.terms)
        log(f"[{config.method}] FAILED: {error}")
        return RunResult(config.method, run_dir.path, "failed", epochs_done=len(trainer.metrics),
                         error=str(error), resumed_from_step=resumed_from)
    except KeyboardInterrupt:
        trainer.save_checkpoint()
        run_dir.write_status("interrupted", step=trainer.step)
        raise
    except Exception as error:
        run_dir.write_status("failed", error=f"{type(error).__name__}: {error}", failed_step=trainer.step)
        raise
    summary = {
        "epochs_done": len(trainer.metrics),
        "final_loss": trainer.metrics[-1]["loss"],
        "train_seconds": trainer.train_seconds,
        "samples_per_second": trainer.step * config.batch_size * trainer.world_size / max(trainer.train_seconds, 1e-9),
    }
    if trainer.is_main:
        run_dir.write_status("finished", **summary)
    return RunResult(config.method, run_dir.path, "finished", resumed_from_step=resumed_from, **summary)


def _result_from_status(config: RunConfig, run_dir: RunDir, status: dict[str, Any]) -> RunResult:
    return RunResult(
        config.method, run_dir.path, status["status"], epochs_done=status.get("epochs_done", 0),
        final_loss=status.get("final_loss"), train_seconds=status.get("train_seconds", 0.0),
        samples_per_second=status.get("samples_per_second"),
    )
