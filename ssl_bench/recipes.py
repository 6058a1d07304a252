"""Recipes: the published hyperparameters as data (``experiments/recipes/<table>.toml``), and
the resolution of a (method, dataset) into a :class:`ssl_bench.config.RunConfig`.

A recipe table's rows are :class:`MethodRecipe`; a table may start from another (``based_on``)
and declare row defaults; a method file may carry rows of its own (``Method.recipes``).
:func:`resolve_config` takes the row, the method's declarations (heads, views, loss defaults),
explicit overrides and ``--set`` strings (``ssl_bench.overrides``), and checks the result.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ssl_bench.config import BN_LINEAR_SGD_PROBE, DEFAULT_LARS_ETA, SOLO_LEARN_PROBE, RunConfig, scaled_lr
from ssl_bench.data.augment import local_crops_of, view_config, view_pair, view_pair_configs
from ssl_bench.data.datasets import dataset_info
from ssl_bench.errors import UsageError, unknown_name_message
from ssl_bench.method import available_methods, get_method
from ssl_bench.overrides import apply_setting

# Which recipe file applies to which dataset.
RECIPE_FILES = ("fashion_mnist", "cifar", "imagenet")


@dataclass(frozen=True)
class MethodRecipe:
    """One row of a recipe table: a method's published hyperparameters in one setting."""

    projector: tuple[int, ...]
    batch_size: int
    optimizer: str
    base_lr: float  # lr at batch 256; the run's lr is base_lr * batch_size / 256
    weight_decay: float
    warmup_epochs: int
    epochs: int
    loss: dict[str, float]  # the loss function's parameters (Method.loss_param_names)
    source: str
    bias_norm_base_lr: float | None = None
    predictor: tuple[int, ...] = ()  # predictor widths, for methods with a predictor head
    # Other hyperparameters of the method (Method.method_param_names), e.g. BYOL's momentum_base.
    method_params: dict[str, Any] = field(default_factory=dict)
    loss_scale: float = 1.0  # the optimised loss is loss_scale x the method's loss
    lars_variant: str = "official"  # ssl_bench.train.optim.LARS_VARIANTS
    lars_eta: float | None = None  # None: the variant's own trust coefficient
    lr_end_factor: float = 0.001  # the cosine ends at lr_end_factor x the peak
    zero_init_residual: bool | None = None  # None: the backbone library's default
    sync_batchnorm: bool = True  # BatchNorm over the global batch in multi-process runs
    # The online probe trained alongside pre-training (ssl_bench.config.ONLINE_PROBES) and, for
    # solo-learn's classifier, its lr at batch 256 (solo-learn's optimizer.classifier_lr).
    online_probe: str = BN_LINEAR_SGD_PROBE
    probe_base_lr: float | None = None
    # Changes to the method's head layout (build_projector options: hidden_bias, hidden_norm,
    # last_bias, last_bn).
    projector_options: dict[str, bool] = field(default_factory=dict)
    predictor_options: dict[str, bool] = field(default_factory=dict)
    # Changes to the method's two view distributions (ViewConfig fields): `views` for both,
    # then `view_a` / `view_b` for one.
    views: dict[str, Any] = field(default_factory=dict)
    view_a: dict[str, Any] = field(default_factory=dict)
    view_b: dict[str, Any] = field(default_factory=dict)
    # Multi-crop's small views: `count` crops of `size` pixels, drawn from view a's distribution
    # with these changes (e.g. `crop_scale`); empty for two views.
    local_crops: dict[str, Any] = field(default_factory=dict)
    # Each deliberate difference from the cited source: resolved field -> why.
    deviations: dict[str, str] = field(default_factory=dict)
    # What `ssl-bench tune` searches: --set key -> [low, high, "log" | "linear"] (ssl_bench.launch.tune).
    search: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        return scaled_lr(self.base_lr, self.batch_size)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], where: str) -> MethodRecipe:
        """A row from a TOML table or a method's ``recipes``; ``where`` names it in errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in row:
            if key not in fields:
                raise UsageError(unknown_name_message(f"recipe field in {where}:", key, fields))
        required = [
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in row]
        if missing:
            raise UsageError(f"{where} lacks the recipe field(s) {', '.join(missing)}")
        return cls(
            **{
                **row,
                "projector": tuple(row["projector"]),
                "predictor": tuple(row.get("predictor", ())),
                "loss": dict(row["loss"]),
                "method_params": dict(row.get("method_params", {})),
            }
        )


def with_defaults(row: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe row's mapping over its table's ``[setting.defaults]`` (tables merge, the row wins)."""
    merged = dict(defaults)
    for key, value in row.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and key in merged else value
    return merged


@dataclass(frozen=True)
class RecipeTable:
    name: str  # the file's stem
    description: str
    datasets: tuple[str, ...]
    backbone: str
    image_size: int
    methods: dict[str, MethodRecipe]
    train_subset: int | None = None  # pre-train on a class-balanced subset of this size
    # Row fields every row of the table starts from (a row's own values win; tables merge).
    defaults: dict[str, Any] = field(default_factory=dict)


@cache
def _recipe_file(name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ``[setting]`` table of ``experiments/recipes/<name>.toml`` and its rows as mappings.

    Each row is merged over the table's ``[setting.defaults]``; a table whose setting names
    ``based_on = "<other table>"`` starts each row from that table's row of the same method
    (its documentation, ``source`` and ``deviations``, excepted: they describe the other table).
    """
    text = resources.files("ssl_bench.experiments").joinpath("recipes", f"{name}.toml").read_text()
    data = tomllib.loads(text)
    setting = data.pop("setting")
    defaults = setting.get("defaults", {})
    known = {f.name for f in dataclasses.fields(MethodRecipe)}
    for key in defaults:
        if key not in known:
            raise UsageError(
                unknown_name_message(f"recipe field in experiments/recipes/{name}.toml [setting.defaults]:", key, known)
            )
    base_rows = _recipe_file(setting["based_on"])[1] if "based_on" in setting else {}
    rows = {}
    for method, row in data.items():
        inherited = {k: v for k, v in base_rows.get(method, {}).items() if k not in ("source", "deviations")}
        rows[method] = with_defaults(row, with_defaults(defaults, inherited))
    return setting, rows


@cache
def load_recipe_table(name: str) -> RecipeTable:
    setting, rows = _recipe_file(name)
    methods = {
        method: MethodRecipe.from_mapping(row, f"experiments/recipes/{name}.toml [{method}]")
        for method, row in rows.items()
    }
    return RecipeTable(
        name=name,
        description=setting["description"],
        datasets=tuple(setting["datasets"]),
        backbone=setting["backbone"],
        image_size=setting["image_size"],
        methods=methods,
        train_subset=setting.get("train_subset"),
        defaults=setting.get("defaults", {}),
    )


def recipe_table_for(dataset: str) -> RecipeTable:
    for name in RECIPE_FILES:
        table = load_recipe_table(name)
        if dataset in table.datasets:
            return table
    known = [d for name in RECIPE_FILES for d in load_recipe_table(name).datasets]
    raise UsageError(unknown_name_message("dataset", dataset, known))


def resolve_config(
    method: str,
    dataset: str,
    overrides: dict[str, Any] | None = None,
    settings: list[str] | None = None,
) -> RunConfig:
    """The recipe for (method, dataset), then explicit overrides, then `--set key=value` strings."""
    method_cls = get_method(method)
    table = recipe_table_for(dataset)
    row = recipe_row(method, table)
    # The fields a row and a RunConfig share, copied as they are (tables as copies); then what a
    # config holds resolved: the table's backbone and data, the heads' and views' full layouts.
    shared = {f.name for f in dataclasses.fields(RunConfig)} & {f.name for f in dataclasses.fields(MethodRecipe)}
    config = RunConfig(
        method=method,
        dataset=dataset,
        backbone=table.backbone,
        image_size=table.image_size,
        train_subset=table.train_subset,
        **{name: copy.deepcopy(getattr(row, name)) for name in sorted(shared)},
    )
    config.source = f"{table.name}: {row.source}"
    config.lars_eta = DEFAULT_LARS_ETA.get(row.lars_variant, 0.0) if row.lars_eta is None else row.lars_eta
    for head in ("projector", "predictor"):
        options = f"{head}_options"
        declared, changes = getattr(method_cls, options), getattr(row, options)
        setattr(config, options, resolved_options(declared, changes, options))
    config.view_a, config.view_b = resolved_views(method_cls, row)
    config.local_crops = resolved_local_crops(method_cls, row, config.view_a)
    for key, value in (overrides or {}).items():
        if value is not None:
            setattr(config, key, value)
    if overrides and overrides.get("epochs") is not None and config.warmup_epochs > config.epochs:
        # A short run keeps the recipe's shape: warmup scaled to the same fraction of training.
        config.warmup_epochs = max(0, round(row.warmup_epochs * config.epochs / row.epochs))
    for setting in settings or []:
        apply_setting(config, setting)
    config.validate()
    if config.online_probe == SOLO_LEARN_PROBE and dataset_info(dataset).num_classes < 2:
        # The classifier is built with the method (its parameters are in the run's optimiser),
        # before the images are read: a dataset whose classes only its folders tell cannot have it.
        raise UsageError(f"online_probe={SOLO_LEARN_PROBE} needs a dataset with known classes; {dataset} has none")
    view_pair(config)  # a UsageError for an impossible view distribution
    check_local_crops(config)
    method_cls.check_hyperparameters(config.projector, config.predictor, config.loss, config.method_params)
    method_cls.check_batch_size(config.batch_size, {**method_cls.loss_param_defaults, **config.loss})
    return config


HEAD_OPTIONS = ("hidden_bias", "hidden_norm", "last_bias", "last_bn")


def resolved_options(declared: Mapping[str, bool], changes: Mapping[str, bool], where: str) -> dict[str, bool]:
    """A head's full layout: build_projector's defaults, the method's declaration, the recipe's changes."""
    for name in changes:
        if name not in HEAD_OPTIONS:
            raise UsageError(unknown_name_message(f"{where} option", name, HEAD_OPTIONS))
    defaults = {"hidden_bias": True, "hidden_norm": True, "last_bias": False, "last_bn": False}
    return {**defaults, **declared, **changes}


def resolved_views(method_cls: type, row: MethodRecipe) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both views' full distributions: the method's pair, then the row's ``views``, ``view_a``, ``view_b``."""
    kind = method_cls.augmentation
    pair = view_pair_configs(kind, small_images=False) if isinstance(kind, str) else tuple(kind)
    resolved = []
    for config, own in zip(pair, (row.view_a, row.view_b), strict=True):
        view = {**dataclasses.asdict(config), **row.views, **own}
        # Stored as JSON has them: ranges and strengths as lists, so a config reads back equal.
        view = {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in view.items()}
        try:
            view_config(view)
        except (TypeError, ValueError) as error:
            raise UsageError(f"{method_cls.name}'s view distribution: {error}") from None
        resolved.append(view)
    return resolved[0], resolved[1]


def resolved_local_crops(method_cls: type, row: MethodRecipe, view_a: Mapping[str, Any]) -> dict[str, Any]:
    """The small views in full: count and size from the row, view a's distribution with the row's changes."""
    if not row.local_crops:
        return {}
    return {**view_a, **{k: list(v) if isinstance(v, (tuple, list)) else v for k, v in row.local_crops.items()}}


def check_local_crops(config: RunConfig) -> None:
    """A UsageError unless the config's local crops are well formed and its method takes them."""
    try:
        crops = local_crops_of(config.local_crops)
    except (TypeError, ValueError) as error:
        raise UsageError(f"local crops of {config.method}: {error}") from None
    if crops is not None and not get_method(config.method).takes_local_crops():
        raise UsageError(
            f"{config.method} takes two views; local_crops (multi-crop) go with methods that declare "
            "uses_local_crops or loss_over_crop_pairs"
        )


def recipe_row(method: str, table: RecipeTable) -> MethodRecipe:
    """The method's row in ``table``; else the row the method carries for it (``Method.recipes``).

    The tables in experiments/recipes are the reviewed source of the hyperparameters, so a row
    there wins. A method file used with ``--method-file`` (or installed as a plug-in) cannot add
    rows to them; it carries its own rows instead.
    """
    if method in table.methods:
        return table.methods[method]
    method_cls = get_method(method)
    carried = method_cls.recipes.get(table.name)
    if carried is None:
        raise UsageError(
            f"no {table.name} recipe for method {method!r}: add a [{method}] row to "
            f"experiments/recipes/{table.name}.toml or a {table.name!r} entry to {method_cls.__name__}.recipes "
            f"(rows in {table.name}.toml: {', '.join(table.methods)})"
        )
    return MethodRecipe.from_mapping(
        with_defaults(carried, table.defaults), f"{method_cls.__name__}.recipes[{table.name!r}]"
    )


def table_rows(table: RecipeTable) -> dict[str, MethodRecipe]:
    """The rows of ``table``, then the rows that registered methods without one there carry."""
    rows = dict(table.methods)
    for method in available_methods():
        if method not in rows and table.name in get_method(method).recipes:
            rows[method] = recipe_row(method, table)
    return rows


def recipe_rows() -> list[dict[str, Any]]:
    """Every recipe row, in the cheatsheet's columns (for `ssl-bench methods`)."""
    rows = []
    for name in RECIPE_FILES:
        table = load_recipe_table(name)
        for method, row in table_rows(table).items():
            lr = f"{row.lr:.4g}"
            if row.bias_norm_base_lr is not None:
                lr += f" (biases and norms {scaled_lr(row.bias_norm_base_lr, row.batch_size):.4g})"
            rows.append(
                {
                    "setting": table.name,
                    "method": method,
                    "latent dim": row.projector[-1],
                    "batch": row.batch_size,
                    "optimizer": row.optimizer.upper(),
                    "lr": lr,
                    "weight decay": f"{row.weight_decay:g}",
                    "schedule": ("linear warmup, " if row.warmup_epochs else "") + "cosine decay",
                    "epochs": row.epochs,
                }
            )
    return rows
