"""Reading run directories into tables of runs and per-epoch metrics.

Every directory below the given results directories that holds a `config.json` (or a
`result.json`) is one run. A run directory that cannot be read (unparseable JSON, missing
status, a field of the wrong type) is named in a warning and skipped. Each run's `code` is the
code hash of its records (ssl_bench.provenance): the pre-training's and the evaluation's, joined
by "+" when they differ, "unknown" for records written before code hashes were recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.config import RunConfig
from ssl_bench.run.record import CHECKPOINT_METHOD, RANDOM_INIT
from ssl_bench.store.rundir import RESULT

# A run counts in the mean only in this state: pre-training finished and evaluated.
FINISHED = "finished"
NOT_EVALUATED = "finished (not evaluated)"
# Evaluated without pre-training here: the random-init baseline, and backbones trained elsewhere
# (`ssl-bench eval`). They join every group of their dataset and backbone, whatever its epochs.
EVALUATION_ONLY = frozenset({RANDOM_INIT, CHECKPOINT_METHOD})

# Config fields that do not make two runs different settings: the seed is what we average
# over; execution fields change speed, not results.
_NOT_SETTING = frozenset({"seed", "identity_hash"}) | RunConfig.EXECUTION_FIELDS


class RunDirError(Exception):
    """A run directory that cannot be read: it is named in a warning and skipped."""


# --- reading run directories -----------------------------------------------------------------
def find_run_dirs(root: Path) -> list[Path]:
    """Every directory below `root` (itself included) holding a config.json or result.json."""
    found = {p.parent for name in ("config.json", RESULT) for p in root.rglob(name)}
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_json(path: Path) -> dict[str, Any]:
    """A record file as a dict; RunDirError when it is unreadable, not JSON or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunDirError(f"{path.name}: {error}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path.name} is not a JSON object (it holds a {type(data).__name__})")
    return data


# The type each record field must have where it is present and not null: a record that holds
# anything else is not read as a row (a method named 7, a status 5).
_NUMBER = (int, float)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "method": (str,),
    "dataset": (str,),
    "backbone": (str,),
    "identity_hash": (str,),
    "code_hash": (str,),
    "train_code_hash": (str,),
    "epochs": (int,),
    "seed": (int,),
    "source": (str,),
    "error": (str,),
    "linear_top1": _NUMBER,
    "knn_top1": _NUMBER,
    "knn_top1_fixed": _NUMBER,
    "online_top1": _NUMBER,
    "linear_aug_top1": _NUMBER,
    "pretrain_seconds": _NUMBER,
    "train_seconds": _NUMBER,
    "samples_per_second": _NUMBER,
    "peak_memory_mb": _NUMBER,
    "features": (dict,),
    "config": (dict,),
}


def check_field_types(record: dict[str, Any], name: str) -> None:
    """RunDirError naming the file and field when a field of :data:`FIELD_TYPES` has another type."""
    for key, types in FIELD_TYPES.items():
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise RunDirError(f"{name}: its {key} is not {expected}: {value!r}")


def _integer(value: Any, name: str) -> int:
    """A record's integer field (missing: 0); RunDirError for anything else, e.g. "seed": "zero"."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise RunDirError(f"its {name} is not an integer: {value!r}")
    return int(value)


def _first(sources: Iterable[dict[str, Any]], *keys: str) -> Any:
    """The first non-null value of any of `keys` in any of `sources` (tolerates renamed fields)."""
    for source in sources:
        for key in keys:
            if source.get(key) is not None:
                return source[key]
    return None


def _number(value: Any) -> float:
    """A float, NaN for anything missing or non-numeric (so pandas skips it in means)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _one_line(text: Any, limit: int = 200) -> str:
    """Error messages as one short table cell; the full text stays in the run's log."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _log_path(run_dir: Path, records: list[dict[str, Any]], root: Path) -> str | None:
    """Where the run's log is: named in its records, else a *.log/*.out/*.err file in its directory."""
    named = _first(records, "log_path", "log", "stderr")
    if isinstance(named, str):
        path = Path(named)
        return (path.relative_to(root) if path.is_absolute() and path.is_relative_to(root) else path).as_posix()
    candidates = sorted(p for pattern in ("*.log", "*.out", "*.err") for p in run_dir.glob(pattern))
    return candidates[0].relative_to(root).as_posix() if candidates else None


def load_run(run_dir: Path, root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One run directory as a flat record (a table row) and its per-epoch metric rows.

    Raises RunDirError when a file is unparseable or the run's state cannot be told (no
    status.json and no result.json).
    """
    result = _read_json(run_dir / RESULT) if (run_dir / RESULT).is_file() else None
    status = _read_json(run_dir / "status.json") if (run_dir / "status.json").is_file() else None
    if (run_dir / "config.json").is_file():
        config = _read_json(run_dir / "config.json")
    elif result is not None and isinstance(result.get("config"), dict):
        config = result["config"]
    else:
        raise RunDirError("no config.json")
    if status is None and result is None:
        raise RunDirError("no status.json or result.json (half-written run directory)")
    for document, name in ((result, RESULT), (status, "status.json"), (config, "config.json")):
        if document is not None:
            check_field_types(document, name)
    metrics_path = run_dir / "metrics.jsonl"
    metrics: list[dict[str, Any]] = []
    if metrics_path.is_file():
        for number, line in enumerate(metrics_path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    metrics.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise RunDirError(f"metrics.jsonl line {number}: {error}") from None

    records = [doc for doc in (result, status, config) if doc is not None]
    method = _first(records, "method")
    if method is None:
        raise RunDirError("no method in its records")
    state, note = _state(result, status, metrics, config, run_dir, root, records)
    record = {
        "path": run_dir.relative_to(root).as_posix(),
        "method": str(method),
        "dataset": str(_first(records, "dataset")),
        "backbone": str(_first(records, "backbone")),
        "epochs": _integer(_first(records, "epochs"), "epochs"),
        "seed": _integer(_first(records, "seed"), "seed"),
        "identity_hash": str(_first(records, "identity_hash", "config_hash", "config_identity_hash")),
        "code": run_code(result, status),
        "setting": json.dumps(_setting(config), sort_keys=True),
        # The table's source column: our runs, or the file an evaluated checkpoint came from.
        "source": str(config.get("source")) if method == CHECKPOINT_METHOD else "ours",
        "status": state,
        "note": note,
        "linear_top1": _number(_first([result or {}], "linear_top1")),
        "knn_top1": _number(_first([result or {}], "knn_top1")),
        "knn_fixed_top1": _number(_first([result or {}], "knn_top1_fixed")),
        "online_top1": _number(_first([result or {}], "online_top1")),
        "linear_aug_top1": _number(_first([result or {}], "linear_aug_top1")),
        "linear_on_edge": on_edge((result or {}).get("linear_choice")),
        "knn_on_edge": on_edge((result or {}).get("knn_choice")),
        "pretrain_seconds": _number(_first([result or {}, status or {}], "pretrain_seconds", "train_seconds")),
        "samples_per_second": _number(_first([result or {}, status or {}], "samples_per_second")),
        "peak_memory_mb": _number(_first([result or {}, status or {}], "peak_memory_mb")),
    }
    return record, metrics


def on_edge(choice: Any) -> str:
    """The axes a recorded choice names as lying at an open end of its grid (``on_edge``,
    ssl_bench.eval.probes.open_edges), comma-joined; "" for none and for records older than it."""
    axes = choice.get("on_edge") if isinstance(choice, dict) else None
    return ",".join(str(axis) for axis in axes) if isinstance(axes, list) else ""


UNKNOWN_CODE = "unknown"


def run_code(result: dict[str, Any] | None, status: dict[str, Any] | None) -> str:
    """The code hashes of a run's pre-training and evaluation ("+"-joined when they differ)."""
    source = result if result is not None else status or {}
    hashes = [source.get("train_code_hash"), source.get("code_hash")]
    known = list(dict.fromkeys(h for h in hashes if h))
    return "+".join(known) if known else UNKNOWN_CODE


def join_codes(codes: Iterable[Any]) -> str:
    """The distinct code hashes of some runs (each as :func:`run_code` writes it), "+"-joined in
    sorted order; "" for none."""
    return "+".join(sorted({part for code in codes for part in str(code).split("+") if part}))


def _state(
    result: dict[str, Any] | None,
    status: dict[str, Any] | None,
    metrics: list[dict[str, Any]],
    config: dict[str, Any],
    run_dir: Path,
    root: Path,
    records: list[dict[str, Any]],
) -> tuple[str, str]:
    """The run's table status and a one-line note (failing step, error, progress, log).

    result.json (evaluate.py) says finished only when pre-trained and evaluated; its "running"
    just means "not done", so then status.json tells where pre-training stands.
    """
    result_state = None if result is None else result.get("status")
    if result_state == FINISHED:
        return FINISHED, ""
    status_state = None if status is None else status.get("status")
    if "failed" in (result_state, status_state):
        state = "failed"
    elif status_state == FINISHED:  # pre-training finished, evaluation not (yet) done
        return NOT_EVALUATED, ""
    else:
        state = str(status_state or result_state or "missing")
    details = [doc for doc in (status, result) if doc is not None]
    parts = []
    if state == "failed":
        step = _first(details, "failed_step")
        error = _first(details, "error")
        where = f"at step {step}" if step is not None else ""
        parts.append(": ".join(part for part in (where, _one_line(error) if error else "") if part) or "failed")
    else:
        epochs = config.get("epochs")
        parts.append(f"epoch {len(metrics)}/{epochs} done" if epochs else f"{len(metrics)} epochs done")
    log = _log_path(run_dir, records, root)
    if log is not None:
        parts.append(f"log: {log}")
    return state, "; ".join(parts)


def _setting(config: dict[str, Any]) -> dict[str, Any]:
    """The config minus what runs of one setting may differ in (seed, execution fields)."""
    return {key: value for key, value in config.items() if key not in _NOT_SETTING}


def _evaluated(setting: str, feature: str) -> str:
    return json.dumps({**json.loads(setting), "evaluated": feature}, sort_keys=True)


def feature_rows(record: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """One more row per feature the finished run evaluated beside the representation
    (``eval_features``, e.g. the embedding): the run's row with that feature's scores, its
    setting marked ``evaluated=<feature>`` (so the table labels the row by it)."""
    if record["status"] != FINISHED or not (run_dir / RESULT).is_file():
        return []
    features = _read_json(run_dir / RESULT).get("features") or {}
    rows = []
    for feature, scores in sorted(features.items()):
        if feature == "representation" or not isinstance(scores, dict):
            continue
        rows.append(
            {
                **record,
                "setting": _evaluated(record["setting"], feature),
                "linear_top1": _number(scores.get("linear_top1")),
                "knn_top1": _number(scores.get("knn_top1")),
                "knn_fixed_top1": _number(scores.get("knn_top1_fixed")),
                "online_top1": math.nan,  # the online probe watches the representation only
                "linear_aug_top1": _number(scores.get("linear_aug_top1")),
                "linear_on_edge": on_edge(scores.get("linear_choice")),
                "knn_on_edge": on_edge(scores.get("knn_choice")),
            }
        )
    return rows


def collect_runs(results_dirs: Sequence[Path]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """All readable runs (one row each), their metrics (one row per run and epoch), and warnings."""
    records: list[dict[str, Any]] = []
    metric_rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    for root in results_dirs:
        for run_dir in find_run_dirs(root):
            shown = (root / run_dir.relative_to(root)).as_posix()
            try:
                record, metrics = load_run(run_dir, root)
            except RunDirError as error:
                warnings.append(f"skipped {shown}: {error}")
                continue
            # The same run copied into two results directories must count once.
            key = record["identity_hash"] if record["identity_hash"] != "None" else shown
            if key in seen:
                warnings.append(f"skipped {shown}: the same run as {seen[key]}")
                continue
            seen[key] = shown
            others = feature_rows(record, run_dir)
            if others:
                record["setting"] = _evaluated(record["setting"], "representation")
            records.extend({**row, "run_dir": shown} for row in [record, *others])
            # Each metric row carries its run's identity, so plots can group them like the table.
            identity = {
                "run": shown,
                "method": record["method"],
                "dataset": record["dataset"],
                "backbone": record["backbone"],
                "run_epochs": record["epochs"],
                "status": record["status"],
            }
            metric_rows.extend({**row, **identity} for row in metrics if isinstance(row, dict))
    runs = pd.DataFrame.from_records(records, columns=_RUN_COLUMNS)
    return runs, pd.DataFrame.from_records(metric_rows), warnings


_RUN_COLUMNS = [
    "path",
    "method",
    "dataset",
    "backbone",
    "epochs",
    "seed",
    "identity_hash",
    "code",
    "setting",
    "source",
    "run_dir",
    "status",
    "note",
    "linear_top1",
    "knn_top1",
    "knn_fixed_top1",
    "online_top1",
    "linear_aug_top1",
    "linear_on_edge",
    "knn_on_edge",
    "pretrain_seconds",
    "samples_per_second",
    "peak_memory_mb",
]


# --- published numbers -------------------------------------------------------------------------


def groups(runs: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(dataset, backbone, epochs) of every group; the random-init baseline and evaluated checkpoints
    alone make a 0-epoch group only when no pre-trained run shares their dataset and backbone."""
    trained = runs[~runs["method"].isin(EVALUATION_ONLY)]
    groups = set(trained[["dataset", "backbone", "epochs"]].itertuples(index=False, name=None))
    only_evaluated = runs[runs["method"].isin(EVALUATION_ONLY)]
    for dataset, backbone, epochs in only_evaluated[["dataset", "backbone", "epochs"]].itertuples(
        index=False, name=None
    ):
        if not any(d == dataset and b == backbone for d, b, _ in groups):
            groups.add((dataset, backbone, epochs))
    return sorted(groups)


def group_title(dataset: str, backbone: str, epochs: int) -> str:
    unit = "epoch" if epochs == 1 else "epochs"
    return f"{dataset}, {backbone}, {epochs} {unit}" + (" (no pre-training)" if epochs == 0 else "")
