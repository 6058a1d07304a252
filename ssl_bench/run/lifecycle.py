"""One run's life: pre-train (or, for the baseline, nothing), evaluate, record.

:func:`run_entry` carries out one entry of a sweep, the same whether the executor is local (a
loop in the command's process) or SLURM (one array task per entry), so a run directory does not
depend on where it was computed. Whatever happens, the run leaves a record
(``ssl_bench.run.record``): a crash is recorded as a failure, with its traceback in ``error.log``.

The random-init baseline
------------------------
The same protocol on the untrained backbone every method of that seed starts from (the trainer
seeds torch with the run's seed, then builds the backbone first), recorded as its own run
directory: method ``random_init``, epochs 0, every method-specific field blanked
(:func:`random_init_config`), so all methods of one dataset/backbone/image size/seed share it.
It is recognised and reused like any run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_bench.config import REPRESENTATION, RunConfig, untrained_fields
from ssl_bench.device import resolve_device
from ssl_bench.distributed import collectives
from ssl_bench.errors import UsageError
from ssl_bench.eval.augmented import AUGMENTED_CHECKPOINT, AugmentedProbeResult, evaluate_augmented
from ssl_bench.eval.features import cached_features, encoder, feature_scores, score_features
from ssl_bench.eval.online import OnlineProbeResult, online_probe_from_state, score_online_probe
from ssl_bench.eval.probes import EvalProtocol, knn_top1, protocol_for, select_knn, select_linear_probe
from ssl_bench.memory import peak_memory_mb, reset_peak_memory
from ssl_bench.models.backbones import build_backbone
from ssl_bench.preemption import TrainingStopped
from ssl_bench.provenance import device_name
from ssl_bench.run.record import (
    RANDOM_INIT,
    Log,
    base_record,
    finished_record,
    is_done,
    read_result,
    record_failure,
    record_running,
    supersede_other_code,
    write_failure,
    write_record,
)
from ssl_bench.store.lock import hold_run_dir
from ssl_bench.store.rundir import EVALUATION, CorruptCheckpointError, RunDir
from ssl_bench.track.fanout import NO_TRACKERS, open_trackers
from ssl_bench.train.assemble import build_method
from ssl_bench.train.monitor import OnlineProbe
from ssl_bench.train.trainer import RunResult, pretrain

# --------------------------------------------------------------------------------------------
# The random-init baseline


def random_init_config(config: RunConfig) -> RunConfig:
    """The baseline's config: ``config``'s dataset, backbone (and its init), image size and seed.

    Built from those fields and the execution settings only (every other field empty or at its
    default), so that every method of one seed maps to one baseline, whatever fields RunConfig
    grows.
    """
    execution = {name: getattr(config, name) for name in RunConfig.EXECUTION_FIELDS}
    return RunConfig(
        method=RANDOM_INIT,
        dataset=config.dataset,
        backbone=config.backbone,
        image_size=config.image_size,
        seed=config.seed,
        zero_init_residual=config.zero_init_residual,
        **untrained_fields(),
        source="random-init baseline: the untrained backbone every run of this seed starts from",
        **execution,
    )


def initial_backbone(config: RunConfig) -> nn.Module:
    """The backbone as initialised for ``config.seed``, before any training step.

    The trainer calls ``torch.manual_seed(seed)`` and then builds the method, whose backbone is
    built first; repeating the seed and the backbone build gives the same weights. The global
    RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone, _ = build_backbone(config.backbone, config.zero_init_residual)
    return backbone


def pretrained_backbone(config: RunConfig, run_dir: RunDir, feature: str = REPRESENTATION) -> nn.Module:
    """The backbone of the run's last checkpoint (with ``feature`` "embedding": backbone then projector)."""
    state = pretrained_state(run_dir)
    if state["identity_hash"] != config.identity_hash():
        raise RuntimeError(f"checkpoint in {run_dir.path} belongs to another configuration")
    with torch.random.fork_rng(devices=[]):  # building draws initial weights we overwrite anyway
        method = build_method(config)
    method.load_state_dict(state["method"])
    return encoder(method, feature)


def pretrained_online_probe(run_dir: RunDir) -> OnlineProbe | None:
    """The online probe of the run's last checkpoint (None when the run had none)."""
    return online_probe_from_state(pretrained_state(run_dir).get("monitor"))


def pretrained_state(run_dir: RunDir) -> dict[str, Any]:
    """The finished run's checkpoint. An unreadable one is moved aside and the run marked failed,
    so that the next command pre-trains it anew (its weights are lost either way)."""
    try:
        return run_dir.load_checkpoint(map_location="cpu")
    except CorruptCheckpointError as error:
        kept = run_dir.set_aside_checkpoint()
        message = f"{error}; moved it to {kept.name}: run the same command again to pre-train anew"
        run_dir.write_status("failed", error=message)
        raise RuntimeError(message) from None


# --------------------------------------------------------------------------------------------
# Evaluating


def evaluate_run(
    config: RunConfig, results_dir: str | Path, protocol: EvalProtocol | None = None, *, log: Log = print
) -> dict[str, Any]:
    """Evaluate the pre-trained run of ``config`` and write its ``result.json``; returns the record.

    Whatever state the run is in, it leaves a record: finished (evaluated now, or earlier with the
    same protocol: then nothing is recomputed), failed (pre-training failed: its error from
    status.json), or running (pre-training not finished). An evaluation error is recorded as a
    failure and raised.
    """
    protocol = protocol or protocol_for(config.dataset)
    run_dir = RunDir.for_config(results_dir, config)
    existing = finished_record(run_dir, config, protocol, log)
    if existing is not None:
        return existing
    status = run_dir.read_status()
    if status["status"] == "failed":
        record = {**base_record(config, run_dir, protocol, "failed"), "error": status.get("error")}
        write_record(run_dir, record, log)
        return record
    if not run_dir.pretraining_finished(status):
        record = base_record(config, run_dir, protocol, "running")
        write_record(run_dir, record, log)
        return record
    return _evaluate(
        run_dir,
        config,
        protocol,
        lambda: pretrained_backbone(config, run_dir),
        epochs_done=status.get("epochs_done", config.epochs),
        log=log,
        load_online_probe=lambda: pretrained_online_probe(run_dir),
        load_encoder=lambda feature: pretrained_backbone(config, run_dir, feature),
    )


def evaluate_baseline(
    config: RunConfig,
    results_dir: str | Path,
    protocol: EvalProtocol | None = None,
    *,
    log: Log = print,
    status_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the random-init baseline of ``config`` (its own run directory); returns its record.
    ``status_extra`` goes into its status.json, as into a pre-training's (a SLURM job's id and logs)."""
    protocol = protocol or protocol_for(config.dataset)
    baseline = random_init_config(config)
    run_dir = RunDir.for_config(results_dir, baseline)
    run_dir.status_extra = dict(status_extra or {})
    existing = finished_record(run_dir, baseline, protocol, log)
    if existing is not None:
        return existing
    if not run_dir.pretraining_finished():
        device = resolve_device(config.device)
        run_dir.write_config(baseline)
        run_dir.write_environment(device)
        # Nothing to train: "finished" at once, so that it reads like any finished run.
        run_dir.write_status("finished", epochs_done=0, train_seconds=0.0)
    return _evaluate(run_dir, baseline, protocol, lambda: initial_backbone(baseline), epochs_done=0, log=log)


def evaluate_checkpoint(
    config: RunConfig,
    results_dir: str | Path,
    load_backbone: Callable[[], nn.Module],
    protocol: EvalProtocol | None = None,
    *,
    provenance: dict[str, Any] | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Evaluate a backbone trained elsewhere (``ssl-bench eval``) in its own run directory; returns its record.

    The directory reads like the baseline's: config, environment, a finished status without
    pre-training here (``provenance``: which weights), then the same evaluation and record as
    every run. Evaluated already under this protocol: the record is reused.
    """
    protocol = protocol or protocol_for(config.dataset)
    run_dir = RunDir.for_config(results_dir, config)
    with hold_run_dir(run_dir.path, log=lambda text: log(f"[{config.method}] {text}")):
        existing = finished_record(run_dir, config, protocol, log)
        if existing is not None:
            return existing
        run_dir.write_config(config)
        run_dir.write_environment(resolve_device(config.device))
        run_dir.write_status("finished", epochs_done=0, **(provenance or {}))
        return _evaluate(run_dir, config, protocol, load_backbone, epochs_done=0, log=log)


def _evaluate(
    run_dir: RunDir,
    config: RunConfig,
    protocol: EvalProtocol,
    load_backbone: Callable[[], nn.Module],
    *,
    epochs_done: int,
    log: Log,
    load_online_probe: Callable[[], OnlineProbe | None] = lambda: None,
    load_encoder: Callable[[str], nn.Module] | None = None,
) -> dict[str, Any]:
    device = resolve_device(config.device)
    record = base_record(config, run_dir, protocol, "running")
    write_record(run_dir, record, log)  # a reader sees "running" while this evaluation goes on
    try:
        reset_peak_memory(device)
        start = time.perf_counter()
        splits, was_cached = cached_features(
            run_dir, config, protocol, load_backbone, device, epochs_done=epochs_done, log=log
        )
        extracted = time.perf_counter()
        train, val, test = splits["train"], splits["val"], splits["test"]
        # Classes from the labels present (ImageFolder data has no fixed class count).
        num_classes = int(max(train.labels.max(), val.labels.max(), test.labels.max())) + 1
        # Settings chosen on the validation split; the test split is scored with them only.
        linear = select_linear_probe(
            train, val, test, protocol.linear, num_classes=num_classes, seed=config.seed, device=device
        )
        probed = time.perf_counter()
        knn = select_knn(train, val, test, protocol.knn, num_classes=num_classes, device=device)
        knn_fixed = knn_top1(train, test, protocol.knn, num_classes=num_classes, device=device)
        probe = load_online_probe()
        online: OnlineProbeResult | None = None if probe is None else score_online_probe(probe, val, test, device)
        augmented: AugmentedProbeResult | None = None
        if protocol.augmented is not None:
            augmented = evaluate_augmented(
                config,
                protocol.augmented,
                load_backbone,
                val,
                test,
                train_samples=protocol.train_samples,
                subset_seed=protocol.subset_seed,
                num_classes=num_classes,
                device=device,
                checkpoint=run_dir.path / AUGMENTED_CHECKPOINT,
                log=log,
            )
        # The representation's scores, then every other feature of config.eval_features (load_encoder
        # gives its encoder) through the same protocol.
        features = {REPRESENTATION: feature_scores(linear, knn, knn_fixed, splits)}
        for feature in config.eval_features[1:]:
            assert load_encoder is not None, f"{feature} features need an encoder"
            other, _ = cached_features(
                run_dir,
                config,
                protocol,
                lambda feature=feature: load_encoder(feature),
                device,
                epochs_done=epochs_done,
                log=log,
                feature=feature,
            )
            features[feature] = score_features(other, protocol, seed=config.seed, device=device)
        done = time.perf_counter()
    except Exception as error:
        write_failure(run_dir, config, error, protocol, prefix="evaluation failed: ", log=log)
        raise
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: both records say so, and the next command evaluates again
        record_interrupted_evaluation(run_dir, record, log)
        raise
    record.update(
        status="finished",
        linear_top1=linear.test_top1,
        knn_top1=knn.test_top1,
        knn_top1_fixed=knn_fixed,
        linear_choice=linear.to_dict(),
        knn_choice=knn.to_dict(),
        online_top1=None if online is None else online.test_top1,
        online_scores=None if online is None else online.to_dict(),
        linear_aug_top1=None if augmented is None else augmented.test_top1,
        linear_aug_scores=None if augmented is None else augmented.to_dict(),
        features=features,
        eval_seconds=done - start,
        eval_peak_memory_mb=peak_memory_mb(device),
        device=str(device),
        device_name=device_name(device),
        updated=time.time(),
        eval_details={
            "train_samples": len(train.labels),
            "val_samples": len(val.labels),
            "test_samples": len(test.labels),
            "feature_dim": train.features.shape[1],
            "features_cached": was_cached,
            "extract_seconds": extracted - start,
            "linear_seconds": probed - extracted,
            "knn_seconds": done - probed,
        },
    )
    write_record(run_dir, record, log)
    status = run_dir.read_status()
    if status.get("interrupted_in") == EVALUATION:  # pre-training's own status again, now evaluated
        run_dir.write_status("finished", **_without(status, "status", "updated", "interrupted_in", "reason"))
    log(
        f"[{config.method}] test top-1: linear probe {linear.test_top1:.2f}% (lr {linear.setting['lr']:g}, "
        f"wd {linear.setting['weight_decay']:g}, chosen on validation), kNN {knn.test_top1:.2f}% "
        f"(k {knn.setting['k']:g}, T {knn.setting['temperature']:g}), kNN k=200 T=0.1 {knn_fixed:.2f}%"
        f"{'' if online is None else f', online probe {online.test_top1:.2f}%'} "
        f"({len(train.labels)} train / {len(val.labels)} validation / {len(test.labels)} test images, "
        f"{done - start:.1f}s{', cached features' if was_cached else ''})"
    )
    return record


def record_interrupted_evaluation(run_dir: RunDir, record: dict[str, Any], log: Log) -> None:
    """An evaluation stopped by Ctrl-C or SIGTERM: result.json and status.json both read
    ``interrupted``; status.json keeps pre-training's fields, so the next command evaluates again
    without pre-training again."""
    reason = "interrupted during the evaluation; run the same command again to evaluate"
    write_record(run_dir, {**record, "status": "interrupted", "error": None, "updated": time.time()}, log)
    status = run_dir.read_status()
    run_dir.write_status(
        "interrupted", **_without(status, "status", "updated"), interrupted_in=EVALUATION, reason=reason
    )
    log(f"[{record['method']}] {reason}")


def _without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in keys}


def is_baseline(config: RunConfig) -> bool:
    return config.method == RANDOM_INIT


def run_entry(
    config: RunConfig,
    results_dir: str | Path,
    *,
    progress: bool = True,
    log: Log = print,
    should_stop: Callable[[], bool] | None = None,
    status_extra: dict[str, Any] | None = None,
    loggers: Sequence[str] = (),
) -> RunResult:
    """Carry out one sweep entry: a baseline is evaluated; a method is pre-trained, then evaluated.

    In a multi-process run every rank pre-trains, and rank 0 alone evaluates and writes records.
    A crash is recorded (rank 0: a failed record, the traceback in ``error.log``) and raised: the
    local loop goes on with the next entry, a SLURM task fails. Not recorded: bad input
    (UsageError, raised before anything is written), and a stop on request (TrainingStopped,
    checkpointed to resume).

    ``loggers``: experiment trackers (ssl_bench.track) that rank 0 sends the pre-training and the
    final evaluation to; a run already done is not logged again.

    Rank 0 holds the run directory's lock meanwhile (``ssl_bench.store.lock``): a second command
    on the same run waits, then finds the work done.
    """
    main = collectives.rank() == 0
    if not main:
        return _run_entry(config, results_dir, progress, log, should_stop, status_extra, loggers)
    with hold_run_dir(RunDir.for_config(results_dir, config).path, log=lambda text: log(f"[{config.method}] {text}")):
        return _run_entry(config, results_dir, progress, log, should_stop, status_extra, loggers)


def _run_entry(
    config: RunConfig,
    results_dir: str | Path,
    progress: bool,
    log: Log,
    should_stop: Callable[[], bool] | None,
    status_extra: dict[str, Any] | None,
    loggers: Sequence[str],
) -> RunResult:
    main = collectives.rank() == 0
    if main:
        supersede_other_code(RunDir.for_config(results_dir, config), config, log)
    try:
        if is_baseline(config):
            record = evaluate_baseline(config, results_dir, log=log, status_extra=status_extra) if main else {}
            status = record.get("status", "finished")
            return RunResult(config.method, RunDir.for_config(results_dir, config).path, status, train_seconds=0.0)
        track = main and loggers and not is_done(config, results_dir)
        trackers = open_trackers(loggers, config, results_dir) if track else NO_TRACKERS
        if main:
            record_running(config, results_dir, log=log)
        with trackers:  # closed as finished, failed or interrupted, however this ends
            result = pretrain(
                config,
                results_dir,
                progress=progress,
                log=log,
                should_stop=should_stop,
                status_extra=status_extra,
                trackers=trackers,
            )
            if main:
                record = evaluate_run(config, results_dir, log=log)  # records a failed pre-training as failed, too
                trackers.log_evaluation(record)
        return result
    except (UsageError, TrainingStopped):
        raise
    except Exception as error:
        # An evaluation error is already recorded (with its "evaluation failed" context); the
        # record was "running" until then, so a "failed" one is this attempt's.
        record = read_result(RunDir.for_config(results_dir, config))
        if main and (record is None or record.get("status") != "failed"):
            try:
                record_failure(config, results_dir, error, log=log)
            except OSError as unwritable:  # a full disk or read-only directory: the crash itself is what counts
                log(f"[{config.method}] could not record the failure in {results_dir}: {unwritable}")
        raise
