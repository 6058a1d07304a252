"""Pre-training one method: the shared loop every method runs through, resumable at any step."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from ssl_bench.config import LR_SCALING_FORMS, RunConfig
from ssl_bench.data.datasets import balanced_subset, dataset_info, load_split
from ssl_bench.data.images import ImageData
from ssl_bench.data.loaders import TrainLoader
from ssl_bench.device import resolve_device
from ssl_bench.distributed import collectives, ddp
from ssl_bench.errors import NonFiniteLossError
from ssl_bench.memory import peak_memory_mb, reset_peak_memory
from ssl_bench.preemption import StopRequest, TrainingStopped, interrupts_at_step_boundaries
from ssl_bench.provenance import code_hash, same_code
from ssl_bench.store.rundir import CorruptCheckpointError, RunDir
from ssl_bench.track.fanout import NO_TRACKERS, Trackers
from ssl_bench.train.assemble import build_augmentation, build_local_crops, build_method, build_run_optimizer
from ssl_bench.train.monitor import TrainingMonitor
from ssl_bench.train.optim import set_scheduled_lr

if TYPE_CHECKING:
    from ssl_bench.run.record import Run


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
    peak_memory_mb: float | None = None


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


class Trainer:
    """Owns everything shared: data, model, optimiser, schedule, logging and checkpoints."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: RunDir,
        *,
        progress: bool = True,
        log: Callable[[str], None] = print,
        should_stop: Callable[[], bool] | None = None,
        data: ImageData | None = None,
        trackers: Trackers = NO_TRACKERS,
    ) -> None:
        """``data``: pre-train on these images instead of loading ``config.dataset`` (whose
        normalisation and classes still apply); ``ssl-bench bench`` passes synthetic images.
        ``trackers``: where each step's and epoch's numbers also go (ssl_bench.track)."""
        self.config = config
        self.trackers = trackers
        self.run_dir = run_dir
        self.progress = progress
        self.log = log
        self.device = resolve_device(config.device)
        self.use_bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        # NHWC activations on CPU too: oneDNN's channels-last convolutions are faster per step
        # (`ssl-bench bench` prints the figures of the machine it runs on).
        self.channels_last = True
        self.rank, self.world_size = collectives.rank(), collectives.world_size()
        self.is_main = self.rank == 0
        # Asked before every step (e.g. a SLURM preemption flag); see ssl_bench.preemption.
        self.should_stop = should_stop
        # config.batch_size is the global batch (as in the recipes); each rank takes its share.
        self.local_batch = ddp.local_batch_size(config.batch_size, self.world_size)

        info = dataset_info(config.dataset)
        if data is None:
            data = load_split(
                config.dataset, config.data_root, "pretrain", download=config.download, hold_out_val=config.hold_out_val
            )
            if config.train_subset is not None and config.train_subset < len(data):
                data = balanced_subset(data, total=config.train_subset, seed=config.seed)
        self.num_samples = len(data)

        torch.manual_seed(config.seed)  # the same initial weights for every run of this seed
        self.method = build_method(config).to(self.device)
        # Online probe and collapse diagnostics, logged per epoch. Whether any sample is
        # unlabelled (STL-10's unlabeled split) is asked once here, not every step. solo-learn's
        # classifier (config.online_probe) is the method's and the optimiser's; the other probe
        # is the monitor's own.
        self.monitor = TrainingMonitor(
            self.method.feature_dim,
            len(data.classes),
            self.device,
            seed=config.seed,
            all_labelled=bool((data.labels >= 0).all()),
            classifier=self.method.online_probe,
        )
        if self.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        # Several ranks: BatchNorm over the global batch where torch can (ssl_bench.distributed.ddp), and DDP
        # around the method. self.method stays the plain module (state dicts, attributes);
        # self.model is what the forward pass calls.
        self.method = ddp.sync_batchnorm(self.method, self.device, enabled=config.sync_batchnorm)
        self.model = ddp.wrap(self.method, self.device)
        self.peak_lr = config.lr
        self.optimizer = build_run_optimizer(config, self.method)
        augmentation = build_augmentation(config, info.mean, info.std)
        local_crops = build_local_crops(config, info.mean, info.std)
        self.loader = TrainLoader(
            data,
            augmentation.to(self.device),
            self.local_batch,
            seed=config.seed,
            device=self.device,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=config.num_workers,
            channels_last=self.channels_last,
            local_crops=None if local_crops is None else local_crops.to(self.device),
        )
        self.steps_per_epoch = self.loader.steps_per_epoch()
        if self.steps_per_epoch == 0:
            raise ValueError(f"{self.num_samples} samples make no batch of {config.batch_size}")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = round(self.steps_per_epoch * config.warmup_epochs)  # warmup_epochs may be a fraction

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
            "monitor": self.monitor.state_dict(),
            "identity_hash": self.config.identity_hash(),
            "code_hash": code_hash(),
        }

    def save_checkpoint(self) -> None:
        if self.is_main:
            self.run_dir.save_checkpoint(self.state())
            # With every checkpoint, so that `ssl-bench status` shows how far a running run is.
            self.run_dir.write_status("running", step=self.step, total_steps=self.total_steps)

    def restore(self) -> int | None:
        """Continue from the run directory's checkpoint, if there is one; returns its step."""
        if not self.run_dir.has_checkpoint():
            return None
        try:
            state = self.run_dir.load_checkpoint(map_location=self.device)
        except CorruptCheckpointError as error:
            # Unusable either way: kept aside for inspection, and the run starts over from step 0.
            ddp.barrier()  # every rank has tried to read it before rank 0 moves it
            if self.is_main:
                kept = self.run_dir.set_aside_checkpoint()
                self.log(f"[{self.config.method}] warning: {error}; moved it to {kept.name} and starting over")
            return None
        if state["identity_hash"] != self.config.identity_hash():
            raise RuntimeError(f"checkpoint in {self.run_dir.path} belongs to another configuration")
        if not same_code(state, self.config):  # another measurement: every rank starts over alike
            self.log(f"[{self.config.method}] the checkpoint was written by other code; starting over")
            return None
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.metrics = state["metrics"]
        self.epoch_acc = EpochAccumulator(**state["epoch_acc"])
        self.train_seconds = state["train_seconds"]
        if "monitor" in state:  # checkpoints written before the monitor existed lack it
            self.monitor.load_state_dict(state["monitor"])
        return self.step

    # --- the loop ------------------------------------------------------------------------
    def train_step(
        self,
        x_a: torch.Tensor,
        x_b: torch.Tensor,
        labels: torch.Tensor | None = None,
        local_views: tuple[torch.Tensor, ...] = (),
    ) -> dict[str, float]:
        lr = set_scheduled_lr(self.optimizer, self.step, self.total_steps, self.warmup_steps, self.config.lr_end_factor)
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            out = self.model(x_a, x_b, local_views) if local_views else self.model(x_a, x_b)
        # One read-back for the loss and all its terms: each .item() is a device sync and copy.
        names = ["loss", *out.terms]
        read = torch.stack([t.detach().reshape(()) for t in (out.loss, *out.terms.values())]).tolist()
        values = dict(zip(names, read))
        # Averaged over ranks: the global batch's loss, and the same on every rank (ssl_bench.distributed.ddp).
        values = ddp.mean_over_ranks(values)
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(self.step, values)
        self.optimizer.zero_grad(set_to_none=True)
        loss = out.loss
        if self.method.online_probe is not None:
            # solo-learn's classifier learns in the same backward and optimiser step as the method
            # (its training_step returns the method's loss + class_loss); on detached features,
            # so the method's gradients are the same as without it.
            views = [r for r in (out.representation, out.representation_b) if r is not None]
            loss = loss + self.monitor.classifier_loss(views, labels)
        loss.backward()
        self.method.before_optimizer_step(self.step, self.steps_per_epoch)
        self.optimizer.step()
        # The method's per-step hook (the EMA of a momentum target), on the plain module: under
        # DDP every rank applies it to the same synchronised parameters.
        self.method.after_optimizer_step(self.step, self.total_steps)
        self.monitor.observe(out.representation, out.embedding, labels)
        return {**values, "lr": lr}

    def fit(self) -> None:
        config = self.config
        start_epoch = self.step // self.steps_per_epoch
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"{config.method}",
            unit="step",
            disable=not (self.progress and self.is_main and sys.stderr.isatty()),
            dynamic_ncols=True,
        )
        samples_per_step = config.batch_size  # the global batch
        self.trackers.start(self.step)
        try:
            for epoch in range(start_epoch, config.epochs):
                batches = self.loader.epoch(epoch, start_batch=self.step - epoch * self.steps_per_epoch)
                tick = time.perf_counter()
                for batch in batches:
                    if self.stop_agreed():
                        self.stop_at_step_boundary()
                    values = self.train_step(*batch)
                    now = time.perf_counter()
                    self.epoch_acc.add(values, now - tick)
                    self.train_seconds += now - tick
                    self.step += 1
                    self.trackers.log_step(self.step, values)
                    bar.update(1)
                    # refresh=False: drawn at the bar's own pace (mininterval), not redrawn every step.
                    bar.set_postfix(
                        loss=f"{values['loss']:.4f}",
                        lr=f"{values['lr']:.3g}",
                        samples_s=f"{samples_per_step / max(now - tick, 1e-9):.0f}",
                        refresh=False,
                    )
                    if self.step % config.checkpoint_every_steps == 0 and self.step % self.steps_per_epoch:
                        self.save_checkpoint()
                    tick = time.perf_counter()
                self.end_epoch(epoch, samples_per_step)
        finally:
            bar.close()

    def stop_agreed(self) -> bool:
        """Whether any rank was asked to stop; every rank gets the same answer, so all stop together."""
        return self.should_stop is not None and ddp.any_rank(self.should_stop())

    def stop_at_step_boundary(self) -> None:
        """Checkpoint the current step (not the last periodic one) and raise TrainingStopped."""
        self.save_checkpoint()
        ddp.barrier()  # no rank leaves before rank 0's checkpoint is on disk
        raise TrainingStopped(self.step, "stop requested")

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
        monitored = self.monitor.end_epoch()
        row.update(monitored)
        self.metrics.append(row)
        self.trackers.log_epoch(row)
        self.epoch_acc = EpochAccumulator()
        self.save_checkpoint()
        if self.is_main:
            self.run_dir.write_metrics(self.metrics)
            terms = " ".join(f"{k}={v:.4g}" for k, v in means.items() if k not in {"loss", "lr"})
            watch = " ".join(f"{k}={v:.3g}" for k, v in monitored.items() if v is not None and k != "online_probe_loss")
            self.log(
                f"[{self.config.method}] epoch {epoch + 1}/{self.config.epochs} loss={row['loss']:.4f} "
                f"{terms} lr={row['lr']:.4g} samples/s={row['samples_per_second']:.0f} {watch}".replace("  ", " ")
            )


def pretrain(
    run: Run,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    should_stop: Callable[[], bool] | None = None,
    trackers: Trackers = NO_TRACKERS,
) -> RunResult:
    """Pre-train the run into its directory, resuming it if it was interrupted.

    ``should_stop`` is asked before every step; when it says yes the run checkpoints that step
    and raises :class:`TrainingStopped`. Every status.json write carries the run's
    ``status_extra`` (a SLURM job records its job id and log paths there). ``trackers`` get every
    step's and epoch's numbers (ssl_bench.track; the caller opens and closes them).
    """
    config = run.config
    previous = run.read_status()
    if run.pretraining_finished(previous) and same_code(previous, config):
        log(f"[{config.method}] already finished in {run.path}; not re-running")
        return _result_from_status(run, previous)

    # Ctrl-C and SIGTERM, like the caller's should_stop, stop the run at a step boundary.
    interrupt = StopRequest()

    def stop_requested() -> bool:
        return interrupt.requested or (should_stop is not None and should_stop())

    trainer = Trainer(config, run, progress=progress, log=log, should_stop=stop_requested, trackers=trackers)
    reset_peak_memory(trainer.device)  # this run's own peak, not an earlier run's in this process
    resumed_from = trainer.restore()
    if trainer.is_main:
        run.write_config_and_environment(trainer.device)
        run.write_status("running", step=trainer.step, total_steps=trainer.total_steps)
    log(
        f"[{config.method}] {run.path}: {config.backbone}, {trainer.num_samples} images, "
        f"batch {config.batch_size}"
        + (f" ({trainer.local_batch} x {trainer.world_size} ranks)" if trainer.world_size > 1 else "")
        + f", lr {trainer.peak_lr:.4g} "
        f"({LR_SCALING_FORMS[config.lr_scaling].replace('base_lr', f'base {config.base_lr:g}')}), "
        f"{config.epochs} epochs on {trainer.device}"
        + (f"; resuming at step {resumed_from}/{trainer.total_steps}" if resumed_from else "")
    )
    try:
        with interrupts_at_step_boundaries(interrupt):
            trainer.fit()
    except NonFiniteLossError as error:
        if trainer.is_main:
            run.write_status("failed", error=str(error), failed_step=error.step, terms=error.terms)
        log(f"[{config.method}] FAILED: {error}")
        return RunResult(
            config.method,
            run.path,
            "failed",
            epochs_done=len(trainer.metrics),
            error=str(error),
            resumed_from_step=resumed_from,
        )
    except KeyboardInterrupt:  # asked twice: stopped mid-step, so the last checkpoint is where it resumes
        if trainer.is_main:
            run.write_status("interrupted", reason="interrupted mid-step; resumes from the last checkpoint")
        raise
    except TrainingStopped as stop:  # the checkpoint of this step is already on disk
        if interrupt.requested:
            stop = TrainingStopped(stop.step, interrupt.reason, interrupt.signal_number)
        if trainer.is_main:
            run.write_status("interrupted", step=stop.step, reason=stop.reason)
        log(f"[{config.method}] {stop}")
        raise stop from None
    except Exception as error:
        if trainer.is_main:
            run.write_status("failed", error=f"{type(error).__name__}: {error}", failed_step=trainer.step)
        raise
    summary = {
        "epochs_done": len(trainer.metrics),
        "final_loss": trainer.metrics[-1]["loss"],
        "train_seconds": trainer.train_seconds,
        "samples_per_second": trainer.step * config.batch_size / max(trainer.train_seconds, 1e-9),
        "peak_memory_mb": peak_memory_mb(trainer.device),
    }
    if trainer.is_main:
        run.write_status("finished", **summary)
    if interrupt.requested:  # during the last step: pre-training is done, evaluation is the next command's
        raise TrainingStopped(trainer.step, interrupt.reason, interrupt.signal_number)
    return RunResult(config.method, run.path, "finished", resumed_from_step=resumed_from, **summary)


def _result_from_status(run: Run, status: dict[str, Any]) -> RunResult:
    return RunResult(
        run.config.method,
        run.path,
        "finished" if run.pretraining_finished(status) else status["status"],
        epochs_done=status.get("epochs_done", 0),
        final_loss=status.get("final_loss"),
        train_seconds=status.get("train_seconds", 0.0),
        samples_per_second=status.get("samples_per_second"),
        peak_memory_mb=status.get("peak_memory_mb"),
    )
