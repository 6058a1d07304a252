"""A study file, ``experiments/studies/<name>.toml``: one question, the runs that answer it.

A study compares named *variants* of a shared *base*, each variant a list of ``--set`` overrides
(as ``ssl-bench run --set`` takes them), one of them the *reference* the others are tested
against, over the same seeds. Its *scales* say where it runs: each a dataset and the overrides
that size the runs to it (the CPU demo shrinks epochs and data; a cluster scale keeps the
recipe's schedule), so the question and its variants stay the same at every scale::

    question = "Does SimCLR's projector matter, and must it be non-linear?"
    reference = "mlp"
    measures = ["linear_top1", "knn_top1"]      # fields of each run's result.json

    [base]
    methods = ["simclr"]
    seeds = [0, 1, 2]
    set = []                                   # overrides every variant shares, at every scale

    [scales.demo]                              # the first scale is the default
    dataset = "fashion-mnist"
    set = ["epochs=3", "train_subset=5000"]

    [scales.cifar10]
    dataset = "cifar10"
    set = []

    [variants.none]
    description = "no projector: the loss sees the representation"
    set = ["projector="]

    [variants.mlp]
    description = "the recipe's MLP"
    set = []

Every study also runs the untrained network of each method and seed (the random-init baseline:
the same backbone, protocol and seeds), as the reserved variant ``untrained``: a variant whose
accuracy is not significantly above it failed to train at that scale (``ssl_bench.study.report``).
A scale with ``smoke_test = true`` (the CPU demo) checks the machinery; its reports say that
they are no answer.

A measure is a field of ``result.json`` (``linear_top1``, ``offdiag_corr_representation``, a
dotted path such as ``features.embedding.offdiag_corr``); a variant with ``features =
"embedding"`` reads every measure from that feature's evaluation (``features.embedding.<measure>``),
so two variants may share one run and differ in what is read from it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ssl_bench.config import RunConfig
from ssl_bench.errors import UsageError, unknown_name_message
from ssl_bench.recipes import resolve_config

DEFAULT_MEASURES = ("linear_top1", "knn_top1")
_TOP_KEYS = {"question", "reference", "measures", "base", "scales", "variants"}
_BASE_KEYS = {"methods", "seeds", "set"}
_SCALE_KEYS = {"dataset", "set", "description", "smoke_test"}
UNTRAINED = "untrained"  # the reserved variant name of the untrained network's runs
_VARIANT_KEYS = {"description", "set", "features"}


@dataclass(frozen=True)
class Variant:
    name: str
    settings: tuple[str, ...]
    description: str = ""
    features: str | None = None  # read the measures from result["features"][features]

    def measure_path(self, measure: str) -> str:
        return measure if self.features is None else f"features.{self.features}.{measure}"


@dataclass(frozen=True)
class Scale:
    name: str
    dataset: str
    settings: tuple[str, ...]
    description: str = ""
    smoke_test: bool = False  # checks the machinery; too small to answer the question


@dataclass(frozen=True)
class StudyRun:
    """One run of the study: a method under a variant at a seed, and its resolved config."""

    method: str
    variant: str
    seed: int
    config: RunConfig


@dataclass(frozen=True)
class Study:
    name: str  # the file's stem
    path: Path
    question: str
    reference: str
    measures: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: tuple[str, ...]  # the base's overrides, shared by every variant at every scale
    scales: dict[str, Scale]
    variants: dict[str, Variant]  # in the file's order
    # How the command names it: a shipped study by its name (the same on every machine), any
    # other by the path it was given.
    invocation: str = ""

    @property
    def default_scale(self) -> str:
        return next(iter(self.scales))

    def scale(self, name: str | None) -> Scale:
        name = name or self.default_scale
        if name not in self.scales:
            raise UsageError(unknown_name_message(f"scale of study {self.name}:", name, self.scales))
        return self.scales[name]

    def runs(
        self,
        *,
        scale: str | None = None,
        seeds: Sequence[int] | None = None,
        data_root: str = "data",
        extra_settings: Sequence[str] = (),
    ) -> list[StudyRun]:
        """Every (method, variant, seed), resolved, then the untrained network of each method's
        reference configuration and seed (variant ``untrained``); ``extra_settings`` go last (the
        command's --set)."""
        from ssl_bench.run.lifecycle import random_init_config

        chosen = self.scale(scale)
        runs = []
        for method in self.methods:
            for variant in self.variants.values():
                settings = [*self.settings, *chosen.settings, *variant.settings, *extra_settings]
                for seed in dict.fromkeys(seeds or self.seeds):
                    try:
                        config = resolve_config(
                            method, chosen.dataset, {"seed": seed, "data_root": data_root}, settings
                        )
                    except UsageError as error:
                        raise UsageError(f"study {self.name}, {method}, variant {variant.name}: {error}") from None
                    if variant.features is not None and variant.features not in config.eval_features:
                        raise UsageError(
                            f"study {self.name}, variant {variant.name} reads features.{variant.features}, "
                            f"but its runs evaluate only {', '.join(config.eval_features)} "
                            f"(add eval_features=representation,{variant.features} to its set)"
                        )
                    runs.append(StudyRun(method, variant.name, seed, config))
        references = [run for run in runs if run.variant == self.reference]
        runs += [StudyRun(run.method, UNTRAINED, run.seed, random_init_config(run.config)) for run in references]
        return runs


def unique_configs(runs: Sequence[StudyRun]) -> list[RunConfig]:
    """The distinct runs to carry out (variants that differ only in what they read share one)."""
    return list({run.config.identity_hash(): run.config for run in runs}.values())


def _shipped_study(name: str) -> Path:
    return Path(str(resources.files("ssl_bench.experiments").joinpath("studies", f"{name}.toml")))


def find_study_file(name_or_path: str) -> Path:
    """A path to a study file, or the name of one shipped in experiments/studies."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = _shipped_study(path.stem)
    if path.suffix in ("", ".toml") and len(path.parts) == 1 and shipped.is_file():
        return shipped
    raise UsageError(f"no study file {name_or_path!r}")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UsageError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where} must be true or false, got {value!r}")
    return value


def _table(value: Any, where: str, known: set[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table, got {value!r}")
    for key in value:
        if key not in known:
            raise UsageError(unknown_name_message(f"key in {where}:", key, known))
    missing = [key for key in required if key not in value]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)}")
    return value


def load_study(name_or_path: str) -> Study:
    """Read and check a study file; every problem is a UsageError naming the file."""
    path = find_study_file(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"cannot read study file {path}: {error}") from None
    where = str(path)
    top = _table(data, where, _TOP_KEYS, ["question", "reference", "base", "scales", "variants"])
    base = _table(top["base"], f"{where} [base]", _BASE_KEYS, ["methods", "seeds"])
    seeds = base["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UsageError(f"{where} [base] seeds must be a non-empty list of integers, got {seeds!r}")
    methods = _strings(base["methods"], f"{where} [base] methods")
    if not methods:
        raise UsageError(f"{where} [base] methods is empty")
    scales_table = top["scales"]
    if not isinstance(scales_table, dict):
        raise UsageError(f"{where} [scales] must hold [scales.<name>] tables")
    scales = {
        name: Scale(
            name,
            str(_table(scale, f"{where} [scales.{name}]", _SCALE_KEYS, ["dataset"])["dataset"]),
            _strings(scale.get("set", []), f"{where} [scales.{name}] set"),
            str(scale.get("description", "")),
            _boolean(scale.get("smoke_test", False), f"{where} [scales.{name}] smoke_test"),
        )
        for name, scale in scales_table.items()
    }
    variants_table = top["variants"]
    if not isinstance(variants_table, dict) or not variants_table or not scales:
        raise UsageError(f"{where} needs at least one [scales.<name>] and one [variants.<name>] table")
    if UNTRAINED in variants_table:
        raise UsageError(f"{where}: the variant name {UNTRAINED!r} is reserved for the untrained network")
    variants = {}
    for name, variant in variants_table.items():
        table = _table(variant, f"{where} [variants.{name}]", _VARIANT_KEYS)
        features = table.get("features")
        if features is not None and not isinstance(features, str):
            raise UsageError(f"{where} [variants.{name}] features must be a string, got {features!r}")
        variants[name] = Variant(
            name,
            _strings(table.get("set", []), f"{where} [variants.{name}] set"),
            str(table.get("description", "")),
            features,
        )
    reference = top["reference"]
    if reference not in variants:
        raise UsageError(unknown_name_message(f"reference variant in {where}:", str(reference), variants))
    measures = _strings(top.get("measures", list(DEFAULT_MEASURES)), f"{where} measures")
    if not measures:
        raise UsageError(f"{where} measures is empty")
    return Study(
        name=path.stem,
        path=path,
        question=str(top["question"]),
        reference=reference,
        measures=measures,
        methods=methods,
        seeds=tuple(seeds),
        settings=_strings(base.get("set", []), f"{where} [base] set"),
        scales=scales,
        variants=variants,
        invocation=name_or_path if Path(name_or_path).is_file() else path.stem,
    )
