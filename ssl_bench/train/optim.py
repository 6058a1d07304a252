"""LARS, the warmup-cosine learning-rate schedule, and optimiser construction.

ssl-bench follows the official VICReg and Barlow Twins code (facebookresearch/vicreg
``main_vicreg.py`` and facebookresearch/barlowtwins ``main.py``), which use LARS (You, Gitman and
Ginsburg 2017, "Large Batch Training of Convolutional Networks", arXiv:1708.03888) with
``eta = 0.001``, no trust-ratio clipping, and biases and normalisation parameters excluded from
both weight decay and the layer-wise adaptation. For each parameter ``p`` with gradient ``g``::

    if p.ndim != 1:
        g = g + weight_decay * p
        g = g * (eta * ||p|| / ||g||)        # factor 1 when either norm is 0
    mu = momentum * mu + g
    p = p - lr * mu

solo-learn's LARS (vturrisi/solo-learn ``solo/utils/lars.py``), which every solo-learn CIFAR
config runs with ``eta = 0.02``, ``clip_lr: True`` and ``exclude_bias_n_norm: True``, is another
algorithm, offered here as ``variant="solo-learn"``. Per parameter not excluded, and only when
``||p||`` and ``||g||`` are both non-zero::

    r = eta * ||p|| / (||g|| + weight_decay * ||p|| + eps)      # eps = 1e-8
    if clip_lr:
        r = min(r / lr, 1)                                     # the step lr * r never exceeds lr
    g = (g + weight_decay * p) * r
    mu = momentum * mu + g
    p = p - lr * mu

Excluded (1-D) parameters, and parameters with a zero norm, take the raw gradient: no weight
decay and no adaptation. solo-learn's learning rates reproduce its results only with this rule.

The learning rate is set every step by :func:`set_scheduled_lr`: linear warmup from 0, then a
cosine decay to ``end_factor`` times the peak, as in the same official code. Each parameter group
keeps its peak under ``"peak_lr"`` so that groups with different peaks (Barlow Twins gives
biases and norms 0.0048 x batch / 256 instead of 0.2 x batch / 256) keep their ratio.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any

import torch
from torch import nn

from ssl_bench.config import DEFAULT_LARS_ETA, LARS_VARIANTS, OPTIMIZERS

__all__ = [
    "DEFAULT_LARS_ETA",
    "LARS",
    "LARS_VARIANTS",
    "OPTIMIZERS",
    "build_optimizer",
    "parameter_groups",
    "set_scheduled_lr",
    "warmup_cosine",
]

SOLO_LEARN_EPS = 1e-8


def _is_excluded(p: torch.Tensor) -> bool:
    """Whether LARS leaves ``p`` out of weight decay and adaptation (the official filter).

    1-D parameters are biases and the affine parameters of normalisation layers. Their norms
    say nothing about a layer's scale, so a trust ratio computed from them is meaningless, and
    decaying them towards 0 only hurts (a BatchNorm scale of 0 kills its channel).
    """
    return p.ndim == 1


def _check_hyperparameters(
    lr: Any, weight_decay: Any, momentum: Any, eta: Any, variant: Any = "official", clip_lr: Any = False
) -> None:
    """Raise ``ValueError`` for any LARS hyperparameter out of range."""
    if variant not in LARS_VARIANTS:
        raise ValueError(f"LARS: variant must be one of {', '.join(LARS_VARIANTS)}, got {variant!r}")
    if clip_lr and variant != "solo-learn":
        raise ValueError("LARS: clip_lr belongs to the solo-learn variant")
    for name, value in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum), ("eta", eta)):
        # bool is a Real; a tensor lr would need a different code path (alpha= takes numbers).
        if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
            raise ValueError(f"LARS: {name} must be a real number, got {value!r}")
    if lr < 0:
        raise ValueError(f"LARS: lr must be >= 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
    if not 0 <= momentum < 1:
        raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum}")
    if eta <= 0:
        raise ValueError(f"LARS: eta must be > 0, got {eta}")


def _norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms and ratios in at least float32, so that bf16/fp16 tensors neither lose the sum's
    precision nor overflow fp16's range (65504) in ||p|| or in the division."""
    return torch.promote_types(dtype, torch.float32)


class _Trust:
    """The layer-wise factor of one parameter group: how each variant scales an update."""

    def __init__(self, eta: float, variant: str, clip_lr: bool, lr: float) -> None:
        self.eta, self.variant, self.clip_lr, self.lr = eta, variant, clip_lr, lr

    def factors(
        self, p_norms: torch.Tensor, g_norms: torch.Tensor, wd: float, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, decay): the update is ``scale * g + decay * p``, elementwise per parameter.

        ``g_norms`` are the norms of the raw gradients for the solo-learn variant and of
        ``g + wd * p`` for the official one. Vectorised and without a host sync (no ``.item()``):
        where a norm is 0 the division gives inf or nan, which ``torch.where`` discards. A ratio
        beyond fp16's range (tiny gradients) is clamped rather than cast to inf, which would
        turn the update into inf * 0 = nan.
        """
        nonzero = (p_norms > 0) & (g_norms > 0)
        if self.variant == "official":
            # g + wd p was formed before the norm; both norms 0 -> factor 1 on it.
            scale = torch.where(nonzero, self.eta * p_norms / g_norms, 1.0)
            decay = scale * wd
        else:
            ratio = self.eta * p_norms / (g_norms + wd * p_norms + SOLO_LEARN_EPS)
            if self.clip_lr:
                # min(r / lr, 1); at lr 0 the ratio is 1 (r / 0 = inf), and the step is 0 anyway.
                ratio = (ratio / self.lr).clamp(max=1.0) if self.lr > 0 else torch.ones_like(ratio)
            scale = torch.where(nonzero, ratio, 1.0)
            # A zero norm skips the whole branch in solo-learn: raw gradient, no weight decay.
            decay = torch.where(nonzero, ratio * wd, 0.0)
        if scale.dtype != dtype:
            limit = torch.finfo(dtype).max
            scale, decay = scale.clamp(max=limit).to(dtype), decay.clamp(max=limit).to(dtype)
        return scale, decay


class LARS(torch.optim.Optimizer):
    """LARS: the official VICReg / Barlow Twins rule, or solo-learn's (see module docstring).

    Args:
        params: parameters or parameter groups; a group may override ``lr``, ``weight_decay``,
            ``momentum``, ``eta`` and ``foreach``.
        lr: learning rate (usually overwritten every step by :func:`set_scheduled_lr`).
        weight_decay: L2 penalty added to the gradient of non-1-D parameters before adaptation.
        momentum: heavy-ball momentum, ``mu <- momentum * mu + g`` (no dampening).
        eta: trust coefficient of the layer-wise adaptation.
        variant: "official" (VICReg / Barlow Twins) or "solo-learn" (weight decay in the trust
            ratio's denominator, ``eps``, optional clipping).
        clip_lr: with the solo-learn variant, cap each parameter's step size at the group's lr.
        foreach: update each group with ``torch._foreach_*`` ops over all its dense parameters
            of one device and dtype at once (the default), instead of a Python loop of small
            kernels per parameter. Both give the same result up to float rounding.

    Parameters whose ``.grad`` is None are skipped (no state is created for them). ``p.grad`` is
    never modified. Sparse gradients are supported by densifying them on the per-parameter path:
    weight decay and momentum make the update dense anyway.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        *,
        variant: str = "official",
        clip_lr: bool = False,
        foreach: bool = True,
    ) -> None:
        _check_hyperparameters(lr, weight_decay, momentum, eta, variant, clip_lr)
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            eta=eta,
            variant=variant,
            clip_lr=clip_lr,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # state dicts saved before these options existed
            group.setdefault("foreach", True)
            group.setdefault("variant", "official")
            group.setdefault("clip_lr", False)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Groups may override the defaults, so check them too (the base class fills the rest).
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_hyperparameters(
            group["lr"], group["weight_decay"], group["momentum"], group["eta"], group["variant"], group["clip_lr"]
        )

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], float] | None = None,
    ) -> float | None:
        """One optimisation step; ``closure``, if given, re-evaluates the model and its loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _momentum_buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            # Zeros, as in the official code: the first step then gives mu = g.
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["momentum_buffer"]

    def _step_group(self, group: dict[str, Any]) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        momentum = group["momentum"]
        trust = _Trust(group["eta"], group["variant"], group["clip_lr"], lr)
        # Buckets of one device and dtype, because a foreach kernel needs uniform lists.
        buckets: dict[tuple[torch.device, torch.dtype], _Bucket] = defaultdict(_Bucket)
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            buf = self._momentum_buffer(p)
            uniform = grad.dtype == p.dtype and grad.device == p.device
            if group["foreach"] and uniform and not grad.is_sparse:
                buckets[(p.device, p.dtype)].add(p, grad, buf)
            else:
                _single_param_update(p, grad, buf, lr, wd, momentum, trust)
        for bucket in buckets.values():
            _foreach_update(bucket, lr, wd, momentum, trust)


_Lists = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]  # params, grads, bufs


class _Bucket:
    """The dense parameters of one group, device and dtype, split by the 1-D filter."""

    def __init__(self) -> None:
        self.adapted: _Lists = ([], [], [])
        self.plain: _Lists = ([], [], [])

    def add(self, p: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor) -> None:
        params, grads, bufs = self.plain if _is_excluded(p) else self.adapted
        params.append(p)
        grads.append(grad)
        bufs.append(buf)


def _foreach_update(bucket: _Bucket, lr: float, wd: float, momentum: float, trust: _Trust) -> None:
    """The LARS update for one bucket with a handful of multi-tensor kernels."""
    params, grads, bufs = bucket.adapted
    updates: list[torch.Tensor] = []
    if params:
        norm_dtype = _norm_dtype(params[0].dtype)
        p_norms = torch.stack(torch._foreach_norm(params, 2, dtype=norm_dtype))
        if trust.variant == "official" and wd != 0:
            # Out of place: the caller's p.grad must stay untouched.
            decayed = list(torch._foreach_add(grads, params, alpha=wd))
            g_norms = torch.stack(torch._foreach_norm(decayed, 2, dtype=norm_dtype))
            scale, _ = trust.factors(p_norms, g_norms, wd, params[0].dtype)
            torch._foreach_mul_(decayed, list(scale.unbind(0)))
            updates = decayed
        else:
            g_norms = torch.stack(torch._foreach_norm(grads, 2, dtype=norm_dtype))
            scale, decay = trust.factors(p_norms, g_norms, wd, params[0].dtype)
            updates = list(torch._foreach_mul(grads, list(scale.unbind(0))))
            if wd != 0:
                torch._foreach_add_(updates, torch._foreach_mul(params, list(decay.unbind(0))))
    plain_params, plain_grads, plain_bufs = bucket.plain
    all_params, all_bufs = params + plain_params, bufs + plain_bufs
    # 1-D parameters: plain heavy-ball momentum on the raw gradient.
    torch._foreach_mul_(all_bufs, momentum)
    torch._foreach_add_(all_bufs, updates + plain_grads)
    torch._foreach_add_(all_params, all_bufs, alpha=-lr)


def _single_param_update(
    p: torch.Tensor,
    grad: torch.Tensor,
    buf: torch.Tensor,
    lr: float,
    wd: float,
    momentum: float,
    trust: _Trust,
) -> None:
    """The LARS update for one parameter (sparse gradients, mixed dtypes, or ``foreach=False``)."""
    g = grad.to_dense() if grad.is_sparse else grad
    g = g.to(device=p.device, dtype=p.dtype)
    if not _is_excluded(p):
        norm_dtype = _norm_dtype(p.dtype)
        p_norm = torch.linalg.vector_norm(p, dtype=norm_dtype)
        if trust.variant == "official" and wd != 0:
            g = g.add(p, alpha=wd)
            scale, _ = trust.factors(p_norm, torch.linalg.vector_norm(g, dtype=norm_dtype), wd, p.dtype)
            g = g * scale
        else:
            scale, decay = trust.factors(p_norm, torch.linalg.vector_norm(g, dtype=norm_dtype), wd, p.dtype)
            g = g * scale + p * decay if wd != 0 else g * scale
    buf.mul_(momentum).add_(g)
    p.add_(buf, alpha=-lr)


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    peak_lr: float,
    end_factor: float = 0.001,
) -> float:
    """The learning rate at ``step`` (0-based) of the official VICReg / Barlow Twins schedule.

    Linear warmup ``peak * step / warmup`` (0 at step 0, the peak at ``step == warmup``), then
    ``peak * q + end_factor * peak * (1 - q)`` with ``q = (1 + cos(pi * t)) / 2`` and ``t`` the
    fraction of the decay steps done. Steps at or past ``total_steps`` get the final value
    ``end_factor * peak`` rather than a cosine climbing back up.
    """
    if total_steps <= 0:
        raise ValueError(f"warmup_cosine: total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_cosine: warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < 0:
        raise ValueError(f"warmup_cosine: step must be >= 0, got {step}")
    if peak_lr < 0:
        raise ValueError(f"warmup_cosine: peak_lr must be >= 0, got {peak_lr}")
    if end_factor < 0:
        raise ValueError(f"warmup_cosine: end_factor must be >= 0, got {end_factor}")
    if step < warmup_steps:  # warmup_steps > 0 here
        return peak_lr * step / warmup_steps
    if step >= total_steps:  # also covers warmup_steps == total_steps: no decay steps to divide by
        return end_factor * peak_lr
    q = 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))
    return peak_lr * q + end_factor * peak_lr * (1.0 - q)


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    bias_norm_lr: float | None = None,
    constant_lr_params: Iterable[torch.Tensor] = (),
    probe_params: Iterable[torch.Tensor] = (),
    probe_lr: float | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for :func:`build_optimizer`, each with its peak lr under ``"peak_lr"``.

    Each group is named (``"name"``: all, weights, biases and norms, constant lr).
    Only trainable parameters (``requires_grad``) are included. With ``bias_norm_lr`` None there
    is one group; otherwise two, always in this order: the weights (every parameter that is not
    1-D) with ``lr``, and the biases and norm parameters (1-D) with ``bias_norm_lr``, as in the
    Barlow Twins recipe (1.6 and 0.0384 at batch 2048). Both groups carry ``weight_decay``; LARS
    itself exempts 1-D parameters from it, as the official code does.

    ``probe_params`` (solo-learn's online classifier, ``Method.online_probe``) go into a group
    "online probe" with ``probe_lr`` and no weight decay, as solo-learn's
    ``BaseMethod.learnable_params`` has it; it follows the schedule like the others.

    ``constant_lr_params`` (e.g. SimSiam's predictor, ``fix_pred_lr`` in the official code) go
    into one last group marked ``"constant_lr"``, whose lr :func:`set_scheduled_lr` keeps at
    ``lr``: no warmup, no decay.
    """
    constant = {id(p) for p in constant_lr_params}
    probe = {id(p) for p in probe_params}
    if probe and probe_lr is None:
        raise ValueError("parameter_groups: probe_params need a probe_lr")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("parameter_groups: the model has no trainable parameters")
    params = [p for p in trainable if id(p) not in constant and id(p) not in probe]
    fixed = [p for p in trainable if id(p) in constant and id(p) not in probe]
    classifier = [p for p in trainable if id(p) in probe]
    if bias_norm_lr is None:
        groups = [{"name": "all", "params": params, "lr": lr, "peak_lr": lr, "weight_decay": weight_decay}]
    else:
        weights = [p for p in params if not _is_excluded(p)]
        biases_and_norms = [p for p in params if _is_excluded(p)]
        groups = [
            {"name": "weights", "params": weights, "lr": lr, "peak_lr": lr, "weight_decay": weight_decay},
            {
                "name": "biases and norms",
                "params": biases_and_norms,
                "lr": bias_norm_lr,
                "peak_lr": bias_norm_lr,
                "weight_decay": weight_decay,
            },
        ]
    if classifier:
        groups.append(
            {"name": "online probe", "params": classifier, "lr": probe_lr, "peak_lr": probe_lr, "weight_decay": 0.0}
        )
    if fixed:
        groups.append(
            {
                "name": "constant lr",
                "params": fixed,
                "lr": lr,
                "peak_lr": lr,
                "weight_decay": weight_decay,
                "constant_lr": True,
            }
        )
    return groups


def set_scheduled_lr(
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    warmup_steps: int,
    end_factor: float = 0.001,
) -> float:
    """Set every group's ``lr`` to :func:`warmup_cosine` of its ``"peak_lr"``; return group 0's.

    Groups marked ``"constant_lr"`` (see :func:`parameter_groups`) keep their peak.
    """
    for index, group in enumerate(optimizer.param_groups):
        if "peak_lr" not in group:
            raise ValueError(
                f"set_scheduled_lr: parameter group {index} has no 'peak_lr'; build the groups with parameter_groups()"
            )
        if group.get("constant_lr", False):
            group["lr"] = group["peak_lr"]
        else:
            group["lr"] = warmup_cosine(step, total_steps, warmup_steps, group["peak_lr"], end_factor)
    return optimizer.param_groups[0]["lr"]


def _fused_supported(groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused Adam(W) kernel can take every parameter: floating, dense, one device
    type among CPU and CUDA. Anything else (meta tensors, mixed devices) gets the foreach path."""
    params = [p for g in groups for p in g["params"]]
    device_types = {p.device.type for p in params}
    return (
        len(device_types) == 1 and device_types <= {"cpu", "cuda"} and all(torch.is_floating_point(p) for p in params)
    )


def build_optimizer(
    name: str,
    groups: list[dict[str, Any]],
    momentum: float = 0.9,
    *,
    lars_variant: str = "official",
    lars_eta: float | None = None,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` ("lars", "sgd", "adamw" or "adam") over ``groups``.

    Every group must carry ``lr`` and ``weight_decay`` (as :func:`parameter_groups` makes them);
    extra keys such as ``peak_lr`` are kept. ``momentum`` is used by LARS and SGD; AdamW and Adam
    are plain (default betas and eps): Adam adds the weight decay to the gradient (L2), as the
    ``torch.optim.Adam`` of W-MSE's official code and solo-learn, AdamW decouples it.
    ``lars_variant`` picks LARS's rule ("solo-learn" also clips, as every solo-learn config does)
    and ``lars_eta`` its trust coefficient (None: the variant's own).
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    if not groups:
        raise ValueError("build_optimizer: no parameter groups")
    for index, group in enumerate(groups):
        missing = [k for k in ("params", "lr", "weight_decay") if k not in group]
        if missing:
            raise ValueError(f"build_optimizer: parameter group {index} lacks {missing}")
    lr = groups[0]["lr"]  # the default is unused: every group sets its own
    if key == "lars":
        if lars_variant not in LARS_VARIANTS:
            raise ValueError(f"unknown LARS variant {lars_variant!r}; known: {', '.join(LARS_VARIANTS)}")
        eta = DEFAULT_LARS_ETA[lars_variant] if lars_eta is None else lars_eta
        return LARS(
            groups, lr=lr, momentum=momentum, eta=eta, variant=lars_variant, clip_lr=lars_variant == "solo-learn"
        )
    if key == "sgd":
        # foreach rather than fused: fused SGD rejects sparse gradients; foreach handles all.
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    adam = torch.optim.Adam if key == "adam" else torch.optim.AdamW
    if _fused_supported(groups):
        return adam(groups, lr=lr, fused=True)
    return adam(groups, lr=lr, foreach=True)
