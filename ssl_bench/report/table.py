"""Comparison tables and plots from run directories: `ssl-bench table`, and the end of `ssl-bench run`.

Every directory below the given results directories that holds a `config.json` (or a
`result.json`) is one run. Runs are grouped by (dataset, backbone, pre-training epochs); within
a group each method gets

- one row aggregating its finished, evaluated runs: mean ± sample std (ddof 1) over the `n`
  seeds of linear and kNN top-1 (%), mean pre-training seconds and samples/s;
- one row per run that is not finished and evaluated (failed, running, interrupted, pre-trained
  but not evaluated), with the failing step or error and the log path when known; such runs are
  never averaged in;
- the published numbers of `experiments/published.csv` (shipped as package data) whose setting matches the group (dataset,
  backbone family, epochs and protocol), in rows of their own whose source reads `published: ...`.

The random-init baseline (method `random_init`, 0 epochs) is a row of every group of its dataset
and backbone. Runs of one method whose configurations differ in more than the seed (say another
`base_lr`) are separate rows, labelled by what differs, never averaged together. A run directory
that cannot be read (unparseable JSON, missing status) is named in a warning and skipped.

Outputs, written atomically into the output directory (the first results directory by default):
`table.md` (exactly what is printed), `table.csv` (one flat table, numbers unformatted), `table.tex`
(booktabs) and `plots/*.png`. The text depends on the run records only (sorted rows, fixed
float formats, paths relative to the results directory), so a second call regenerates it
byte-identically.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ssl_bench.config import RunConfig
from ssl_bench.run.record import RANDOM_INIT, RESULT
from ssl_bench.run.rundir import atomic_path, atomic_write_text

PUBLISHED_CSV = Path(str(resources.files("ssl_bench.experiments").joinpath("published.csv")))
TABLE_STEM = "table"
PLOTS_DIR = "plots"

# A run counts in the mean only in this state: pre-training finished and evaluated.
FINISHED = "finished"
NOT_EVALUATED = "finished (not evaluated)"

# Config fields that do not make two runs different settings: the seed is what we average
# over; execution fields change speed, not results.
_NOT_SETTING = frozenset({"seed", "identity_hash"}) | RunConfig.EXECUTION_FIELDS

# Metric columns that are bookkeeping, not monitors worth a plot of their own.
_TRAINING_COLUMNS = frozenset({"epoch", "step", "loss", "lr", "samples_per_second", "epoch_seconds"})
# Monitors written by the evaluation side, discovered by name rather than listed: the online
# probe's accuracy and the effective rank of the embeddings.
_MONITOR_PATTERN = re.compile(r"(online|probe).*(acc|top1)|(acc|top1).*(online|probe)|rank", re.IGNORECASE)

# Columns of table.csv, in order. Numbers stay unformatted there; md/tex format them.
CSV_COLUMNS = [
    "dataset", "backbone", "epochs", "method", "source", "status", "n", "seeds",
    "linear_top1_mean", "linear_top1_std", "knn_top1_mean", "knn_top1_std",
    "pretrain_seconds", "samples_per_second", "peak_memory_mb", "note",
]
_DISPLAY_HEADERS = ["method", "source", "status", "n", "seeds", "linear top-1 (%)", "kNN top-1 (%)",
                    "pre-train (s)", "samples/s", "note"]


class RunDirError(Exception):
    """A run directory that cannot be read: it is named in a warning and skipped."""


@dataclass(frozen=True)
class TableOutput:
    """What one table build produced: the printed text, the files, and what was skipped."""

    markdown: str
    files: list[Path]
    plots_dir: Path
    plots: list[Path]
    warnings: list[str] = field(default_factory=list)


# --- reading run directories -----------------------------------------------------------------
def find_run_dirs(root: Path) -> list[Path]:
    """Every directory below `root` (itself included) holding a config.json or result.json."""
    found = {p.parent for name in ("config.json", RESULT) for p in root.rglob(name)}
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunDirError(f"{path.name}: {error}") from None


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
    if named is not None:
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
    if not all(isinstance(doc, dict) for doc in (config, status or {}, result or {})):
        raise RunDirError("a record is not a JSON object")
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
        "epochs": int(_first(records, "epochs") or 0),
        "seed": int(_first(records, "seed") or 0),
        "identity_hash": str(_first(records, "identity_hash", "config_hash", "config_identity_hash")),
        "setting": json.dumps(_setting(config), sort_keys=True),
        "status": state,
        "note": note,
        "linear_top1": _number(_first([result or {}], "linear_top1")),
        "knn_top1": _number(_first([result or {}], "knn_top1")),
        "pretrain_seconds": _number(_first([result or {}, status or {}], "pretrain_seconds", "train_seconds")),
        "samples_per_second": _number(_first([result or {}, status or {}], "samples_per_second")),
        "peak_memory_mb": _number(_first([result or {}, status or {}], "peak_memory_mb")),
    }
    return record, metrics


def _state(result: dict[str, Any] | None, status: dict[str, Any] | None, metrics: list[dict[str, Any]],
           config: dict[str, Any], run_dir: Path, root: Path, records: list[dict[str, Any]]) -> tuple[str, str]:
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
            records.append(record)
            # Each metric row carries its run's identity, so plots can group them like the table.
            identity = {"run": shown, "method": record["method"], "dataset": record["dataset"],
                        "backbone": record["backbone"], "run_epochs": record["epochs"], "status": record["status"]}
            metric_rows.extend({**row, **identity} for row in metrics if isinstance(row, dict))
    runs = pd.DataFrame.from_records(records, columns=_RUN_COLUMNS)
    return runs, pd.DataFrame.from_records(metric_rows), warnings


_RUN_COLUMNS = ["path", "method", "dataset", "backbone", "epochs", "seed", "identity_hash", "setting", "status",
                "note", "linear_top1", "knn_top1", "pretrain_seconds", "samples_per_second", "peak_memory_mb"]


# --- published numbers -------------------------------------------------------------------------
def backbone_family(backbone: str) -> str:
    """`resnet18_cifar` and `timm:resnet18` are ResNet-18 as far as published numbers go."""
    return backbone.removeprefix("timm:").removesuffix("_cifar")


def load_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    """experiments/published.csv; `top1` is kept as written so its precision is the source's."""
    return pd.read_csv(path, dtype={"top1": str, "epochs": int}, keep_default_na=False)


def published_rows(published: pd.DataFrame, dataset: str, backbone: str, epochs: int) -> list[dict[str, Any]]:
    """The published numbers for one group, one row per (method, source) with both protocols."""
    match = published[(published["dataset"] == dataset) & (published["backbone"] == backbone_family(backbone))
                      & (published["epochs"] == epochs)]
    rows = []
    for (method, source), numbers in match.groupby(["method", "source"], sort=True):
        by_protocol = dict(zip(numbers["protocol"].str.lower(), numbers["top1"]))
        rows.append({"method": method, "source": f"published: {source}", "status": "", "n": None, "seeds": "",
                     "linear_top1_mean": by_protocol.get("linear"), "knn_top1_mean": by_protocol.get("knn"),
                     "note": ""})
    return rows


# --- the table ---------------------------------------------------------------------------------
def _seeds(values: Iterable[int]) -> str:
    return ",".join(str(seed) for seed in sorted(values))


def _variant_labels(runs: pd.DataFrame) -> dict[str, str]:
    """For runs of one method in one group: what sets each setting apart ('' when only one)."""
    settings = sorted(runs["setting"].unique())
    if len(settings) < 2:
        return {setting: "" for setting in settings}
    flat = [_flatten(json.loads(setting)) for setting in settings]
    keys = sorted({key for item in flat for key in item})
    differing = [key for key in keys if len({json.dumps(item.get(key)) for item in flat}) > 1]
    return {setting: ", ".join(f"{key}={_plain(item.get(key))}" for key in differing)
            for setting, item in zip(settings, flat)}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _groups(runs: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(dataset, backbone, epochs) of every group; random-init alone makes a 0-epoch group only
    when no pre-trained run shares its dataset and backbone."""
    trained = runs[runs["method"] != RANDOM_INIT]
    groups = set(trained[["dataset", "backbone", "epochs"]].itertuples(index=False, name=None))
    for dataset, backbone, epochs in runs[runs["method"] == RANDOM_INIT][["dataset", "backbone", "epochs"]].itertuples(
            index=False, name=None):
        if not any(d == dataset and b == backbone for d, b, _ in groups):
            groups.add((dataset, backbone, epochs))
    return sorted(groups)


def summarize(runs: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """The comparison table: one row per aggregated method, unfinished run, and published number."""
    rows: list[dict[str, Any]] = []
    for dataset, backbone, epochs in _groups(runs):
        in_setting = (runs["dataset"] == dataset) & (runs["backbone"] == backbone)
        members = runs[in_setting & ((runs["epochs"] == epochs) | (runs["method"] == RANDOM_INIT))]
        group_rows: list[dict[str, Any]] = []
        for method, of_method in members.groupby("method", sort=True):
            labels = _variant_labels(of_method)
            for setting, runs_of_setting in of_method.groupby("setting", sort=True):
                group_rows.extend(_method_rows(str(method), runs_of_setting, labels[setting]))
        group_rows.extend(published_rows(published, dataset, backbone, epochs))
        group_rows.sort(key=_row_order)
        rows.extend({"dataset": dataset, "backbone": backbone, "epochs": epochs, **row} for row in group_rows)
    return pd.DataFrame.from_records(rows, columns=CSV_COLUMNS)


def _method_rows(method: str, runs: pd.DataFrame, label: str) -> list[dict[str, Any]]:
    """The aggregate of a setting's finished runs, then each of its other runs on its own."""
    runs = runs.sort_values(["seed", "path"])
    baseline_note = "no pre-training (baseline)" if method == RANDOM_INIT else ""
    rows = []
    done = runs[runs["status"] == FINISHED]
    if len(done):
        rows.append({
            "method": method, "source": "ours", "status": FINISHED, "n": len(done), "seeds": _seeds(done["seed"]),
            "linear_top1_mean": done["linear_top1"].mean(), "linear_top1_std": done["linear_top1"].std(ddof=1),
            "knn_top1_mean": done["knn_top1"].mean(), "knn_top1_std": done["knn_top1"].std(ddof=1),
            "pretrain_seconds": done["pretrain_seconds"].mean(),
            "samples_per_second": done["samples_per_second"].mean(),
            "peak_memory_mb": done["peak_memory_mb"].mean(),
            "note": "; ".join(part for part in (label, baseline_note) if part),
        })
    for run in runs[runs["status"] != FINISHED].itertuples(index=False):
        rows.append({
            "method": method, "source": "ours", "status": run.status, "n": None, "seeds": str(run.seed),
            "pretrain_seconds": run.pretrain_seconds, "samples_per_second": run.samples_per_second,
            "peak_memory_mb": run.peak_memory_mb,
            "note": "; ".join(part for part in (label, baseline_note, run.note) if part),
        })
    return rows


def _row_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Baseline first, then methods A-Z; per method ours (aggregate, then other runs) before published."""
    return (row["method"] != RANDOM_INIT, row["method"], row["source"] != "ours", row["status"] != FINISHED,
            row["source"], row["note"], row["seeds"])


# --- rendering ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Style:
    """How one output format writes a cell: the ± sign, a missing value, escaping."""

    pm: str
    missing: str
    escape: Callable[[str], str]


def _escape_markdown(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "…": r"\ldots{}"}


def _escape_latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


MARKDOWN = _Style(pm=" ± ", missing="–", escape=_escape_markdown)
LATEX = _Style(pm=r" $\pm$ ", missing="--", escape=_escape_latex)


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _accuracy(mean: Any, std: Any, style: _Style) -> str:
    if _is_missing(mean):
        return style.missing
    if isinstance(mean, str):  # a published number, shown with the source's own precision
        return mean
    return f"{mean:.2f}" + ("" if _is_missing(std) else f"{style.pm}{std:.2f}")


def _fixed(value: Any, digits: int, style: _Style) -> str:
    return style.missing if _is_missing(value) else f"{value:.{digits}f}"


def _display_cells(row: pd.Series, style: _Style) -> list[str]:
    """One table row as the strings a reader sees (fixed float formats: no run-to-run jitter)."""
    published = row["source"] != "ours"
    blank = "" if published else style.missing
    return [
        style.escape(row["method"]), style.escape(row["source"]), style.escape(row["status"]),
        blank if _is_missing(row["n"]) else str(int(row["n"])), style.escape(row["seeds"]),
        _accuracy(row["linear_top1_mean"], row["linear_top1_std"], style),
        _accuracy(row["knn_top1_mean"], row["knn_top1_std"], style),
        blank if _is_missing(row["pretrain_seconds"]) else _fixed(row["pretrain_seconds"], 1, style),
        blank if _is_missing(row["samples_per_second"]) else _fixed(row["samples_per_second"], 0, style),
        style.escape(row["note"] if isinstance(row["note"], str) else ""),
    ]


def _group_title(dataset: str, backbone: str, epochs: int) -> str:
    unit = "epoch" if epochs == 1 else "epochs"
    return f"{dataset}, {backbone}, {epochs} {unit}" + (" (no pre-training)" if epochs == 0 else "")


_GROUP_KEYS = ["dataset", "backbone", "epochs"]


def render_markdown(table: pd.DataFrame) -> str:
    """Paste-ready markdown: an explanation, then one section and table per group."""
    lines = [
        "# ssl-bench results",
        "",
        "Top-1 accuracy (%) of finished runs: mean ± sample std over the `n` seeds. Failed and unfinished "
        "runs are listed on their own rows, never averaged in. Rows whose source reads `published: ...` "
        "come from experiments/published.csv (same dataset, backbone family, epochs and protocol).",
    ]
    for (dataset, backbone, epochs), rows in table.groupby(_GROUP_KEYS, sort=False):
        cells = [_display_cells(row, MARKDOWN) for _, row in rows.iterrows()]
        body = pd.DataFrame(cells, columns=_DISPLAY_HEADERS).to_markdown(
            index=False, disable_numparse=True, colalign=["left"] * 3 + ["right"] * 6 + ["left"])
        lines += ["", f"## {_group_title(dataset, backbone, epochs)}", "", body]
    return "\n".join(lines) + "\n"


def render_latex(table: pd.DataFrame) -> str:
    """A booktabs tabular: one block per group under an italic group title."""
    width = len(_DISPLAY_HEADERS)
    header = " & ".join(_escape_latex(name).replace("kNN", "$k$NN") for name in _DISPLAY_HEADERS)
    lines = [r"% Generated by `ssl-bench table`; needs \usepackage{booktabs}.",
             r"\begin{tabular}{lllrlrrrrl}", r"\toprule", header + r" \\"]
    for (dataset, backbone, epochs), rows in table.groupby(_GROUP_KEYS, sort=False):
        lines += [r"\midrule",
                  rf"\multicolumn{{{width}}}{{l}}{{\textit{{{_escape_latex(_group_title(dataset, backbone, epochs))}}}}} \\"]
        lines += [" & ".join(_display_cells(row, LATEX)) + r" \\" for _, row in rows.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_csv(table: pd.DataFrame) -> str:
    """The flat table, numbers unformatted but rounded to 6 significant digits (stable text)."""
    numeric = table.copy()
    # Published numbers are kept as written for md/tex; the CSV holds them as numbers like ours.
    for column in ("linear_top1_mean", "knn_top1_mean"):
        numeric[column] = pd.to_numeric(numeric[column])
    numeric["n"] = numeric["n"].astype("Int64")
    return numeric.to_csv(index=False, float_format="%.6g", lineterminator="\n")


# --- plots -------------------------------------------------------------------------------------
def _slug(*parts: Any) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)) for part in parts)


def _colors(methods: Iterable[str]) -> dict[str, str]:
    """One colour per method, the same in every plot of a group (matplotlib's cycle, A-Z order)."""
    return {method: f"C{index % 10}" for index, method in enumerate(sorted(set(methods)))}


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        # No "Software" entry: the PNG bytes then depend on the data only.
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path


def _curve_plot(metrics: pd.DataFrame, column: str, title: str, colors: dict[str, str], path: Path) -> Path:
    """`column` against epoch: per method the mean over seeds, with a ±1 std band."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for method, rows in metrics.groupby("method", sort=True):
        curve = rows.groupby("epoch", sort=True)[column].agg(["mean", "std"])
        spread = curve["std"].fillna(0.0)  # one seed: no band
        color = colors[str(method)]
        axes.plot(curve.index, curve["mean"], marker="o", markersize=3, color=color, label=str(method))
        axes.fill_between(curve.index, curve["mean"] - spread, curve["mean"] + spread, color=color, alpha=0.2,
                          linewidth=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="epoch", ylabel=column, title=title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _accuracy_time_plot(runs: pd.DataFrame, title: str, colors: dict[str, str], path: Path) -> Path:
    """Final top-1 against pre-training wall-clock seconds, one point per finished run."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for protocol, name, marker in (("linear_top1", "linear", "o"), ("knn_top1", "kNN", "x")):
        for method, rows in runs.dropna(subset=[protocol]).groupby("method", sort=True):
            seconds = rows["pretrain_seconds"].fillna(0.0)  # random init: no pre-training
            axes.scatter(seconds, rows[protocol], marker=marker, color=colors[str(method)], label=f"{method} ({name})")
    axes.set(xlabel="pre-training time (s)", ylabel="top-1 (%)", title=title)
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def write_plots(runs: pd.DataFrame, metrics: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """Per group: loss, each online-probe / effective-rank monitor, and accuracy against time.

    File names are `<dataset>_<backbone>_e<epochs>_<what>.png`. Curves average every run that
    did not fail (unfinished runs add the epochs they have); failed runs are left out so one
    divergence does not bend a method's curve (the table lists them).
    """
    written: list[Path] = []
    for dataset, backbone, epochs in _groups(runs):
        title = _group_title(dataset, backbone, epochs)
        stem = _slug(dataset, backbone, f"e{epochs}")
        in_group = ((runs["dataset"] == dataset) & (runs["backbone"] == backbone)
                    & ((runs["epochs"] == epochs) | (runs["method"] == RANDOM_INIT)))
        colors = _colors(runs[in_group]["method"])
        if "epoch" in metrics:
            curves = metrics[(metrics["dataset"] == dataset) & (metrics["backbone"] == backbone)
                             & (metrics["run_epochs"] == epochs) & (metrics["status"] != "failed")]
            monitors = sorted(c for c in curves.columns if c not in _TRAINING_COLUMNS and _MONITOR_PATTERN.search(c))
            for column in ["loss", *monitors]:
                if column in curves and curves[column].notna().any():
                    written.append(_curve_plot(curves.dropna(subset=[column]), column, title, colors,
                                               plots_dir / f"{stem}_{_slug(column)}.png"))
        finished = runs[in_group & (runs["status"] == FINISHED)].sort_values(["method", "seed", "path"])
        if finished[["linear_top1", "knn_top1"]].notna().any(axis=None):
            written.append(_accuracy_time_plot(finished, title, colors, plots_dir / f"{stem}_accuracy_vs_time.png"))
    return written


# --- the command -------------------------------------------------------------------------------
def build_table(results_dirs: Sequence[Path | str], output_dir: Path | str | None = None,
                published_csv: Path = PUBLISHED_CSV) -> TableOutput:
    """Read the runs, write table.md/.csv/.tex and the plots into `output_dir`, return what was made."""
    roots = [Path(d) for d in results_dirs]
    out = Path(output_dir) if output_dir is not None else roots[0]
    runs, metrics, warnings = collect_runs(roots)
    if runs.empty:
        return TableOutput(markdown="", files=[], plots_dir=out / PLOTS_DIR, plots=[], warnings=warnings)
    table = summarize(runs, load_published(published_csv))
    markdown = render_markdown(table)
    files = []
    for suffix, text in ((".md", markdown), (".csv", render_csv(table)), (".tex", render_latex(table))):
        path = out / f"{TABLE_STEM}{suffix}"
        atomic_write_text(path, text)
        files.append(path)
    plots = write_plots(runs, metrics, out / PLOTS_DIR)
    return TableOutput(markdown=markdown, files=files, plots_dir=out / PLOTS_DIR, plots=plots, warnings=warnings)


def print_table(results_dirs: Sequence[Path | str], output_dir: Path | str | None = None, *,
                stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """What `ssl-bench table` prints, and `ssl-bench run` at its end: warnings, table, files, plots.

    Returns 0, or 1 when no run could be read.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    output = build_table(results_dirs, output_dir)
    for warning in output.warnings:
        print(f"ssl-bench: warning: {warning}", file=stderr)
    if not output.files:
        print(f"ssl-bench: no run directories under {', '.join(map(str, results_dirs))}", file=stderr)
        return 1
    print(output.markdown, file=stdout)
    print(f"table: {', '.join(path.as_posix() for path in output.files)}", file=stdout)
    print(f"plots: {output.plots_dir.as_posix()}", file=stdout)
    return 0
