"""One run (:class:`Run`) and its record, ``result.json``: running, failed or finished, and whether it is done.

The run: :class:`Run`
---------------------
A run directory (``ssl_bench.store.rundir.RunDir``) together with the run's ``RunConfig`` and
the :class:`EvalProtocol` it is evaluated under. A command builds it once, where it starts or
reads a run (:meth:`Run.of`), and hands it down to pre-training, the trackers and the
evaluation; its methods are what a run knows of its own records. Its directory is
``<results>/<dataset>/<method>-<backbone>-e<epochs>-s<seed>-<identity hash>/``.

The record: ``result.json``
---------------------------
Written atomically into every run directory (the baseline's included) by :meth:`Run.record_running`,
:meth:`Run.record_failure` and the evaluation (``ssl_bench.run.lifecycle``); read it with
``RunDir.read_result`` (ssl_bench.store.rundir). ``ssl-bench table`` reads exactly these fields,
whose names are stable:

==========================  ============================================================
``schema_version``          2
``status``                  ``"finished"`` (pre-trained and evaluated), ``"failed"``,
                            ``"running"`` (pre-training or evaluation not done yet), or
                            ``"interrupted"`` (Ctrl-C or SIGTERM during the evaluation; status.json
                            then reads interrupted too, with ``interrupted_in: "evaluation"``)
``method``                  method name; ``"random_init"`` for the baseline, ``"checkpoint"``
                            for a backbone trained elsewhere (``ssl-bench eval``)
``dataset``, ``backbone``   as in the run's config
``epochs``, ``seed``        as in the run's config (epochs 0 for the baseline)
``identity_hash``           ``RunConfig.identity_hash()``: the hash in the directory name
``code_hash``               content hash of the ssl-bench source that wrote the record
                            (ssl_bench.provenance); ``git_commit`` and ``git_dirty`` beside it
                            where the code is a git checkout (else null)
``train_code_hash``         the code hash of the pre-training (status.json's; null for the baseline)
``device_name``             the GPU's or CPU's model name of the evaluation
``linear_top1``             offline linear probe, test top-1 in % of the head chosen on the
                            validation split (null unless finished)
``knn_top1``                weighted kNN, test top-1 in % at the k and T chosen on the
                            validation split (null unless finished)
``knn_top1_fixed``          weighted kNN, test top-1 in % at k = 200, T = 0.1 (lightly's)
``online_top1``             the online probe at the end of pre-training, test top-1 in %
                            (ssl_bench.eval.online; null for the baseline)
``online_scores``           that probe's validation and test top-1 (nothing is chosen)
``linear_aug_top1``         the augmented offline linear probe (ssl_bench.eval.augmented), test
                            top-1 in %; null where the dataset's protocol does not run it
``linear_aug_scores``       its validation and test top-1 and final train loss
``linear_choice``,          the chosen setting, its validation and test top-1, and every
``knn_choice``              setting tried with its validation top-1; ``on_edge``: the axes whose
                            best lies at an open end of the grid (ssl_bench.eval.probes.open_edges)
``selection_split``         ``"val"``: the split every choice was made on
``reported_split``          ``"test"``: the split of the reported numbers
``epochs_done``             epochs pre-trained
``final_loss``              mean loss of the last epoch (null for the baseline)
``online_probe_top1``       last epoch's online-probe train accuracy in % (ssl_bench.train.monitor)
``embedding_std``           last epoch's mean per-dimension std of normalised embeddings
``rankme_representation``   last epoch's RankMe of the representation
``rankme_embedding``        last epoch's RankMe of the embedding
``offdiag_corr_representation``, ``offdiag_corr_embedding``
                            last epoch's mean absolute off-diagonal correlation between the
                            dimensions of the representation / embedding (ssl_bench.train.monitor)
``features``                per evaluated feature (``config.eval_features``: ``representation``,
                            ``embedding``): ``linear_top1``, ``knn_top1``, ``knn_top1_fixed``,
                            ``linear_choice``, ``knn_choice``, ``feature_dim`` and
                            ``offdiag_corr`` on the test split (ssl_bench.eval.features); the
                            top-level numbers are the representation's (null unless finished)
``pretrain_seconds``        wall time in training steps over all resumptions (0 for baseline)
``samples_per_second``      pre-training throughput (null for the baseline)
``peak_memory_mb``          peak memory of pre-training: CUDA ``max_memory_allocated``, or
                            the process's peak RSS on CPU (ssl_bench.memory); null for baseline
``eval_seconds``            wall time of the evaluation that produced the numbers
``eval_peak_memory_mb``     peak memory of that evaluation, measured like ``peak_memory_mb``
``eval_details``            ``train_samples``, ``test_samples``, ``feature_dim``,
                            ``features_cached`` (reused features.pt), ``extract_seconds``,
                            ``linear_seconds``, ``knn_seconds``
``eval_protocol``           the :class:`EvalProtocol` used, as a dict
``eval_protocol_hash``      short hash of ``eval_protocol``
``device``                  the device evaluation ran on (null before evaluation)
``config``                  the resolved RunConfig, as in config.json
``error``                   the error message of a failed run or evaluation, else null
``updated``                 Unix time of the write
==========================  ============================================================

Re-running is safe: a run whose record is finished for the same identity, protocol and code
hash is skipped. A run of the same identity made by other code is another measurement: it is
run again (:meth:`Run.supersede_other_code` first moves its files into ``superseded/<code hash>/``,
with a log line), unless the config's ``reuse_finished`` (``--reuse-finished``) says to keep it.
A record is never replaced silently: a finished record of another protocol is kept as
``result-<its protocol hash>.json`` before the new one is written, with a log line.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_bench.config import RunConfig
from ssl_bench.eval.probes import EvalProtocol, protocol_for
from ssl_bench.provenance import code_hash, code_identity, environment, same_code
from ssl_bench.store.atomic import atomic_write_json
from ssl_bench.store.rundir import RESULT, RunDir

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 2
ERROR_LOG = "error.log"  # the traceback of a crash
RANDOM_INIT = "random_init"  # the method name of the random-init baseline's records
CHECKPOINT_METHOD = "checkpoint"  # the method name of an external backbone's records (ssl-bench eval)
EVALUATION = "evaluation"  # status.json's ``interrupted_in`` for a stop during the evaluation

# What a run directory holds of one measurement: moved together when other code measures again.
RUN_FILES = ("config.json", "environment.json", "metrics.jsonl", "status.json", RESULT, ERROR_LOG)
SUPERSEDED = "superseded"

Log = Callable[[str], None]


def run_dir_name(config: RunConfig) -> str:
    backbone = config.backbone.replace("/", "_").replace(":", "_")
    return f"{config.method}-{backbone}-e{config.epochs}-s{config.seed}-{config.identity_hash()}"


@dataclass(kw_only=True)
class Run(RunDir):
    """One run: its directory, its config and the protocol it is evaluated under."""

    config: RunConfig
    protocol: EvalProtocol

    @classmethod
    def of(
        cls,
        results_dir: str | Path,
        config: RunConfig,
        protocol: EvalProtocol | None = None,
        *,
        status_extra: dict[str, Any] | None = None,
    ) -> Run:
        """The run of ``config`` in ``results_dir``, evaluated under ``protocol`` (the dataset's by
        default); ``status_extra`` goes into every status.json it writes (a SLURM job's id and logs)."""
        return cls(
            Path(results_dir) / config.dataset / run_dir_name(config),
            status_extra=dict(status_extra or {}),
            config=config,
            protocol=protocol or protocol_for(config.dataset),
        )

    @property
    def results_dir(self) -> Path:
        """The results directory the run's directory is in."""
        return self.path.parent.parent

    # --- what the run is and where it ran ------------------------------------------------------
    def resolved_config(self) -> dict[str, Any]:
        """The config as ``config.json`` holds it: every field, and the identity hash."""
        return {**self.config.to_dict(), "identity_hash": self.config.identity_hash()}

    def write_config_and_environment(self, device: torch.device) -> None:
        self.write_config(self.resolved_config())
        self.write_environment(environment(device))

    def pretraining_finished(self, status: dict[str, Any] | None = None) -> bool:
        """Pre-training is done: status.json says finished, or interrupted during the evaluation
        that follows it (``interrupted_in: "evaluation"``; the next command evaluates again)."""
        status = status if status is not None else self.read_status()
        return status["status"] == "finished" or status.get("interrupted_in") == EVALUATION

    # --- the record ----------------------------------------------------------------------------
    def is_done(self, *, as_recorded: bool = False) -> bool:
        """Pre-trained and evaluated under the run's protocol by this code (or
        ``config.reuse_finished``): nothing left to do.

        The one test of "already done", for the local loop and for SLURM submission alike. A report
        of what is recorded passes ``as_recorded``: finished under any protocol and code (the report
        then says which protocol and code made each number, and warns when they are mixed).
        """
        return self._done(self.read_result(), as_recorded=as_recorded)

    def _done(self, record: dict[str, Any] | None, *, as_recorded: bool = False) -> bool:
        return (
            record is not None
            and record.get("status") == "finished"
            and record.get("identity_hash") == self.config.identity_hash()
            and (as_recorded or record.get("eval_protocol_hash") == self.protocol.identity_hash())
            and (as_recorded or same_code(record, self.config))
        )

    def supersede_other_code(self, log: Log) -> Path | None:
        """Move the files of a run made by other code into ``superseded/<its code hash>/``, so that
        this code measures it anew; returns where they went (None: nothing of other code there).

        Kept, not deleted: the earlier measurement stays readable beside the new one. With
        ``config.reuse_finished`` nothing is moved (the run is resumed or reused as it is).
        """
        status = self.read_status()
        if status["status"] == "missing" or same_code(status, self.config):
            return None
        old = status.get("code_hash") or "unknown"
        target = self.path / SUPERSEDED / old
        target.mkdir(parents=True, exist_ok=True)
        moved = [
            path
            for path in self.path.iterdir()
            if path.is_file() and (path.name in RUN_FILES or path.suffix == ".pt" or path.name.startswith("result-"))
        ]
        for path in moved:
            path.replace(target / path.name)
        log(
            f"[{self.config.method}] {self.path} was made by code {old}, this is code {code_hash()}: measuring it "
            f"again (the earlier files are in {target}; --reuse-finished keeps them)"
        )
        return target

    def finished_record(self, log: Log) -> dict[str, Any] | None:
        """The run's record if it is already evaluated under its protocol (then it is reused)."""
        existing = self.read_result()
        if not self._done(existing):
            return None
        if existing.get("code_hash") != code_hash():
            log(f"[{self.config.method}] reusing the record of code {existing.get('code_hash')} (--reuse-finished)")
        log(
            f"[{self.config.method}] already evaluated in {self.path}: linear {existing['linear_top1']:.2f}%, "
            f"kNN {existing['knn_top1']:.2f}%"
        )
        return existing

    def base_record(self, status: str) -> dict[str, Any]:
        """Every field of the record; what the run directory already knows is filled in."""
        config, protocol = self.config, self.protocol
        run_status = self.read_status()
        last = (self.read_metrics() or [{}])[-1]
        is_baseline = config.method == RANDOM_INIT
        return {
            "schema_version": SCHEMA_VERSION,
            "status": status,
            "method": config.method,
            "dataset": config.dataset,
            "backbone": config.backbone,
            "epochs": config.epochs,
            "seed": config.seed,
            "identity_hash": config.identity_hash(),
            **code_identity(),
            "train_code_hash": None if is_baseline else run_status.get("code_hash"),
            "device_name": None,
            "linear_top1": None,
            "knn_top1": None,
            "knn_top1_fixed": None,
            "online_top1": None,
            "online_scores": None,
            "linear_aug_top1": None,
            "linear_aug_scores": None,
            "linear_choice": None,
            "knn_choice": None,
            "selection_split": "val",
            "reported_split": "test",
            "epochs_done": run_status.get("epochs_done", len(self.read_metrics())),
            "final_loss": run_status.get("final_loss"),
            "online_probe_top1": last.get("online_probe_top1"),
            "embedding_std": last.get("embedding_std"),
            "rankme_representation": last.get("rankme_representation"),
            "rankme_embedding": last.get("rankme_embedding"),
            "offdiag_corr_representation": last.get("offdiag_corr_representation"),
            "offdiag_corr_embedding": last.get("offdiag_corr_embedding"),
            "features": None,
            "pretrain_seconds": 0.0 if is_baseline else run_status.get("train_seconds"),
            "samples_per_second": run_status.get("samples_per_second"),
            "peak_memory_mb": run_status.get("peak_memory_mb"),
            "eval_seconds": None,
            "eval_peak_memory_mb": None,
            "eval_details": None,
            "eval_protocol": protocol.to_dict(),
            "eval_protocol_hash": protocol.identity_hash(),
            "device": None,
            "config": config.to_dict(),
            "error": None,
            "updated": time.time(),
        }

    def write_record(self, record: dict[str, Any], log: Log) -> None:
        """Write ``result.json``, first setting aside a finished record of another protocol."""
        previous = self.read_result()
        if (
            previous is not None
            and previous.get("status") == "finished"
            and previous.get("eval_protocol_hash") != record["eval_protocol_hash"]
        ):
            kept = self.path / f"result-{previous.get('eval_protocol_hash')}.json"
            atomic_write_json(kept, previous)
            log(f"[{record['method']}] kept the record of protocol {previous.get('eval_protocol_hash')} as {kept}")
        self.write_result(record)

    def record_running(self, log: Log = print) -> None:
        """Mark the run as running (before pre-training starts), unless it is already finished."""
        if not self.is_done():
            self.write_record(self.base_record("running"), log)

    def record_failure(self, error: BaseException | str, *, prefix: str = "", log: Log = print) -> dict[str, Any]:
        """Write a failed record; returns it. An exception (a crash the caller caught) is recorded
        as ``prefix + "Type: message"``, its traceback in the run directory's ``error.log``."""
        if isinstance(error, BaseException):
            self.path.mkdir(parents=True, exist_ok=True)
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            (self.path / ERROR_LOG).write_text("".join(lines))
            error = f"{type(error).__name__}: {error}"
        record = {**self.base_record("failed"), "error": prefix + error}
        status = self.read_status()
        if status["status"] == "running":  # a crash before pre-training could say so: both files tell the same
            details = {key: value for key, value in status.items() if key not in ("status", "updated")}
            self.write_status("failed", **{**details, "error": prefix + error})
        self.write_record(record, log)
        return record
