"""A study's report: per measure, method and variant, the mean over seeds with its 95% Student t
interval, the difference from the study's reference variant, the difference from the untrained
network, and a verdict worded from those intervals.

Comparisons are two-sided paired Student t-tests over the seeds both sides have
(``ssl_bench.report.stats``; every variant of a seed starts from the same initial weights and
data order, so the seed pairs them), with the 95% interval of the mean difference:

- **The validity gate.** On an accuracy measure (``*top1``), a variant whose difference from the
  untrained network (``untrained``: the same backbone and protocol, not trained) does not have its
  whole interval above 0 *failed to train at this scale* for that measure: its verdict says so,
  with the run's diagnostics (non-finite loss, RankMe of the representation and embedding beside
  the reference's, embedding std), and the report never reads it as a property of the method. If
  the reference itself fails the gate, every verdict on that measure is *inconclusive at this
  scale*. Measures that are not accuracies (correlations, ranks) are compared with the untrained
  network's value as well as the reference's, without a gate.
- **Verdicts from the interval.** "A is better than B by d [lo, hi]" (or worse, higher, lower)
  only where the interval of the difference excludes 0; otherwise "no significant difference; the
  data rule out differences beyond [lo, hi]": a non-significant test is not evidence of equality.
  Where a study tests several variants against one reference, Holm's adjusted p-values stand
  beside the raw ones, and a verdict that does not survive the adjustment says so.
- A scale marked ``smoke_test`` (the CPU demo) is labelled "machinery demonstration, not an
  answer" in its report. Features of different widths compared with each other are named as a
  confound.
- A run that diverged and was run again at a lower lr (the study's ``lr_ladder``,
  ``ssl_bench.study.ladder``) counts with its retry's numbers, paired by seed like any other; the
  report lists each such run with every lr it diverged at and the lr its numbers come from.

Outputs, written atomically into the study's results directory: ``study-<scale>.md`` (what is
printed), ``study-<scale>.csv`` (one row per measure, method and variant, the untrained network
first; numbers unformatted) and ``study-<scale>.png`` (one panel per measure and method: every
seed's value, the mean and its interval per variant). They depend on the run records only, so a
second call rewrites them byte-identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.errors import is_divergence
from ssl_bench.report.runs import join_codes, run_code
from ssl_bench.report.stats import holm_adjust, mean_interval, paired_t_test
from ssl_bench.run.record import Run
from ssl_bench.store.atomic import atomic_write_text
from ssl_bench.study.spec import UNTRAINED, Study, StudyRun, method_words

CONFIDENCE = 0.95
ALPHA = 0.05
REFERENCE, DIFFERS, NOT_SIGNIFICANT, UNTESTED = "reference", "differs", "no significant difference", "untested (n<2)"
# The validity gate of an accuracy measure: above the untrained network, or not.
ABOVE_UNTRAINED, TRAINING_FAILED, NO_UNTRAINED = "above untrained", "training failed at this scale", "no untrained run"
INCONCLUSIVE = "inconclusive at this scale"
SMOKE_TEST = "machinery demonstration, not an answer"
# What a failed training is shown with, from each run's record.
DIAGNOSTICS = ("final_loss", "rankme_representation", "rankme_embedding", "embedding_std")
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
    "p_holm",
    "vs_reference",
    "diff_vs_untrained",
    "untrained_ci_low",
    "untrained_ci_high",
    "p_vs_untrained",
    "gate",
    "verdict",
    "overrides",
    "code",
]


def is_accuracy(measure: str) -> bool:
    """Accuracies (in %) are what the gate holds against the untrained network."""
    return measure.endswith("top1")


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
    """One row per (method, variant, seed), the untrained network's included: the run's state,
    directory, code, every measure's value and the diagnostics of its training."""
    rows = []
    for run in runs:
        recorded = Run.of(results_dir, run.config)
        record = recorded.read_result() or {}
        # What is recorded, by whatever code and evaluation protocol: the report names them, and
        # warns when they are mixed (a run of the study itself re-measures what it must).
        done = recorded.is_done(as_recorded=True)
        status = "finished" if done else str(record.get("status") or recorded.read_status().get("status", "missing"))
        # The untrained network has no projector: every variant is held against its representation.
        variant = study.variants.get(run.variant)
        path = (lambda measure: measure) if variant is None else variant.measure_path
        feature = "representation" if variant is None or variant.features is None else variant.features
        row = {
            "method": run.method,
            "variant": run.variant,
            "seed": run.seed,
            "status": status,
            "error": str(record.get("error") or recorded.read_status().get("error") or ""),
            "run_dir": recorded.path.relative_to(results_dir).as_posix(),
            "code": run_code(record, recorded.read_status()) if done else "",
            "protocol": str(record.get("eval_protocol_hash")) if done else "",
            "feature_dim": lookup(record, f"features.{feature}.feature_dim") if done else math.nan,
            "retry": retry_text(study, run),
        }
        for measure in study.measures:
            row[measure] = lookup(record, path(measure)) if done else math.nan
        for diagnostic in DIAGNOSTICS:
            row[diagnostic] = lookup(record, diagnostic)
        rows.append(row)
    return pd.DataFrame(rows)


def retry_text(study: Study, run: StudyRun) -> str:
    """How a run came to a lower lr of the study's ladder: every lr it diverged at, and the lr of
    the run its numbers come from ("" for a run at the study's own lr)."""
    if not run.diverged:
        return ""
    tried = ", ".join(f"lr {config.lr:.4g} (x{factor:g})" for config, factor in zip(run.diverged, study.lr_ladder))
    return f"diverged at {tried}; its numbers are of lr {run.config.lr:.4g} (x{study.lr_ladder[run.rung]:g})"


def summarize_study(study: Study, values: pd.DataFrame) -> pd.DataFrame:
    """Per measure and method: the untrained network, then every variant with its interval, its
    tests against the reference and the untrained network, the gate and the verdict."""
    rows = []
    for measure in study.measures:
        for method in study.methods:
            of_method = values[values["method"] == method]
            by_variant = {
                name: {
                    int(seed): float(value)
                    for seed, value in zip(of_variant["seed"], of_variant[measure])
                    if not math.isnan(value)
                }
                for name, of_variant in ((name, of_method[of_method["variant"] == name]) for name in names(study))
            }
            group = [
                _row(study, measure, method, name, by_variant, of_method[of_method["variant"] == name])
                for name in names(study)
            ]
            tested = [row for row in group if not math.isnan(row["p_vs_reference"])]
            for row, adjusted in zip(tested, holm_adjust([row["p_vs_reference"] for row in tested])):
                row["p_holm"] = adjusted
            reference = next(row for row in group if row["is_reference"])
            for row in group:
                row["verdict"] = verdict(row, reference, study.reference, is_accuracy(measure), len(tested))
            rows += group
    return pd.DataFrame.from_records(rows, columns=CSV_COLUMNS)


def names(study: Study) -> list[str]:
    """The untrained network first, then the variants in the file's order."""
    return [UNTRAINED, *study.variants]


def _row(
    study: Study,
    measure: str,
    method: str,
    name: str,
    by_variant: dict[str, dict[int, float]],
    runs: pd.DataFrame,
) -> dict[str, Any]:
    own = by_variant[name]
    variant = study.variants.get(name)
    row: dict[str, Any] = {
        "measure": measure,
        "method": method,
        "variant": name,
        "is_reference": name == study.reference,
        "n": len(own),
        "seeds": ",".join(str(seed) for seed in sorted(own)),
        "per_seed": ";".join(f"{seed}:{own[seed]:.6g}" for seed in sorted(own)),
        "overrides": ""
        if variant is None
        else " ".join(variant.override_words()) + (f" [{variant.features}]" if variant.features else ""),
        "code": join_codes(runs["code"]),
        "p_vs_reference": math.nan,
        "p_holm": math.nan,
        "gate": "",
    }
    if own:
        interval = mean_interval([own[seed] for seed in sorted(own)], CONFIDENCE)
        row |= {"mean": interval.mean, "std": interval.std, "ci_low": interval.low, "ci_high": interval.high}
    if name == UNTRAINED:
        return row | {"vs_reference": ""}
    row |= _versus_reference(name == study.reference, own, by_variant[study.reference])
    versus_untrained = _paired(own, by_variant[UNTRAINED])
    if versus_untrained is not None:
        row |= {
            "diff_vs_untrained": versus_untrained[0],
            "untrained_ci_low": versus_untrained[1],
            "untrained_ci_high": versus_untrained[2],
            "p_vs_untrained": versus_untrained[3],
        }
    if is_accuracy(measure):
        if not by_variant[UNTRAINED]:
            row["gate"] = NO_UNTRAINED
        elif versus_untrained is None:
            row["gate"] = UNTESTED
        else:
            row["gate"] = ABOVE_UNTRAINED if versus_untrained[1] > 0 else TRAINING_FAILED
    return row


def _paired(own: dict[int, float], other: dict[int, float]) -> tuple[float, float, float, float] | None:
    """Mean difference own - other over the shared seeds, its interval and the paired p-value;
    None with fewer than 2 shared seeds."""
    shared = sorted(set(own) & set(other))
    if len(shared) < 2:
        return None
    test = paired_t_test([own[seed] for seed in shared], [other[seed] for seed in shared])
    interval = mean_interval([own[seed] - other[seed] for seed in shared], CONFIDENCE)
    return test.mean_difference, interval.low, interval.high, test.p_value


def _versus_reference(is_reference: bool, own: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    if is_reference:
        return {"vs_reference": REFERENCE}
    paired = _paired(own, reference)
    if paired is None:
        return {"vs_reference": UNTESTED if own else ""}
    difference, low, high, p_value = paired
    return {
        "diff_vs_reference": difference,
        "diff_ci_low": low,
        "diff_ci_high": high,
        "p_vs_reference": p_value,
        "vs_reference": DIFFERS if p_value < ALPHA else NOT_SIGNIFICANT,
    }


def interval_sentence(subject: str, other: str, difference: float, low: float, high: float, accuracy: bool) -> str:
    """The claim an interval of ``subject - other`` supports, and no more."""
    if low > 0 or high < 0:
        above = low > 0
        word = ("better" if above else "worse") if accuracy else ("higher" if above else "lower")
        sign = 1 if above else -1
        bounds = sorted((sign * low, sign * high))
        return f"{subject} is {word} than {other} by {sign * difference:.2f} [{bounds[0]:.2f}, {bounds[1]:.2f}]"
    return f"no significant difference; the data rule out differences beyond [{low:.2f}, {high:.2f}]"


def verdict(row: dict[str, Any], reference: dict[str, Any], reference_name: str, accuracy: bool, tests: int) -> str:
    """One row's reading, from its intervals and the gates."""
    name = row["variant"]
    if name == UNTRAINED:
        return "the untrained network"
    if accuracy and reference["gate"] == TRAINING_FAILED:
        return f"{INCONCLUSIVE}: the reference does not beat the untrained network"
    if row["gate"] == TRAINING_FAILED:
        return f"{TRAINING_FAILED}: not above the untrained network"
    if row["is_reference"]:
        if accuracy and row["gate"] == ABOVE_UNTRAINED:
            above = interval_sentence(
                name, UNTRAINED, row["diff_vs_untrained"], row["untrained_ci_low"], row["untrained_ci_high"], True
            )
            return f"reference; {above}"
        return "reference"
    if math.isnan(row["p_vs_reference"]):
        return row["vs_reference"]
    sentence = interval_sentence(
        name, reference_name, row["diff_vs_reference"], row["diff_ci_low"], row["diff_ci_high"], accuracy
    )
    if row["vs_reference"] == DIFFERS and row["p_holm"] >= ALPHA:
        sentence += f" (not significant after Holm's adjustment for {tests} comparisons)"
    if accuracy and row["gate"] in (NO_UNTRAINED, UNTESTED):
        sentence += f" (not gated: {row['gate']})"
    return sentence


def mixed_provenance(values: pd.DataFrame) -> list[str]:
    """Warnings naming the code versions and evaluation protocols of the study's finished runs,
    where there is more than one of either."""
    warnings = []
    for column, what in (("code", "code versions"), ("protocol", "evaluation protocols")):
        distinct = join_codes(values[column]).split("+")
        if len(distinct) > 1:
            warnings.append(f"the runs of this report come from {len(distinct)} {what} ({', '.join(distinct)})")
    return warnings


# --- rendering ---------------------------------------------------------------------------------
def _number(value: Any, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _digits(measure: str) -> int:
    """Accuracies (in %) with 2 decimals; correlations, ranks and losses with 4."""
    return 2 if measure.endswith("top1") else 4


def render_markdown(study: Study, scale: str, table: pd.DataFrame, values: pd.DataFrame, results_dir: Path) -> str:
    chosen = study.scales[scale]
    lines = [f"# Study `{study.name}` ({scale} scale)", ""]
    if chosen.smoke_test:
        lines += [
            f"**This scale is a {SMOKE_TEST}.** Its runs are too short for self-supervision to beat the "
            "untrained network clearly; the numbers show that the machinery works, not what the answer is.",
            "",
        ]
    lines += [
        f"**Question.** {study.question}",
        "",
        f"- methods: {', '.join(study.methods)}; dataset: {chosen.dataset}; seeds: "
        f"{', '.join(str(seed) for seed in sorted(set(values['seed'])))}",
        f"- shared overrides: `{' '.join(shared_overrides(study, scale)) or '(none)'}`",
        f"- reference variant: `{study.reference}`; measures: {', '.join(f'`{m}`' for m in study.measures)}",
        *ladder_lines(study),
        f"- reproduce: `ssl-bench study {study.invocation} --scale {scale} --results-dir {results_dir.as_posix()}`",
        "",
        *(line for warning in mixed_provenance(values) for line in (f"**Warning, {warning}.**", "")),
        "| variant | overrides | what it is |",
        "|:--|:--|:--|",
        f"| `{UNTRAINED}` | (no pre-training) | the untrained network: the same backbone, protocol and seeds |",
    ]
    for variant in study.variants.values():
        overrides = " ".join(variant.override_words()) or "(none)"
        if variant.features:
            overrides += f"; measures read from features.{variant.features}"
        lines.append(f"| `{variant.name}` | `{overrides}` | {variant.description} |")
    lines += [
        "",
        f"Each cell: mean ± sample std over the seeds [{CONFIDENCE:.0%} Student t interval of the mean]. "
        f"Differences: the row minus the reference (or minus the untrained network), paired by seed, with "
        f"their {CONFIDENCE:.0%} intervals; p: two-sided paired t-test (Holm-adjusted beside it). On accuracies, "
        f"a variant whose interval against the untrained network does not lie above 0 failed to train at this "
        f"scale, and is not read as a property of the method.",
        *_width_confounds(study, values),
        *_retries(study, values),
    ]
    for measure in study.measures:
        digits = _digits(measure)
        lines += [
            "",
            f"## `{measure}`",
            "",
            "| method | variant | n | mean ± std [95% CI] | vs reference [95% CI] | p (Holm) "
            "| vs untrained [95% CI] | verdict | per seed |",
            "|:--|:--|--:|--:|--:|--:|--:|:--|:--|",
        ]
        for row in table[table["measure"] == measure].itertuples(index=False):
            cell = _number(row.mean, digits)
            if row.n >= 2:
                cell += f" ± {_number(row.std, digits)} [{_number(row.ci_low, digits)}, {_number(row.ci_high, digits)}]"
            name = f"**{row.variant}**" if row.is_reference else row.variant
            p_value = _number(row.p_vs_reference, 3)
            if p_value:
                p_value += f" ({_number(row.p_holm, 3)})"
            lines.append(
                f"| {row.method} | {name} | {row.n} | {cell} "
                f"| {_difference(row.diff_vs_reference, row.diff_ci_low, row.diff_ci_high, digits)} | {p_value} "
                f"| {_difference(row.diff_vs_untrained, row.untrained_ci_low, row.untrained_ci_high, digits)} "
                f"| {row.verdict} | {row.per_seed.replace(';', ', ')} |"
            )
    lines += _diagnostics(study, table, values)
    unfinished = values[values["status"] != "finished"].drop_duplicates("run_dir")
    if len(unfinished):
        lines += ["", "## Runs not finished (left out of the numbers above)", ""]
        lines += [
            f"- {row.method}, {row.variant}, seed {row.seed}: {row.status}"
            + (f" ({_one_line(row.error)})" if row.error else "")
            + f" (`{row.run_dir}`)"
            for row in unfinished.itertuples()
        ]
    return "\n".join(lines) + "\n"


def shared_overrides(study: Study, scale: str) -> list[str]:
    """The overrides every variant's runs share at ``scale``: the base's (each method's own as
    ``method:key=value``), then the scale's."""
    return [*study.settings, *method_words(study.method_settings), *study.scales[scale].override_words()]


def ladder_lines(study: Study) -> list[str]:
    """The header line of a study with an lr ladder; none without one."""
    if len(study.lr_ladder) == 1:
        return []
    factors = ", ".join(f"x{factor:g}" for factor in study.lr_ladder)
    return [f"- lr ladder: {factors}: a run whose loss goes non-finite is run again at the next factor"]


def _retries(study: Study, values: pd.DataFrame) -> list[str]:
    """A line per run that stands on a lower rung of the lr ladder (shared runs once)."""
    retried = values[values["retry"] != ""]
    if retried.empty:
        return []
    factors = ", ".join(f"x{factor:g}" for factor in study.lr_ladder)
    lines = [
        "",
        "## Runs retried at a lower learning rate",
        "",
        f"The loss of each of these runs went non-finite, so it was run again with its learning rates times "
        f"the next factor of the lr ladder ({factors}). The tables hold the last run's numbers, paired by "
        "seed with the other variants' runs at the study's own lr.",
        "",
    ]
    for run_dir, rows in retried.groupby("run_dir", sort=False):
        row = rows.iloc[0]
        variants = ", ".join(f"`{name}`" for name in dict.fromkeys(rows["variant"]))
        run = f"{row['method']}, {variants}, seed {row['seed']}"
        lines.append(f"- {run}: {row['retry']}: {row['status']} (`{run_dir}`)")
    return lines


def _difference(value: float, low: float, high: float, digits: int) -> str:
    text = _number(value, digits)
    return f"{text} [{_number(low, digits)}, {_number(high, digits)}]" if text else ""


def _one_line(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _width_confounds(study: Study, values: pd.DataFrame) -> list[str]:
    """A line per method whose variants probe features of different widths."""
    lines = []
    for method in study.methods:
        finished = values[(values["method"] == method) & values["feature_dim"].notna()]
        widths = {
            name: int(finished[finished["variant"] == name]["feature_dim"].iloc[0])
            for name in study.variants
            if (finished["variant"] == name).any()
        }
        if len(set(widths.values())) > 1:
            listed = ", ".join(f"`{name}` {width}" for name, width in widths.items())
            lines += [
                "",
                f"Confound: the features of {method}'s variants differ in width ({listed}); a probe on a wider "
                "feature has more to work with, so a difference may be the width's as much as the variant's.",
            ]
    return lines


def _diagnostics(study: Study, table: pd.DataFrame, values: pd.DataFrame) -> list[str]:
    """For every variant that failed the gate: each seed's diagnostics beside the reference's."""
    failed = table[(table["gate"] == TRAINING_FAILED) | table["verdict"].str.startswith(INCONCLUSIVE)]
    if failed.empty:
        return []
    lines = ["", "## Trainings that failed at this scale", ""]
    for (method, name), rows in failed.groupby(["method", "variant"], sort=False):
        measures = ", ".join(f"`{measure}`" for measure in rows["measure"])
        lines.append(f"- {method}, `{name}` (not above the untrained network on {measures}):")
        of_method = values[values["method"] == method]
        reference = of_method[of_method["variant"] == study.reference].set_index("seed")
        for run in of_method[of_method["variant"] == name].itertuples():
            parts = []
            if is_divergence(run.error):
                parts.append("non-finite loss")
            for diagnostic in DIAGNOSTICS:
                own = _number(getattr(run, diagnostic), 4)
                ref = _number(reference[diagnostic].get(run.seed, math.nan), 4) if name != study.reference else ""
                parts.append(f"{diagnostic} {own or 'n/a'}" + (f" (reference {ref})" if ref else ""))
            lines.append(f"  - seed {run.seed}: {'; '.join(parts)}")
    return lines


def render_csv(table: pd.DataFrame) -> str:
    out = table.copy()
    out["n"] = out["n"].astype("Int64")
    return out.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_plot(study: Study, scale: str, table: pd.DataFrame, values: pd.DataFrame, path: Path) -> Path:
    """One panel per measure (rows) and method (columns): per variant (the untrained network first)
    every seed's value, the mean and its interval; the reference in black, variants that differ from
    it in red, trainings that failed the gate in orange."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ssl_bench.store.atomic import atomic_path

    variants = names(study)
    rows, columns = len(study.measures), len(study.methods)
    figure = Figure(figsize=(max(4.5, 1.1 * len(variants) + 1.2) * columns, 2.9 * rows + 0.8), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for i, measure in enumerate(study.measures):
        for j, method in enumerate(study.methods):
            axes = grid[i][j]
            for x, name in enumerate(variants):
                seeds = values[(values["method"] == method) & (values["variant"] == name)]
                axes.scatter([x] * len(seeds), seeds[measure], s=12, color="0.6", zorder=2)
                summary = table[
                    (table["measure"] == measure) & (table["method"] == method) & (table["variant"] == name)
                ]
                if summary.empty or pd.isna(summary["mean"].iloc[0]):
                    continue
                row = summary.iloc[0]
                if name == UNTRAINED:
                    color = "0.35"
                elif row["gate"] == TRAINING_FAILED:
                    color = "tab:orange"
                elif row["is_reference"]:
                    color = "black"
                else:
                    color = "tab:red" if row["vs_reference"] == DIFFERS else "tab:blue"
                low = row["mean"] - row["ci_low"] if not pd.isna(row["ci_low"]) else 0.0
                high = row["ci_high"] - row["mean"] if not pd.isna(row["ci_high"]) else 0.0
                axes.errorbar([x], [row["mean"]], yerr=[[low], [high]], fmt="o", color=color, capsize=4, zorder=3)
            axes.set_xticks(range(len(variants)), variants, rotation=20, ha="right")
            axes.set_xlim(-0.5, len(variants) - 0.5)
            axes.set(title=method, ylabel=measure)
            axes.grid(alpha=0.3, axis="y")
    figure.suptitle(
        f"{study.name} ({scale})\ngrey dots: seeds; bars: 95% interval; red: differs from {study.reference}; "
        f"orange: training failed (not above {UNTRAINED})",
        fontsize="medium",
    )
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path


def write_study_report(study: Study, runs: Sequence[StudyRun], results_dir: Path | str, *, scale: str) -> StudyReport:
    """Collect the runs' records, write the markdown, CSV and plot; return what was written."""
    results_dir = Path(results_dir)
    values = collect(study, runs, results_dir)
    table = summarize_study(study, values)
    markdown = render_markdown(study, scale, table, values, results_dir)
    stem = results_dir / f"study-{scale}"
    files = [stem.with_suffix(".md"), stem.with_suffix(".csv")]
    atomic_write_text(files[0], markdown)
    atomic_write_text(files[1], render_csv(table))
    files.append(write_plot(study, scale, table, values, stem.with_suffix(".png")))
    return StudyReport(markdown, table, files, complete=bool((values["status"] == "finished").all()))
