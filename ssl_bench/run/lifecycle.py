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
from ssl_bench.eval.probes import knn_top1, select_knn, select_linear_probe
from ssl_bench.memory import peak_memory_mb, reset_peak_memory
from ssl_bench.models.backbones import build_backbone
from ssl_bench.preemption import TrainingStopped
from ssl_bench.provenance import device_name
from ssl_bench.run.record import EVALUATION, RANDOM_INIT, Log, Run
from ssl_bench.store.lock import hold_run_dir
from ssl_bench.store.rundir import CorruptCheckpointError, RunDir
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


def evaluate_run(run: Run, *, log: Log = print) -> dict[str, Any]:
    """Evaluate the pre-trained run and write its ``result.json``; returns the record.

    Whatever state the run is in, it leaves a record: finished (evaluated now, or earlier with the
    same protocol: then nothing is recomputed), failed (pre-training failed: its error from
    status.json), or running (pre-training not finished). An evaluation error is recorded as a
    failure and raised.
    """
    existing = run.finished_record(log)
    if existing is not None:
        return existing
    status = run.read_status()
    if status["status"] == "failed":
        record = {**run.base_record("failed"), "error": status.get("error")}
        run.write_record(record, log)
        return record
    if not run.pretraining_finished(status):
        record = run.base_record("running")
        run.write_record(record, log)
        return record
    return _evaluate(
        run,
        lambda: pretrained_backbone(run.config, run),
        epochs_done=status.get("epochs_done", run.config.epochs),
        log=log,
        load_online_probe=lambda: pretrained_online_probe(run),
        load_encoder=lambda feature: pretrained_backbone(run.config, run, feature),
    )


def evaluate_baseline(run: Run, *, log: Log = print) -> dict[str, Any]:
    """Evaluate the random-init baseline ``run`` (whose config is a :func:`random_init_config`);
    returns its record."""
    if not is_baseline(run.config):
        raise ValueError(f"{run.path} is not a random-init baseline")
    existing = run.finished_record(log)
    if existing is not None:
        return existing
    if not run.pretraining_finished():
        run.write_config_and_environment(resolve_device(run.config.device))
        # Nothing to train: "finished" at once, so that it reads like any finished run.
        run.write_status("finished", epochs_done=0, train_seconds=0.0)
    return _evaluate(run, lambda: initial_backbone(run.config), epochs_done=0, log=log)


def evaluate_checkpoint(
    run: Run,
    load_backbone: Callable[[], nn.Module],
    *,
    provenance: dict[str, Any] | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Evaluate a backbone trained elsewhere (``ssl-bench eval``) in its own run directory; returns its record.

    The directory reads like the baseline's: config, environment, a finished status without
    pre-training here (``provenance``: which weights), then the same evaluation and record as
    every run. Evaluated already under this protocol: the record is reused.
    """
    with hold_run_dir(run.path, log=lambda text: log(f"[{run.config.method}] {text}")):
        existing = run.finished_record(log)
        if existing is not None:
            return existing
        run.write_config_and_environment(resolve_device(run.config.device))
        run.write_status("finished", epochs_done=0, **(provenance or {}))
        return _evaluate(run, load_backbone, epochs_done=0, log=log)


def _evaluate(
    run: Run,
    load_backbone: Callable[[], nn.Module],
    *,
    epochs_done: int,
    log: Log,
    load_online_probe: Callable[[], OnlineProbe | None] = lambda: None,
    load_encoder: Callable[[str], nn.Module] | None = None,
) -> dict[str, Any]:
    config, protocol = run.config, run.protocol
    device = resolve_device(config.device)
    record = run.base_record("running")
    run.write_record(record, log)  # a reader sees "running" while this evaluation goes on
    try:
        reset_peak_memory(device)
        start = time.perf_counter()
        splits, was_cached = cached_features(run, load_backbone, device, epochs_done=epochs_done, log=log)
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
                checkpoint=run.path / AUGMENTED_CHECKPOINT,
                log=log,
            )
        # The representation's scores, then every other feature of config.eval_features (load_encoder
        # gives its encoder) through the same protocol.
        features = {REPRESENTATION: feature_scores(linear, knn, knn_fixed, splits)}
        for feature in config.eval_features[1:]:
            assert load_encoder is not None, f"{feature} features need an encoder"
            other, _ = cached_features(
                run,
                lambda feature=feature: load_encoder(feature),
                device,
                epochs_done=epochs_done,
                log=log,
                feature=feature,
            )
            features[feature] = score_features(other, protocol, seed=config.seed, device=device)
        done = time.perf_counter()
    except Exception as error:
        run.record_failure(error, prefix="evaluation failed: ", log=log)
        raise
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: both records say so, and the next command evaluates again
        record_interrupted_evaluation(run, record, log)
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
    run.write_record(record, log)
    status = run.read_status()
    if status.get("interrupted_in") == EVALUATION:  # pre-training's own status again, now evaluated
        run.write_status("finished", **_without(status, "status", "updated", "interrupted_in", "reason"))
    log(
        f"[{config.method}] test top-1: linear probe {linear.test_top1:.2f}% (lr {linear.setting['lr']:g}, "
        f"wd {linear.setting['weight_decay']:g}, chosen on validation), kNN {knn.test_top1:.2f}% "
        f"(k {knn.setting['k']:g}, T {knn.setting['temperature']:g}), kNN k=200 T=0.1 {knn_fixed:.2f}%"
        f"{'' if online is None else f', online probe {online.test_top1:.2f}%'} "
        f"({len(train.labels)} train / {len(val.labels)} validation / {len(test.labels)} test images, "
        f"{done - start:.1f}s{', cached features' if was_cached else ''})"
    )
    return record


def record_interrupted_evaluation(run: Run, record: dict[str, Any], log: Log) -> None:
    """An evaluation stopped by Ctrl-C or SIGTERM: result.json and status.json both read
    ``interrupted``; status.json keeps pre-training's fields, so the next command evaluates again
    without pre-training again."""
    reason = "interrupted during the evaluation; run the same command again to evaluate"
    run.write_record({**record, "status": "interrupted", "error": None, "updated": time.time()}, log)
    status = run.read_status()
    run.write_status("interrupted", **_without(status, "status", "updated"), interrupted_in=EVALUATION, reason=reason)
    log(f"[{record['method']}] {reason}")


def _without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in keys}


def is_baseline(config: RunConfig) -> bool:
    return config.method == RANDOM_INIT


def run_entry(
    run: Run,
    *,
    progress: bool = True,
    log: Log = print,
    should_stop: Callable[[], bool] | None = None,
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
        return _run_entry(run, progress, log, should_stop, loggers)
    with hold_run_dir(run.path, log=lambda text: log(f"[{run.config.method}] {text}")):
        return _run_entry(run, progress, log, should_stop, loggers)


def _run_entry(
    run: Run,
    progress: bool,
    log: Log,
    should_stop: Callable[[], bool] | None,
    loggers: Sequence[str],
) -> RunResult:
    main = collectives.rank() == 0
    if main:
        run.supersede_other_code(log)
    try:
        if is_baseline(run.config):
            record = evaluate_baseline(run, log=log) if main else {}
            status = record.get("status", "finished")
            return RunResult(run.config.method, run.path, status, train_seconds=0.0)
        track = main and loggers and not run.is_done()
        trackers = open_trackers(loggers, run) if track else NO_TRACKERS
        if main:
            run.record_running(log=log)
        with trackers:  # closed as finished, failed or interrupted, however this ends
            result = pretrain(run, progress=progress, log=log, should_stop=should_stop, trackers=trackers)
            if main:
                record = evaluate_run(run, log=log)  # records a failed pre-training as failed, too
                trackers.log_evaluation(record)
        return result
    except (UsageError, TrainingStopped):
        raise
    except Exception as error:
        # An evaluation error is already recorded (with its "evaluation failed" context); the
        # record was "running" until then, so a "failed" one is this attempt's.
        record = run.read_result()
        if main and (record is None or record.get("status") != "failed"):
            try:
                run.record_failure(error, log=log)
            except OSError as unwritable:  # a full disk or read-only directory: the crash itself is what counts
                log(f"[{run.config.method}] could not record the failure in {run.results_dir}: {unwritable}")
        raise
