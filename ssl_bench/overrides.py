"""``--set key=value``: one override of a resolved :class:`ssl_bench.config.RunConfig`, its value
converted to the field's type (a loss parameter's to its default's type)."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from ssl_bench.config import RunConfig
from ssl_bench.errors import UsageError, unknown_name_message
from ssl_bench.method import get_method

# Dictionary fields whose entries `--set table.name=value` sets (only names the recipe gave).
PARAMETER_TABLES = (
    "loss",
    "method_params",
    "projector_options",
    "predictor_options",
    "view_a",
    "view_b",
    "local_crops",
)
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
        if table == "local_crops" and not params and get_method(config.method).takes_local_crops():
            # Multi-crop added to a row without it: the small crops start from view a's
            # distribution; the settings must give their count and size (0 is refused).
            params.update({**copy.deepcopy(config.view_a), "count": 0, "size": 0})
        # A loss or method parameter with a default (Method.loss_param_defaults,
        # Method.optional_method_params) may be set though the recipe left it out; at its default
        # it is not stored (the run is the default run).
        optional = _optional_params(config.method, table)
        if name not in params and name not in optional:
            known = [*params, *optional]
            listing = None if known else f"{config.method} has no {table} parameters"
            raise UsageError(unknown_name_message(f"{table} parameter of {config.method}", name, known, listing))
        current = params[name] if name in params else optional[name]
        # Numbers parse as float (an int in a TOML file is still a float parameter); flags as bool;
        # ranges and strengths (crop_scale, jitter) as lists of floats.
        if isinstance(current, (list, tuple)):
            hint = tuple[float, ...]
        elif table == "local_crops" and name in ("count", "size"):
            hint = int
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


def _optional_params(method: str, table: str) -> Mapping[str, Any]:
    """The parameters of ``table`` a recipe may leave out, with their defaults."""
    if table == "loss":
        return get_method(method).loss_param_defaults
    if table == "method_params":
        return get_method(method).optional_method_params()
    return {}


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
