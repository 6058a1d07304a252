"""A run's backbone as a safetensors file that torchvision or timm load strictly (``ssl-bench export``).

What exports to what
--------------------
==================================  ===========================================================
ssl-bench backbone                  loads with ``strict=True`` into
==================================  ===========================================================
``resnet18``, ``resnet50``          ``torchvision.models.resnet18()`` with ``fc = Identity()``;
                                    ``timm.create_model("resnet18", num_classes=0)``
``resnet18_cifar``,                 the same models with the CIFAR stem put in first:
``resnet50_cifar``                  ``conv1 = Conv2d(3, 64, 3, stride 1, padding 1, no bias)``,
                                    ``maxpool = Identity()`` (no library has that stem built in)
a timm model (``resnet10t``, ...)   ``timm.create_model(name, num_classes=0)``; ``--format timm``
``tiny_convnet``                    nothing: ssl-bench's own test network (an error)
==================================  ===========================================================

ssl-bench builds its ResNets from torchvision and timm's ResNets use the same module names, so
the keys are the run's own; the classifier stays out (an SSL backbone has none: its output is
the representation every protocol evaluates), hence ``fc = Identity()`` / ``num_classes=0``. Each
export is checked before it is written: the target model is built as the model card says, loads
the file's tensors with ``strict=True`` and must give the run's backbone output.

The file's metadata (``ssl_bench``, a JSON object) names the ssl-bench backbone, dataset, seed and
image size, so ``ssl-bench eval FILE`` evaluates it like the run itself. Beside the file go
the model card (``ssl_bench.checkpoints.model_card``) as Markdown and JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_bench import __version__
from ssl_bench.checkpoints.external import METADATA_KEY, SAFETENSORS_SUFFIX, file_sha256
from ssl_bench.checkpoints.model_card import model_card, render_model_card
from ssl_bench.config import RunConfig
from ssl_bench.errors import UsageError
from ssl_bench.models.backbones import BUILTIN_BACKBONES
from ssl_bench.store.atomic import atomic_path, atomic_write_json, atomic_write_text
from ssl_bench.store.rundir import CHECKPOINT, RunDir

EXPORT_FORMATS = ("torchvision", "timm")
_CIFAR_STEM_CODE = (
    "model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # the CIFAR stem\n"
    "model.maxpool = torch.nn.Identity()\n"
)


@dataclass(frozen=True)
class ExportTarget:
    """The library model an export loads into."""

    format: str  # "torchvision" or "timm"
    architecture: str  # torchvision.models.<architecture>() / timm.create_model(<architecture>)
    cifar_stem: bool  # ssl-bench's small-image stem replaces the library's

    def build(self) -> nn.Module:
        """The model, built as :meth:`loading_code` builds it (the weights are the library's initial ones)."""
        if self.format == "torchvision":
            import torchvision

            model = getattr(torchvision.models, self.architecture)()
            model.fc = nn.Identity()
        else:
            import timm

            model = timm.create_model(self.architecture, pretrained=False, num_classes=0)
        if self.cifar_stem:
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        return model

    def loading_code(self, file_name: str) -> str:
        """Python that loads the export: what the model card shows."""
        if self.format == "torchvision":
            head = (
                "import torch\nimport torchvision\nfrom safetensors.torch import load_file\n\n"
                f"model = torchvision.models.{self.architecture}()\n"
                "model.fc = torch.nn.Identity()  # the backbone's output is the representation\n"
            )
        else:
            head = (
                "import timm\nimport torch\nfrom safetensors.torch import load_file\n\n"
                f'model = timm.create_model("{self.architecture}", num_classes=0)\n'
            )
        stem = _CIFAR_STEM_CODE if self.cifar_stem else ""
        return f'{head}{stem}model.load_state_dict(load_file("{file_name}"), strict=True)\nmodel.eval()\n'


def export_target(backbone: str, fmt: str) -> ExportTarget:
    """Where ``backbone`` exports to in ``fmt``; a UsageError when it exports nowhere (see the module docstring)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    if backbone in BUILTIN_BACKBONES:
        if not backbone.startswith("resnet"):
            raise UsageError(
                f"{backbone} is ssl-bench's own small test network: neither torchvision nor timm has it, "
                "so it cannot be exported (export a run with a ResNet or a timm backbone)"
            )
        return ExportTarget(fmt, backbone.removesuffix("_cifar"), backbone.endswith("_cifar"))
    if fmt == "torchvision":
        raise UsageError(f"{backbone} is a timm model, which torchvision does not have: export it with --format timm")
    return ExportTarget(fmt, backbone.removeprefix("timm:"), cifar_stem=False)


@dataclass(frozen=True)
class Export:
    """What ``ssl-bench export`` wrote."""

    weights: Path
    card_markdown: Path
    card_json: Path
    card: dict[str, Any]


def default_output(run_dir: Path, fmt: str) -> Path:
    return run_dir / f"backbone.{fmt}{SAFETENSORS_SUFFIX}"


def export_run(run_dir: str | Path, fmt: str = "torchvision", output: str | Path | None = None) -> Export:
    """Write the run's backbone (``output``, by default ``RUN_DIR/backbone.<format>.safetensors``) and its
    model card (the same path with ``.md`` and ``.json``). Nothing is written when the run cannot be exported."""
    from ssl_bench.run.lifecycle import pretrained_backbone

    run = RunDir(Path(run_dir))
    if not (run.path / "config.json").is_file():
        raise UsageError(f"{run_dir} is not an ssl-bench run directory (no config.json)")
    config = RunConfig.read(run.path)
    target = export_target(config.backbone, fmt)
    status = run.read_status()
    if not run.has_checkpoint():
        raise UsageError(f"run {run_dir} has no {CHECKPOINT}: a baseline or an evaluation has no weights of its own")
    if status["status"] != "finished":
        raise UsageError(f"run {run_dir} is {status['status']}: export takes a run whose pre-training finished")
    weights = Path(output) if output is not None else default_output(run.path, fmt)
    if weights.suffix != SAFETENSORS_SUFFIX:
        raise UsageError(f"--output {weights} must end with {SAFETENSORS_SUFFIX}")

    backbone = pretrained_backbone(config, run).eval()
    tensors = {name: value.detach().cpu().contiguous().clone() for name, value in backbone.state_dict().items()}
    check_export(target, tensors, backbone, config.image_size)

    from safetensors.torch import save_file

    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(export_metadata(config, target))})
    export = {
        "file": weights.name,
        "format": target.format,
        "architecture": target.architecture,
        "cifar_stem": target.cifar_stem,
        "sha256": file_sha256(weights),
        "parameters": sum(value.numel() for value in backbone.parameters()),
        "representation_dim": int(_output(backbone, config.image_size).shape[1]),
        "load": target.loading_code(weights.name),
    }
    card = model_card(config, run, export)
    card_json, card_markdown = weights.with_suffix(".json"), weights.with_suffix(".md")
    atomic_write_json(card_json, card)
    atomic_write_text(card_markdown, render_model_card(card))
    return Export(weights, card_markdown, card_json, card)


def export_metadata(config: RunConfig, target: ExportTarget) -> dict[str, Any]:
    """What the file says about itself (read back by ``ssl-bench eval``)."""
    return {
        "format": target.format,
        "architecture": target.architecture,
        "cifar_stem": target.cifar_stem,
        "backbone": config.backbone,
        "method": config.method,
        "dataset": config.dataset,
        "epochs": config.epochs,
        "seed": config.seed,
        "image_size": config.image_size,
        "identity_hash": config.identity_hash(),
        "ssl_bench_version": __version__,
    }


@torch.no_grad()
def _output(model: nn.Module, image_size: int) -> torch.Tensor:
    images = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    return model.eval()(images)


def check_export(target: ExportTarget, tensors: dict[str, torch.Tensor], backbone: nn.Module, image_size: int) -> None:
    """The target loads ``tensors`` strictly and computes the backbone's output (else a RuntimeError: a bug)."""
    model = target.build()
    model.load_state_dict(tensors, strict=True)
    expected, got = _output(backbone, image_size), _output(model, image_size)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"the {target.format} {target.architecture} does not reproduce the run's backbone")
