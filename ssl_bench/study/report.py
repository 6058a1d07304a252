"""A study's report: per measure, method and variant, the mean over seeds with its 95% Student t
interval, and whether the variant differs from the study's reference variant.

The comparison with the reference is a two-sided paired Student t-test over the seeds both have
(``ssl_bench.report.stats``; every variant of a seed starts from the same initial weights and
data order, so the seed pairs them), at alpha 0.05: ``differs`` when p < alpha, ``no significant
difference`` otherwise, ``untested (n<2)`` with fewer than two shared seeds. "No significant
difference" is not "equal": at 3 seeds only large effects reach significance, and the interval of
the difference says how large an effect the runs could have missed.

Outputs, written atomically into the study's results directory: ``study-<scale>.md`` (what is
printed), ``study-<scale>.csv`` (one row per measure, method and variant; numbers unformatted) and
``study-<scale>.png`` (one panel per measure and method: every seed's value, the mean and its
interval per variant). They depend on the run records only, so a second call rewrites them
byte-identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.report.runs import join_codes, run_code
from ssl_bench.report.stats import mean_interval, paired_t_test
from ssl_bench.run.record import is_done, read_result
from ssl_bench.run.rundir import RunDir, atomic_write_text
from ssl_bench.study.spec import Study, StudyRun

CONFIDENCE = 0.95
ALPHA = 0.05
REFERENCE, DIFFERS, NOT_SIGNIFICANT, UNTESTED = "reference", "differs", "no significant difference", "untested (n<2)"
CSV_COLUMNS = [
    "measure",
    "method",
    "variant",
    "is_reference",
    "n",
    "seeds",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "per_seed",
    "diff_vs_reference",
    "diff_ci_low",
    "diff_ci_high",
    "p_vs_reference",
    "vs_reference",
    "overrides",
    "code",
]


@dataclass(frozen=True)
class StudyReport:
    markdown: str
    table: pd.DataFrame
    files: list[Path]
    complete: bool  # every run finished and evaluated


def lookup(record: dict[str, Any], path: str) -> float:
    """The number at the dotted ``path`` of a record; NaN where it is missing or not a number."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return math.nan
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def collect(study: Study, runs: Sequence[StudyRun], results_dir: Path) -> pd.DataFrame:
    """One row per (method, variant, seed): the run's state, directory and every measure's value."""
    rows = []
    for run in runs:
        run_dir = RunDir.for_config(results_dir, run.config)
        record = read_result(run_dir) or {}
        # What is recorded, by whatever code and evaluation protocol: the report names them, and
        # warns when they are mixed (a run of the study itself re-measures what it must).
        done = is_done(run.config, results_dir, as_recorded=True)
        status = "finished" if done else str(record.get("status") or run_dir.read_status().get("status", "missing"))
        variant = study.variants[run.variant]
        row = {
            "method": run.method,
            "variant": run.variant,
            "seed": run.seed,
            "status": status,
            "run_dir": run_dir.path.relative_to(results_dir).as_posix(),
            "code": run_code(record, run_dir.read_status()) if done else "",
            "protocol": str(record.get("eval_protocol_hash")) if done else "",
        }
        for measure in study.measures:
            row[measure] = lookup(record, variant.measure_path(measure)) if done else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(study: Study, values: pd.DataFrame) -> pd.DataFrame:
    """Per measure, method and variant: the interval over seeds and the test against the reference."""
    rows = []
    for measure in study.measures:
        for method in study.methods:
            of_method = values[values["method"] == method]
            by_variant = {
                name: {
                    int(seed): float(value)
                    for seed, value in zip(rows_["seed"], rows_[measure])
                    if not math.isnan(value)
                }
                for name, rows_ in ((name, of_method[of_method["variant"] == name]) for name in study.variants)
            }
            reference = by_variant[study.reference]
            for name, variant in study.variants.items():
                own = by_variant[name]
                row: dict[str, Any] = {
                    "measure": measure,
                    "method": method,
                    "variant": name,
                    "is_reference": name == study.reference,
                    "n": len(own),
                    "seeds": ",".join(str(seed) for seed in sorted(own)),
                    "per_seed": ";".join(f"{seed}:{own[seed]:.6g}" for seed in sorted(own)),
                    "overrides": " ".join(variant.settings) + (f" [{variant.features}]" if variant.features else ""),
                    "code": join_codes(of_method[of_method["variant"] == name]["code"]),
                }
                if own:
                    interval = mean_interval([own[seed] for seed in sorted(own)], CONFIDENCE)
                    row |= {
                        "mean": interval.mean,
                        "std": interval.std,
                        "ci_low": interval.low,
                        "ci_high": interval.high,
                    }
                row |= _versus_reference(name == study.reference, own, reference)
                rows.append(row)
    return pd.DataFrame.from_records(rows, columns=CSV_COLUMNS)


def mixed_provenance(values: pd.DataFrame) -> list[str]:
    """Warnings naming the code versions and evaluation protocols of the study's finished runs,
    where there is more than one of either."""
    warnings = []
    for column, what in (("code", "code versions"), ("protocol", "evaluation protocols")):
        distinct = join_codes(values[column]).split("+")
        if len(distinct) > 1:
            warnings.append(f"the runs of this report come from {len(distinct)} {what} ({', '.join(distinct)})")
    return warnings


def _versus_reference(is_reference: bool, own: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    if is_reference:
        return {"vs_reference": REFERENCE}
    shared = sorted(set(own) & set(reference))
    if len(shared) < 2:
        return {"vs_reference": UNTESTED if own else ""}
    differences = [own[seed] - reference[seed] for seed in shared]
    test = paired_t_test([own[seed] for seed in shared], [reference[seed] for seed in shared])
    interval = mean_interval(differences, CONFIDENCE)
    return {
        "diff_vs_reference": test.mean_difference,
        "diff_ci_low": interval.low,
        "diff_ci_high": interval.high,
        "p_vs_reference": test.p_value,
        "vs_reference": DIFFERS if test.p_value < ALPHA else NOT_SIGNIFICANT,
    }


# --- rendering ---------------------------------------------------------------------------------
def _number(value: Any, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _digits(measure: str) -> int:
    """Accuracies (in %) with 2 decimals; correlations, ranks and losses with 4."""
    return 2 if measure.endswith("top1") else 4


def render_markdown(study: Study, scale: str, table: pd.DataFrame, values: pd.DataFrame, results_dir: Path) -> str:
    chosen = study.scales[scale]
    lines = [
        f"# Study `{study.name}` ({scale} scale)",
        "",
        f"**Question.** {study.question}",
        "",
        f"- methods: {', '.join(study.methods)}; dataset: {chosen.dataset}; seeds: "
        f"{', '.join(str(seed) for seed in sorted(set(values['seed'])))}",
        f"- shared overrides: `{' '.join([*study.settings, *chosen.settings]) or '(none)'}`",
        f"- reference variant: `{study.reference}`; measures: {', '.join(f'`{m}`' for m in study.measures)}",
        f"- reproduce: `ssl-bench study {study.invocation} --scale {scale} --results-dir {results_dir.as_posix()}`",
        "",
        *(line for warning in mixed_provenance(values) for line in (f"**Warning, {warning}.**", "")),
        "| variant | overrides | what it is |",
        "|:--|:--|:--|",
    ]
    for variant in study.variants.values():
        overrides = " ".join(variant.settings) or "(none)"
        if variant.features:
            overrides += f"; measures read from features.{variant.features}"
        lines.append(f"| `{variant.name}` | `{overrides}` | {variant.description} |")
    lines += [
        "",
        f"Each cell: mean ± sample std over the seeds [{CONFIDENCE:.0%} Student t interval of the mean]. "
        f"Difference: variant minus reference, paired by seed, with its {CONFIDENCE:.0%} interval; p: two-sided "
        f"paired t-test; `{DIFFERS}` at p < {ALPHA}.",
    ]
    for measure in study.measures:
        digits = _digits(measure)
        lines += [
            "",
            f"## `{measure}`",
            "",
            "| method | variant | n | mean ± std [95% CI] | difference [95% CI] | p | vs reference | per seed |",
            "|:--|:--|--:|--:|--:|--:|:--|:--|",
        ]
        for row in table[table["measure"] == measure].itertuples(index=False):
            cell = _number(row.mean, digits)
            if row.n >= 2:
                cell += f" ± {_number(row.std, digits)} [{_number(row.ci_low, digits)}, {_number(row.ci_high, digits)}]"
            difference = _number(row.diff_vs_reference, digits)
            if difference:
                difference += f" [{_number(row.diff_ci_low, digits)}, {_number(row.diff_ci_high, digits)}]"
            name = f"**{row.variant}**" if row.is_reference else row.variant
            lines.append(
                f"| {row.method} | {name} | {row.n} | {cell} | {difference} | {_number(row.p_vs_reference, 3)} "
                f"| {row.vs_reference} | {row.per_seed.replace(';', ', ')} |"
            )
    unfinished = values[values["status"] != "finished"].drop_duplicates("run_dir")
    if len(unfinished):
        lines += ["", "## Runs not finished (left out of the numbers above)", ""]
        lines += [
            f"- {row.method}, {row.variant}, seed {row.seed}: {row.status} (`{row.run_dir}`)"
            for row in unfinished.itertuples()
        ]
    return "\n".join(lines) + "\n"


def render_csv(table: pd.DataFrame) -> str:
    out = table.copy()
    out["n"] = out["n"].astype("Int64")
    return out.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_plot(study: Study, scale: str, table: pd.DataFrame, values: pd.DataFrame, path: Path) -> Path:
    """One panel per measure (rows) and method (columns): per variant every seed's value, the mean
    and its interval; the reference in black, variants that differ from it in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ssl_bench.run.rundir import atomic_path

    names = list(study.variants)
    rows, columns = len(study.measures), len(study.methods)
    figure = Figure(figsize=(max(4.5, 1.1 * len(names) + 1.2) * columns, 2.9 * rows + 0.8), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for i, measure in enumerate(study.measures):
        for j, method in enumerate(study.methods):
            axes = grid[i][j]
            for x, name in enumerate(names):
                seeds = values[(values["method"] == method) & (values["variant"] == name)]
                axes.scatter([x] * len(seeds), seeds[measure], s=12, color="0.6", zorder=2)
                summary = table[
                    (table["measure"] == measure) & (table["method"] == method) & (table["variant"] == name)
                ]
                if summary.empty or pd.isna(summary["mean"].iloc[0]):
                    continue
                row = summary.iloc[0]
                color = (
                    "black" if row["is_reference"] else ("tab:red" if row["vs_reference"] == DIFFERS else "tab:blue")
                )
                low = row["mean"] - row["ci_low"] if not pd.isna(row["ci_low"]) else 0.0
                high = row["ci_high"] - row["mean"] if not pd.isna(row["ci_high"]) else 0.0
                axes.errorbar([x], [row["mean"]], yerr=[[low], [high]], fmt="o", color=color, capsize=4, zorder=3)
            axes.set_xticks(range(len(names)), names, rotation=20, ha="right")
            axes.set_xlim(-0.5, len(names) - 0.5)
            axes.set(title=method, ylabel=measure)
            axes.grid(alpha=0.3, axis="y")
    figure.suptitle(
        f"{study.name} ({scale})\ngrey: seeds; bars: 95% interval; red: differs from {study.reference}",
        fontsize="medium",
    )
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path


def write_report(study: Study, runs: Sequence[StudyRun], results_dir: Path | str, *, scale: str) -> StudyReport:
    """Collect the runs' records, write the markdown, CSV and plot; return what was written."""
    results_dir = Path(results_dir)
    values = collect(study, runs, results_dir)
    table = summarize(study, values)
    markdown = render_markdown(study, scale, table, values, results_dir)
    stem = results_dir / f"study-{scale}"
    files = [stem.with_suffix(".md"), stem.with_suffix(".csv")]
    atomic_write_text(files[0], markdown)
    atomic_write_text(files[1], render_csv(table))
    files.append(write_plot(study, scale, table, values, stem.with_suffix(".png")))
    return StudyReport(markdown, table, files, complete=bool((values["status"] == "finished").all()))
