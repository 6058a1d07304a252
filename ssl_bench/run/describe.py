"""What a run computes, resolved in full: the output of ``ssl-bench run ... --dry-run``.

:func:`describe_run` builds the run's method and optimiser through the same functions as
pre-training (``ssl_bench.train.assemble``), on PyTorch's meta device (shapes without memory, so a
ResNet-50 with 8192-wide heads costs nothing), and reads every field that changes the
computation back from them: the heads' layers as built, the optimiser's groups as constructed.
:func:`flat_view` turns that into one ``dotted.key -> value`` mapping, the form the recipe
fidelity tests compare with the cited sources and the form the text dry run prints.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch
from torch import nn

from ssl_bench.config import LR_SCALING_FORMS, RunConfig
from ssl_bench.data.augment import BLUR_SIGMA, CROP_RATIO, blur_kernel_size, local_crops_of, view_pair
from ssl_bench.data.datasets import dataset_info
from ssl_bench.method import Method
from ssl_bench.train.assemble import build_method, build_run_optimizer
from ssl_bench.train.optim import LARS

# Parts of the pipeline that no option changes, stated so that a source that differs shows it.
CROP_INTERPOLATION = "bilinear, antialiased"
SOLARIZE_THRESHOLD = 0.5  # of the [0, 1] range: PIL's 128 of 255
PRECISIONS = {"auto": "bf16 autocast on CUDA, fp32 on CPU", "bf16": "bf16 autocast", "fp32": "fp32"}
SCHEDULE_FORM = "per step: linear warmup from 0 to the peak at the last warmup step, then cosine"


def layer_list(module: nn.Module) -> list[str]:
    """A head's layers in order, each as ``Linear(in, out, bias=...)``, ``BatchNorm1d(n, affine=...)``, ``ReLU``."""
    described = []
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            described.append(f"Linear({layer.in_features}, {layer.out_features}, bias={layer.bias is not None})")
        elif isinstance(layer, nn.BatchNorm1d):
            described.append(f"BatchNorm1d({layer.num_features}, affine={layer.affine})")
        elif isinstance(layer, nn.ReLU):
            described.append("ReLU")
        elif not isinstance(layer, (nn.Sequential, nn.Identity)):
            described.append(type(layer).__name__)
    return described


def stem(backbone: nn.Module) -> str:
    """The first convolution and whether a max-pool follows it (what small-image stems change)."""
    conv = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return "no convolution"
    described = f"conv {conv.kernel_size[0]}x{conv.kernel_size[1]} stride {conv.stride[0]} padding {conv.padding[0]}"
    pool = getattr(backbone, "maxpool", None)
    if pool is not None:
        described += ", no max-pool" if isinstance(pool, nn.Identity) else ", max-pool"
    return described


def _optimizer_groups(method: Method, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group as built, LARS groups split into adapted and excluded tensors."""
    names = {id(p): name for name, p in method.named_parameters()}
    lars = isinstance(optimizer, LARS)
    described = []
    for group in optimizer.param_groups:
        fixed = group.get("constant_lr", False)
        if lars:
            parts = [
                ("adapted", [p for p in group["params"] if p.ndim != 1]),
                ("excluded", [p for p in group["params"] if p.ndim == 1]),
            ]
        else:
            parts = [("", list(group["params"]))]
        for part, params in parts:
            if not params:
                continue
            entry: dict[str, Any] = {
                "group": group["name"] + (f", {part}" if part else ""),
                "tensors": len(params),
                "parameters": sum(p.numel() for p in params),
                "first": names.get(id(params[0]), "?"),
                "peak_lr": group["peak_lr"],
                "schedule": "constant" if fixed else "warmup + cosine",
                "momentum": group.get("momentum"),
            }
            # LARS leaves 1-D parameters out of both weight decay and the trust ratio.
            excluded = part == "excluded"
            entry["weight_decay"] = 0.0 if excluded else group["weight_decay"]
            if lars:
                entry["lars"] = (
                    "none (plain momentum SGD)"
                    if excluded
                    else (f"{group['variant']}, eta {group['eta']:g}" + (", clip_lr" if group["clip_lr"] else ""))
                )
            described.append(entry)
    return described


def describe_run(config: RunConfig) -> dict[str, Any]:
    """Every field of ``config`` that changes the computation, read from the built objects."""
    with torch.device("meta"):
        method = build_method(config)
        optimizer = build_run_optimizer(config, method)
    view_a, view_b = view_pair(config)
    local = local_crops_of(config.local_crops)
    info = dataset_info(config.dataset)
    # The values the run takes, those the recipe leaves out at their defaults included.
    method_params = {**method.optional_method_params(), **config.method_params}
    momentum = None
    if method.uses_momentum_target:
        base, final = method.method_params["momentum_base"], method.target_momentum(1, 1)  # tau at the last step
        momentum = {
            "base": base,
            "final": final,
            "schedule": ("constant" if final == base else "cosine over all steps")
            + ", applied after every optimiser step",
            "init": "a copy of the online backbone and projector",
            "ema_of": "parameters (buffers are the target's own)",
            "views": "both" if method.online_sees_both_views else "view b only (the online network sees view a)",
        }
    backbone_params = sum(p.numel() for p in method.backbone.parameters())
    return {
        "method": config.method,
        "dataset": config.dataset,
        "seed": config.seed,
        "source": config.source,
        "deviations": dict(config.deviations),
        "data": {
            "train_subset": config.train_subset,
            "image_size": config.image_size,
            "mean": list(info.mean),
            "std": list(info.std),
        },
        "backbone": {
            "name": config.backbone,
            "zero_init_residual": config.zero_init_residual,
            "stem": stem(method.backbone),
            "feature_dim": method.feature_dim,
            "parameters": backbone_params,
        },
        "projector": {
            "widths": list(config.projector),
            "options": dict(config.projector_options),
            "layers": layer_list(method.projector),
        },
        "predictor": None
        if method.predictor is None
        else {
            "widths": list(config.predictor),
            "options": dict(config.predictor_options),
            "layers": layer_list(method.predictor),
        },
        "loss": {"params": dict(config.loss), "scale": config.loss_scale, "method_params": method_params},
        "momentum_target": momentum,
        "optimizer": {"name": config.optimizer, "groups": _optimizer_groups(method, optimizer)},
        "schedule": {
            "batch_size": config.batch_size,
            "epochs": config.epochs,
            "warmup_epochs": config.warmup_epochs,
            "base_lr": config.base_lr,
            "lr": config.lr,
            "bias_norm_base_lr": config.bias_norm_base_lr,
            "lr_scaling": LR_SCALING_FORMS[config.lr_scaling],
            "end_factor": config.lr_end_factor,
            "form": SCHEDULE_FORM,
        },
        "augmentation": {
            "view_a": dataclasses.asdict(view_a),
            "view_b": dataclasses.asdict(view_b),
            "local_crops": None
            if local is None
            else {"count": local.count, "size": local.size, **dataclasses.asdict(local.view)},
            "crop_ratio": list(CROP_RATIO),
            "crop_interpolation": CROP_INTERPOLATION,
            "blur_sigma": list(BLUR_SIGMA),
            "blur_kernel": blur_kernel_size(config.image_size),
            "solarize_threshold": SOLARIZE_THRESHOLD,
        },
        "online_probe": {"kind": config.online_probe, "base_lr": config.probe_base_lr, "lr": config.probe_lr},
        "execution": {"precision": PRECISIONS[config.precision], "sync_batchnorm": config.sync_batchnorm},
    }


def flat_view(description: dict[str, Any]) -> dict[str, Any]:
    """``describe_run``'s nested dict as ``dotted.key -> value`` (lists and tuples as lists)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and prefix not in ("deviations",):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, tuple):
            flat[prefix] = list(value)
        else:
            flat[prefix] = value

    walk("", description)
    # Optimiser groups by name, not position, so that a comparison reads "lars eta of the weights".
    groups = description["optimizer"]["groups"]
    del flat["optimizer.groups"]
    for group in groups:
        for key, value in group.items():
            if key != "group":
                flat[f"optimizer[{group['group']}].{key}"] = value
    return flat


def dry_run_text(description: dict[str, Any]) -> str:
    """The readable dry run of one run: its flat view, deviations last."""
    flat = flat_view(description)
    deviations = flat.pop("deviations", {}) or {}
    title = f"{description['method']} on {description['dataset']} (seed {description['seed']})"
    lines = [title, "-" * len(title)]
    width = max(len(key) for key in flat)
    for key, value in flat.items():
        shown = json.dumps(value) if not isinstance(value, str) else value
        lines.append(f"  {key:<{width}}  {shown}")
    if deviations:
        lines.append("  deviations from the cited source:")
        lines += [f"    {field}: {why}" for field, why in deviations.items()]
    return "\n".join(lines)
