"""Recipes (data files in experiments/recipes) and the resolved configuration of one run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ssl_bench.errors import UsageError, unknown_name_message

if typing.TYPE_CHECKING:
    from ssl_bench.data.augment import ViewConfig

# What a config may name as its optimiser, and the LARS variants (ssl_bench.train.optim), each
# with its trust coefficient in the code it follows.
OPTIMIZERS = ("lars", "sgd", "adamw")
LARS_VARIANTS = ("official", "solo-learn")
DEFAULT_LARS_ETA = {"official": 0.001, "solo-learn": 0.02}

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
    # Changes to the method's head layout (build_projector options: hidden_bias, hidden_norm,
    # last_bias, last_bn).
    projector_options: dict[str, bool] = field(default_factory=dict)
    predictor_options: dict[str, bool] = field(default_factory=dict)
    # Changes to the method's two view distributions (ViewConfig fields): `views` for both,
    # then `view_a` / `view_b` for one.
    views: dict[str, Any] = field(default_factory=dict)
    view_a: dict[str, Any] = field(default_factory=dict)
    view_b: dict[str, Any] = field(default_factory=dict)
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


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule of every recipe: lr = base_lr * batch_size / 256."""
    return base_lr * batch_size / 256


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


# The features a run's evaluation can probe: the backbone's output, and the projector's on top of it.
REPRESENTATION, EMBEDDING = "representation", "embedding"
EVAL_FEATURES = (REPRESENTATION, EMBEDDING)


def check_eval_features(features: tuple[str, ...]) -> None:
    """A UsageError unless ``features`` names known features, each once, the representation first."""
    for name in features:
        if name not in EVAL_FEATURES:
            raise UsageError(unknown_name_message("eval_features entry", name, EVAL_FEATURES))
    if not features or features[0] != REPRESENTATION or len(set(features)) != len(features):
        raise UsageError(
            f"eval_features must start with {REPRESENTATION!r} and name each feature once, got {list(features)}"
        )


@dataclass
class RunConfig:
    """Everything that defines one pre-training run. `--set key=value` edits these fields."""

    method: str
    dataset: str
    backbone: str
    image_size: int
    projector: tuple[int, ...]
    batch_size: int
    epochs: int
    warmup_epochs: int
    optimizer: str
    base_lr: float
    weight_decay: float
    loss: dict[str, float]
    source: str  # the recipe table and the source its row cites
    bias_norm_base_lr: float | None = None
    predictor: tuple[int, ...] = ()
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train_subset: int | None = None
    # Pre-train without the validation images (the split all selection uses); False pre-trains
    # on the whole labelled train split, as the papers' ImageNet runs do.
    hold_out_val: bool = True
    loss_scale: float = 1.0
    lars_variant: str = "official"
    lars_eta: float = 0.001
    lr_end_factor: float = 0.001
    zero_init_residual: bool | None = None
    sync_batchnorm: bool = True
    # The method's head layouts in full (build_projector options), after the recipe's changes.
    projector_options: dict[str, bool] = field(default_factory=dict)
    predictor_options: dict[str, bool] = field(default_factory=dict)
    # Both views' distributions in full (ViewConfig fields), after the recipe's changes.
    view_a: dict[str, Any] = field(default_factory=dict)
    view_b: dict[str, Any] = field(default_factory=dict)
    deviations: dict[str, str] = field(default_factory=dict)  # from the cited source, with reasons
    # What the evaluation probes (EVAL_FEATURES; ssl_bench.eval.features): the representation
    # (backbone output) always, first; "embedding" adds the projector's output beside it.
    eval_features: tuple[str, ...] = ("representation",)
    # Execution settings: they change how fast a run goes, not what it computes,
    # so they are left out of the run's identity (see `identity_hash`).
    data_root: str = "data"
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    precision: str = "auto"  # "auto" = bf16 autocast on CUDA, fp32 on CPU; or "bf16" / "fp32"
    num_workers: int = 4
    checkpoint_every_steps: int = 200
    download: bool = False
    # Take a finished run (or resume a checkpoint) that other code made, instead of measuring it
    # again (ssl_bench.run.record.same_code); the tables then say the comparison mixes code.
    reuse_finished: bool = False

    EXECUTION_FIELDS: typing.ClassVar[frozenset[str]] = frozenset(
        {"data_root", "device", "num_workers", "checkpoint_every_steps", "download", "reuse_finished"}
    )
    # What documents a run rather than defines it: also outside the identity.
    DOCUMENTATION_FIELDS: typing.ClassVar[frozenset[str]] = frozenset({"source", "deviations"})
    # Fields left out of to_dict() (so of config.json and the identity) while at their default:
    # runs recorded before such a field existed keep their identity and read back the same.
    OMITTED_AT_DEFAULT: typing.ClassVar[frozenset[str]] = frozenset({"eval_features", "reuse_finished"})

    @property
    def lr(self) -> float:
        return scaled_lr(self.base_lr, self.batch_size)

    @property
    def bias_norm_lr(self) -> float | None:
        return None if self.bias_norm_base_lr is None else scaled_lr(self.bias_norm_base_lr, self.batch_size)

    def validate(self) -> None:
        self.check_values()
        positive = ["batch_size", "epochs", "image_size", "checkpoint_every_steps"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ["warmup_epochs", "base_lr", "weight_decay", "num_workers"]:
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs > self.epochs:
            raise UsageError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        if self.train_subset is not None and self.train_subset < self.batch_size:
            raise UsageError(f"train_subset ({self.train_subset}) is smaller than one batch ({self.batch_size})")
        if self.precision not in {"auto", "bf16", "fp32"}:
            raise UsageError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optimizer must be lars, sgd or adamw, got {self.optimizer!r}")
        if self.lars_variant not in LARS_VARIANTS:
            raise UsageError(unknown_name_message("lars_variant", self.lars_variant, LARS_VARIANTS))
        for name in ("lars_eta", "loss_scale"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr_end_factor < 0:
            raise UsageError(f"lr_end_factor must be >= 0, got {self.lr_end_factor}")
        if self.view_a or self.view_b:  # a baseline, which trains nothing, has no views
            self.view_pair()  # raises a UsageError for an impossible view distribution
        for name in ("projector", "predictor"):
            if any(width <= 0 for width in getattr(self, name)):
                raise UsageError(f"{name} widths must be positive, got {list(getattr(self, name))}")
        check_eval_features(self.eval_features)

    def check_values(self) -> None:
        """What no run can start with: a non-finite number, a seed torch cannot take, a device
        name torch does not know, a batch of one (BatchNorm), a temperature that is not positive."""
        for name, value in _numbers(self):
            if not math.isfinite(value):
                raise UsageError(f"{name} must be a finite number, got {value}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed must be in [0, {MAX_SEED}] (a 64-bit generator seed), got {self.seed}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise UsageError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.batch_size == 1:
            raise UsageError("batch_size must be at least 2: BatchNorm in training mode needs 2 samples")
        for name, value in self.loss.items():
            if "temperature" in name and isinstance(value, (int, float)) and not value > 0:
                raise UsageError(f"loss.{name} must be positive (the logits are divided by it), got {value}")

    def view_pair(self) -> tuple[ViewConfig, ViewConfig]:
        """The two views' distributions, as the augmentation takes them."""
        try:
            return view_config(self.view_a), view_config(self.view_b)
        except (TypeError, ValueError) as error:
            raise UsageError(f"view distribution of {self.method}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["projector"] = list(self.projector)
        data["predictor"] = list(self.predictor)
        data["eval_features"] = list(self.eval_features)
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in self.OMITTED_AT_DEFAULT}
        for name, default in defaults.items():
            if getattr(self, name) == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{
                **{k: v for k, v in data.items() if k in known},
                "projector": tuple(data["projector"]),
                "predictor": tuple(data.get("predictor", ())),
                "eval_features": tuple(data.get("eval_features", ("representation",))),
            }
        )

    @classmethod
    def read(cls, run_dir: Path) -> RunConfig:
        """The config a run directory recorded (its ``config.json``)."""
        return cls.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))

    def identity_hash(self) -> str:
        """Short hash of what the run computes: same hash = same run (resumed, not repeated)."""
        excluded = self.EXECUTION_FIELDS | self.DOCUMENTATION_FIELDS
        identity = {k: v for k, v in self.to_dict().items() if k not in excluded}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


# Seeds go to torch.manual_seed and numpy; within int64 they also stay exact in every table.
MAX_SEED = 2**63 - 1


def _numbers(config: RunConfig) -> list[tuple[str, float]]:
    """Every float of ``config`` (in its tables and ranges too), named as ``--set`` names it."""
    found: list[tuple[str, float]] = []

    def visit(name: str, value: Any) -> None:
        if isinstance(value, float):
            found.append((name, value))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                visit(f"{name}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(name, item)

    for f in dataclasses.fields(config):
        visit(f.name, getattr(config, f.name))
    return found


def untrained_fields() -> dict[str, Any]:
    """The training fields of a run that trains nothing (the random-init baseline, a checkpoint
    trained elsewhere): every one empty, so that such runs differ only in what they evaluate."""
    return {
        "projector": (),
        "batch_size": 0,
        "epochs": 0,
        "warmup_epochs": 0,
        "optimizer": "none",
        "base_lr": 0.0,
        "weight_decay": 0.0,
        "loss": {},
    }


def resolve_config(
    method: str,
    dataset: str,
    overrides: dict[str, Any] | None = None,
    settings: list[str] | None = None,
) -> RunConfig:
    """The recipe for (method, dataset), then explicit overrides, then `--set key=value` strings."""
    from ssl_bench.method import get_method

    method_cls = get_method(method)
    table = recipe_table_for(dataset)
    row = recipe_row(method, table)
    view_a, view_b = resolved_views(method_cls, row)
    config = RunConfig(
        method=method,
        dataset=dataset,
        backbone=table.backbone,
        image_size=table.image_size,
        projector=row.projector,
        batch_size=row.batch_size,
        epochs=row.epochs,
        warmup_epochs=row.warmup_epochs,
        optimizer=row.optimizer,
        base_lr=row.base_lr,
        weight_decay=row.weight_decay,
        loss=dict(row.loss),
        source=f"{table.name}: {row.source}",
        bias_norm_base_lr=row.bias_norm_base_lr,
        predictor=row.predictor,
        method_params=dict(row.method_params),
        train_subset=table.train_subset,
        loss_scale=row.loss_scale,
        lars_variant=row.lars_variant,
        lars_eta=DEFAULT_LARS_ETA.get(row.lars_variant, 0.0) if row.lars_eta is None else row.lars_eta,
        lr_end_factor=row.lr_end_factor,
        zero_init_residual=row.zero_init_residual,
        sync_batchnorm=row.sync_batchnorm,
        projector_options=resolved_options(method_cls.projector_options, row.projector_options, "projector_options"),
        predictor_options=resolved_options(method_cls.predictor_options, row.predictor_options, "predictor_options"),
        view_a=view_a,
        view_b=view_b,
        deviations=dict(row.deviations),
    )
    for key, value in (overrides or {}).items():
        if value is not None:
            setattr(config, key, value)
    if overrides and overrides.get("epochs") is not None and config.warmup_epochs > config.epochs:
        # A short run keeps the recipe's shape: warmup scaled to the same fraction of training.
        config.warmup_epochs = max(0, round(row.warmup_epochs * config.epochs / row.epochs))
    for setting in settings or []:
        apply_setting(config, setting)
    config.validate()
    method_cls.check_hyperparameters(config.projector, config.predictor, config.loss, config.method_params)
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
    from ssl_bench.data.augment import view_pair_configs

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


def view_config(view: Mapping[str, Any]) -> ViewConfig:
    """A ViewConfig from its fields as stored in a config (lists for its tuples)."""
    from ssl_bench.data.augment import ViewConfig

    fields = {f.name for f in dataclasses.fields(ViewConfig)}
    unknown = [name for name in view if name not in fields]
    if unknown:
        raise ValueError(unknown_name_message("view field", unknown[0], fields))
    return ViewConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in view.items()})


def recipe_row(method: str, table: RecipeTable) -> MethodRecipe:
    """The method's row in ``table``; else the row the method carries for it (``Method.recipes``).

    The tables in experiments/recipes are the reviewed source of the hyperparameters, so a row
    there wins. A method file used with ``--method-file`` (or installed as a plug-in) cannot add
    rows to them; it carries its own rows instead.
    """
    if method in table.methods:
        return table.methods[method]
    from ssl_bench.method import get_method

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


# Dictionary fields whose entries `--set table.name=value` sets (only names the recipe gave).
PARAMETER_TABLES = ("loss", "method_params", "projector_options", "predictor_options", "view_a", "view_b")
# Chosen on the command line (method, --dataset) or derived: not `--set` keys.
NOT_SETTABLE = frozenset({"method", "dataset", "source", "deviations", *PARAMETER_TABLES})


def apply_setting(config: RunConfig, setting: str) -> None:
    """Apply one `key=value` string, converting the value to the field's type."""
    key, sep, raw = setting.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise UsageError(f"malformed --set {setting!r}: expected key=value")
    table, dot, name = key.partition(".")
    if dot and table in PARAMETER_TABLES:
        params = getattr(config, table)
        # A loss parameter with a default (Method.loss_param_defaults) may be set though the
        # recipe left it out; at its default it is not stored (the run is the default run).
        optional = _loss_param_defaults(config.method) if table == "loss" else {}
        if name not in params and name not in optional:
            known = [*params, *optional]
            listing = None if known else f"{config.method} has no {table} parameters"
            raise UsageError(unknown_name_message(f"{table} parameter of {config.method}", name, known, listing))
        current = params[name] if name in params else optional[name]
        # Numbers parse as float (an int in a TOML file is still a float parameter); flags as bool;
        # ranges and strengths (crop_scale, jitter) as lists of floats.
        if isinstance(current, (list, tuple)):
            hint = tuple[float, ...]
        elif isinstance(current, (int, float)) and not isinstance(current, bool):
            hint = float
        else:
            hint = type(current)
        value = _parse_value(key, raw, hint)
        params[name] = list(value) if isinstance(current, (list, tuple)) else value
        if name in optional and params[name] == optional[name]:
            del params[name]
        return
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    if key not in fields or key in NOT_SETTABLE:
        settable = [name for name in fields if name not in NOT_SETTABLE]
        settable += [f"{table}.{name}" for table in PARAMETER_TABLES for name in getattr(config, table)]
        raise UsageError(unknown_name_message("--set key", key, settable))
    hint = typing.get_type_hints(RunConfig)[key]
    setattr(config, key, _parse_value(key, raw, hint))


def _loss_param_defaults(method: str) -> Mapping[str, Any]:
    from ssl_bench.method import get_method

    return get_method(method).loss_param_defaults


def _parse_value(key: str, raw: str, hint: Any) -> Any:
    try:
        return _convert(raw, hint)
    except ValueError:
        raise UsageError(f"malformed --set {key}={raw}: expected {_expected(hint)}") from None


def _expected(hint: Any) -> str:
    """What a value of type ``hint`` looks like on the command line."""
    args = typing.get_args(hint)
    if type(None) in args:
        return " or ".join(_expected(a) for a in args if a is not type(None)) + " or none"
    if typing.get_origin(hint) is tuple:
        example = "integers, e.g. 2048,2048,128" if args[0] is int else "numbers, e.g. 0.08,1"
        return f"comma-separated {example}"
    return "bool (true or false)" if hint is bool else getattr(hint, "__name__", str(hint))


def _convert(raw: str, hint: Any) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:  # `X | None`: "none" clears the field
        if raw.lower() in {"none", "null"}:
            return None
        return _convert(raw, next(a for a in args if a is not type(None)))
    if hint is bool:
        lowered = raw.lower()
        if lowered not in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
            raise ValueError(raw)
        return lowered in {"true", "1", "yes", "on"}
    if typing.get_origin(hint) is tuple:  # projector widths: "2048,2048,128" or "[2048, 2048, 128]"
        element = typing.get_args(hint)[0]
        return tuple(element(part) for part in raw.strip("[]()").split(",") if part.strip())
    return hint(raw)


def table_rows(table: RecipeTable) -> dict[str, MethodRecipe]:
    """The rows of ``table``, then the rows that registered methods without one there carry."""
    from ssl_bench.method import available_methods, get_method

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
