"""Plots of a comparison: per-epoch curves and accuracy against pre-training time.

One set per group (dataset, backbone, epochs). The loss gets one panel per method, each on its
own scale (Barlow Twins' loss is in the hundreds, SimCLR's near 5: on one axis every curve but
one would be flat); monitors that share a scale (online-probe accuracy, effective rank) share
one axis. Legends sit outside the axes, so they never hide a point. PNG bytes depend on the
data only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ssl_bench.report.runs import FINISHED, group_title, groups
from ssl_bench.run.record import RANDOM_INIT
from ssl_bench.store.atomic import atomic_path

# Metric columns that are bookkeeping, not monitors worth a plot of their own.
_TRAINING_COLUMNS = frozenset({"epoch", "step", "loss", "lr", "samples_per_second", "epoch_seconds"})
# Monitors written by the evaluation side, discovered by name rather than listed: the online
# probe's accuracy and the effective rank of the embeddings.
_MONITOR_PATTERN = re.compile(r"(online|probe).*(acc|top1)|(acc|top1).*(online|probe)|rank", re.IGNORECASE)


def _slug(*parts: Any) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)) for part in parts)


def group_stem(dataset: str, backbone: str, epochs: int) -> str:
    """The file name prefix of a group's plots: `<dataset>_<backbone>_e<epochs>`."""
    return _slug(dataset, backbone, f"e{epochs}")


def _colors(methods: Iterable[str]) -> dict[str, str]:
    """One colour per method, the same in every plot of a group (matplotlib's cycle, A-Z order)."""
    return {method: f"C{index % 10}" for index, method in enumerate(sorted(set(methods)))}


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        # No "Software" entry: the PNG bytes then depend on the data only.
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path


def _mean_curve(axes: Any, rows: pd.DataFrame, column: str, color: str, label: str) -> None:
    """Per epoch, the mean over seeds with a +-1 std band (none for one seed)."""
    curve = rows.groupby("epoch", sort=True)[column].agg(["mean", "std"])
    spread = curve["std"].fillna(0.0)
    axes.plot(curve.index, curve["mean"], marker="o", markersize=3, color=color, label=label)
    axes.fill_between(curve.index, curve["mean"] - spread, curve["mean"] + spread, color=color, alpha=0.2, linewidth=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)


def _panel_plot(metrics: pd.DataFrame, column: str, title: str, colors: dict[str, str], path: Path) -> Path:
    """`column` against epoch, one panel per method with its own y scale."""
    methods = sorted(str(m) for m in metrics["method"].unique())
    columns = min(len(methods), 3)
    rows = math.ceil(len(methods) / columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows + 0.4), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for axes, method in zip(axes_grid.flat, methods):
        _mean_curve(axes, metrics[metrics["method"] == method], column, colors[method], method)
        axes.set(title=method, xlabel="epoch", ylabel=column)
    for axes in list(axes_grid.flat)[len(methods) :]:
        axes.set_visible(False)
    figure.suptitle(title)
    return _save(figure, path)


def _shared_plot(metrics: pd.DataFrame, column: str, title: str, colors: dict[str, str], path: Path) -> Path:
    """`column` against epoch, every method on one axis, the legend beside it."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    for method, rows in metrics.groupby("method", sort=True):
        _mean_curve(axes, rows, column, colors[str(method)], str(method))
    axes.set(xlabel="epoch", ylabel=column, title=title)
    figure.legend(loc="outside right upper")
    return _save(figure, path)


def _accuracy_time_plot(runs: pd.DataFrame, title: str, colors: dict[str, str], path: Path) -> Path:
    """Final top-1 against pre-training wall-clock seconds, one point per finished run."""
    figure = Figure(figsize=(7.5, 4), layout="constrained")
    axes = figure.add_subplot()
    for protocol, name, marker in (("linear_top1", "linear", "o"), ("knn_top1", "kNN", "x")):
        for method, rows in runs.dropna(subset=[protocol]).groupby("method", sort=True):
            seconds = rows["pretrain_seconds"].fillna(0.0)  # random init: no pre-training
            axes.scatter(seconds, rows[protocol], marker=marker, color=colors[str(method)], label=f"{method} ({name})")
    axes.set(xlabel="pre-training time (s)", ylabel="top-1 (%)", title=title)
    axes.grid(alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small")
    return _save(figure, path)


def write_plots(runs: pd.DataFrame, metrics: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """Per group: loss, each online-probe / effective-rank monitor, and accuracy against time.

    File names are `<dataset>_<backbone>_e<epochs>_<what>.png`. Curves average every run that
    did not fail (unfinished runs add the epochs they have); failed runs are left out so one
    divergence does not bend a method's curve (the table lists them).
    """
    written: list[Path] = []
    for dataset, backbone, epochs in groups(runs):
        title = group_title(dataset, backbone, epochs)
        stem = group_stem(dataset, backbone, epochs)
        in_group = (
            (runs["dataset"] == dataset)
            & (runs["backbone"] == backbone)
            & ((runs["epochs"] == epochs) | (runs["method"] == RANDOM_INIT))
        )
        colors = _colors(runs[in_group]["method"])
        if "epoch" in metrics:
            curves = metrics[
                (metrics["dataset"] == dataset)
                & (metrics["backbone"] == backbone)
                & (metrics["run_epochs"] == epochs)
                & (metrics["status"] != "failed")
            ]
            monitors = sorted(c for c in curves.columns if c not in _TRAINING_COLUMNS and _MONITOR_PATTERN.search(c))
            for column in ["loss", *monitors]:
                if column in curves and curves[column].notna().any():
                    plot = _panel_plot if column == "loss" else _shared_plot
                    written.append(
                        plot(
                            curves.dropna(subset=[column]),
                            column,
                            title,
                            colors,
                            plots_dir / f"{stem}_{_slug(column)}.png",
                        )
                    )
        finished = runs[in_group & (runs["status"] == FINISHED)].sort_values(["method", "seed", "path"])
        if finished[["linear_top1", "knn_top1"]].notna().any(axis=None):
            written.append(_accuracy_time_plot(finished, title, colors, plots_dir / f"{stem}_accuracy_vs_time.png"))
    return written
