"""Recipes (data files in experiments/recipes) and the resolved configuration of one run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Mapping

from ssl_bench.errors import UsageError, unknown_name_message

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

    @property
    def lr(self) -> float:
        return scaled_lr(self.base_lr, self.batch_size)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], where: str) -> "MethodRecipe":
        """A row from a TOML table or a method's ``recipes``; ``where`` names it in errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in row:
            if key not in fields:
                raise UsageError(unknown_name_message(f"recipe field in {where}:", key, fields))
        required = [name for name, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in row]
        if missing:
            raise UsageError(f"{where} lacks the recipe field(s) {', '.join(missing)}")
        return cls(**{**row, "projector": tuple(row["projector"]), "predictor": tuple(row.get("predictor", ())),
                      "loss": dict(row["loss"]), "method_params": dict(row.get("method_params", {}))})


@dataclass(frozen=True)
class RecipeTable:
    name: str  # the file's stem
    description: str
    datasets: tuple[str, ...]
    backbone: str
    image_size: int
    methods: dict[str, MethodRecipe]
    train_subset: int | None = None  # pre-train on a class-balanced subset of this size


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule of every recipe: lr = base_lr * batch_size / 256."""
    return base_lr * batch_size / 256


@cache
def load_recipe_table(name: str) -> RecipeTable:
    text = resources.files("experiments").joinpath("recipes", f"{name}.toml").read_text()
    data = tomllib.loads(text)
    setting = data.pop("setting")
    methods = {
        method: MethodRecipe.from_mapping(row, f"experiments/recipes/{name}.toml [{method}]")
        for method, row in data.items()
    }
    return RecipeTable(
        name=name,
        description=setting["description"],
        datasets=tuple(setting["datasets"]),
        backbone=setting["backbone"],
        image_size=setting["image_size"],
        methods=methods,
        train_subset=setting.get("train_subset"),
    )


def recipe_table_for(dataset: str) -> RecipeTable:
    for name in RECIPE_FILES:
        table = load_recipe_table(name)
        if dataset in table.datasets:
            return table
    known = [d for name in RECIPE_FILES for d in load_recipe_table(name).datasets]
    raise UsageError(unknown_name_message("dataset", dataset, known))


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
    recipe: str  # where the hyperparameters came from
    bias_norm_base_lr: float | None = None
    predictor: tuple[int, ...] = ()
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train_subset: int | None = None
    # Execution settings: they change how fast a run goes, not what it computes,
    # so they are left out of the run's identity (see `identity_hash`).
    data_root: str = "data"
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    precision: str = "auto"  # "auto" = bf16 autocast on CUDA, fp32 on CPU; or "bf16" / "fp32"
    num_workers: int = 4
    checkpoint_every_steps: int = 200
    download: bool = False

    EXECUTION_FIELDS: typing.ClassVar[frozenset[str]] = frozenset(
        {"data_root", "device", "num_workers", "checkpoint_every_steps", "download"}
    )

    @property
    def lr(self) -> float:
        return scaled_lr(self.base_lr, self.batch_size)

    @property
    def bias_norm_lr(self) -> float | None:
        return None if self.bias_norm_base_lr is None else scaled_lr(self.bias_norm_base_lr, self.batch_size)

    def validate(self) -> None:
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
        if self.optimizer not in {"lars", "sgd", "adamw"}:
            raise UsageError(f"optimizer must be lars, sgd or adamw, got {self.optimizer!r}")
        for name in ("projector", "predictor"):
            if any(width <= 0 for width in getattr(self, name)):
                raise UsageError(f"{name} widths must be positive, got {list(getattr(self, name))}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["projector"] = list(self.projector)
        data["predictor"] = list(self.predictor)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "projector": tuple(data["projector"]),
                      "predictor": tuple(data.get("predictor", ()))})

    def identity_hash(self) -> str:
        """Short hash of what the run computes: same hash = same run (resumed, not repeated)."""
        identity = {k: v for k, v in self.to_dict().items() if k not in self.EXECUTION_FIELDS}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


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
        recipe=f"{table.name}: {row.source}",
        bias_norm_base_lr=row.bias_norm_base_lr,
        predictor=row.predictor,
        method_params=dict(row.method_params),
        train_subset=table.train_subset,
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
            f"(rows in {table.name}.toml: {', '.join(table.methods)})")
    return MethodRecipe.from_mapping(carried, f"{method_cls.__name__}.recipes[{table.name!r}]")


# Chosen on the command line (method, --dataset) or derived: not `--set` keys.
NOT_SETTABLE = frozenset({"method", "dataset", "loss", "method_params", "recipe"})
# Dictionary fields whose entries `--set table.name=value` sets (only names the recipe gave).
PARAMETER_TABLES = ("loss", "method_params")


def apply_setting(config: RunConfig, setting: str) -> None:
    """Apply one `key=value` string, converting the value to the field's type."""
    key, sep, raw = setting.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise UsageError(f"malformed --set {setting!r}: expected key=value")
    table, dot, name = key.partition(".")
    if dot and table in PARAMETER_TABLES:
        params = getattr(config, table)
        if name not in params:
            raise UsageError(unknown_name_message(f"{table} parameter of {config.method}", name, params))
        current = params[name]
        # Numbers parse as float (an int in a TOML file is still a float parameter); flags as bool.
        hint = float if isinstance(current, (int, float)) and not isinstance(current, bool) else type(current)
        params[name] = _parse_value(key, raw, hint)
        return
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    if key not in fields or key in NOT_SETTABLE:
        settable = [name for name in fields if name not in NOT_SETTABLE]
        settable += [f"{table}.{name}" for table in PARAMETER_TABLES for name in getattr(config, table)]
        raise UsageError(unknown_name_message("--set key", key, settable))
    hint = typing.get_type_hints(RunConfig)[key]
    setattr(config, key, _parse_value(key, raw, hint))


def _parse_value(key: str, raw: str, hint: Any) -> Any:
    try:
        return _convert(raw, hint)
    except ValueError:
        expected = getattr(hint, "__name__", str(hint))
        raise UsageError(f"malformed --set {key}={raw}: expected {expected}") from None


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
        return tuple(int(part) for part in raw.strip("[]()").split(",") if part.strip())
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

