"""``report.html``: the comparison as one self-contained page to open or send.

Written by ``ssl-bench table`` beside table.md/.csv/.tex. The page holds, per group (dataset,
backbone, epochs), the same rows and cells as table.md (means, stds, 95% intervals, the best and
not-significantly-different marks, a line naming mixed code versions) plus two columns: the
**protocol** of the row (the evaluation protocol of its records, linked to its full definition
further down, and the settings chosen on the validation split
for each seed; "as published" for published numbers) and its **runs** (links to each run
directory's config, per-epoch metrics, status, record, error log and SLURM logs, relative to
the page). Below each table come the group's plots, embedded as base64 PNG: the page needs no
other file; only the run links do. Then every protocol in use, field by field.

Like the other outputs, the page depends on the run records only: the same run directories
give the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.report.plots import group_stem
from ssl_bench.report.runs import group_title
from ssl_bench.report.table import (
    GROUP_KEYS,
    RUN_DIRS,
    CellStyle,
    display_cells,
    display_headers,
    explanation,
    mixed_code,
    shown_protocols,
)
from ssl_bench.run.record import RANDOM_INIT, RESULT
from ssl_bench.store.atomic import atomic_write_text

REPORT = "report.html"

HTML = CellStyle(
    pm=" ± ",
    missing="–",
    escape=html.escape,
    best=lambda text: f"<strong>{text}</strong>",
    not_different="<sup>*</sup>",
)

# A run directory's files a reader may want, by the label of their link.
_RUN_FILES = (
    ("config", "config.json"),
    ("metrics", "metrics.jsonl"),
    ("status", "status.json"),
    ("record", RESULT),
    ("error log", "error.log"),
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.explanation { color: #444; max-width: 75em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #d8d8d8; padding: 4px 7px; vertical-align: top; }
th { background: #f2f2f4; text-align: left; }
td.number, td.accuracy { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
span.interval { font-size: 11px; color: #555; }
tr.published td { color: #555; background: #fafafa; font-style: italic; }
tr.failed td { background: #fff1f0; }
tr.baseline td { background: #f5f8ff; }
td.protocol, td.runs, td.note { font-size: 12px; color: #333; }
td.protocol, td.runs { white-space: nowrap; } td.note { max-width: 22em; }
td.runs a, td.protocol a { color: #0b57d0; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e3e3e3; }
figcaption { font-size: 12px; color: #555; }
dl.protocol { font-size: 13px; } dl.protocol dt { font-weight: 600; } dl.protocol dd { margin: 0 0 0.4em 1.5em; }
footer { margin-top: 3em; font-size: 12px; color: #666; }
"""


def _link(path: Path, out: Path) -> str:
    """``path`` relative to the page's directory (the same text from any working directory)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(out))).as_posix()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _records(run_dirs: Sequence[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Each run directory with its result.json (or, without one, its status and config)."""
    records = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        record = _read(path / RESULT) or {**_read(path / "config.json"), **_read(path / "status.json")}
        records.append((path, record))
    return records


_SHORT = {"weight_decay": "wd", "temperature": "T"}


def _setting(choice: Any) -> str:
    """A chosen setting, short: ``lr 0.1, wd 1e-06``."""
    setting = choice.get("setting") if isinstance(choice, dict) else None
    if not isinstance(setting, dict):
        return ""
    return ", ".join(
        f"{_SHORT.get(name, name)} {value:g}" if isinstance(value, (int, float)) else f"{name} {value}"
        for name, value in setting.items()
    )


def _protocol_cell(row: pd.Series, records: list[tuple[Path, dict[str, Any]]]) -> str:
    """The protocol's name (linked to its definition), the images per split, and each seed's chosen settings."""
    if str(row["source"]).startswith("published: "):
        return "as published"
    if row["status"] != "finished":
        return "not evaluated"
    evaluated = [record for _, record in records if isinstance(record.get("eval_protocol"), dict)]
    if not evaluated:
        return "not in its records"
    parts = []
    for protocol_hash in sorted({str(record.get("eval_protocol_hash")) for record in evaluated}):
        name = next(
            r["eval_protocol"].get("name") for r in evaluated if str(r.get("eval_protocol_hash")) == protocol_hash
        )
        parts.append(f'<a href="#protocol-{html.escape(protocol_hash)}">{html.escape(str(name))}</a>')
    counts = sorted(
        {
            "/".join(
                str((record.get("eval_details") or {}).get(f"{split}_samples", "?"))
                for split in ("train", "val", "test")
            )
            for record in evaluated
        }
    )
    parts.append(html.escape(f"train/val/test images {' or '.join(counts)}"))
    for record in evaluated:
        linear, knn = _setting(record.get("linear_choice")), _setting(record.get("knn_choice"))
        parts.append(html.escape(f"s{record.get('seed')}: linear {linear or '–'}; kNN {knn or '–'}"))
    return "<br>".join(parts)


def _runs_cell(records: list[tuple[Path, dict[str, Any]]], out: Path) -> str:
    parts = []
    for path, record in records:
        links = [f'<a href="{html.escape(_link(path, out))}/">s{html.escape(str(record.get("seed")))}</a>:']
        links += [
            f'<a href="{html.escape(_link(path / name, out))}">{label}</a>'
            for label, name in _RUN_FILES
            if (path / name).is_file()
        ]
        slurm = _read(path / "status.json").get("slurm")
        for stream in ("stdout", "stderr") if isinstance(slurm, dict) else ():
            if isinstance(slurm.get(stream), str) and Path(slurm[stream]).is_file():
                links.append(f'<a href="{html.escape(_link(Path(slurm[stream]), out))}">SLURM {stream}</a>')
        parts.append(" ".join(links))
    return "<br>".join(parts)


def _row_class(row: pd.Series) -> str:
    if str(row["source"]).startswith("published: "):
        return "published"
    if row["status"] == "failed":
        return "failed"
    return "baseline" if row["method"] == RANDOM_INIT else "ours"


def _cell_classes(headers: list[str], protocols: list[str]) -> list[str]:
    """The CSS class of each column: method, source and status; n and seeds; the accuracies;
    pre-train (s) and samples/s; note, protocol and runs."""
    classes = ["", "", "", "number", "number", *(["accuracy"] * len(protocols))]
    classes += ["number"] * (len(headers) - len(classes) - 3)
    return [*classes, "note", "protocol", "runs"]


def _accuracy_cell(text: str) -> str:
    """``mean ± std [low, high]`` with the interval on a line of its own."""
    mean, bracket, interval = text.partition(" [")
    return f"{mean}<br><span class='interval'>[{interval}</span>" if bracket else text


def _table(rows: pd.DataFrame, protocols: list[str], out: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """One group's table, and the protocols its records use (hash -> definition)."""
    headers = [*display_headers(protocols), "protocol", "runs"]
    classes = _cell_classes(headers, protocols)
    lines = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>"]
    lines.append("<tbody>")
    used: dict[str, dict[str, Any]] = {}
    for _, row in rows.iterrows():
        records = _records(row[RUN_DIRS])
        for _, record in records:
            if isinstance(record.get("eval_protocol"), dict):
                used[str(record.get("eval_protocol_hash"))] = record["eval_protocol"]
        cells = [*display_cells(row, HTML, protocols), _protocol_cell(row, records), _runs_cell(records, out)]
        tds = [
            f"<td class='{kind}'>{_accuracy_cell(cell) if kind == 'accuracy' else cell}</td>"
            if kind
            else f"<td>{cell}</td>"
            for kind, cell in zip(classes, cells, strict=True)
        ]
        lines.append(f"<tr class='{_row_class(row)}'>" + "".join(tds) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines), used


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def _definition(value: Any) -> str:
    if isinstance(value, dict):
        items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{_definition(v)}</dd>" for k, v in value.items())
        return f"<dl class='protocol'>{items}</dl>"
    if isinstance(value, list):
        return html.escape(", ".join(str(item) for item in value))
    return html.escape("whole split" if value is None else str(value))


def render_report(table: pd.DataFrame, plots: Sequence[Path], out: Path) -> str:
    """The page for ``table`` (``summarize``'s, with its run directories) and the ``plots`` written for it."""
    protocols = shown_protocols(table)
    token = {"n": "\x00n\x00", "bold": "\x00bold\x00", "star": "\x00star\x00"}
    legend = (
        html.escape(explanation(token["n"], token["bold"], token["star"]))
        .replace(token["n"], "<i>n</i>")
        .replace(token["bold"], "<strong>bold</strong>")
        .replace(token["star"], "<sup>*</sup>")
    )
    body = [
        "<h1>ssl-bench results</h1>",
        f"<p class='explanation'>{legend} The protocol column links to each evaluation protocol's "
        "definition below; the runs column to each run's files.</p>",
    ]
    used: dict[str, dict[str, Any]] = {}
    by_name = {path.name: path for path in sorted(plots)}
    for (dataset, backbone, epochs), rows in table.groupby(GROUP_KEYS, sort=False):
        title = group_title(dataset, backbone, epochs)
        rendered, protocols_used = _table(rows, protocols, out)
        used.update(protocols_used)
        stem = group_stem(dataset, backbone, epochs) + "_"
        figures = [_figure(path) for name, path in by_name.items() if name.startswith(stem)]
        warning = mixed_code(rows)
        mixed = [] if warning is None else [f"<p class='warning'>Warning, {html.escape(warning)}.</p>"]
        body += [f"<section class='group'><h2>{html.escape(title)}</h2>", *mixed, rendered, *figures, "</section>"]
    body.append("<section class='protocols'><h2>Evaluation protocols</h2>")
    for protocol_hash in sorted(used):
        definition = used[protocol_hash]
        name = html.escape(str(definition.get("name")))
        body.append(f"<h3 id='protocol-{html.escape(protocol_hash)}'>{name} ({html.escape(protocol_hash)})</h3>")
        body.append(_definition(definition))
    body.append("</section>")
    body.append(
        "<footer>Written by <code>ssl-bench table</code> beside table.md, table.csv and table.tex; "
        "docs/evaluation.md describes the protocols and record fields.</footer>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>ssl-bench results</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(table: pd.DataFrame, plots: Sequence[Path], out: Path) -> Path:
    path = out / REPORT
    atomic_write_text(path, render_report(table, plots, out))
    return path
