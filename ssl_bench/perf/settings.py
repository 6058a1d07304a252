"""What a benchmark run does: the settings, their defaults, and the command that repeats a run.

:func:`resolve_settings` fills in the device-dependent defaults and checks every name the user
gave (UsageError on bad input); :func:`command_line` turns the settings back into the
``ssl-bench bench`` command with every default spelled out. Importing this module does not
import torch: the command-line parser reads its defaults from here.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ssl_bench.errors import UsageError
from ssl_bench.perf.machine import usable_cpus

DEFAULT_METHODS = ("simclr", "tico", "vicreg", "barlow_twins")
# CPU default: a small net and ResNet-18 at 32 px keep the default run short on a small CPU (the
# CIFAR recipes' resnet18_cifar, with its full-resolution stem, is slow there: --backbones adds it).
DEFAULT_CPU_BACKBONES = ("tiny_convnet", "resnet18")
# CUDA default: the CIFAR setting and the ImageNet setting, one command for both.
DEFAULT_CUDA_BACKBONES = ("resnet18_cifar@32", "resnet50@224")
SECTIONS = ("step", "pipeline", "folder", "loss", "load")
# "load" (the training step beside a busy core) spins a core: only when asked for (--loaded).
DEFAULT_SECTIONS = ("step", "pipeline", "folder", "loss")
# Loss sizes (see default_loss_cases); "auto" picks one by device.
LOSS_SIZES = ("auto", "recipe", "cpu", "quick")


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone and the image side it is benchmarked at (``NAME@SIZE`` on the command line)."""

    name: str
    image_size: int

    def __str__(self) -> str:
        return f"{self.name}@{self.image_size}"


@dataclass(frozen=True)
class LossCase:
    """One loss timing: ``method``'s loss on two (n, d) embeddings; ``form`` for VICReg/Barlow."""

    method: str
    n: int
    d: int
    form: str | None = None


# Methods whose loss has a Gram and a direct form: the name of the function, in the module of the
# registered class, that takes the recipe's loss parameters and `form`.
FORM_LOSSES: Mapping[str, str] = {"vicreg": "vicreg_loss", "barlow_twins": "barlow_twins_loss"}
FORMS = ("gram", "direct")
# Whose recipe parameters the losses take unless --dataset names another.
LOSS_RECIPE_DATASET = "imagenet"
# (N, D) per method and loss-size setting. "recipe": the published sizes (VICReg/Barlow Twins
# N = 512 and 2048 at D = 8192, SimCLR N = 4096 at D = 128, TiCo N = 4096 at D = 256). "cpu":
# what fits a 2-core CPU in the default run: N = 512 only for VICReg/Barlow (the direct form at
# N = 2048 takes minutes), SimCLR at N = 1024 (its 2N x 2N logits at N = 4096 take seconds per
# call). "quick": tiny.
LOSS_SHAPES: Mapping[str, Mapping[str, list[tuple[int, int]]]] = {
    "recipe": {
        "vicreg": [(512, 8192), (2048, 8192)],
        "barlow_twins": [(512, 8192), (2048, 8192)],
        "simclr": [(4096, 128)],
        "tico": [(4096, 256)],
    },
    "cpu": {"vicreg": [(512, 8192)], "barlow_twins": [(512, 8192)], "simclr": [(1024, 128)], "tico": [(4096, 256)]},
    "quick": {"vicreg": [(64, 256)], "barlow_twins": [(64, 256)], "simclr": [(64, 32)], "tico": [(64, 32)]},
}


def default_loss_cases(methods: Sequence[str], sizes: str) -> list[LossCase]:
    """Loss timings for the methods with sizes in :data:`LOSS_SHAPES`; both forms where there are two."""
    if sizes not in LOSS_SHAPES:
        raise ValueError(f"unknown loss sizes {sizes!r}")
    shapes = LOSS_SHAPES[sizes]
    cases: list[LossCase] = []
    for method in methods:
        forms: tuple[str | None, ...] = FORMS if method in FORM_LOSSES else (None,)
        for n, d in shapes.get(method, []):
            cases += [LossCase(method, n, d, form) for form in forms]
    return cases


@dataclass
class BenchSettings:
    """Everything a benchmark run does; :func:`command_line` turns it back into a command."""

    methods: list[str]
    backbones: list[BackboneSpec]
    batch_size: int
    repeats: int
    warmup: int
    device: str
    quick: bool = False
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    workers: int = 2  # DataLoader workers of the per-sample and folder pipelines
    dataset: str | None = None  # recipe + normalisation; None: cifar10 up to 96 px, imagenet above
    loss_sizes: str = "auto"  # "auto" (by device), "recipe" (full recipe sizes), "cpu", "quick"
    loss_cases: list[LossCase] = field(default_factory=list)
    threads: int | None = None  # torch intra-op threads; None keeps torch's default

    @property
    def image_sizes(self) -> list[int]:
        return sorted({spec.image_size for spec in self.backbones})


def parse_backbone(text: str, default_size: int) -> BackboneSpec:
    """``resnet50@224`` -> BackboneSpec("resnet50", 224); a bare name gets ``default_size``."""
    name, _, size = text.partition("@")
    if not name:
        raise UsageError(f"--backbones: empty backbone name in {text!r}")
    if not size:
        return BackboneSpec(name, default_size)
    if not size.isdigit() or int(size) <= 0:
        raise UsageError(f"--backbones: image size must be a positive integer in {text!r}")
    return BackboneSpec(name, int(size))


def resolve_settings(
    *,
    methods: Sequence[str] | None = None,
    backbones: Sequence[str] | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    device: str = "auto",
    quick: bool = False,
    sections: Sequence[str] | None = None,
    workers: int | None = None,
    dataset: str | None = None,
    loss_sizes: str = "auto",
    threads: int | None = None,
) -> BenchSettings:
    """Fill in the device-dependent defaults and check every name (UsageError on bad input)."""
    from ssl_bench.method import get_method
    from ssl_bench.models.backbones import check_backbone_name

    device = resolve_bench_device(device)
    cuda = device.startswith("cuda")
    for name, value in [
        ("--image-size", image_size),
        ("--batch-size", batch_size),
        ("--repeats", repeats),
        ("--threads", threads),
    ]:
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be positive, got {value}")
    for name, value in [("--warmup", warmup), ("--workers", workers)]:
        if value is not None and value < 0:
            raise UsageError(f"{name} must be >= 0, got {value}")
    methods = list(methods or DEFAULT_METHODS)
    for method in methods:
        get_method(method)
    if backbones is None:
        backbones = ["tiny_convnet"] if quick else list(DEFAULT_CUDA_BACKBONES if cuda else DEFAULT_CPU_BACKBONES)
    default_size = image_size or (16 if quick else 32)
    specs = [parse_backbone(text, default_size) for text in backbones]
    for spec in specs:
        check_backbone_name(spec.name)
    sections = tuple(sections or DEFAULT_SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise UsageError(f"unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    if dataset is not None:
        from ssl_bench.recipes import recipe_table_for

        recipe_table_for(dataset)  # UsageError for an unknown name
    if loss_sizes not in LOSS_SIZES:
        raise UsageError(f"--loss-sizes must be auto, recipe, cpu or quick, got {loss_sizes!r}")
    if loss_sizes == "auto":
        loss_sizes = "quick" if quick else ("recipe" if cuda else "cpu")
    return BenchSettings(
        methods=methods,
        backbones=specs,
        batch_size=batch_size or (16 if quick else (256 if cuda else 128)),
        repeats=repeats or (2 if quick else 5),
        warmup=1 if warmup is None else warmup,
        device=device,
        quick=quick,
        sections=sections,
        workers=usable_cpus() if workers is None else workers,
        dataset=dataset,
        loss_sizes=loss_sizes,
        loss_cases=default_loss_cases(methods, loss_sizes),
        threads=threads,
    )


def resolve_bench_device(name: str) -> str:
    """ "auto" -> "cuda" when a GPU is there, else "cpu"; UsageError for a CUDA device without CUDA."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    return name


def command_line(settings: BenchSettings, json_path: str | None = None, csv_path: str | None = None) -> str:
    """The ``ssl-bench bench`` command that repeats this run, every default spelled out."""
    parts = [
        "ssl-bench",
        "bench",
        "--device",
        settings.device,
        "--methods",
        *settings.methods,
        "--backbones",
        *map(str, settings.backbones),
        "--batch-size",
        str(settings.batch_size),
        "--repeats",
        str(settings.repeats),
        "--warmup",
        str(settings.warmup),
        "--workers",
        str(settings.workers),
        "--loss-sizes",
        settings.loss_sizes,
        "--sections",
        *settings.sections,
    ]
    if settings.threads:
        parts += ["--threads", str(settings.threads)]
    if settings.quick:
        parts.append("--quick")
    if settings.dataset:
        parts += ["--dataset", settings.dataset]
    if json_path:
        parts += ["--json", json_path]
    if csv_path:
        parts += ["--csv", csv_path]
    return shlex.join(parts)
