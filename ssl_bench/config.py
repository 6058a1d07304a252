"""The resolved configuration of one run (:class:`RunConfig`), and the names a config may use.

Recipes, the data a config is resolved from, are ``ssl_bench.recipes``; ``--set key=value``
parsing is ``ssl_bench.overrides``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.errors import UsageError, unknown_name_message

# What a config may name as its optimiser, and the LARS variants (ssl_bench.train.optim), each
# with its trust coefficient in the code it follows.
OPTIMIZERS = ("lars", "sgd", "adamw", "adam")
LARS_VARIANTS = ("official", "solo-learn")
DEFAULT_LARS_ETA = {"official": 0.001, "solo-learn": 0.02}


# The online linear probe trained alongside pre-training (ssl_bench.train.monitor), by the code
# whose numbers it is compared with. "bn_linear_sgd": BatchNorm without affine parameters, then a
# Linear, on view a's representation, with an SGD of its own that never touches the run's
# optimiser. "solo_learn": solo-learn's classifier (vturrisi/solo-learn solo/methods/base.py,
# BaseMethod), a Linear on the representation of each view the online backbone embeds, whose
# parameters are a group of the run's optimiser (lr probe_base_lr x batch / 256, no weight decay,
# the run's LARS rule and schedule): the protocol of solo-learn's published CIFAR numbers.
BN_LINEAR_SGD_PROBE, SOLO_LEARN_PROBE = "bn_linear_sgd", "solo_learn"
ONLINE_PROBES = (BN_LINEAR_SGD_PROBE, SOLO_LEARN_PROBE)


# How an lr given at batch 256 follows the batch (RunConfig.lr_scaling). "linear", every recipe's
# rule: base_lr x batch / 256. "sqrt": base_lr x sqrt(batch / 256), the square-root rule of
# SimCLR's code (google-research/simclr, flag learning_rate_scaling) anchored at batch 256, where
# both rules give base_lr; below 256 it keeps a larger lr than the linear rule.
LINEAR_LR_SCALING, SQRT_LR_SCALING = "linear", "sqrt"
LR_SCALINGS = (LINEAR_LR_SCALING, SQRT_LR_SCALING)
# Each rule as logs, dry runs and model cards write it.
LR_SCALING_FORMS = {LINEAR_LR_SCALING: "base_lr x batch / 256", SQRT_LR_SCALING: "base_lr x sqrt(batch / 256)"}


def scaled_lr(base_lr: float, batch_size: int, rule: str = LINEAR_LR_SCALING) -> float:
    """The lr at ``batch_size`` of ``base_lr``, the lr at batch 256, under ``rule`` (LR_SCALINGS)."""
    if rule == SQRT_LR_SCALING:
        return base_lr * math.sqrt(batch_size / 256)
    return base_lr * batch_size / 256


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
    # Whole epochs as recipes give them, or a fraction (the warmup of a run with a fraction of
    # another's epochs); the trainer warms up for round(warmup_epochs x steps per epoch) steps.
    warmup_epochs: float
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
    # How every lr of the run's optimiser follows the batch (LR_SCALINGS): each *_base_lr is the
    # lr at batch 256.
    lr_scaling: str = LINEAR_LR_SCALING
    zero_init_residual: bool | None = None
    sync_batchnorm: bool = True
    # Which online probe the run trains (ONLINE_PROBES) and, for solo-learn's, its lr at batch 256.
    online_probe: str = BN_LINEAR_SGD_PROBE
    probe_base_lr: float | None = None
    # The method's head layouts in full (build_projector options), after the recipe's changes.
    projector_options: dict[str, bool] = field(default_factory=dict)
    predictor_options: dict[str, bool] = field(default_factory=dict)
    # Both views' distributions in full (ViewConfig fields), after the recipe's changes.
    view_a: dict[str, Any] = field(default_factory=dict)
    view_b: dict[str, Any] = field(default_factory=dict)
    # Multi-crop's small views in full (count, size and the ViewConfig fields), beside the two
    # views above; empty for the two-view runs.
    local_crops: dict[str, Any] = field(default_factory=dict)
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
    OMITTED_AT_DEFAULT: typing.ClassVar[frozenset[str]] = frozenset(
        {"eval_features", "reuse_finished", "online_probe", "probe_base_lr", "lr_scaling", "local_crops"}
    )

    @property
    def lr(self) -> float:
        return scaled_lr(self.base_lr, self.batch_size, self.lr_scaling)

    @property
    def bias_norm_lr(self) -> float | None:
        if self.bias_norm_base_lr is None:
            return None
        return scaled_lr(self.bias_norm_base_lr, self.batch_size, self.lr_scaling)

    @property
    def probe_lr(self) -> float | None:
        """The peak lr of solo-learn's online classifier (None for the other probe)."""
        return None if self.probe_base_lr is None else scaled_lr(self.probe_base_lr, self.batch_size, self.lr_scaling)

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
            raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lars_variant not in LARS_VARIANTS:
            raise UsageError(unknown_name_message("lars_variant", self.lars_variant, LARS_VARIANTS))
        if self.lr_scaling not in LR_SCALINGS:
            raise UsageError(unknown_name_message("lr_scaling", self.lr_scaling, LR_SCALINGS))
        for name in ("lars_eta", "loss_scale"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr_end_factor < 0:
            raise UsageError(f"lr_end_factor must be >= 0, got {self.lr_end_factor}")
        self.check_online_probe()
        for name in ("projector", "predictor"):
            if any(width <= 0 for width in getattr(self, name)):
                raise UsageError(f"{name} widths must be positive, got {list(getattr(self, name))}")
        check_eval_features(self.eval_features)

    def check_online_probe(self) -> None:
        """solo-learn's probe needs its lr; the other probe has its own optimiser and takes none."""
        if self.online_probe not in ONLINE_PROBES:
            raise UsageError(unknown_name_message("online_probe", self.online_probe, ONLINE_PROBES))
        if self.online_probe == SOLO_LEARN_PROBE:
            if self.probe_base_lr is None or not self.probe_base_lr > 0:
                raise UsageError(
                    f"online_probe {SOLO_LEARN_PROBE} needs a positive probe_base_lr, got {self.probe_base_lr}"
                )
        elif self.probe_base_lr is not None:
            raise UsageError(
                f"probe_base_lr goes with online_probe={SOLO_LEARN_PROBE}; the {self.online_probe} probe has its "
                "own optimiser (ssl_bench.train.monitor.MonitorConfig)"
            )

    def check_values(self) -> None:
        """What no run can start with: a non-finite number, a seed torch cannot take, a device
        name torch does not know, a batch of one (BatchNorm). Each method checks its own loss parameters
        (``Method.check_hyperparameters``)."""
        for name, value in _numbers(self):
            if not math.isfinite(value):
                raise UsageError(f"{name} must be a finite number, got {value}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed must be in [0, {MAX_SEED}] (a 64-bit generator seed), got {self.seed}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise UsageError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.batch_size == 1:
            raise UsageError("batch_size must be at least 2: BatchNorm in training mode needs 2 samples")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["projector"] = list(self.projector)
        data["predictor"] = list(self.predictor)
        data["eval_features"] = list(self.eval_features)
        # A whole number of warmup epochs is written as the integer a recipe gives, so that
        # `--set warmup_epochs=1` and a recipe's 1 are one run.
        if float(self.warmup_epochs).is_integer():
            data["warmup_epochs"] = int(self.warmup_epochs)
        defaults = {
            f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in dataclasses.fields(self)
            if f.name in self.OMITTED_AT_DEFAULT
        }
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
