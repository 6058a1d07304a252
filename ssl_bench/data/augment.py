"""Batched two-view augmentations for joint-embedding SSL (SimCLR, VICReg, Barlow Twins, BYOL).

Every op works on a whole batch with per-sample random parameters, on whatever device the batch
is on: a GPU run augments on the GPU, and a CPU run avoids the per-sample PIL pipeline (with two
intra-op threads, per-sample colour jitter in the main process is ~50x slower than in a worker).

The recipes (torchvision semantics, as in the papers' public code):

- "symmetric" (SimCLR): RandomResizedCrop scale (0.08, 1), flip 0.5, colour jitter
  (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale p 0.2, Gaussian blur p 0.5; both views alike.
- "asymmetric" (BYOL's pair, also used by VICReg, Barlow Twins, MoCo v3 and TiCo): jitter
  (0.4, 0.4, 0.2, 0.1), and blur p 1.0 / 0.1, solarize p 0.0 / 0.2 for the two views.
- ``AUG_PLUS`` (MoCo v2's "aug+", also SimSiam's), for both views: crop scale (0.2, 1), jitter
  (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, blur p 0.5.

A run's recipe row can change any field of either view (``views``, ``view_a``, ``view_b``): the
CIFAR rows, for instance, turn the blur off as solo-learn does.

kornia provides the crop-box sampler (torchvision's ten-try rejection sampling, vectorised) and
the Gaussian blur. The pixel work of crop + flip, colour jitter, grayscale and solarize is a few
tensor expressions (``ssl_bench.data.ops``): kornia's modules for them ran at only about 2x the per-sample
torchvision pipeline on CPU, because their HSV round trip for the hue step, their
``torch.where`` selections (~10x slower per element than arithmetic on this CPU build) and their
crop's perspective solve took most of the time. The crop here is also antialiased when
it shrinks, as torchvision's is. Each op is tested against torchvision's functional op (the
reference semantics), and the hot paths reuse buffers in place: fresh multi-MB tensors cost page
faults on CPU.

Random parameters are drawn on the CPU from torch's global generator (kornia's default too) and
then moved to the batch's device: a seeded call gives the same parameters on CPU and CUDA, no op
needs a device-to-host sync, and a loader makes batches reproducible by seeding that generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import kornia.augmentation as K
import torch
from kornia.augmentation.random_generator import RandomGeneratorBase, ResizedCropGenerator
from torch import Tensor, nn

from ssl_bench.data.ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    on_device_of,
    resized_crop,
    solarize,
)
from ssl_bench.errors import UsageError, unknown_name_message

if TYPE_CHECKING:
    from ssl_bench.config import RunConfig

__all__ = [
    "AUG_PLUS",
    "KINDS",
    "SMALL_IMAGE_MAX_SIDE",
    "LocalCropAugmentation",
    "LocalCrops",
    "RandomColorJitter",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomSolarize",
    "ViewConfig",
    "ViewPairAugmentation",
    "blur_kernel_size",
    "local_crops_of",
    "view_config",
    "view_pair",
    "view_pair_configs",
]

KINDS = ("symmetric", "asymmetric")
SMALL_IMAGE_MAX_SIDE = 96
# torchvision's RandomResizedCrop default aspect-ratio range (width / height).
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
BLUR_SIGMA = (0.1, 2.0)


@dataclass(frozen=True)
class ViewConfig:
    """The distribution of one view: op probabilities and strengths (torchvision semantics).

    crop_scale: RandomResizedCrop area-fraction range; flip_p: horizontal-flip probability;
    jitter: ColorJitter (brightness, contrast, saturation, hue) strengths, applied with jitter_p;
    grayscale_p, blur_p, solarize_p: probabilities of those ops (0 disables an op).
    """

    crop_scale: tuple[float, float]
    flip_p: float
    jitter: tuple[float, float, float, float]
    jitter_p: float
    grayscale_p: float
    blur_p: float
    solarize_p: float

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(f"jitter must be 4 non-negative strengths with hue <= 0.5, got {self.jitter}")


def view_config(view: Mapping[str, Any]) -> ViewConfig:
    """A ViewConfig from its fields as stored in a config (lists for its tuples)."""
    fields = {f.name for f in dataclasses.fields(ViewConfig)}
    unknown = [name for name in view if name not in fields]
    if unknown:
        raise ValueError(unknown_name_message("view field", unknown[0], fields))
    return ViewConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in view.items()})


def view_pair(config: RunConfig) -> tuple[ViewConfig, ViewConfig]:
    """The two views' distributions of a config, as the augmentation takes them."""
    try:
        return view_config(config.view_a), view_config(config.view_b)
    except (TypeError, ValueError) as error:
        raise UsageError(f"view distribution of {config.method}: {error}") from None


# MoCo v2's "aug+" (facebookresearch/moco main_moco.py, --aug-plus), which SimSiam's
# main_simsiam.py takes over: both views from this one distribution.
AUG_PLUS = ViewConfig(
    crop_scale=(0.2, 1.0),
    flip_p=0.5,
    jitter=(0.4, 0.4, 0.4, 0.1),
    jitter_p=0.8,
    grayscale_p=0.2,
    blur_p=0.5,
    solarize_p=0.0,
)


def view_pair_configs(kind: str, small_images: bool) -> tuple[ViewConfig, ViewConfig]:
    """The two view distributions of ``kind``: "symmetric" (SimCLR's) or "asymmetric" (BYOL's pair).

    ``small_images`` drops the Gaussian blur (for callers that build views from a kind alone;
    runs take their views from the recipe, which says where the blur is off).
    """
    if kind == "symmetric":
        view_a = ViewConfig((0.08, 1.0), 0.5, (0.8, 0.8, 0.8, 0.2), 0.8, 0.2, blur_p=0.5, solarize_p=0.0)
        view_b = view_a
    elif kind == "asymmetric":
        view_a = ViewConfig((0.08, 1.0), 0.5, (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, blur_p=1.0, solarize_p=0.0)
        view_b = dataclasses.replace(view_a, blur_p=0.1, solarize_p=0.2)
    else:
        raise UsageError(unknown_name_message("augmentation kind", kind, KINDS))
    if small_images:
        view_a = dataclasses.replace(view_a, blur_p=0.0)
        view_b = dataclasses.replace(view_b, blur_p=0.0)
    return view_a, view_b


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian-blur kernel: ~10% of the image side (23 at 224 px, as SimCLR and BYOL), and at
    least +-3 of the largest sigma (13 taps), so that small images get the blur of PIL's
    ``GaussianBlur(radius=sigma)`` (the solo-learn, VICReg and MoCo pipelines), whose support has
    no size limit, rather than a truncated one. Never wider than reflect padding allows.
    """
    covering = 2 * math.ceil(3 * BLUR_SIGMA[1]) + 1
    return min(max(int(0.1 * image_size) // 2 * 2 + 1, covering), 2 * image_size - 1)


# ----------------------------------------------------------------------------------------------
# Functional ops on float batches in [0, 1]; per-sample factors are (B,) tensors on any device.
# ----------------------------------------------------------------------------------------------


def _coin(batch_size: int, p: float) -> Tensor:
    """(B,) bool CPU tensor: which samples an op with probability p applies to."""
    return torch.rand(batch_size) < p


def _select_and_apply(images: Tensor, chosen: Tensor, op: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply ``op`` to the chosen samples only: exact (no blending) and without a where pass."""
    index = chosen.nonzero().squeeze(1)  # computed on the CPU: no device sync
    if index.numel() == 0:
        return images
    index = on_device_of(index, images)
    return images.index_copy(0, index, op(images.index_select(0, index)))


class RandomResizedCrop(nn.Module):
    """torchvision's RandomResizedCrop(size, scale, ratio=(3/4, 4/3)) with antialiased bilinear
    resize, followed by RandomHorizontalFlip(flip_p) (folded into the resampling weights).

    Boxes come from kornia's vectorised version of torchvision's ten-try rejection sampler (its
    fallback crop is placed at a random position, torchvision centres it).
    """

    def __init__(
        self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO, flip_p: float = 0.0
    ) -> None:
        super().__init__()
        self.size = size
        self.sampler = ResizedCropGenerator((size, size), scale=scale, ratio=ratio)
        self.scale = scale
        self.flip_p = flip_p

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, flip_p={self.flip_p}"

    def sample_boxes(self, shape: torch.Size) -> Tensor:
        """(B, 4) float CPU tensor of (left, top, width, height) for inputs of ``shape``."""
        corners = self.sampler(shape)["src"]  # (B, 4, 2) inclusive corner pixels (x, y)
        top_left, bottom_right = corners[:, 0], corners[:, 2]
        return torch.cat([top_left, bottom_right - top_left + 1.0], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        boxes = self.sample_boxes(images.shape)
        flip = _coin(images.shape[0], self.flip_p) if self.flip_p > 0 else None
        return resized_crop(images, boxes, self.size, flip)


class RandomHorizontalFlip(nn.Module):
    """Horizontal flip with probability p per sample."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, images: Tensor) -> Tensor:
        return _select_and_apply(images, _coin(images.shape[0], self.p), lambda x: x.flip(-1))


# The four ColorJitter steps in torchvision's index order, and their neutral factors.
_JITTER_STEPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
_JITTER_NEUTRAL = (1.0, 1.0, 1.0, 0.0)


class RandomColorJitter(nn.Module):
    """torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)`` on a batch, factors per sample.

    Samples the gate skips get the neutral factors (1, 1, 1, 0), so the batch goes through each
    step once without selecting samples. The order of the four steps is drawn per call (per
    batch) rather than per sample: each sample still sees a uniformly random order, only the
    samples of one batch share it (kornia's ColorJitter does the same).
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float) -> None:
        super().__init__()
        self.p = p
        self.ranges = (
            (max(0.0, 1.0 - brightness), 1.0 + brightness),
            (max(0.0, 1.0 - contrast), 1.0 + contrast),
            (max(0.0, 1.0 - saturation), 1.0 + saturation),
            (-hue, hue),
        )
        # A step of strength 0 is the identity: skip it rather than run it with neutral factors.
        self.active = tuple(lo != hi for lo, hi in self.ranges)

    def extra_repr(self) -> str:
        return f"ranges={self.ranges}, p={self.p}"

    def sample_params(self, batch_size: int) -> dict[str, Tensor]:
        """Draw on the CPU: ``apply`` (B,) bool, ``factors`` (B, 4) and the step ``order`` (4,)."""
        apply = _coin(batch_size, self.p)
        factors = torch.empty(batch_size, 4)
        for i, ((lo, hi), neutral) in enumerate(zip(self.ranges, _JITTER_NEUTRAL)):
            drawn = torch.empty(batch_size).uniform_(lo, hi)
            factors[:, i] = torch.where(apply, drawn, torch.tensor(neutral))
        return {"apply": apply, "factors": factors, "order": torch.randperm(4)}

    def apply_params(self, images: Tensor, factors: Tensor, order: Sequence[int]) -> Tensor:
        """Run the active steps in ``order`` with (B, 4) ``factors`` (torchvision's formulas)."""
        factors = on_device_of(factors, images, images.dtype)
        for step in order:
            if self.active[step]:
                images = _JITTER_STEPS[step](images, factors[:, step])
        return images

    def forward(self, images: Tensor) -> Tensor:
        if self.p == 0.0 or not any(self.active):
            return images
        params = self.sample_params(images.shape[0])
        return self.apply_params(images, params["factors"], params["order"].tolist())


class RandomGrayscale(nn.Module):
    """torchvision's RandomGrayscale(p) on a batch: luma copied to the three channels."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, images: Tensor) -> Tensor:
        # Saturation 0 is exactly the luma and 1 exactly the input: one blend, no selection.
        return adjust_saturation(images, (~_coin(images.shape[0], self.p)).float())


class RandomSolarize(nn.Module):
    """Solarize with probability p per sample (see :func:`solarize` for the threshold)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, images: Tensor) -> Tensor:
        return _select_and_apply(images, _coin(images.shape[0], self.p), solarize)


def _colour_ops(config: ViewConfig, flip: bool) -> list[nn.Module]:
    """(Flip,) jitter and grayscale: the ops after the crop that both views share in the recipes.

    ``flip`` False: the crop does the flip (folded into its resampling weights).
    """
    ops: list[nn.Module] = []
    if flip and config.flip_p > 0:
        ops.append(RandomHorizontalFlip(config.flip_p))
    if config.jitter_p > 0 and any(config.jitter):
        ops.append(RandomColorJitter(*config.jitter, p=config.jitter_p))
    if config.grayscale_p > 0:
        ops.append(RandomGrayscale(config.grayscale_p))
    return ops


def _tail_ops(config: ViewConfig, image_size: int) -> list[nn.Module]:
    """Blur and solarize: the ops whose probabilities differ between VICReg's two views."""
    ops: list[nn.Module] = []
    if config.blur_p > 0:
        kernel = blur_kernel_size(image_size)
        # A per-sample sigma and reflect padding, as torchvision's GaussianBlur.
        ops.append(K.RandomGaussianBlur((kernel, kernel), BLUR_SIGMA, border_type="reflect", p=config.blur_p))
    if config.solarize_p > 0:
        ops.append(RandomSolarize(config.solarize_p))
    return ops


def _to_unit_float(images: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if images.is_floating_point():
        return images.to(torch.float32)
    raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")


def _rgb(images: Tensor) -> Tensor:
    # After the crop: cropping a grayscale batch before repeating its channel is 3x cheaper.
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _register_normalisation(module: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Buffers for normalisation as one multiply-add: (x - mean) / std = x * (1 / std) + (-mean / std)."""
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need one value per RGB channel")
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    module.register_buffer("scale", 1.0 / std_t, persistent=False)
    module.register_buffer("shift", -mean_t / std_t, persistent=False)


def _normalise(module: nn.Module, images: Tensor) -> Tensor:
    """``images`` normalised in place (made contiguous first) with ``module``'s buffers."""
    images = images.contiguous()
    return images.mul_(on_device_of(module.scale, images)).add_(on_device_of(module.shift, images))


def _samplers_on_cpu(augmentation: nn.Module) -> Any:
    """``augmentation`` with its kornia parameter samplers moved back to the CPU."""
    for module in augmentation.modules():
        if isinstance(module, RandomGeneratorBase):
            module.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)
    return augmentation


def _head_key(config: ViewConfig) -> tuple[Any, ...]:
    return (config.crop_scale, config.flip_p, config.jitter, config.jitter_p, config.grayscale_p)


def _tail_key(config: ViewConfig) -> tuple[Any, ...]:
    return (config.blur_p, config.solarize_p)


class ViewPairAugmentation(nn.Module):
    """Two augmented, normalised views of a uint8 batch, computed on the batch's device.

    kind: "symmetric" or "asymmetric" (see :func:`view_pair_configs`), or an explicit pair of
    :class:`ViewConfig` (custom recipes; tests that switch single ops on and off).
    image_size: side S of the square views. mean, std: per-channel normalisation (3 values each).
    small_images: drop the blur; default ``image_size <= 96``.
    crop: False when the loader has already cropped the views to S x S (folder data): everything
    but the RandomResizedCrop is applied.

    ``forward(images, images_b=None)``: uint8 (B, C, H, W), C in {1, 3}, any H, W (S x S when
    crop=False; floats in [0, 1] are accepted too) -> two float32 (B, 3, S, S). ``images_b`` is
    the source of the second view when it differs (the loader's second crop); by default both
    views come from ``images``. Grayscale inputs get three equal channels.

    Ops the two views share (crop, flip, jitter, grayscale; for SimCLR all of them) run once on
    both views stacked as one 2B batch: half the per-op overhead and larger kernels.
    """

    def __init__(
        self,
        kind: str | tuple[ViewConfig, ViewConfig],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        small_images: bool | None = None,
        crop: bool = True,
    ) -> None:
        super().__init__()
        if small_images is None:
            small_images = image_size <= SMALL_IMAGE_MAX_SIDE
        if isinstance(kind, str):
            configs = view_pair_configs(kind, small_images)
        else:
            configs = tuple(kind)
            if len(configs) != 2:
                raise ValueError("kind must be a recipe name or a pair of ViewConfig")
            if small_images:
                configs = tuple(dataclasses.replace(c, blur_p=0.0) for c in configs)
        self.kind = kind if isinstance(kind, str) else "custom"
        self.mean, self.std = tuple(mean), tuple(std)
        self.configs: tuple[ViewConfig, ViewConfig] = configs  # type: ignore[assignment]
        self.image_size = image_size
        self.crop = crop
        config_a, config_b = self.configs
        self.shared_head = _head_key(config_a) == _head_key(config_b)
        self.shared_tail = _tail_key(config_a) == _tail_key(config_b)
        self.crops = nn.ModuleList(
            [RandomResizedCrop(image_size, c.crop_scale, flip_p=c.flip_p) for c in self.configs] if crop else []
        )
        self.heads = nn.ModuleList([nn.Sequential(*_colour_ops(c, flip=not crop)) for c in self.configs])
        self.tails = nn.ModuleList([nn.Sequential(*_tail_ops(c, image_size)) for c in self.configs])
        _register_normalisation(self, mean, std)

    def without_crop(self) -> ViewPairAugmentation:
        """The same views for inputs already cropped to S x S (the folder loader crops in workers)."""
        if not self.crop:
            return self
        twin = ViewPairAugmentation(self.configs, self.image_size, self.mean, self.std, small_images=False, crop=False)
        twin.kind = self.kind
        return twin.to(self.scale.device)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, image_size={self.image_size}, crop={self.crop}"

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> ViewPairAugmentation:
        # kornia's parameter samplers follow .to(device); keep them on the CPU so the random
        # stream (and so every augmentation drawn from a seed) does not depend on the device.
        return _samplers_on_cpu(super()._apply(fn, *args, **kwargs))

    def _crop(self, view: int, images: Tensor) -> Tensor:
        if self.crop:
            return self.crops[view](images)
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"crop=False needs {self.image_size}x{self.image_size} inputs, got {tuple(images.shape[-2:])}"
            )
        return images

    def forward(self, images: Tensor, images_b: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if images_b is not None and (images_b.shape != images.shape or images_b.dtype != images.dtype):
            raise ValueError("the two views' sources must have the same shape and dtype")
        source_b = images if images_b is None else images_b
        batch = images.shape[0]
        if self.shared_head:
            # Stack before converting: concatenating uint8 moves a quarter of the bytes.
            both = self._crop(0, _to_unit_float(torch.cat([images, source_b])))
            both = self.heads[0](_rgb(both))
            if self.shared_tail:
                both = self.tails[0](both)
            else:
                both = both.contiguous()
                for view, tail in enumerate(self.tails):
                    # Written back into the view's half: no copy of the half without ops.
                    half = both[view * batch : (view + 1) * batch]
                    if len(tail) and (out := tail(half)) is not half:
                        half.copy_(out)
        else:
            both = torch.cat(
                [
                    self.tails[view](self.heads[view](_rgb(self._crop(view, _to_unit_float(source)))))
                    for view, source in enumerate((images, source_b))
                ]
            )
        # ``both`` is a fresh tensor here (from cat or the crop), so normalising in place is
        # safe; _normalise's contiguous() materialises the one exception, an expanded grayscale batch.
        both = _normalise(self, both)
        return both[:batch], both[batch:]


@dataclass(frozen=True)
class LocalCrops:
    """Multi-crop's small views (Caron et al. 2020, SwAV, section 3.2): ``count`` crops of
    ``size`` x ``size`` pixels per image, each drawn from ``view`` (its ``crop_scale`` is the
    small crops' area range, e.g. (0.05, 0.14) with 224-pixel images)."""

    count: int
    size: int
    view: ViewConfig

    def __post_init__(self) -> None:
        for name in ("count", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"local_crops.{name} must be a positive whole number, got {value!r}")


def local_crops_of(fields: Mapping[str, Any]) -> LocalCrops | None:
    """The local crops a config stores (``count``, ``size`` and every ViewConfig field); None for none."""
    if not fields:
        return None
    fields = dict(fields)
    missing = [name for name in ("count", "size") if name not in fields]
    if missing:
        raise ValueError(f"local_crops needs {' and '.join(missing)}")
    count, size = fields.pop("count"), fields.pop("size")
    return LocalCrops(count, size, view_config(fields))


class LocalCropAugmentation(nn.Module):
    """The local views of a uint8 batch: ``count`` crops per image at ``size``, normalised.

    ``forward(images)`` -> a tuple of ``count`` float32 (B, 3, size, size) batches, the i-th
    holding every image's i-th crop. All crops of a step go through each op as one stacked batch
    (crops of one size share one distribution, as in the public SwAV and DINO pipelines).
    ``crop=False``: the loader has cut the crops (folder data); ``images`` is then the
    (count x B) crops at ``size``, every image's first crop, then every image's second, and so on.
    """

    def __init__(self, crops: LocalCrops, mean: Sequence[float], std: Sequence[float], crop: bool = True) -> None:
        super().__init__()
        self.crops = crops
        view = crops.view
        self.crop = RandomResizedCrop(crops.size, view.crop_scale, flip_p=view.flip_p) if crop else None
        self.ops = nn.Sequential(*_colour_ops(view, flip=not crop), *_tail_ops(view, crops.size))
        self.mean, self.std = tuple(mean), tuple(std)
        _register_normalisation(self, mean, std)

    def without_crop(self) -> LocalCropAugmentation:
        """The same views for crops the loader has already cut (folder data)."""
        return LocalCropAugmentation(self.crops, self.mean, self.std, crop=False).to(self.scale.device)

    def extra_repr(self) -> str:
        return f"count={self.crops.count}, size={self.crops.size}, crop_scale={self.crops.view.crop_scale}"

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> LocalCropAugmentation:
        return _samplers_on_cpu(super()._apply(fn, *args, **kwargs))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        count = self.crops.count
        if self.crop is None:
            size = (self.crops.size, self.crops.size)
            if images.shape[0] % count or images.shape[-2:] != size:
                raise ValueError(f"crop=False needs {count} x B crops of {size}, got {tuple(images.shape)}")
            crops = _to_unit_float(images)
        else:
            # Repeated before converting (uint8 moves a quarter of the bytes); crop i of image j at i * B + j.
            crops = self.crop(_to_unit_float(images.repeat(count, 1, 1, 1)))
        return _normalise(self, self.ops(_rgb(crops))).chunk(count)
