"""The method plug-in interface: what a method declares, and the registry that finds methods.

A method is a small ``Method`` subclass in ``methods/<name>.py``: its loss on two embedding
batches, the augmentation pair it trains with, and (optionally) a custom projector. Everything
else (backbone, optimiser, schedule, data, logging, checkpoints) is the harness's job.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from ssl_bench.errors import UsageError, unknown_name_message
from ssl_bench.models import build_projector


@dataclass
class StepOutput:
    """What one forward pass on a pair of views gives the harness."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached loss terms, for logging
    representation: Tensor | None = None  # backbone output of view a (for probes, diagnostics)
    embedding: Tensor | None = None  # projector output of view a


class Method(nn.Module):
    """Backbone -> projector -> loss on two views. Subclasses implement :meth:`loss`."""

    name: ClassVar[str]
    augmentation: ClassVar[str] = "simclr"  # "simclr" (symmetric) or "vicreg" (asymmetric)

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        projector_dims: Sequence[int],
        **loss_params: float,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.projector = self.build_projector(feature_dim, projector_dims)
        self.embedding_dim = projector_dims[-1] if projector_dims else feature_dim
        self.loss_params = dict(loss_params)

    def build_projector(self, feature_dim: int, dims: Sequence[int]) -> nn.Module:
        return build_projector(feature_dim, dims)

    def loss(self, z_a: Tensor, z_b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's loss on two embedding batches, and its named terms (for logging)."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    def forward(self, x_a: Tensor, x_b: Tensor) -> StepOutput:
        # Two backbone passes, as in the official code: batch-norm statistics stay per view.
        h_a, h_b = self.backbone(x_a), self.backbone(x_b)
        z_a, z_b = self.projector(h_a), self.projector(h_b)
        # Losses run in float32 even under bf16 autocast: their sums over large batches and
        # D x D statistics lose too much precision in 8-bit mantissas.
        with torch.autocast(z_a.device.type, enabled=False):
            loss, terms = self.loss(z_a.float(), z_b.float())
        return StepOutput(
            loss=loss,
            terms={k: v.detach() for k, v in terms.items()},
            representation=h_a,
            embedding=z_a,
        )


_REGISTRY: dict[str, type[Method]] = {}
_discovered = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a Method subclass available to ``ssl-bench run <name>``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"method name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"methods.{info.name}")
    from importlib.metadata import entry_points

    for entry in entry_points(group="ssl_bench.methods"):
        entry.load()


def load_method_file(path: str | Path) -> list[str]:
    """Import a single-file method from outside the repo; returns the names it registered."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"method file not found: {path}")
    before = set(_REGISTRY)
    spec = importlib.util.spec_from_file_location(f"ssl_bench_user_method_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(set(_REGISTRY) - before)


def available_methods() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    _discover()
    if name not in _REGISTRY:
        raise UsageError(unknown_name_message("method", name, _REGISTRY))
    return _REGISTRY[name]


__all__ = [
    "Method",
    "StepOutput",
    "register_method",
    "get_method",
    "available_methods",
    "load_method_file",
    "unknown_name_message",
]
