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

Three more keys, for studies whose variants change how a run is trained rather than what it is::

    [base]
    lr_ladder = [1.0, 0.5, 0.25]             # a diverged run is run again at base_lr x 0.5, then x 0.25
    method_set = { simclr = ["lr_scaling=sqrt"] }   # overrides for one method's runs only

    [variants.short]
    set = ["batch_size=64"]
    multiply = { epochs = 0.25, warmup_epochs = 0.25 }
    method_set = { vicreg = ["base_lr=0.1"] }

- ``method_set`` (in ``[base]``, a scale or a variant) maps a method of the study to overrides of
  its runs alone, applied after the ``set`` beside it.
- ``multiply`` scales numeric config fields after every override (the base's, the scale's, the
  variant's and the command's ``--set``), so a variant can be relative to whatever the scale sets:
  a quarter of the scale's epochs. A whole-number field (``epochs``) must come out whole; a field
  with no value (``train_subset`` none) cannot be scaled.
- ``lr_ladder`` (``ssl_bench.study.ladder``): the factors, from 1 down, that a run's learning
  rates are multiplied by when the run before diverged.

The overrides of a run are applied in this order: the base's ``set``, the base's ``method_set``,
the scale's ``set``, the scale's ``method_set``, the variant's ``set``, the variant's ``method_set``,
the command's ``--set``, then the variant's ``multiply``.
"""

from __future__ import annotations

import itertools
import math
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ssl_bench.config import RunConfig
from ssl_bench.errors import UsageError, unknown_name_message
from ssl_bench.recipes import resolve_config

DEFAULT_MEASURES = ("linear_top1", "knn_top1")
_TOP_KEYS = {"question", "reference", "measures", "base", "scales", "variants"}
_BASE_KEYS = {"methods", "seeds", "set", "method_set", "lr_ladder"}
_SCALE_KEYS = {"dataset", "set", "description", "smoke_test", "method_set"}
UNTRAINED = "untrained"  # the reserved variant name of the untrained network's runs
_VARIANT_KEYS = {"description", "set", "features", "method_set", "multiply"}


@dataclass(frozen=True)
class Variant:
    name: str
    settings: tuple[str, ...]
    description: str = ""
    features: str | None = None  # read the measures from result["features"][features]
    method_settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # method -> its own overrides
    multiply: Mapping[str, float] = field(default_factory=dict)  # config field -> factor, after every override

    def measure_path(self, measure: str) -> str:
        return measure if self.features is None else f"features.{self.features}.{measure}"

    def override_words(self) -> list[str]:
        """How a report shows the variant's overrides: its set, each method's, then what it multiplies."""
        return [
            *self.settings,
            *method_words(self.method_settings),
            *(f"{key}*{factor:g}" for key, factor in self.multiply.items()),
        ]


def method_words(method_settings: Mapping[str, Sequence[str]]) -> list[str]:
    """Each method's own overrides as ``method:key=value``."""
    return [f"{method}:{setting}" for method, settings in method_settings.items() for setting in settings]


@dataclass(frozen=True)
class Scale:
    name: str
    dataset: str
    settings: tuple[str, ...]
    description: str = ""
    smoke_test: bool = False  # checks the machinery; too small to answer the question
    method_settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # method -> its own overrides

    def override_words(self) -> list[str]:
        """How a report shows the scale's overrides: its set, then each method's."""
        return [*self.settings, *method_words(self.method_settings)]


@dataclass(frozen=True)
class StudyRun:
    """One run of the study: a method under a variant at a seed, and its resolved config.

    After a divergence (``ssl_bench.study.ladder``) ``config`` is the retry's, at a lower lr, and
    ``diverged`` holds the configs of the runs it replaces, the study's own first.
    """

    method: str
    variant: str
    seed: int
    config: RunConfig
    diverged: tuple[RunConfig, ...] = ()

    @property
    def rung(self) -> int:
        """Its place on the study's lr ladder: 0 at the study's own lr, k after k divergences."""
        return len(self.diverged)


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
    method_settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # the base's, per method
    # The factors a diverged run's learning rates are multiplied by, one rung after another (ssl_bench.study.ladder).
    lr_ladder: tuple[float, ...] = (1.0,)

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
                settings = [
                    *self.settings,
                    *self.method_settings.get(method, ()),
                    *chosen.settings,
                    *chosen.method_settings.get(method, ()),
                    *variant.settings,
                    *variant.method_settings.get(method, ()),
                    *extra_settings,
                ]
                for seed in dict.fromkeys(seeds or self.seeds):
                    overrides = {"seed": seed, "data_root": data_root}
                    try:
                        config = resolve_config(method, chosen.dataset, overrides, settings)
                        if variant.multiply:
                            multiplied = multiplied_settings(config, variant.multiply)
                            config = resolve_config(method, chosen.dataset, overrides, [*settings, *multiplied])
                    except UsageError as error:
                        raise UsageError(
                            f"study {self.name}, {method}, variant {variant.name}, scale {chosen.name}: {error}"
                        ) from None
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


def numeric_fields() -> dict[str, type]:
    """The RunConfig fields ``multiply`` can scale, each with its number type (int or float): not
    the execution settings, nor the seed, which pairs the variants."""
    found = {}
    for name, hint in typing.get_type_hints(RunConfig).items():
        types = [arg for arg in (typing.get_args(hint) or (hint,)) if arg is not type(None)]
        if len(types) == 1 and types[0] in (int, float) and name not in {*RunConfig.EXECUTION_FIELDS, "seed"}:
            found[name] = types[0]
    return found


def multiplied_settings(config: RunConfig, factors: Mapping[str, float]) -> list[str]:
    """``key=value`` overrides that set each field of ``factors`` to ``config``'s value times its
    factor; a whole-number field must come out whole."""
    kinds = numeric_fields()
    settings = []
    for key, factor in factors.items():
        value = getattr(config, key)
        if value is None:
            raise UsageError(f"multiply {key}: the run has no {key} to multiply")
        product = value * factor
        if kinds[key] is int:
            if not math.isclose(product, round(product), rel_tol=0, abs_tol=1e-9):
                raise UsageError(f"multiply {key}: {value} x {factor:g} = {product:g} is not a whole number")
            product = round(product)
        settings.append(f"{key}={product!r}")
    return settings


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


def _method_settings(value: Any, methods: Sequence[str], where: str) -> dict[str, tuple[str, ...]]:
    """A ``method_set`` table: each key a method of the study, each value its overrides."""
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table of method = [overrides], got {value!r}")
    for method in value:
        if method not in methods:
            raise UsageError(unknown_name_message(f"method in {where} (not in [base] methods):", method, methods))
    return {method: _strings(settings, f"{where}.{method}") for method, settings in value.items()}


def _multiply(value: Any, where: str) -> dict[str, float]:
    """A ``multiply`` table: numeric RunConfig fields and positive factors."""
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table of field = factor, got {value!r}")
    known = numeric_fields()
    for key, factor in value.items():
        if key not in known:
            raise UsageError(unknown_name_message(f"numeric field in {where}:", key, known))
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise UsageError(f"{where}.{key} must be a positive number, got {factor!r}")
    return {key: float(factor) for key, factor in value.items()}


def _lr_ladder(value: Any, where: str) -> tuple[float, ...]:
    """The rungs: 1 (the runs' own lr) first, then strictly smaller positive factors."""
    numbers = isinstance(value, list) and all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
    )
    if not numbers or not value or value[0] != 1 or not all(a > b > 0 for a, b in itertools.pairwise(value)):
        raise UsageError(f"{where} must be a list of decreasing positive factors starting at 1, got {value!r}")
    return tuple(float(item) for item in value)


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
            _method_settings(scale.get("method_set", {}), methods, f"{where} [scales.{name}] method_set"),
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
            _method_settings(table.get("method_set", {}), methods, f"{where} [variants.{name}] method_set"),
            _multiply(table.get("multiply", {}), f"{where} [variants.{name}] multiply"),
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
        method_settings=_method_settings(base.get("method_set", {}), methods, f"{where} [base] method_set"),
        lr_ladder=_lr_ladder(base.get("lr_ladder", [1.0]), f"{where} [base] lr_ladder"),
    )
