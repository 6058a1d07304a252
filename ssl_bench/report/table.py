"""Comparison tables and plots from run directories: `ssl-bench table`, and the end of `ssl-bench run`.

Every directory below the given results directories that holds a `config.json` (or a
`result.json`) is one run. Runs are grouped by (dataset, backbone, pre-training epochs); within
a group each method gets

- one row aggregating its finished, evaluated runs: mean ± sample std (ddof 1) over the `n`
  seeds of linear and kNN top-1 (%), mean pre-training seconds and samples/s;
- one row per run that is not finished and evaluated (failed, running, interrupted, pre-trained
  but not evaluated), with the failing step or error and the log path when known; such runs are
  never averaged in;
- the published numbers of `experiments/published.csv` (shipped as package data) whose setting
  matches the group (dataset, backbone family, epochs and protocol), in rows of their own whose
  source reads `published: ...`.

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
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from ssl_bench.report.plots import write_plots
from ssl_bench.report.runs import FINISHED, collect_runs, group_title, groups
from ssl_bench.run.record import RANDOM_INIT
from ssl_bench.run.rundir import atomic_write_text

PUBLISHED_CSV = Path(str(resources.files("ssl_bench.experiments").joinpath("published.csv")))
TABLE_STEM = "table"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class TableOutput:
    """What one table build produced: the printed text, the files, and what was skipped."""

    markdown: str
    files: list[Path]
    plots_dir: Path
    plots: list[Path]
    warnings: list[str] = field(default_factory=list)


# Columns of table.csv, in order. Numbers stay unformatted there; md/tex format them.
CSV_COLUMNS = [
    "dataset",
    "backbone",
    "epochs",
    "method",
    "source",
    "status",
    "n",
    "seeds",
    "linear_top1_mean",
    "linear_top1_std",
    "knn_top1_mean",
    "knn_top1_std",
    "pretrain_seconds",
    "samples_per_second",
    "peak_memory_mb",
    "note",
]
_DISPLAY_HEADERS = [
    "method",
    "source",
    "status",
    "n",
    "seeds",
    "linear top-1 (%)",
    "kNN top-1 (%)",
    "pre-train (s)",
    "samples/s",
    "note",
]


def backbone_family(backbone: str) -> str:
    """`resnet18_cifar` and `timm:resnet18` are ResNet-18 as far as published numbers go."""
    return backbone.removeprefix("timm:").removesuffix("_cifar")


def load_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    """experiments/published.csv; `top1` is kept as written so its precision is the source's."""
    return pd.read_csv(path, dtype={"top1": str, "epochs": int}, keep_default_na=False)


def published_rows(published: pd.DataFrame, dataset: str, backbone: str, epochs: int) -> list[dict[str, Any]]:
    """The published numbers for one group, one row per (method, source) with both protocols."""
    match = published[
        (published["dataset"] == dataset)
        & (published["backbone"] == backbone_family(backbone))
        & (published["epochs"] == epochs)
    ]
    rows = []
    for (method, source), numbers in match.groupby(["method", "source"], sort=True):
        by_protocol = dict(zip(numbers["protocol"].str.lower(), numbers["top1"]))
        rows.append(
            {
                "method": method,
                "source": f"published: {source}",
                "status": "",
                "n": None,
                "seeds": "",
                "linear_top1_mean": by_protocol.get("linear"),
                "knn_top1_mean": by_protocol.get("knn"),
                "note": "",
            }
        )
    return rows


# --- the table ---------------------------------------------------------------------------------
def _seeds(values: Iterable[int]) -> str:
    return ",".join(str(seed) for seed in sorted(values))


def _variant_labels(runs: pd.DataFrame) -> dict[str, str]:
    """For runs of one method in one group: what sets each setting apart ('' when only one)."""
    settings = sorted(runs["setting"].unique())
    if len(settings) < 2:
        return dict.fromkeys(settings, "")
    flat = [_flatten(json.loads(setting)) for setting in settings]
    keys = sorted({key for item in flat for key in item})
    differing = [key for key in keys if len({json.dumps(item.get(key)) for item in flat}) > 1]
    return {
        setting: ", ".join(f"{key}={_plain(item.get(key))}" for key in differing)
        for setting, item in zip(settings, flat)
    }


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


def summarize(runs: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """The comparison table: one row per aggregated method, unfinished run, and published number."""
    rows: list[dict[str, Any]] = []
    for dataset, backbone, epochs in groups(runs):
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
        rows.append(
            {
                "method": method,
                "source": "ours",
                "status": FINISHED,
                "n": len(done),
                "seeds": _seeds(done["seed"]),
                "linear_top1_mean": done["linear_top1"].mean(),
                "linear_top1_std": done["linear_top1"].std(ddof=1),
                "knn_top1_mean": done["knn_top1"].mean(),
                "knn_top1_std": done["knn_top1"].std(ddof=1),
                "pretrain_seconds": done["pretrain_seconds"].mean(),
                "samples_per_second": done["samples_per_second"].mean(),
                "peak_memory_mb": done["peak_memory_mb"].mean(),
                "note": "; ".join(part for part in (label, baseline_note) if part),
            }
        )
    for run in runs[runs["status"] != FINISHED].itertuples(index=False):
        rows.append(
            {
                "method": method,
                "source": "ours",
                "status": run.status,
                "n": None,
                "seeds": str(run.seed),
                "pretrain_seconds": run.pretrain_seconds,
                "samples_per_second": run.samples_per_second,
                "peak_memory_mb": run.peak_memory_mb,
                "note": "; ".join(part for part in (label, baseline_note, run.note) if part),
            }
        )
    return rows


def _row_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Baseline first, then methods A-Z; per method ours (aggregate, then other runs) before published."""
    return (
        row["method"] != RANDOM_INIT,
        row["method"],
        row["source"] != "ours",
        row["status"] != FINISHED,
        row["source"],
        row["note"],
        row["seeds"],
    )


# --- rendering ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Style:
    """How one output format writes a cell: the ± sign, a missing value, escaping."""

    pm: str
    missing: str
    escape: Callable[[str], str]


def _escape_markdown(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "…": r"\ldots{}",
}


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
        style.escape(row["method"]),
        style.escape(row["source"]),
        style.escape(row["status"]),
        blank if _is_missing(row["n"]) else str(int(row["n"])),
        style.escape(row["seeds"]),
        _accuracy(row["linear_top1_mean"], row["linear_top1_std"], style),
        _accuracy(row["knn_top1_mean"], row["knn_top1_std"], style),
        blank if _is_missing(row["pretrain_seconds"]) else _fixed(row["pretrain_seconds"], 1, style),
        blank if _is_missing(row["samples_per_second"]) else _fixed(row["samples_per_second"], 0, style),
        style.escape(row["note"] if isinstance(row["note"], str) else ""),
    ]


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
            index=False, disable_numparse=True, colalign=["left"] * 3 + ["right"] * 6 + ["left"]
        )
        lines += ["", f"## {group_title(dataset, backbone, epochs)}", "", body]
    return "\n".join(lines) + "\n"


def render_latex(table: pd.DataFrame) -> str:
    """A booktabs tabular: one block per group under an italic group title."""
    width = len(_DISPLAY_HEADERS)
    header = " & ".join(_escape_latex(name).replace("kNN", "$k$NN") for name in _DISPLAY_HEADERS)
    lines = [
        r"% Generated by `ssl-bench table`; needs \usepackage{booktabs}.",
        r"\begin{tabular}{lllrlrrrrl}",
        r"\toprule",
        header + r" \\",
    ]
    for (dataset, backbone, epochs), rows in table.groupby(_GROUP_KEYS, sort=False):
        lines += [
            r"\midrule",
            rf"\multicolumn{{{width}}}{{l}}{{\textit{{{_escape_latex(group_title(dataset, backbone, epochs))}}}}} \\",
        ]
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
# --- the command -------------------------------------------------------------------------------
def build_table(
    results_dirs: Sequence[Path | str], output_dir: Path | str | None = None, published_csv: Path = PUBLISHED_CSV
) -> TableOutput:
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


def print_table(
    results_dirs: Sequence[Path | str],
    output_dir: Path | str | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
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
