"""`ssl-bench table` as a command: read run directories, write table.md/.csv/.tex, the plots and
report.html, and print the table (``ssl_bench.report.table`` makes the table, ``.plots`` and
``.html`` the rest)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ssl_bench.report.html import write_report
from ssl_bench.report.plots import write_plots
from ssl_bench.report.runs import collect_runs
from ssl_bench.report.table import (
    PLOTS_DIR,
    PUBLISHED_CSV,
    TABLE_STEM,
    load_published,
    mixed_code_warnings,
    render_csv,
    render_latex,
    render_markdown,
    summarize,
)
from ssl_bench.store.atomic import atomic_write_text


@dataclass(frozen=True)
class TableOutput:
    """What one table build produced: the printed text, the files, and what was skipped."""

    markdown: str
    files: list[Path]
    plots_dir: Path
    plots: list[Path]
    warnings: list[str] = field(default_factory=list)
    report: Path | None = None  # report.html (ssl_bench.report.html)


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
    warnings = [*warnings, *mixed_code_warnings(table)]
    markdown = render_markdown(table)
    files = []
    for suffix, text in ((".md", markdown), (".csv", render_csv(table)), (".tex", render_latex(table))):
        path = out / f"{TABLE_STEM}{suffix}"
        atomic_write_text(path, text)
        files.append(path)
    plots = write_plots(runs, metrics, out / PLOTS_DIR)
    report = write_report(table, plots, out)
    return TableOutput(
        markdown=markdown, files=files, plots_dir=out / PLOTS_DIR, plots=plots, warnings=warnings, report=report
    )


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
    if output.report is not None:
        print(f"report: {output.report.as_posix()}", file=stdout)
    return 0
