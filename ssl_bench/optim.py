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

solo-learn's LARS (``eta = 0.02`` with clipping) and lightly's (``||g|| + wd ||p||`` in the
denominator) are different algorithms; see ``ANCHORS.md``.

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

__all__ = [
    "LARS",
    "OPTIMIZERS",
    "build_optimizer",
    "parameter_groups",
    "set_scheduled_lr",
    "warmup_cosine",
]

OPTIMIZERS = ("lars", "sgd", "adamw")


def _is_excluded(p: torch.Tensor) -> bool:
    """Whether LARS leaves ``p`` out of weight decay and adaptation (the official filter).

    1-D parameters are biases and the affine parameters of normalisation layers. Their norms
    say nothing about a layer's scale, so a trust ratio computed from them is meaningless, and
    decaying them towards 0 only hurts (a BatchNorm scale of 0 kills its channel).
    """
    return p.ndim == 1


def _check_hyperparameters(lr: Any, weight_decay: Any, momentum: Any, eta: Any) -> None:
    """Raise ``ValueError`` for any LARS hyperparameter out of range."""
    for name, value in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum),
                        ("eta", eta)):
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


def _trust_ratios(
    p_norms: torch.Tensor, g_norms: torch.Tensor, eta: float, dtype: torch.dtype,
) -> torch.Tensor:
    """``eta * ||p|| / ||g||`` elementwise, 1 where either norm is 0, cast to ``dtype``.

    Vectorised and without a host sync (no ``.item()``). Where a norm is 0 the division gives
    inf or nan, but ``torch.where`` discards it. A ratio beyond fp16's range (tiny gradients) is
    clamped rather than cast to inf, which would turn the update into inf * 0 = nan.
    """
    ratios = torch.where((p_norms > 0) & (g_norms > 0), eta * p_norms / g_norms, 1.0)
    if ratios.dtype != dtype:
        ratios = ratios.clamp(max=torch.finfo(dtype).max).to(dtype)
    return ratios


class LARS(torch.optim.Optimizer):
    """LARS with the semantics of the official VICReg / Barlow Twins code (see module docstring).

    Args:
        params: parameters or parameter groups; a group may override ``lr``, ``weight_decay``,
            ``momentum``, ``eta`` and ``foreach``.
        lr: learning rate (usually overwritten every step by :func:`set_scheduled_lr`).
        weight_decay: L2 penalty added to the gradient of non-1-D parameters before adaptation.
        momentum: heavy-ball momentum, ``mu <- momentum * mu + g`` (no dampening).
        eta: trust coefficient of the layer-wise adaptation.
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
        foreach: bool = True,
    ) -> None:
        _check_hyperparameters(lr, weight_decay, momentum, eta)
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta,
                        foreach=foreach)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # state dicts saved before the option existed
            group.setdefault("foreach", True)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Groups may override the defaults, so check them too (the base class fills the rest).
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_hyperparameters(group["lr"], group["weight_decay"], group["momentum"],
                               group["eta"])

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None,
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
        momentum, eta = group["momentum"], group["eta"]
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
                _single_param_update(p, grad, buf, lr, wd, momentum, eta)
        for bucket in buckets.values():
            _foreach_update(bucket, lr, wd, momentum, eta)


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


def _foreach_update(bucket: _Bucket, lr: float, wd: float, momentum: float, eta: float) -> None:
    """The LARS update for one bucket with a handful of multi-tensor kernels."""
    params, grads, bufs = bucket.adapted
    if params:
        norm_dtype = _norm_dtype(params[0].dtype)
        # Out-of-place first op: the caller's p.grad must stay untouched.
        if wd != 0:
            updates = list(torch._foreach_add(grads, params, alpha=wd))
        else:
            updates = grads
        p_norms = torch.stack(torch._foreach_norm(params, 2, dtype=norm_dtype))
        g_norms = torch.stack(torch._foreach_norm(updates, 2, dtype=norm_dtype))
        ratio_list = list(_trust_ratios(p_norms, g_norms, eta, params[0].dtype).unbind(0))
        if updates is grads:
            updates = list(torch._foreach_mul(grads, ratio_list))
        else:
            torch._foreach_mul_(updates, ratio_list)
    else:
        updates = []
    plain_params, plain_grads, plain_bufs = bucket.plain
    all_params, all_bufs = params + plain_params, bufs + plain_bufs
    # 1-D parameters: plain heavy-ball momentum on the raw gradient.
    torch._foreach_mul_(all_bufs, momentum)
    torch._foreach_add_(all_bufs, updates + plain_grads)
    torch._foreach_add_(all_params, all_bufs, alpha=-lr)


def _single_param_update(
    p: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor,
    lr: float, wd: float, momentum: float, eta: float,
) -> None:
    """The LARS update for one parameter (sparse gradients, mixed dtypes, or ``foreach=False``)."""
    g = grad.to_dense() if grad.is_sparse else grad
    g = g.to(device=p.device, dtype=p.dtype)
    if not _is_excluded(p):
        if wd != 0:
            g = g.add(p, alpha=wd)
        norm_dtype = _norm_dtype(p.dtype)
        p_norm = torch.linalg.vector_norm(p, dtype=norm_dtype)
        g_norm = torch.linalg.vector_norm(g, dtype=norm_dtype)
        g = g * _trust_ratios(p_norm, g_norm, eta, p.dtype)
    buf.mul_(momentum).add_(g)
    p.add_(buf, alpha=-lr)


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, peak_lr: float, end_factor: float = 0.001,
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
        raise ValueError(
            f"warmup_cosine: warmup_steps must be in [0, total_steps={total_steps}], "
            f"got {warmup_steps}")
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
    model: nn.Module, lr: float, weight_decay: float, bias_norm_lr: float | None = None,
    constant_lr_params: Iterable[torch.Tensor] = (),
) -> list[dict[str, Any]]:
    """Parameter groups for :func:`build_optimizer`, each with its peak lr under ``"peak_lr"``.

    Only trainable parameters (``requires_grad``) are included. With ``bias_norm_lr`` None there
    is one group; otherwise two, always in this order: the weights (every parameter that is not
    1-D) with ``lr``, and the biases and norm parameters (1-D) with ``bias_norm_lr``, as in the
    Barlow Twins recipe (1.6 and 0.0384 at batch 2048). Both groups carry ``weight_decay``; LARS
    itself exempts 1-D parameters from it, as the official code does.

    ``constant_lr_params`` (e.g. SimSiam's predictor, ``fix_pred_lr`` in the official code) go
    into one last group marked ``"constant_lr"``, whose lr :func:`set_scheduled_lr` keeps at
    ``lr``: no warmup, no decay.
    """
    constant = {id(p) for p in constant_lr_params}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("parameter_groups: the model has no trainable parameters")
    params = [p for p in trainable if id(p) not in constant]
    fixed = [p for p in trainable if id(p) in constant]
    if bias_norm_lr is None:
        groups = [{"params": params, "lr": lr, "peak_lr": lr, "weight_decay": weight_decay}]
    else:
        weights = [p for p in params if not _is_excluded(p)]
        biases_and_norms = [p for p in params if _is_excluded(p)]
        groups = [
            {"params": weights, "lr": lr, "peak_lr": lr, "weight_decay": weight_decay},
            {"params": biases_and_norms, "lr": bias_norm_lr, "peak_lr": bias_norm_lr,
             "weight_decay": weight_decay},
        ]
    if fixed:
        groups.append({"params": fixed, "lr": lr, "peak_lr": lr, "weight_decay": weight_decay,
                       "constant_lr": True})
    return groups


def set_scheduled_lr(
    optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int,
    end_factor: float = 0.001,
) -> float:
    """Set every group's ``lr`` to :func:`warmup_cosine` of its ``"peak_lr"``; return group 0's.

    Groups marked ``"constant_lr"`` (see :func:`parameter_groups`) keep their peak.
    """
    for index, group in enumerate(optimizer.param_groups):
        if "peak_lr" not in group:
            raise ValueError(
                f"set_scheduled_lr: parameter group {index} has no 'peak_lr'; "
                "build the groups with parameter_groups()")
        if group.get("constant_lr", False):
            group["lr"] = group["peak_lr"]
        else:
            group["lr"] = warmup_cosine(step, total_steps, warmup_steps, group["peak_lr"], end_factor)
    return optimizer.param_groups[0]["lr"]


def _fused_supported(groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused AdamW kernel can take every parameter: floating, dense, one device
    type among CPU and CUDA. Anything else (meta tensors, mixed devices) gets the foreach path."""
    params = [p for g in groups for p in g["params"]]
    device_types = {p.device.type for p in params}
    return (len(device_types) == 1 and device_types <= {"cpu", "cuda"}
            and all(torch.is_floating_point(p) for p in params))


def build_optimizer(
    name: str, groups: list[dict[str, Any]], momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` ("lars", "sgd" or "adamw") over ``groups``.

    Every group must carry ``lr`` and ``weight_decay`` (as :func:`parameter_groups` makes them);
    extra keys such as ``peak_lr`` are kept. ``momentum`` is used by LARS and SGD; AdamW is plain
    (default betas and eps).
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
        return LARS(groups, lr=lr, momentum=momentum)
    if key == "sgd":
        # foreach rather than fused: fused SGD rejects sparse gradients; foreach handles all.
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    if _fused_supported(groups):
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    return torch.optim.AdamW(groups, lr=lr, foreach=True)
