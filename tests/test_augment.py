"""Batched view augmentations: each op against torchvision's, and each recipe's distribution.

Statistical tests use fixed seeds and inputs engineered so that one op is detectable exactly
(a flip reverses a left/right step, grayscale makes channels equal, solarize turns 0.8 into 0.2,
blur spreads an impulse), and their tolerances are 4 binomial standard deviations, so a wrong
probability (say 0.5 instead of 0.2) fails while the right one passes for any seed.
"""

from __future__ import annotations

import dataclasses
import math

import kornia.augmentation as K
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF

from ssl_bench.data import augment as A
from ssl_bench.data import ops
from ssl_bench.data.augment import ViewConfig, ViewPairAugmentation, view_pair_configs
from ssl_bench.errors import UsageError

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)
OFF = ViewConfig((1.0, 1.0), 0.0, (0.0, 0.0, 0.0, 0.0), 0.0, 0.0, 0.0, 0.0)


def unnormalise(view: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return view * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


def assert_rate(hits: torch.Tensor, p: float, what: str) -> None:
    """The fraction of True in ``hits`` is p within 4 binomial standard deviations."""
    n = hits.numel()
    rate = hits.float().mean().item()
    tolerance = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) <= tolerance, f"{what}: rate {rate:.4f}, expected {p} +- {tolerance:.4f} (n={n})"


def constant_images(n: int, rgb: tuple[int, int, int], size: int = 32) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, size, size).contiguous()


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------


def test_recipe_tables():
    a, b = view_pair_configs("symmetric", small_images=False)
    assert a == b == ViewConfig((0.08, 1.0), 0.5, (0.8, 0.8, 0.8, 0.2), 0.8, 0.2, 0.5, 0.0)
    a, b = view_pair_configs("asymmetric", small_images=False)
    assert (a.jitter, a.jitter_p, a.grayscale_p, a.crop_scale) == ((0.4, 0.4, 0.2, 0.1), 0.8, 0.2, (0.08, 1.0))
    assert (a.blur_p, a.solarize_p, b.blur_p, b.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    for kind in A.KINDS:
        assert all(c.blur_p == 0.0 for c in view_pair_configs(kind, small_images=True))
    with pytest.raises(UsageError, match="did you mean 'asymmetric'"):
        view_pair_configs("asymetric", small_images=True)
    assert [A.blur_kernel_size(s) for s in (224, 160, 128, 32, 4)] == [23, 17, 13, 13, 7]


def test_small_images_default_drops_blur():
    assert not any(
        isinstance(m, K.RandomGaussianBlur) for m in ViewPairAugmentation("asymmetric", 96, MEAN, STD).modules()
    )
    big = ViewPairAugmentation("asymmetric", 224, MEAN, STD)
    blurs = [m for m in big.modules() if isinstance(m, K.RandomGaussianBlur)]
    assert [m.p for m in blurs] == [1.0, 0.1]
    assert blurs[0].flags["kernel_size"] == (23, 23)


# ---------------------------------------------------------------------------------------------
# Functional ops against torchvision (the recipes' reference semantics)
# ---------------------------------------------------------------------------------------------


def _colour_batch(n: int = 48) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.rand(n, 3, 12, 10)
    x[:4] = x[:4, :1]  # gray images
    x[4:8] = (x[4:8] * 4).round() / 4  # ties between channels, exact 0 and 1
    return x


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
def test_colour_ops_match_torchvision(name):
    x = _colour_batch()
    factors = torch.rand(x.shape[0]) - 0.5 if name == "hue" else torch.rand(x.shape[0]) * 1.8 + 0.1
    ours = getattr(ops, f"adjust_{name}")(x, factors)
    reference = torch.stack([getattr(TF, f"adjust_{name}")(img, f.item()) for img, f in zip(x, factors)])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_luma_and_solarize_match_torchvision():
    x = _colour_batch()
    torch.testing.assert_close(ops.luma(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    every_value = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    reference = TF.solarize(every_value, 128).float() / 255  # Solarize(threshold=128) on uint8
    torch.testing.assert_close(ops.solarize(every_value.float() / 255), reference, atol=1e-6, rtol=0)
    # kornia's RandomSolarize gives the same only when its threshold and addition ranges are
    # both zero-width (its defaults draw the threshold from (0.4, 0.6) and add an offset).
    kornia_exact = K.RandomSolarize(thresholds=0.0, additions=0.0, p=1.0)
    torch.testing.assert_close(kornia_exact(every_value.float() / 255), reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [8, 20, 37])
def test_resized_crop_matches_torchvision(size):
    torch.manual_seed(1)
    images = torch.rand(6, 3, 30, 24)
    boxes = torch.tensor([[0, 0, 24, 30], [3, 5, 10, 12], [10, 2, 14, 28], [0, 0, 1, 1], [23, 29, 1, 1], [4, 9, 17, 8]])
    ours = ops.resized_crop(images, boxes.float(), size)
    reference = torch.stack(
        [
            TF.resized_crop(
                img, top=int(t), left=int(l), height=int(h), width=int(w), size=[size, size], antialias=True
            )
            for img, (l, t, w, h) in zip(images, boxes)
        ]
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    # The flip folded into the column weights is RandomHorizontalFlip after the crop.
    flip = torch.tensor([True, False, True, True, False, True])
    flipped = torch.where(flip.view(-1, 1, 1, 1), TF.horizontal_flip(reference), reference)
    torch.testing.assert_close(ops.resized_crop(images, boxes.float(), size, flip), flipped, atol=1e-5, rtol=0)


def test_crop_boxes_follow_torchvision_distribution():
    """Boxes inside the image, area and aspect ratio in range, distribution as torchvision's sampler."""
    torch.manual_seed(2)
    n, height, width = 4000, 40, 30
    boxes = A.RandomResizedCrop(16, (0.08, 1.0)).sample_boxes(torch.Size((n, 3, height, width)))
    left, top, w, h = boxes.unbind(1)
    assert (left >= 0).all() and (top >= 0).all() and (left + w <= width).all() and (top + h <= height).all()
    area = w * h / (height * width)
    # w and h are rounded to whole pixels, which can take a box a little outside the ranges.
    assert area.min() >= 0.08 * 0.8 and area.max() <= 1.0
    assert (w / h).min() >= 0.75 * 0.85 and (w / h).max() <= 4 / 3 * 1.15
    reference = torch.tensor(
        [
            T.RandomResizedCrop.get_params(torch.empty(1, height, width), [0.08, 1.0], [3 / 4, 4 / 3])[2:]
            for _ in range(n)
        ],
        dtype=torch.float32,
    )
    ref_area = reference[:, 0] * reference[:, 1] / (height * width)
    tolerance = 4 * math.sqrt((area.var() + ref_area.var()).item() / n)
    assert abs(area.mean() - ref_area.mean()) <= tolerance
    ref_log_ratio = (reference[:, 1] / reference[:, 0]).log()
    log_ratio = (w / h).log()
    log_ratio_tolerance = 4 * math.sqrt((log_ratio.var() + ref_log_ratio.var()).item() / n)
    assert abs(log_ratio.mean() - ref_log_ratio.mean()) <= log_ratio_tolerance


# ---------------------------------------------------------------------------------------------
# The pipeline: shapes, normalisation, grayscale inputs, seeding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", A.KINDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes_and_dtype(kind, channels):
    aug = ViewPairAugmentation(kind, 24, MEAN, STD)
    images = torch.randint(0, 256, (5, channels, 40, 36), dtype=torch.uint8)
    view_a, view_b = aug(images)
    for view in (view_a, view_b):
        assert view.shape == (5, 3, 24, 24) and view.dtype == torch.float32 and view.device == images.device
        assert torch.isfinite(view).all()
    assert not torch.equal(view_a, view_b)


def test_crop_false_takes_ready_crops_and_checks_their_size():
    aug = ViewPairAugmentation("asymmetric", 16, MEAN, STD, crop=False)
    first = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    second = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    view_a, view_b = aug(first, second)
    assert view_a.shape == view_b.shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="16x16"):
        aug(torch.zeros(4, 3, 20, 20, dtype=torch.uint8))


@pytest.mark.parametrize("crop", [True, False])
def test_constant_image_normalisation_when_no_op_fires(crop):
    rgb = (10, 128, 250)
    aug = ViewPairAugmentation((OFF, OFF), 16, MEAN, STD, crop=crop)
    for view in aug(constant_images(3, rgb, size=20 if crop else 16)):
        expected = (torch.tensor(rgb) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
        torch.testing.assert_close(view, expected.view(1, 3, 1, 1).expand_as(view), atol=1e-6, rtol=0)


def test_grayscale_input_gives_three_equal_channels():
    images = torch.randint(0, 256, (64, 1, 20, 20), dtype=torch.uint8)
    # Without any op the channels are the input itself; with the full recipe they stay equal
    # (every colour op maps a gray image to a gray image).
    plain = ViewPairAugmentation((OFF, OFF), 20, (0.5,) * 3, (0.25,) * 3, crop=False)(images)[0]
    torch.testing.assert_close(plain * 0.25 + 0.5, images.expand(-1, 3, -1, -1) / 255, atol=1e-6, rtol=0)
    for view in ViewPairAugmentation("symmetric", 16, (0.5,) * 3, (0.25,) * 3)(images):
        assert (view.amax(1) - view.amin(1)).abs().max() < 1e-6


def test_seeded_calls_repeat_and_views_differ():
    aug = ViewPairAugmentation("asymmetric", 16, MEAN, STD)
    images = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    torch.manual_seed(3)
    first = aug(images)
    torch.manual_seed(3)
    second = aug(images)
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(*first)


# ---------------------------------------------------------------------------------------------
# Recipe distributions, one op made detectable at a time
# ---------------------------------------------------------------------------------------------


def _half_dark_half_bright(n: int, size: int = 16) -> torch.Tensor:
    images = torch.full((n, 1, size, size), 50, dtype=torch.uint8)
    images[..., size // 2 :] = 200
    return images


@pytest.mark.parametrize("crop", [True, False])
def test_flip_rate(crop):
    """Full SimCLR recipe (whole-image crop): colour ops keep a gray image's left/right order."""
    torch.manual_seed(4)
    config = dataclasses.replace(view_pair_configs("symmetric", small_images=True)[0], crop_scale=(1.0, 1.0))
    aug = ViewPairAugmentation((config, config), 16, MEAN, STD, crop=crop)
    n = 1000
    views = torch.cat(aug(_half_dark_half_bright(n)))
    left, right = views[..., :8].mean(dim=(1, 2, 3)), views[..., 8:].mean(dim=(1, 2, 3))
    assert ((left - right).abs() > 0.1).all()  # every sample is unambiguous
    assert_rate(left > right, config.flip_p, "flip")


@pytest.mark.parametrize("kind", A.KINDS)
def test_grayscale_rate(kind):
    """Colourful input through the full recipe: only grayscale can make the channels equal.

    Jitter cannot: saturation and contrast factors are >= 0.2 and brightness >= 0.2, so
    channels 30 and 200 apart never meet.
    """
    torch.manual_seed(5)
    n = 1000
    images = torch.zeros(n, 3, 24, 24, dtype=torch.uint8)
    stripes = torch.tensor([[200, 30, 60], [30, 200, 60], [60, 30, 200]], dtype=torch.uint8)
    for i, colour in enumerate(stripes):
        images[:, :, :, i * 8 : (i + 1) * 8] = colour.view(1, 3, 1, 1)
    views = unnormalise(torch.cat(ViewPairAugmentation(kind, 16, MEAN, STD)(images)))
    channel_spread = (views.amax(1) - views.amin(1)).amax(dim=(1, 2))
    assert_rate(channel_spread < 1e-5, 0.2, f"{kind} grayscale")


def test_jitter_rate_and_factor_ranges():
    torch.manual_seed(6)
    jitter = A.RandomColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8)
    params = jitter.sample_params(20000)
    apply, factors = params["apply"], params["factors"]
    assert_rate(apply, 0.8, "jitter gate")
    assert (factors[~apply] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()
    applied = factors[apply]
    for column, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
        values = applied[:, column]
        assert values.min() >= lo and values.max() <= hi
        assert values.min() < lo + 0.01 and values.max() > hi - 0.01  # spans the whole range
    assert sorted(params["order"].tolist()) == [0, 1, 2, 3]
    # Through the pipeline: the fraction of changed samples is the gate's probability.
    config = dataclasses.replace(OFF, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8)
    images = torch.randint(0, 256, (1000, 3, 8, 8), dtype=torch.uint8)
    views = torch.cat(ViewPairAugmentation((config, config), 8, MEAN, STD, crop=False)(images))
    changed = (unnormalise(views) - images.repeat(2, 1, 1, 1) / 255).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert_rate(changed, 0.8, "jitter through the pipeline")


def test_solarize_rate_per_view():
    """VICReg: view a never solarized, view b with p 0.2; a 0.8 gray image turns into 0.2."""
    torch.manual_seed(7)
    a, b = (dataclasses.replace(c, jitter_p=0.0) for c in view_pair_configs("asymmetric", small_images=True))
    aug = ViewPairAugmentation((a, b), 16, MEAN, STD)
    n = 1000
    view_a, view_b = (unnormalise(v) for v in aug(constant_images(n, (204, 204, 204))))
    # (1e-3: torchvision's luma weights sum to 0.9999, so grayscale moves 0.8 by 8e-5.)
    assert torch.allclose(view_a, torch.tensor(0.8), atol=1e-3)
    solarized = view_b.mean(dim=(1, 2, 3)) < 0.5
    torch.testing.assert_close(view_b[solarized], torch.full_like(view_b[solarized], 0.2), atol=1e-3, rtol=0)
    assert_rate(solarized, 0.2, "solarize view b")


def _impulses(n: int, size: int) -> torch.Tensor:
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[:, :, size // 2, size // 2] = 255
    return images


def _blur_sigmas(views: torch.Tensor, size: int) -> torch.Tensor:
    """Per sample: the sigma of the Gaussian that spread the impulse, 0 where it was not blurred.

    The output is the (flipped or not) 2-D kernel itself; the ratio of a neighbour of the centre
    to the centre is exp(-1 / (2 sigma^2)). Unblurred impulses have exactly zero neighbours.
    """
    channel = views[:, 0].double()
    centre_col = channel[:, size // 2].argmax(dim=1)  # the flip moves the impulse by one column
    rows = torch.arange(len(channel))
    centre = channel[rows, size // 2, centre_col]
    neighbour = channel[rows, size // 2 + 1, centre_col]  # one row down: unaffected by the flip
    ratio = (neighbour / centre).clamp_min(1e-300)
    return torch.where(neighbour > 0, torch.sqrt(-1.0 / (2.0 * ratio.log())), torch.zeros_like(ratio))


def _blur_views(configs: tuple[ViewConfig, ViewConfig], n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur-only views (mean 0, std 1: exact values) of impulse images, crop disabled."""
    aug = ViewPairAugmentation(configs, size, (0.0,) * 3, (1.0,) * 3, small_images=False, crop=False)
    return aug(_impulses(n, size))


def _vicreg_blur_configs() -> tuple[ViewConfig, ViewConfig]:
    a, b = view_pair_configs("asymmetric", small_images=False)
    return dataclasses.replace(a, jitter_p=0.0, solarize_p=0.0), dataclasses.replace(b, jitter_p=0.0, solarize_p=0.0)


def test_blur_at_224():
    """The 224 px recipe: view a always blurred, with sigma in (0.1, 2) and a 23-pixel kernel."""
    torch.manual_seed(8)
    view_a, view_b = _blur_views(_vicreg_blur_configs(), 24, 224)
    sigma_a = _blur_sigmas(view_a, 224)
    assert (sigma_a > 0).all()
    assert sigma_a.min() >= 0.1 - 1e-3 and sigma_a.max() <= 2.0 + 1e-3
    assert (_blur_sigmas(view_b, 224) > 0).float().mean() < 0.5
    # The kernel (23 taps) reaches 11 pixels either side of the impulse, and no further.
    widest = view_a[sigma_a.argmax(), 0, 112]
    centre = int(widest.argmax())
    assert widest[centre - 11] > 0 and widest[centre + 11] > 0
    assert widest[centre - 12] == 0 and widest[centre + 12] == 0


def test_blur_rates_and_sigma_distribution():
    """The same recipe at 48 px (cheap, many samples): rates 1.0 / 0.1 and sigma ~ U(0.1, 2)."""
    torch.manual_seed(11)
    view_a, view_b = _blur_views(_vicreg_blur_configs(), 1000, 48)
    sigma_a = _blur_sigmas(view_a, 48)
    assert (sigma_a > 0).all()
    assert sigma_a.min() >= 0.1 - 1e-3 and sigma_a.max() <= 2.0 + 1e-3
    assert sigma_a.min() < 0.2 and sigma_a.max() > 1.9
    # Uniform(0.1, 2): mean 1.05, standard deviation 1.9 / sqrt(12).
    assert abs(sigma_a.mean() - 1.05) <= 4 * 1.9 / math.sqrt(12 * len(sigma_a))
    assert_rate(_blur_sigmas(view_b, 48) > 0, 0.1, "blur view b")


def test_no_blur_for_small_images():
    torch.manual_seed(9)
    a, b = (dataclasses.replace(c, jitter_p=0.0, solarize_p=0.0) for c in view_pair_configs("asymmetric", False))
    views = ViewPairAugmentation((a, b), 64, (0.0,) * 3, (1.0,) * 3, crop=False)(_impulses(32, 64))
    assert all((_blur_sigmas(v, 64) == 0).all() for v in views)


def test_crop_area_through_the_pipeline():
    """Crop a coordinate image (R = 8 x column, G = 8 x row) and read each crop box back."""
    torch.manual_seed(10)
    n, side, size = 400, 32, 64  # upsampling: interior pixels interpolate coordinates exactly
    coords = torch.arange(side, dtype=torch.uint8) * 8
    images = torch.zeros(n, 3, side, side, dtype=torch.uint8)
    images[:, 0] = coords.view(1, side)
    images[:, 1] = coords.view(side, 1)
    config = dataclasses.replace(OFF, crop_scale=(0.08, 1.0))
    views = torch.cat(ViewPairAugmentation((config, config), size, (0.0,) * 3, (1.0,) * 3)(images)) * 255 / 8
    i, j = 8, size - 9  # far enough from the borders for any crop of the scale range
    width = (views[:, 0, size // 2, j] - views[:, 0, size // 2, i]) * size / (j - i)
    height = (views[:, 1, j, size // 2] - views[:, 1, i, size // 2]) * size / (j - i)
    torch.testing.assert_close(width, width.round(), atol=1e-2, rtol=0)  # whole pixels
    area = width.round() * height.round() / side**2
    assert area.min() >= 0.08 * 0.8 and area.max() <= 1.0
    assert area.min() < 0.15 and area.max() > 0.8  # spans the range
    left = views[:, 0, size // 2, i] - (width / size) * (i + 0.5) + 0.5
    assert left.min() > -1e-2 and (left + width).max() < side + 1e-2
