"""Comparison tables and plots from run directories: `ssl-bench table`, and the end of `ssl-bench run`.

Every directory below the given results directories that holds a `config.json` (or a
`result.json`) is one run. Runs are grouped by (dataset, backbone, pre-training epochs); within
a group each method gets

- one row aggregating its finished, evaluated runs: per protocol (linear and kNN top-1, %) the mean,
  the sample std (ddof 1) and the 95% Student t confidence interval of the mean over the `n` seeds
  (`ssl_bench.report.stats`), the per-seed values, and mean pre-training seconds and samples/s. A
  single-seed row shows its value alone and says "n=1, no interval";
- one row per run that is not finished and evaluated (failed, running, interrupted, pre-trained
  but not evaluated), with the failing step or error and the log path when known; such runs are
  never averaged in;
- the published numbers of `experiments/published.csv` (shipped as package data) whose setting
  matches the group (dataset, backbone family, epochs and protocol), in rows of their own whose
  source reads `published: ...`.

Within a group and per protocol, the best method is the one with the highest mean among the
aggregated rows with at least 2 seeds (on equal means, the first in row order). Every other
aggregated row is compared with it by a two-sided paired Student t-test over the seeds both share
(pairs matched by seed value; two runs of one setting with the same seed count as their mean) at
alpha 0.05: with p >= alpha it is "not significantly different" from the best, else "different";
with fewer than 2 shared seeds it is "untested (n<2)". In md/tex the best mean is bold and one not
significantly different from it carries `*`. A non-significant test is not evidence of equality:
the interval of each row says how large a difference the data still allow. The random-init
baseline, published numbers and unfinished runs take no part in this ranking.

Every row knows its code: the `code` column of table.csv holds the code hashes
(ssl_bench.provenance) of the row's runs. A group whose rows come from more than one code
version is named in a warning and in a line under its heading in md/tex and report.html.

A run evaluated on the embedding beside the representation (`--set eval_features=representation,embedding`)
gives two rows, labelled `evaluated=representation` and `evaluated=embedding`, each aggregated over
seeds and ranked like any other.

The random-init baseline (method `random_init`, 0 epochs) is a row of every group of its dataset
and backbone. Runs of one method whose configurations differ in more than the seed (say another
`base_lr`) are separate rows, labelled by what differs, never averaged together. A run directory
that cannot be read (unparseable JSON, missing status) is named in a warning and skipped.

Outputs, written atomically into the output directory (the first results directory by default):
`table.md` (exactly what is printed), `table.csv` (one flat table, numbers unformatted), `table.tex`
(booktabs), `plots/*.png` and `report.html` (all of it on one self-contained page:
`ssl_bench.report.html`). Per protocol P (`linear`, `knn`) table.csv has the columns

- `P_top1_mean`, `P_top1_std`, `P_top1_ci_low`, `P_top1_ci_high`: mean (a published row's number),
  sample std and 95% interval, each empty where undefined (std and interval need n >= 2);
- `P_top1_per_seed`: the values of the finished runs as `seed:value;seed:value` (sorted by seed,
  values with 6 significant digits);
- `P_vs_best`: `best`, `not significantly different`, `different`, `untested (n<2)`, or empty for
  rows outside the ranking;
- `P_best`, `P_not_different_from_best`: the same as booleans (False outside the ranking and for the
  best itself in `P_not_different_from_best`);
- `P_p_vs_best`: the p-value of the paired test against the best (empty where none was made).

The `note` column holds the row's own note (setting, baseline, failure); the md/tex note cell
adds "n=1, no interval" and "untested (n<2)" where they apply, and the probe choices that lay at an
open end of their grid (the records' `on_edge`: "kNN choice at grid edge (temperature) in 3/3 runs").

The text depends on the run records only (sorted rows, fixed float formats, paths relative to the
results directory), so a second call regenerates it byte-identically.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.config import BN_LINEAR_SGD_PROBE, SOLO_LEARN_PROBE
from ssl_bench.report.runs import EVALUATION_ONLY, FINISHED, group_title, groups, join_codes
from ssl_bench.report.stats import mean_interval, paired_t_test
from ssl_bench.run.record import CHECKPOINT_METHOD, RANDOM_INIT

PUBLISHED_CSV = Path(str(resources.files("ssl_bench.experiments").joinpath("published.csv")))
TABLE_STEM = "table"
PLOTS_DIR = "plots"


# linear and knn: the settings chosen on the validation split; knn_fixed: k = 200, T = 0.1, the
# setting of lightly's published kNN numbers; online: the online probe at the end of pre-training
# (solo-learn's CIFAR numbers); linear_aug: the augmented offline probe on the frozen backbone
# (VICReg's evaluate.py, the published ImageNet numbers). The first three are always shown, the
# last two where a run (or a published row beside one) has them.
PROTOCOLS = ("linear", "knn", "knn_fixed", "online", "linear_aug")
ALWAYS_SHOWN = ("linear", "knn", "knn_fixed")
_PROTOCOL_LABELS = {
    "linear": "linear",
    "knn": "kNN",
    "knn_fixed": "kNN k=200",
    "online": "online probe",
    "linear_aug": "linear aug.",
}
_PROTOCOL_HEADERS = {
    "linear": "linear top-1 (%)",
    "knn": "kNN top-1 (%)",
    "knn_fixed": "kNN k=200 (%)",
    "online": "online probe top-1 (%)",
    "linear_aug": "linear aug. top-1 (%)",
}
CONFIDENCE = 0.95  # of the interval of the mean
ALPHA = 0.05  # of the paired t-test against the best
BEST, NOT_DIFFERENT, DIFFERENT, UNTESTED = "best", "not significantly different", "different", "untested (n<2)"
SINGLE_SEED = "n=1, no interval"


def _protocol_columns(protocol: str) -> list[str]:
    top1 = f"{protocol}_top1"
    return [
        f"{top1}_mean",
        f"{top1}_std",
        f"{top1}_ci_low",
        f"{top1}_ci_high",
        f"{top1}_per_seed",
        f"{protocol}_vs_best",
        f"{protocol}_best",
        f"{protocol}_not_different_from_best",
        f"{protocol}_p_vs_best",
    ]


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
    *(column for protocol in PROTOCOLS for column in _protocol_columns(protocol)),
    "pretrain_seconds",
    "samples_per_second",
    "peak_memory_mb",
    "code",
    "note",
]
# Beside them in the summarised table (not in table.csv): the run directories of each row, as
# paths under the results directory given (report.html links to their files), and the probe
# choices at an open end of their grid, for the md/tex/html note cell.
RUN_DIRS = "run_dirs"
GRID_EDGE = "grid_edge"


def shown_protocols(table: pd.DataFrame) -> list[str]:
    """The protocols with a column in md/tex: the always-shown ones, and any other with a value."""
    return [
        protocol
        for protocol in PROTOCOLS
        if protocol in ALWAYS_SHOWN or table[f"{protocol}_top1_mean"].map(lambda v: not _is_missing(v)).any()
    ]


def display_headers(protocols: Sequence[str]) -> list[str]:
    return [
        "method",
        "source",
        "status",
        "n",
        "seeds",
        *(_PROTOCOL_HEADERS[protocol] for protocol in protocols),
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


def published_rows(
    published: pd.DataFrame, dataset: str, backbone: str, epochs: int, measured: Iterable[str]
) -> list[dict[str, Any]]:
    """The published numbers for one group: one row per (method, source), in the protocols of ``measured``.

    A published number is shown only beside our numbers of the same protocol (``measured``: the
    protocols some run of the group has a value in): side by side, two protocols would read as
    one comparison.
    """
    measured = set(measured)
    unknown = set(published["protocol"]) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"published.csv: unknown protocol(s) {sorted(unknown)}; known: {', '.join(PROTOCOLS)}")
    match = published[
        (published["dataset"] == dataset)
        & (published["backbone"] == backbone_family(backbone))
        & (published["epochs"] == epochs)
        & published["protocol"].isin(measured)
    ]
    rows = []
    for (method, source), numbers in match.groupby(["method", "source"], sort=True):
        row: dict[str, Any] = {"method": method, "source": f"published: {source}", "status": "", "n": None, "seeds": ""}
        for number in numbers.itertuples(index=False):
            row[f"{number.protocol}_top1_mean"] = number.top1
        row["note"] = "; ".join(sorted(set(numbers["note"]) - {""}))
        rows.append(row)
    return rows


def _measured_protocols(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {
        protocol
        for row in rows
        for protocol in PROTOCOLS
        if row["source"] == "ours"
        and not _is_missing(row.get(f"{protocol}_top1_mean"))
        and not (protocol == "online" and row.get("_other_online_probe"))
    }


def _other_online_probe(setting: str) -> bool:
    """Whether runs of this setting trained another online probe than solo-learn's classifier,
    the one behind every published ``online`` number (ssl_bench.config.ONLINE_PROBES): their
    online top-1 is another protocol, shown without solo-learn's numbers beside it."""
    return json.loads(setting).get("online_probe", BN_LINEAR_SGD_PROBE) != SOLO_LEARN_PROBE


# --- the table ---------------------------------------------------------------------------------
def _seeds(values: Iterable[int]) -> str:
    return ",".join(str(seed) for seed in sorted(values))


def _variant_labels(runs: pd.DataFrame, shown: tuple[str, ...] = ()) -> dict[str, str]:
    """For runs of one method in one group: what sets each setting apart ('' when only one).

    Keys starting with ``shown`` are left out (the source column shows them already)."""
    settings = sorted(runs["setting"].unique())
    if len(settings) < 2:
        return dict.fromkeys(settings, "")
    flat = [_flatten(json.loads(setting)) for setting in settings]
    keys = sorted({key for item in flat for key in item if not key.startswith(shown)})
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
        members = runs[in_setting & ((runs["epochs"] == epochs) | runs["method"].isin(EVALUATION_ONLY))]
        group_rows: list[dict[str, Any]] = []
        for method, of_method in members.groupby("method", sort=True):
            # An evaluated checkpoint's source column names its file (and key).
            labels = _variant_labels(of_method, ("source", "method_params.") if method == CHECKPOINT_METHOD else ())
            for setting, runs_of_setting in of_method.groupby("setting", sort=True):
                rows_of_setting = _method_rows(str(method), runs_of_setting, labels[setting])
                other_probe = _other_online_probe(str(setting))
                group_rows.extend({**row, "_other_online_probe": other_probe} for row in rows_of_setting)
        group_rows.extend(published_rows(published, dataset, backbone, epochs, _measured_protocols(group_rows)))
        group_rows.sort(key=_row_order)
        _rank(group_rows)
        rows.extend(
            {
                "dataset": dataset,
                "backbone": backbone,
                "epochs": epochs,
                **_without_private(row),
                RUN_DIRS: row.get("_run_dirs", []),
            }
            for row in group_rows
        )
    return pd.DataFrame.from_records(rows, columns=[*CSV_COLUMNS, RUN_DIRS, GRID_EDGE])


def _without_private(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if not key.startswith("_")}


def _method_rows(method: str, runs: pd.DataFrame, label: str) -> list[dict[str, Any]]:
    """The aggregate of a setting's finished runs, then each of its other runs on its own."""
    runs = runs.sort_values(["seed", "path"])
    baseline_note = "no pre-training (baseline)" if method == RANDOM_INIT else ""
    source = str(runs["source"].iloc[0])  # one setting: one source
    rows = []
    done = runs[runs["status"] == FINISHED]
    if len(done):
        row: dict[str, Any] = {
            "method": method,
            "source": source,
            "status": FINISHED,
            "n": len(done),
            "seeds": _seeds(done["seed"]),
            "pretrain_seconds": done["pretrain_seconds"].mean(),
            "samples_per_second": done["samples_per_second"].mean(),
            "peak_memory_mb": done["peak_memory_mb"].mean(),
            "code": join_codes(done["code"]),
            "note": "; ".join(part for part in (label, baseline_note) if part),
            GRID_EDGE: _grid_edges(done),
            "_by_seed": {},
            "_run_dirs": list(done["run_dir"]),
        }
        for protocol in PROTOCOLS:
            row.update(_protocol_summary(protocol, done))
            row["_by_seed"][protocol] = _by_seed(done, f"{protocol}_top1")
        rows.append(row)
    for run in runs[runs["status"] != FINISHED].itertuples(index=False):
        rows.append(
            {
                "method": method,
                "source": source,
                "status": run.status,
                "n": None,
                "seeds": str(run.seed),
                "pretrain_seconds": run.pretrain_seconds,
                "samples_per_second": run.samples_per_second,
                "peak_memory_mb": run.peak_memory_mb,
                "code": run.code,
                "note": "; ".join(part for part in (label, baseline_note, run.note) if part),
                "_run_dirs": [run.run_dir],
            }
        )
    return rows


def _grid_edges(done: pd.DataFrame) -> str:
    """Which probes chose a setting at an open end of their grid (the records' ``on_edge``), on
    which axes and in how many of the runs: there the reported number may understate the
    representation. Records older than ``on_edge`` add nothing."""
    parts = []
    for protocol in ("linear", "knn"):
        flagged = [axes for axes in done[f"{protocol}_on_edge"] if isinstance(axes, str) and axes]
        if flagged:
            axes = ", ".join(sorted({axis for run in flagged for axis in run.split(",")}))
            label = _PROTOCOL_LABELS[protocol]
            parts.append(f"{label} choice at grid edge ({axes}) in {len(flagged)}/{len(done)} runs")
    return "; ".join(parts)


def mixed_code(rows: pd.DataFrame) -> str | None:
    """A sentence naming the code versions of a group's compared rows (our finished ones) when
    there is more than one."""
    ours = rows[(rows["source"] == "ours") & (rows["status"] == FINISHED)]
    codes = join_codes(ours["code"].dropna())
    if "+" not in codes:
        return None
    per_code = {
        code: sorted(set(ours[ours["code"].astype(str).str.contains(code, regex=False)]["method"]))
        for code in codes.split("+")
    }
    listed = "; ".join(f"{code}: {', '.join(methods)}" for code, methods in per_code.items())
    return f"mixed code: the rows of this group come from {len(per_code)} code versions ({listed})"


def mixed_code_warnings(table: pd.DataFrame) -> list[str]:
    """One warning per group whose rows come from more than one code version."""
    warnings = []
    for (dataset, backbone, epochs), rows in table.groupby(GROUP_KEYS, sort=False):
        sentence = mixed_code(rows)
        if sentence is not None:
            warnings.append(f"{group_title(dataset, backbone, epochs)}: {sentence}")
    return warnings


def _protocol_summary(protocol: str, done: pd.DataFrame) -> dict[str, Any]:
    """Mean, sample std, interval and per-seed values of one protocol over finished runs (sorted by seed)."""
    column = f"{protocol}_top1"
    present = done[done[column].notna()]
    values = [float(value) for value in present[column]]
    summary: dict[str, Any] = {
        f"{column}_per_seed": ";".join(f"{int(seed)}:{value:.6g}" for seed, value in zip(present["seed"], values))
    }
    if values:
        interval = mean_interval(values, CONFIDENCE)
        summary |= {
            f"{column}_mean": interval.mean,
            f"{column}_std": interval.std,
            f"{column}_ci_low": interval.low,
            f"{column}_ci_high": interval.high,
        }
    return summary


def _by_seed(done: pd.DataFrame, column: str) -> dict[int, float]:
    """Seed -> value for the paired test; runs of one setting sharing a seed count as their mean."""
    present = done[done[column].notna()]
    return {int(seed): float(values.mean()) for seed, values in present.groupby("seed", sort=True)[column]}


def _rank(rows: list[dict[str, Any]]) -> None:
    """Mark, per protocol, the best aggregated row of one group and which rows the paired test cannot tell from it.

    `rows` is one group in row order; the flags are set on every row (False and '' outside the ranking).
    """
    ranked = [
        row for row in rows if row["source"] == "ours" and row["status"] == FINISHED and row["method"] != RANDOM_INIT
    ]
    for protocol in PROTOCOLS:
        for row in rows:
            row |= {f"{protocol}_vs_best": "", f"{protocol}_best": False, f"{protocol}_not_different_from_best": False}
        candidates = [row for row in ranked if len(row["_by_seed"][protocol]) >= 2]
        mean = f"{protocol}_top1_mean"
        # max() keeps the first of equal means, so equal means go to the earlier row.
        best = max(candidates, key=lambda row: row[mean], default=None)
        best_values = {} if best is None else best["_by_seed"][protocol]
        for row in ranked:
            if row is best:
                row |= {f"{protocol}_vs_best": BEST, f"{protocol}_best": True}
                continue
            own = row["_by_seed"][protocol]
            if not own:  # no value in this protocol (a record without it): nothing to compare
                continue
            shared = sorted(set(own) & set(best_values))
            if len(shared) < 2:
                row[f"{protocol}_vs_best"] = UNTESTED
                continue
            test = paired_t_test([own[seed] for seed in shared], [best_values[seed] for seed in shared])
            not_different = test.p_value >= ALPHA
            row |= {
                f"{protocol}_vs_best": NOT_DIFFERENT if not_different else DIFFERENT,
                f"{protocol}_not_different_from_best": not_different,
                f"{protocol}_p_vs_best": test.p_value,
            }


def _row_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Baseline first, then methods A-Z, then evaluated checkpoints; per method ours (aggregate, then
    other runs) before published."""
    return (
        row["method"] != RANDOM_INIT,
        row["method"] == CHECKPOINT_METHOD,
        row["method"],
        row["source"] != "ours",
        row["status"] != FINISHED,
        row["source"],
        row["note"],
        row["seeds"],
    )


# --- rendering ---------------------------------------------------------------------------------
def explanation(n: str, bold: str, star: str) -> str:
    """What the table's numbers and marks mean; `n`, `bold` and `star` as the format writes them."""
    confidence = f"{CONFIDENCE:.0%}"
    return (
        f"Top-1 accuracy (%) of finished runs: mean ± sample std over the {n} seeds, then the {confidence} "
        f"confidence interval of the mean [low, high] (Student t, n-1 degrees of freedom); a single-seed row "
        f"shows its value alone (n=1, no interval). Per group and protocol, {bold} marks the best method (highest "
        f"mean among methods with n >= 2) and {star} a method not significantly different from the best in a "
        f"two-sided paired Student t-test over the seeds both share, alpha = {ALPHA:g}. Not significant is not "
        f"equal: the intervals say how large a difference the data still allow. With fewer than 2 shared seeds "
        f"there is no test: untested (n<2). The "
        f"random-init baseline and published rows are not ranked. Failed and unfinished runs are listed on their "
        f"own rows, never averaged in. Rows whose source reads `published: ...` come from "
        f"experiments/published.csv (same dataset, backbone family and epochs), each number in the column of the "
        f"protocol its source measured with, and only where our runs of the group have numbers of that protocol. "
        f"Protocols: linear = offline linear probe on the frozen backbone's features (lr and weight decay chosen "
        f"on the validation split); kNN = weighted kNN (k and T chosen on validation); kNN k=200 = the same at "
        f"k = 200, T = 0.1; online probe = the linear probe trained alongside pre-training, scored at its end; "
        f"linear aug. = the offline probe trained on augmented images (VICReg's evaluate.py). All report the "
        f"test split."
    )


@dataclass(frozen=True)
class CellStyle:
    """How one output format writes a cell: the ± sign, a missing value, escaping, best and not-different marks."""

    pm: str
    missing: str
    escape: Callable[[str], str]
    best: Callable[[str], str]
    not_different: str


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
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def _escape_latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


MARKDOWN = CellStyle(pm=" ± ", missing="–", escape=_escape_markdown, best=lambda text: f"**{text}**", not_different="*")
LATEX = CellStyle(
    pm=r" $\pm$ ", missing="--", escape=_escape_latex, best=lambda text: rf"\textbf{{{text}}}", not_different=r"$^{*}$"
)


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _accuracy(row: pd.Series, protocol: str, style: CellStyle) -> str:
    """`mean ± std [ci_low, ci_high]`: the mean bold when best, then `*` when not significantly different from it."""
    top1 = f"{protocol}_top1"
    mean = row[f"{top1}_mean"]
    if _is_missing(mean):
        return style.missing
    if isinstance(mean, str):  # a published number, shown with the source's own precision
        return mean
    text = f"{mean:.2f}"
    if row[f"{protocol}_best"]:
        text = style.best(text)
    elif row[f"{protocol}_not_different_from_best"]:
        text += style.not_different
    if not _is_missing(row[f"{top1}_std"]):
        text += f"{style.pm}{row[f'{top1}_std']:.2f}"
    if not _is_missing(row[f"{top1}_ci_low"]):
        text += f" [{row[f'{top1}_ci_low']:.2f}, {row[f'{top1}_ci_high']:.2f}]"
    return text


def _display_note(row: pd.Series) -> str:
    """The row's note, then "n=1, no interval" and which protocols went untested, where they apply."""
    parts = [row["note"]] if isinstance(row["note"], str) and row["note"] else []
    if row["source"] == "ours" and row["status"] == FINISHED and row["n"] == 1:
        parts.append(SINGLE_SEED)
    untested = [protocol for protocol in PROTOCOLS if row[f"{protocol}_vs_best"] == UNTESTED]
    compared = [protocol for protocol in PROTOCOLS if row[f"{protocol}_vs_best"]]  # protocols with values
    if untested and len(untested) == len(compared):
        parts.append(UNTESTED)
    elif untested:
        parts.extend(f"{_PROTOCOL_LABELS[protocol]} {UNTESTED}" for protocol in untested)
    if isinstance(row.get(GRID_EDGE), str) and row[GRID_EDGE]:
        parts.append(row[GRID_EDGE])
    return "; ".join(parts)


def _fixed(value: Any, digits: int, style: CellStyle) -> str:
    return style.missing if _is_missing(value) else f"{value:.{digits}f}"


def display_cells(row: pd.Series, style: CellStyle, protocols: Sequence[str]) -> list[str]:
    """One table row as the strings a reader sees (fixed float formats: no run-to-run jitter)."""
    published = row["source"] != "ours"
    blank = "" if published else style.missing
    return [
        style.escape(row["method"]),
        style.escape(row["source"]),
        style.escape(row["status"]),
        blank if _is_missing(row["n"]) else str(int(row["n"])),
        style.escape(row["seeds"]),
        *(_accuracy(row, protocol, style) for protocol in protocols),
        blank if _is_missing(row["pretrain_seconds"]) else _fixed(row["pretrain_seconds"], 1, style),
        blank if _is_missing(row["samples_per_second"]) else _fixed(row["samples_per_second"], 0, style),
        style.escape(_display_note(row)),
    ]


GROUP_KEYS = ["dataset", "backbone", "epochs"]


def render_markdown(table: pd.DataFrame) -> str:
    """Paste-ready markdown: an explanation, then one section and table per group."""
    lines = [
        "# ssl-bench results",
        "",
        explanation("`n`", "**bold**", "`*`"),
    ]
    protocols = shown_protocols(table)
    headers = display_headers(protocols)
    for (dataset, backbone, epochs), rows in table.groupby(GROUP_KEYS, sort=False):
        cells = [display_cells(row, MARKDOWN, protocols) for _, row in rows.iterrows()]
        body = pd.DataFrame(cells, columns=headers).to_markdown(
            index=False, disable_numparse=True, colalign=["left"] * 3 + ["right"] * (len(headers) - 4) + ["left"]
        )
        lines += ["", f"## {group_title(dataset, backbone, epochs)}", ""]
        if (sentence := mixed_code(rows)) is not None:
            lines += [f"**Warning, {sentence}.**", ""]
        lines.append(body)
    return "\n".join(lines) + "\n"


def render_latex(table: pd.DataFrame) -> str:
    """A booktabs tabular: one block per group under an italic group title."""
    protocols = shown_protocols(table)
    headers = display_headers(protocols)
    width = len(headers)
    header = " & ".join(_escape_latex(name).replace("kNN", "$k$NN") for name in headers)
    lines = [
        r"% Generated by `ssl-bench table`; needs \usepackage{booktabs}.",
        *_latex_comment(explanation("n", "bold", "*")),
        r"\begin{tabular}{lllrl" + "r" * (width - 6) + "l}",
        r"\toprule",
        header + r" \\",
    ]
    for (dataset, backbone, epochs), rows in table.groupby(GROUP_KEYS, sort=False):
        lines += [
            r"\midrule",
            rf"\multicolumn{{{width}}}{{l}}{{\textit{{{_escape_latex(group_title(dataset, backbone, epochs))}}}}} \\",
        ]
        if (sentence := mixed_code(rows)) is not None:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{Warning, {_escape_latex(sentence)}.}} \\")
        lines += [" & ".join(display_cells(row, LATEX, protocols)) + r" \\" for _, row in rows.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_comment(text: str, width: int = 100) -> list[str]:
    return ["% " + line for line in textwrap.wrap(text, width)]


def render_csv(table: pd.DataFrame) -> str:
    """The flat table, numbers unformatted but rounded to 6 significant digits (stable text)."""
    numeric = table[CSV_COLUMNS].copy()
    # Published numbers are kept as written for md/tex; the CSV holds them as numbers like ours.
    for column in (f"{protocol}_top1_mean" for protocol in PROTOCOLS):
        numeric[column] = pd.to_numeric(numeric[column])
    numeric["n"] = numeric["n"].astype("Int64")
    return numeric.to_csv(index=False, float_format="%.6g", lineterminator="\n")


# --- plots -------------------------------------------------------------------------------------
