"""Loss: forward + backward time and peak memory of each method's loss at recipe sizes.

Losses are found through the method registry. :func:`ssl_bench.method.get_method` gives the
Method class; it is built on a tiny backbone (:class:`~ssl_bench.models.backbones.TinyConvNet`)
with a projector of width D and the recipe's ``loss`` and ``method_params`` (the ImageNet rows,
whose sizes the ``recipe`` loss sizes are, or those of ``--dataset``), and what is timed is
``method.loss(z_a, z_b, **heads)`` with the heads its declarations ask for: ``p_a``/``p_b`` with
``uses_predictor`` (an identity predictor, p = z), ``target_a``/``target_b`` with
``uses_momentum_target`` (a target that agrees with the online network, target = z without
gradient), and only view a online where ``online_sees_both_views`` is False. A loss that keeps state
(TiCo's running covariance) updates it at every call, as in training.

Two forms: the covariance term of VICReg and of Barlow Twins has a Gram (N x N) and a direct
(D x D) form, which a Method's ``loss()`` chooses by shape. To time both, :data:`FORM_LOSSES`
names, per method, the loss function that takes ``form=`` ("gram" or "direct"); it is looked up
in the module of the registered class (``sys.modules[cls.__module__]``) and called with the same
recipe loss parameters. The inputs are random fp32 embeddings, with autocast off as in training.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ssl_bench.perf.settings import FORM_LOSSES, LOSS_RECIPE_DATASET, BenchSettings, LossCase
from ssl_bench.perf.timing import DeviceTimer, MemoryProbe, median, release_memory

if TYPE_CHECKING:
    from ssl_bench.method import Method
    from ssl_bench.recipes import MethodRecipe

LossFunction = Callable[[Tensor, Tensor], Tensor]

# A timed call longer than this is its own warm-up: one-time costs (kernel selection, allocator
# growth) are milliseconds, and repeating a 10 s call only to discard it costs the time budget.
SLOW_CALL_S = 2.0
# Backbone widths of the tiny Method the losses are taken from: the backbone is never run.
_TINY_WIDTHS = (8,)


def _recipe(method: str, dataset: str | None) -> MethodRecipe:
    from ssl_bench.recipes import recipe_row, recipe_table_for

    return recipe_row(method, recipe_table_for(dataset or LOSS_RECIPE_DATASET))


def _tiny_method(cls: type[Method], d: int, recipe: MethodRecipe) -> Method:
    """``cls`` with the recipe's parameters, a tiny backbone and heads of width ``d``."""
    from ssl_bench.models.backbones import TinyConvNet

    backbone = TinyConvNet(_TINY_WIDTHS)
    predictor = (d,) if cls.uses_predictor else ()
    return cls(
        backbone, backbone.num_features, (d,), predictor, loss_params=recipe.loss, method_params=recipe.method_params
    )


def _heads(method: Method, z_a: Tensor, z_b: Tensor) -> tuple[Tensor | None, dict[str, Tensor]]:
    """The second online embedding and the heads ``method`` declares: identity predictor, agreeing target."""
    both = method.online_sees_both_views
    heads: dict[str, Tensor] = {}
    if method.uses_predictor:
        heads["p_a"] = z_a
        if both:
            heads["p_b"] = z_b
    if method.uses_momentum_target:
        if both:
            heads["target_a"] = z_a.detach()
        heads["target_b"] = z_b.detach()
    return (z_b if both else None), heads


def loss_function(
    method: str, d: int, form: str | None = None, *, dataset: str | None = None, device: torch.device | str = "cpu"
) -> LossFunction:
    """The loss of registered method ``method`` on (N, ``d``) embeddings with its recipe parameters.

    ``form`` None: the Method's own ``loss()`` (see the module docstring); "gram" or "direct":
    the form-taking function :data:`FORM_LOSSES` names (ValueError for a method without one).
    """
    from ssl_bench.method import get_method

    cls = get_method(method)
    recipe = _recipe(method, dataset)
    if form is not None:
        if method not in FORM_LOSSES:
            raise ValueError(f"{method}'s loss has one form; two forms: {', '.join(FORM_LOSSES)}")
        function = getattr(sys.modules[cls.__module__], FORM_LOSSES[method])
        params: dict[str, Any] = dict(recipe.loss)
        return lambda z_a, z_b: function(z_a, z_b, **params, form=form)
    module = _tiny_method(cls, d, recipe).to(device)

    def loss(z_a: Tensor, z_b: Tensor) -> Tensor:
        second, heads = _heads(module, z_a, z_b)
        return module.loss(z_a, second, **heads)[0]

    return loss


def loss_value(method: str, z_a: Tensor, z_b: Tensor, form: str | None = None, *, dataset: str | None = None) -> float:
    """The loss of ``method`` on (z_a, z_b), in the given form (for checks and the report)."""
    fn = loss_function(method, z_a.shape[1], form, dataset=dataset, device=z_a.device)
    with torch.no_grad():
        return float(fn(z_a, z_b))


@dataclass
class LossResult:
    """Forward + backward time and peak memory of one loss at one size (and form)."""

    method: str
    n: int
    d: int
    form: str | None
    ms: float | None = None
    repeats: int = 0
    loss: float | None = None
    peak_memory_mb: float | None = None  # growth over the memory before the call (inputs excluded)
    memory_kind: str = ""
    error: str | None = None


def bench_loss(case: LossCase, settings: BenchSettings) -> LossResult:
    """Time ``loss(z_a, z_b).backward()`` on random fp32 embeddings; memory of the first call."""
    device = torch.device(settings.device)
    result = LossResult(case.method, case.n, case.d, case.form)
    generator = torch.Generator(device=device).manual_seed(0)
    z_a = torch.randn(case.n, case.d, device=device, generator=generator, requires_grad=True)
    z_b = torch.randn(case.n, case.d, device=device, generator=generator, requires_grad=True)
    fn = loss_function(case.method, case.d, case.form, dataset=settings.dataset, device=device)
    values: list[Tensor] = []

    def forward_backward() -> None:
        z_a.grad = z_b.grad = None  # no accumulation work in the timed call
        loss = fn(z_a, z_b)
        loss.backward()
        values.append(loss.detach())

    timer = DeviceTimer(device)
    times: list[float] = []
    try:
        probe = MemoryProbe(device)
        with probe:
            first = timer(forward_backward)
        if first >= SLOW_CALL_S or settings.warmup == 0:
            times.append(first)  # a slow call is its own warm-up (see SLOW_CALL_S)
        else:
            for _ in range(settings.warmup - 1):  # the first call was one
                forward_backward()
        while len(times) < settings.repeats:
            times.append(timer(forward_backward))
            # Slow cases stop at three repeats: a median of three within the time budget.
            if times[-1] >= SLOW_CALL_S and len(times) >= 3:
                break
    except RuntimeError as error:  # e.g. out of memory at the recipe size
        result.error = f"{type(error).__name__}: {error}"
        return result
    finally:
        # Dropped before the memory is released (the closure above keeps the cells alive).
        z_a = z_b = fn = None  # type: ignore[assignment]
        release_memory(device)
    result.ms = median(times) * 1000
    result.repeats = len(times)
    result.loss = float(values[0])
    result.peak_memory_mb = probe.extra_mb
    result.memory_kind = probe.kind
    return result
