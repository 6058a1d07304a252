"""The README's summary of the committed studies, rendered from their report CSVs.

One row per study, scale and measure: the reference against the untrained network, then each
variant's verdict, as the study's report words it (``ssl_bench.study.report``: intervals, gates,
Holm). The README holds this block between :data:`START` and :data:`END`; a test renders it again
from ``results/studies`` and compares, so the summary cannot say more, or other, than the reports.
``python -m ssl_bench.study.summary README.md results/studies`` rewrites the block (the studies
directory lies under the README's).

Smoke-test scales (``smoke_test = true``: their reports are machinery demonstrations) are left
out: they answer nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ssl_bench.study.spec import UNTRAINED, load_study

START = "<!-- study summary: rendered by ssl_bench.study.summary from results/studies; do not edit -->"
END = "<!-- end of study summary -->"


def _seeds(table: pd.DataFrame) -> int:
    return int(table["n"].max())


def _answer(rows: pd.DataFrame) -> str:
    """The verdicts of one measure: the reference's first, then every variant's, by name."""
    reference = rows[rows["is_reference"].astype(str) == "True"]
    others = rows[(rows["is_reference"].astype(str) != "True") & (rows["variant"] != UNTRAINED)]
    parts = [f"`{row.variant}`: {row.verdict}" for row in (*reference.itertuples(), *others.itertuples())]
    return "; ".join(parts)


def study_summary(studies_root: Path, link_root: str) -> str:
    """The markdown block (without its markers) for every study report under ``studies_root``,
    linking each report as ``link_root/<study>/study-<scale>.md``."""
    lines = ["| study | question | scale, seeds | measure | answer (95% intervals, paired by seed) |"]
    lines.append("|:--|:--|:--|:--|:--|")
    for report in sorted(studies_root.glob("*/study-*.csv")):
        scale = report.stem.removeprefix("study-")
        study = load_study(report.parent.name)
        if study.scales[scale].smoke_test:
            continue
        table = pd.read_csv(report, keep_default_na=False, na_values=[""])
        name = f"[`{study.name}`]({link_root}/{report.parent.name}/{report.with_suffix('.md').name})"
        question = study.question
        for measure, rows in table.groupby("measure", sort=False):
            for method, of_method in rows.groupby("method", sort=False):
                lines.append(
                    f"| {name} | {question} | {scale}, {_seeds(of_method)} | `{measure}` ({method}) "
                    f"| {_answer(of_method)} |"
                )
                name, question = "", ""  # once per study
    if len(lines) == 2:
        return "No study has been answered at a scale where self-supervision works yet."
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between :data:`START` and :data:`END` replaced by ``block``."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the text has no block between {START!r} and {END!r}")
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme, studies_root = Path(argv[0]), Path(argv[1])
    block = study_summary(studies_root, studies_root.resolve().relative_to(readme.resolve().parent).as_posix())
    readme.write_text(replace_block(readme.read_text(), block))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
