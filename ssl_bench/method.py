"""The method plug-in interface: what a method declares, and the registry that finds methods.

A method is a small ``Method`` subclass in ``methods/<name>.py`` (or in any file passed to
``ssl-bench run --method-file``, or in a package exposing it under the ``ssl_bench.methods``
entry-point group). It declares:

- its loss on the two views' embeddings (:meth:`Method.loss`), and the names of the loss
  parameters the recipes give it (``loss_param_names``);
- its heads: the projector (:meth:`Method.build_projector`) and, with ``uses_predictor``, a
  predictor (:meth:`Method.build_predictor`) whose outputs the loss receives as ``p_a, p_b``;
- with ``uses_momentum_target``, a momentum (EMA) target network: a copy of backbone and
  projector that the harness moves towards the online network after every optimizer step
  (:meth:`Method.after_optimizer_step`, schedule :meth:`Method.target_momentum`) and whose
  outputs the loss receives, without gradient, as ``target_a, target_b``;
- its augmentation pair (``augmentation``), other hyperparameters it reads from the recipe's
  ``method_params`` (``method_param_names``), parameters that keep a constant learning rate
  (:meth:`Method.constant_lr_parameters`), and optionally its own recipe rows (``recipes``) for
  the settings whose recipe table has no row for it.

The harness supplies the rest: the backbone and its feature dimension, the projector and
predictor widths, the loss and method parameters (all from the recipe of the run, after
``--set`` overrides), the step and total steps at every :meth:`Method.after_optimizer_step`,
and the optimiser, schedule, data, logging and checkpoints. Where the run trains solo-learn's
online classifier (``RunConfig.online_probe``), the harness also attaches it as ``online_probe``,
as solo-learn's ``BaseMethod`` owns its classifier: a method never calls it. docs/adding-a-method.md
walks through adding a method.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import pkgutil
import sys
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ssl_bench.errors import UsageError, unknown_name_message
from ssl_bench.models.heads import build_projector

if TYPE_CHECKING:
    from ssl_bench.data.augment import ViewConfig


@dataclass
class StepOutput:
    """What one forward pass on a pair of views gives the harness."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached loss terms, for logging
    representation: Tensor | None = None  # backbone output of view a (for probes, diagnostics)
    embedding: Tensor | None = None  # projector output of view a
    # Backbone output of view b, when the online network embeds it (online_sees_both_views).
    representation_b: Tensor | None = None


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """BYOL's momentum schedule: tau_k = tau_final - (tau_final - tau_base) (cos(pi k / K) + 1) / 2.

    Grill et al. 2020 (BYOL, arXiv:2006.07733), section 3.3: tau rises from tau_base at step
    k = 0 to tau_final = 1 at k = K, the total number of training steps. MoCo v3 (Chen, Xie, He
    2021, arXiv:2104.02057) uses the same half-cycle cosine (``adjust_moco_momentum`` in the
    official main_moco.py). solo-learn's ``MomentumUpdater`` (solo/utils/momentum.py) ends the
    cosine at a final_tau of the recipe's, which may be below 1; final = base holds tau constant,
    as MoCo v1 and v2 do. Steps at or past K get tau_final.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"the base momentum must be in [0, 1], got {base}")
    if not base <= final <= 1.0:
        raise ValueError(f"the final momentum must be in [base, 1] = [{base}, 1], got {final}")
    progress = min(step / total_steps, 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(pairs: Iterable[tuple[Tensor, Tensor]], momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, in place, for each (online, target) pair."""
    pairs = list(pairs)
    if not pairs:
        return
    online = [o.detach() for o, _ in pairs]
    targets = [t for _, t in pairs]
    # lerp computes t + (1 - m)(o - t): the same average, without the cancellation of
    # m * t + (1 - m) * o as m -> 1, in one multi-tensor kernel.
    torch._foreach_lerp_(targets, online, 1.0 - momentum)


class Method(nn.Module):
    """Backbone -> projector [-> predictor] -> loss on two views [against a momentum target].

    A subclass sets ``name`` and implements :meth:`loss`; every other declaration has a default
    (see the module docstring for what a method declares and what the harness supplies).
    """

    name: ClassVar[str]
    # The two views' augmentations: "symmetric" (SimCLR's), "asymmetric" (BYOL's pair), or
    # a pair of ssl_bench.data.augment.ViewConfig for any other published pipeline.
    augmentation: ClassVar[str | tuple[ViewConfig, ViewConfig]] = "symmetric"
    # The recipe's `loss` table must give exactly these; they become self.loss_params.
    loss_param_names: ClassVar[tuple[str, ...]] = ()
    # Loss parameters a recipe may leave out, with the value they then take (the paper's choice),
    # e.g. a variant of the loss. A config stores one only when it differs from its default
    # (`--set loss.<name>=value`), so runs at the default keep the identity they had without it.
    loss_param_defaults: ClassVar[Mapping[str, Any]] = {}
    # Loss parameters that take one of a few named values (a loss variant): name -> the choices.
    loss_param_choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # Loss parameters that must be positive (a temperature the logits are divided by).
    positive_loss_params: ClassVar[tuple[str, ...]] = ()
    # The recipe's `method_params` table must give exactly these (plus "momentum_base" with a
    # momentum target, which may also give "momentum_final"); they become self.method_params.
    method_param_names: ClassVar[tuple[str, ...]] = ()
    # The heads' layout (ssl_bench.models.heads.build_projector options hidden_bias, hidden_norm,
    # last_bias, last_bn),
    # as the method's paper builds them; a recipe row may change them (`projector_options`).
    projector_options: ClassVar[Mapping[str, bool]] = {}
    predictor_options: ClassVar[Mapping[str, bool]] = {}
    # A predictor head on the projector (widths: the recipe's `predictor`); the loss gets p_a, p_b.
    uses_predictor: ClassVar[bool] = False
    # An EMA copy of backbone + projector; the loss gets its outputs as target_a, target_b.
    uses_momentum_target: ClassVar[bool] = False
    # Whether the online network embeds both views (the loss gets z_a, z_b), or view a only (z_b
    # None, with the momentum target embedding view b alone: target_b), for losses taken in one
    # direction, as TiCo's public implementations take theirs. A method whose direction is a loss
    # option sets it on the instance in __init__ (MoCo v2's `symmetric`); the class's value is the
    # one its recipes take by default.
    online_sees_both_views: bool = True
    # Multi-crop: the run's small views (RunConfig.local_crops) go through the online backbone
    # and projector in one pass, and the loss gets their embeddings as ``z_local``, a list.
    uses_local_crops: ClassVar[bool] = False
    # Multi-crop for a loss of two crops' embeddings alone (no predictor, target or z_local):
    # with local crops, the harness takes the loss over every pair of a global crop with another
    # crop, each pair once, and averages (Method.crop_pairs_loss). Without them, the two-view loss.
    loss_over_crop_pairs: ClassVar[bool] = False
    # Both views through the backbone as one batch and every crop through the projector as one
    # (BatchNorm statistics over all of them), as the public multi-crop code runs them; False:
    # one pass per view.
    views_in_one_pass: ClassVar[bool] = False
    # Whether the loss itself scores collapsed embeddings (all samples alike) worse than diverse
    # ones whose views agree. True for contrastive and variance/decorrelation losses; False where
    # collapse is avoided by the architecture (predictor, stop-gradient, EMA) rather than the loss.
    loss_penalises_collapse: ClassVar[bool] = True
    # Recipe rows carried by the method, keyed by recipe table ("fashion_mnist", "cifar",
    # "imagenet"), with the fields of a row of experiments/recipes/*.toml. Used only where that
    # table has no row for the method: the tables win.
    recipes: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        projector_dims: Sequence[int],
        predictor_dims: Sequence[int] = (),
        *,
        loss_params: Mapping[str, Any] | None = None,
        method_params: Mapping[str, Any] | None = None,
        projector_options: Mapping[str, bool] | None = None,
        predictor_options: Mapping[str, bool] | None = None,
        loss_scale: float = 1.0,
    ) -> None:
        super().__init__()
        loss_params, method_params = dict(loss_params or {}), dict(method_params or {})
        self.check_hyperparameters(projector_dims, predictor_dims, loss_params, method_params, feature_dim=feature_dim)
        self.loss_params = {**self.loss_param_defaults, **loss_params}
        self.method_params = method_params
        # The run's head layouts: the class's declaration unless the recipe resolved them in full.
        self.head_options = {
            "projector": dict(self.projector_options if projector_options is None else projector_options),
            "predictor": dict(self.predictor_options if predictor_options is None else predictor_options),
        }
        self.loss_scale = loss_scale
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.projector = self.build_projector(feature_dim, projector_dims)
        self.embedding_dim = projector_dims[-1] if projector_dims else feature_dim
        self.predictor: nn.Module | None = None
        if self.uses_predictor:
            self.predictor = self.build_predictor(self.embedding_dim, predictor_dims)
        self.target_backbone: nn.Module | None = None
        self.target_projector: nn.Module | None = None
        # solo-learn's online classifier, attached by the harness (ssl_bench.train.assemble) so that
        # its parameters are checkpointed with the method and averaged over ranks by DDP.
        self.online_probe: nn.Module | None = None
        if self.uses_momentum_target:
            # The target starts as an exact copy of the online network (BYOL, MoCo v3). Its weights
            # stay parameters, so state_dict() and with it every checkpoint holds them (a resumed
            # run continues with the same target), but they require no gradient, so the
            # optimiser never sees them: only after_optimizer_step() changes them.
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    # --- declarations with defaults --------------------------------------------------------
    @classmethod
    def required_method_params(cls) -> tuple[str, ...]:
        """The names the recipe's ``method_params`` must give: ``method_param_names`` (+ momentum_base)."""
        names = tuple(cls.method_param_names)
        if cls.uses_momentum_target and "momentum_base" not in names:
            names += ("momentum_base",)
        return names

    @classmethod
    def optional_method_params(cls) -> dict[str, Any]:
        """The names ``method_params`` may give beyond the required ones, with the value they take
        when left out: with a momentum target, ``momentum_final``, where the EMA schedule ends (1,
        BYOL's). A config holds one only when its recipe or a ``--set`` gives it."""
        return {"momentum_final": 1.0} if cls.uses_momentum_target else {}

    @classmethod
    def check_hyperparameters(
        cls,
        projector_dims: Sequence[int],
        predictor_dims: Sequence[int],
        loss_params: Mapping[str, Any],
        method_params: Mapping[str, Any],
        *,
        feature_dim: int | None = None,
    ) -> None:
        """Raise a UsageError unless a recipe's heads and parameters fit this method."""
        _check_names(cls.name, "loss", loss_params, cls.loss_param_names, optional=cls.loss_param_defaults)
        cls.check_loss_params({**cls.loss_param_defaults, **loss_params})
        _check_names(
            cls.name, "method_params", method_params, cls.required_method_params(), cls.optional_method_params()
        )
        embedding_dim = projector_dims[-1] if projector_dims else feature_dim
        if cls.uses_predictor:
            if not predictor_dims:
                raise UsageError(
                    f"{cls.name} needs a predictor: give its widths as `predictor` in the recipe "
                    "(e.g. --set predictor=4096,256)"
                )
            if embedding_dim is not None and predictor_dims[-1] != embedding_dim:
                raise UsageError(
                    f"{cls.name}'s predictor must end at the embedding width {embedding_dim} "
                    f"(its outputs are compared with projector outputs); got {list(predictor_dims)}"
                )
        elif predictor_dims:
            raise UsageError(
                f"{cls.name} has no predictor, but the recipe gives predictor widths {list(predictor_dims)}"
            )
        if cls.uses_momentum_target:
            base = method_params["momentum_base"]
            if not 0.0 <= base <= 1.0:
                raise UsageError(f"method_params.momentum_base must be in [0, 1], got {base}")
            final = {**cls.optional_method_params(), **method_params}["momentum_final"]
            if not base <= final <= 1.0:
                raise UsageError(
                    f"method_params.momentum_final must be in [momentum_base, 1] = [{base}, 1], got {final}"
                )
        cls.check_method_params(method_params)

    @classmethod
    def check_batch_size(cls, batch_size: int, loss_params: Mapping[str, Any]) -> None:
        """Raise a UsageError unless the loss takes global batches of ``batch_size`` samples.

        Called when a run's configuration is resolved, where the global batch is known and the
        number of ranks is not. ``loss_params`` holds every loss parameter, the optional ones at
        their defaults. Any batch by default; MoCo v2's queue length must be a multiple of it.
        """

    @classmethod
    def check_method_params(cls, method_params: Mapping[str, Any]) -> None:
        """Raise a UsageError unless the method parameters' values fit; a method with constraints
        on them (a count that must be whole) overrides this. The names are checked already."""

    @classmethod
    def check_loss_params(cls, loss_params: Mapping[str, Any]) -> None:
        """Raise a UsageError unless each loss parameter of ``loss_param_choices`` is one of its
        choices and each of ``positive_loss_params`` is positive.

        ``loss_params`` holds every parameter, the optional ones at their defaults when not given.
        A method with further constraints on its values extends this.
        """
        for name in cls.positive_loss_params:
            if not loss_params[name] > 0:
                raise UsageError(f"loss.{name} must be positive for {cls.name}, got {loss_params[name]}")
        for name, choices in cls.loss_param_choices.items():
            if loss_params[name] not in choices:
                raise UsageError(
                    f"loss.{name} of {cls.name} must be one of {', '.join(choices)}, got {loss_params[name]!r}"
                )

    def build_projector(self, feature_dim: int, dims: Sequence[int]) -> nn.Module:
        """The projector for the recipe's widths, laid out as ``projector_options`` say."""
        return build_projector(feature_dim, dims, **self.head_options["projector"])

    def build_predictor(self, embedding_dim: int, dims: Sequence[int]) -> nn.Module:
        """The predictor (with ``uses_predictor``), from the projector's output to the widths ``dims``."""
        return build_projector(embedding_dim, dims, **self.head_options["predictor"])

    def loss(self, z_a: Tensor, z_b: Tensor, **heads: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's loss on the two views' embeddings, and its named terms (for logging).

        ``z_a``, ``z_b``: the online projector's outputs, (N, D) each. With ``uses_predictor``
        the harness also passes ``p_a``, ``p_b`` (predictor outputs); with
        ``uses_momentum_target``, ``target_a``, ``target_b`` (the target network's projector
        outputs, computed without gradient); with ``uses_local_crops``, ``z_local``, the list of
        the small views' embeddings (empty in a run without them). All in float32 or wider.
        Without ``online_sees_both_views``, ``z_b`` is None and only ``p_a`` and ``target_b`` are passed.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    @classmethod
    def takes_local_crops(cls) -> bool:
        """Whether a run of this method may have local crops (multi-crop)."""
        return cls.uses_local_crops or cls.loss_over_crop_pairs

    def crop_pairs_loss(self, crops: Sequence[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The two-view loss averaged over the pairs (global crop, other crop), each pair once:
        (a, b), then each global crop with every local crop, 1 + 2 L pairs for L local crops.
        ``crops``: the embeddings of the two global crops, then of the local ones. The terms are
        averaged alike."""
        pairs = [(first, second) for first in range(2) for second in range(first + 1, len(crops))]
        results = [self.loss(crops[first], crops[second]) for first, second in pairs]
        loss = torch.stack([value for value, _ in results]).mean()
        terms = {name: torch.stack([t[name] for _, t in results]).mean() for name in results[0][1]}
        return loss, terms

    def target_momentum(self, step: int, total_steps: int) -> float:
        """tau at ``step``: BYOL's cosine from ``method_params["momentum_base"]`` to
        ``method_params["momentum_final"]`` (1 unless given; :func:`cosine_momentum`)."""
        params = {**self.optional_method_params(), **self.method_params}
        return cosine_momentum(step, total_steps, float(params["momentum_base"]), float(params["momentum_final"]))

    def constant_lr_parameters(self) -> list[nn.Parameter]:
        """Parameters whose lr stays at its peak, without warmup or decay (e.g. SimSiam's predictor)."""
        return []

    # --- what the harness calls ------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(online, target) parameter pairs of the momentum target network; empty without one.

        Parameters only, as in the official BYOL and MoCo v3 code: the target's batch-norm
        statistics are its own, kept up to date by its own forward passes.
        """
        if self.target_backbone is None or self.target_projector is None:
            return []
        pairs: list[tuple[nn.Parameter, nn.Parameter]] = []
        for online, target in ((self.backbone, self.target_backbone), (self.projector, self.target_projector)):
            pairs += zip(online.parameters(), target.parameters(), strict=True)
        return pairs

    def before_optimizer_step(self, step: int, steps_per_epoch: int) -> None:
        """Called by the harness once per training step, after ``backward()`` and before
        ``optimizer.step()``: the place to drop gradients (SwAV's frozen prototypes). A parameter
        whose ``grad`` is None there is left as it is by the step (no decay, no momentum).
        ``step`` is the 0-based index of the step about to be taken. The default does nothing.
        """

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called by the harness once per training step, right after ``optimizer.step()``.

        ``step`` is the 0-based index of the step just taken and ``total_steps`` the run's total.
        The default moves the momentum target (if any) towards the updated online network with
        tau = :meth:`target_momentum` (step, total_steps), as BYOL does after each update. Under
        DDP every rank applies the same update to the same all-reduced online parameters, so the
        targets stay identical without communication. Override to add per-step work (and call
        ``super()`` to keep the EMA).
        """
        pairs = self.momentum_pairs()
        if pairs:
            ema_update(pairs, self.target_momentum(step, total_steps))

    def forward(self, x_a: Tensor, x_b: Tensor, local_views: Sequence[Tensor] = ()) -> StepOutput:
        both = self.online_sees_both_views
        if local_views and not self.takes_local_crops():
            raise ValueError(f"{self.name} takes two views, not local crops")
        # The small crops share one resolution: one backbone pass for all of them.
        h_local = self.backbone(torch.cat(list(local_views))) if local_views else None
        z_local: list[Tensor] = []
        if both and self.views_in_one_pass:
            # SwAV's multi-resolution forward: one backbone pass per resolution, then the head
            # on every crop at once (its BatchNorm statistics over all of them).
            h_a, h_b = self.backbone(torch.cat([x_a, x_b])).chunk(2)
            h_all = [h_a, h_b] if h_local is None else [h_a, h_b, h_local]
            z_a, z_b, *z_local = self.projector(torch.cat(h_all)).chunk(2 + len(local_views))
        else:
            # Two backbone passes, as in the official code: batch-norm statistics stay per view.
            h_a = self.backbone(x_a)
            z_a = self.projector(h_a)
            h_b = self.backbone(x_b) if both else None
            z_b = None if h_b is None else self.projector(h_b)
            if h_local is not None:
                z_local = list(self.projector(h_local).chunk(len(local_views)))
        heads: dict[str, Tensor] = {}
        if self.predictor is not None:
            heads["p_a"] = self.predictor(z_a)
            if z_b is not None:
                heads["p_b"] = self.predictor(z_b)
        if self.target_backbone is not None and self.target_projector is not None:
            # Targets are constants of the loss (stop-gradient): no graph is built for them.
            with torch.no_grad():
                if both:
                    heads["target_a"] = self.target_projector(self.target_backbone(x_a))
                heads["target_b"] = self.target_projector(self.target_backbone(x_b))
        # Losses run in float32 (or wider) even under bf16 autocast: their sums over large
        # batches and D x D statistics lose too much precision in 8-bit mantissas.
        with torch.autocast(z_a.device.type, enabled=False):
            if z_local and self.loss_over_crop_pairs:
                assert z_b is not None
                loss, terms = self.crop_pairs_loss([at_least_fp32(z) for z in (z_a, z_b, *z_local)])
            else:
                local = {"z_local": [at_least_fp32(z) for z in z_local]} if self.uses_local_crops else {}
                loss, terms = self.loss(
                    at_least_fp32(z_a),
                    None if z_b is None else at_least_fp32(z_b),
                    **{key: at_least_fp32(value) for key, value in heads.items()},
                    **local,
                )
        return StepOutput(
            # The recipe's loss scale (solo-learn's scale_loss, SimCLR's sum over both views):
            # under LARS it changes the steps of the parameters left out of the trust ratio.
            loss=loss * self.loss_scale if self.loss_scale != 1.0 else loss,
            terms={k: v.detach() for k, v in terms.items()},
            representation=h_a,
            embedding=z_a,
            representation_b=h_b,
        )


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in float32, unless it is already float32 or float64 (tests run losses in float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_names(
    method: str, table: str, given: Mapping[str, Any], expected: Sequence[str], optional: Iterable[str] = ()
) -> None:
    """UsageError unless the recipe table ``table`` gives the names ``expected``, and ``optional`` ones at most."""
    allowed = [*expected, *optional]
    for name in given:
        if name not in allowed:
            listing = f"{method} takes: {', '.join(allowed) or 'none'}"
            raise UsageError(unknown_name_message(f"{table} parameter of {method}", name, allowed, listing))
    missing = [name for name in expected if name not in given]
    if missing:
        raise UsageError(f"{method} needs the {table} parameter(s) {', '.join(missing)} (recipe table `{table}`)")


ENTRY_POINT_GROUP = "ssl_bench.methods"
_REGISTRY: dict[str, type[Method]] = {}
_discovered = False


class RegistrationError(TypeError, ValueError):
    """A class that ``@register_method`` refuses: not a complete Method, or its name is taken."""


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a Method subclass available to ``ssl-bench run <name>``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise RegistrationError(f"@register_method needs a subclass of ssl_bench.method.Method, got {cls!r}")
    name = getattr(cls, "name", None)
    if not name:
        raise RegistrationError(f"{cls.__name__} needs a class attribute `name`")
    if cls.loss is Method.loss:
        raise RegistrationError(f"{cls.__name__} must implement loss()")
    if not isinstance(cls.online_sees_both_views, bool):
        raise RegistrationError(f"{cls.__name__}.online_sees_both_views must be True or False")
    if not cls.online_sees_both_views and not cls.uses_momentum_target:
        raise RegistrationError(
            f"{cls.__name__}: online_sees_both_views = False needs uses_momentum_target (view b goes to the target)"
        )
    if cls.loss_over_crop_pairs and (cls.uses_predictor or cls.uses_momentum_target or cls.uses_local_crops):
        raise RegistrationError(
            f"{cls.__name__}: loss_over_crop_pairs needs a loss of two embeddings alone "
            "(no predictor, momentum target or uses_local_crops)"
        )
    existing = _REGISTRY.get(name)
    # Re-registering the same class (a module imported again) is fine; another class is a clash.
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise RegistrationError(f"method name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    """Register the modules of the methods/ package and the ``ssl_bench.methods`` entry points (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import ssl_bench.methods as builtin

    for info in pkgutil.iter_modules(builtin.__path__):
        importlib.import_module(f"{builtin.__name__}.{info.name}")
    from importlib.metadata import entry_points

    # An entry point names a module (its classes register themselves on import) or a Method
    # subclass, e.g. `[project.entry-points."ssl_bench.methods"] mine = "my_pkg.my_method:Mine"`.
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if isinstance(loaded, type) and issubclass(loaded, Method):
                register_method(loaded)
        except Exception as error:  # a broken plug-in must not take the other methods down with it
            warnings.warn(
                f"ssl-bench: skipping method plug-in {entry.name!r} ({entry.value}): {type(error).__name__}: {error}",
                stacklevel=2,
            )


def load_method_file(path: str | Path) -> list[str]:
    """Import a single-file method from anywhere; returns the names it registered (sorted).

    The file runs as module ``ssl_bench_user_method_<stem>``, entered in ``sys.modules`` as
    importlib's recipe requires (dataclasses and pickling look classes up there). Loading the
    same file again runs it again and re-registers its classes.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"method file not found: {path}")
    _discover()  # the built-in names first, so that a clash is reported, not shadowed
    module_name = f"ssl_bench_user_method_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[module_name]
        # A file that failed half-way may have registered some of its classes already.
        for name in [name for name, cls in _REGISTRY.items() if cls.__module__ == module_name]:
            del _REGISTRY[name]
        if isinstance(error, Exception):
            raise UsageError(_method_file_error(path, error)) from None
        raise
    names = sorted(name for name, cls in _REGISTRY.items() if cls.__module__ == module_name)
    if not names:
        raise UsageError(f"{path} registers no method: decorate a Method subclass with @register_method")
    return names


def _method_file_error(path: Path, error: Exception) -> str:
    """One line for a method file that could not be run: where, and what went wrong."""
    if isinstance(error, SyntaxError):
        return f"method file {path}, line {error.lineno}: syntax error: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    line = next((frame.lineno for frame in reversed(frames) if frame.filename == str(path.absolute())), None)
    where = f"method file {path}" + (f", line {line}" if line is not None else "")
    if isinstance(error, ModuleNotFoundError):
        return f"{where}: it imports {error.name!r}, which is not installed (pip install it into this environment)"
    if isinstance(error, RegistrationError):
        return f"{where}: cannot register its method: {error}"
    return f"{where}: {type(error).__name__}: {' '.join(str(error).split())}"


def available_methods() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    _discover()
    if name not in _REGISTRY:
        raise UsageError(unknown_name_message("method", name, _REGISTRY))
    return _REGISTRY[name]


__all__ = [
    "ENTRY_POINT_GROUP",
    "Method",
    "StepOutput",
    "at_least_fp32",
    "available_methods",
    "cosine_momentum",
    "ema_update",
    "get_method",
    "load_method_file",
    "register_method",
    "unknown_name_message",
]
