"""The folder pipeline's crops: torchvision's boxes, torchvision's pixels, reduced JPEG decoding.

Under one seed the boxes are exactly those of torchvision's RandomResizedCrop (the same random
calls on the same image size), and without reduced decoding the crops are its crops bit for
bit. With reduced decoding (JPEGs much larger than the view) each crop stays close to the
full-size one, and the crops' statistics follow torchvision's pipeline (tolerances of 4
standard errors, as in test_augment).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.functional import pil_to_tensor

from ssl_bench.data.augment import CROP_RATIO, LocalCropAugmentation, LocalCrops, ViewConfig, ViewPairAugmentation
from ssl_bench.data.folder import (
    EncodedSample,
    FolderCrops,
    collate_encoded,
    crop_views,
    decode_crops_on_device,
    draft_factor,
    draw_boxes,
)
from ssl_bench.data.images import FolderImages
from ssl_bench.data.loaders import TrainLoader

CPU = torch.device("cpu")
SCALES = [(0.08, 1.0), (0.2, 1.0)]
OFF = ViewConfig((0.08, 1.0), 0.0, (0.0, 0.0, 0.0, 0.0), 0.0, 0.0, 0.0, 0.0)


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Red grows left to right, green top to bottom, blue a smooth random field: a crop's mean
    colour says where it was cut and how large it was."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    field = np.random.default_rng(seed).integers(0, 256, (4, 5), dtype=np.uint8)
    blue = np.asarray(Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    return Image.fromarray(np.stack([x, y, blue], axis=-1).astype(np.uint8))


@pytest.fixture
def jpeg_folder(tmp_path) -> FolderImages:
    """Eight large JPEGs (much larger than the 32 px views: the decoder can reduce them), two classes."""
    samples = []
    for index in range(8):
        path = tmp_path / f"{index}.jpg"
        gradient_image(900 + 40 * index, 700 - 20 * index, seed=index).save(path, quality=90)
        samples.append((str(path), index % 2))
    return FolderImages(samples, ["a", "b"])


def torchvision_crops(image: Image.Image, seed: int, size: int) -> list[torch.Tensor]:
    """The classic pipeline's crops under ``seed``: RandomResizedCrop on the decoded RGB image."""
    torch.manual_seed(seed)
    return [
        pil_to_tensor(RandomResizedCrop(size, scale=scale, ratio=CROP_RATIO, antialias=True)(image)) for scale in SCALES
    ]


def test_boxes_are_torchvisions_without_decoding(jpeg_folder):
    image = jpeg_folder.open(0)
    torch.manual_seed(3)
    boxes = draw_boxes(image, SCALES)
    assert image.tile  # drawn from the header alone: not decoded yet
    decoded = image.convert("RGB")
    torch.manual_seed(3)
    expected = [tuple(RandomResizedCrop.get_params(decoded, list(s), list(CROP_RATIO))) for s in SCALES]
    assert boxes == expected


def test_draft_factor_keeps_every_box_at_least_the_view_size():
    assert draft_factor([(0, 0, 500, 700), (0, 0, 900, 300)], 32) == 8
    assert draft_factor([(0, 0, 500, 700), (0, 0, 900, 250)], 32) == 4  # 250 < 8 x 32
    assert draft_factor([(0, 0, 100, 100)], 64) == 1
    assert draft_factor([(0, 0, 128, 200)], 64) == 2


def test_without_reduction_crops_are_torchvisions_bit_for_bit(tmp_path):
    # PNG: never reduced. A palette image also checks that only the crop is converted to RGB.
    path = tmp_path / "image.png"
    gradient_image(90, 70).quantize(64).save(path)
    data = FolderImages([(str(path), 0)], ["a"])
    for seed in range(5):
        torch.manual_seed(seed)
        crops = crop_views(data.open(0), draw_boxes(data.open(0), SCALES), 24)
        reference = torchvision_crops(Image.open(path).convert("RGB"), seed, 24)
        assert all(torch.equal(c, r) for c, r in zip(crops, reference))


def test_reduced_decoding_stays_close_to_full_decoding(jpeg_folder):
    differences = []
    reductions = []
    for index in range(len(jpeg_folder)):
        for seed in range(6):
            image = jpeg_folder.open(index)
            torch.manual_seed(seed)
            boxes = draw_boxes(image, SCALES)
            reductions.append(draft_factor(boxes, 32))
            crops = crop_views(image, boxes, 32)
            reference = torchvision_crops(jpeg_folder[index][0], seed, 32)
            differences += [(c.float() - r.float()).abs().mean().item() for c, r in zip(crops, reference)]
    assert max(reductions) >= 4 and min(reductions) >= 2  # the decoder did reduce these
    # Same boxes, so the crops show the same content: a wrong box mapping (off by the
    # reduction factor) moves a gradient crop by tens of levels.
    assert float(np.mean(differences)) < 2.0 and max(differences) < 5.0


def test_crop_statistics_follow_torchvisions_pipeline(tmp_path):
    """Independent seeds on both sides: the crops' mean red (horizontal position) and spreads of
    red and green (crop width and height) have torchvision's means within 4 standard errors."""
    path = tmp_path / "wide.jpg"
    gradient_image(800, 600).save(path, quality=92)
    data = FolderImages([(str(path), 0)], ["a"])
    full = Image.open(path).convert("RGB")
    ours, theirs = [], []
    n = 200
    for seed in range(n):
        torch.manual_seed(seed)
        image = data.open(0)
        ours += crop_views(image, draw_boxes(image, SCALES), 32)
        theirs += torchvision_crops(full, 10_000 + seed, 32)
    statistics = {
        "mean red": lambda c: c[0].float().mean(),
        "red spread": lambda c: c[0].float().std(),
        "green spread": lambda c: c[1].float().std(),
    }
    for name, statistic in statistics.items():
        a = torch.stack([statistic(c) for c in ours])
        b = torch.stack([statistic(c) for c in theirs])
        tolerance = 4 * math.sqrt((a.var() + b.var()).item() / len(a))
        assert abs(a.mean() - b.mean()).item() <= tolerance, name


def test_loader_on_jpegs_resumes_exactly_and_ignores_workers(jpeg_folder):
    def batches(num_workers: int, start_batch: int = 0):
        augmentation = ViewPairAugmentation("symmetric", 32, (0.5,) * 3, (0.25,) * 3)
        loader = TrainLoader(jpeg_folder, augmentation, 3, seed=7, device=CPU, num_workers=num_workers)
        return [batch[:3] for batch in loader.epoch(1, start_batch=start_batch)]

    full = batches(0)
    assert len(full) == 2 and full[0][0].shape == (3, 3, 32, 32)
    for a, b in zip(batches(2), full):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    (resumed,) = batches(0, start_batch=1)
    assert all(torch.equal(x, y) for x, y in zip(resumed, full[1]))


def test_loader_crops_are_the_classic_crops(jpeg_folder):
    """Crop-only views through TrainLoader equal FolderCrops' boxes applied by hand (a sample's
    crops depend on its own seed only), and differ from epoch to epoch."""
    samples = [(path, index) for index, (path, _) in enumerate(jpeg_folder.samples)]
    data = FolderImages(samples, jpeg_folder.classes)
    loader = TrainLoader(data, ViewPairAugmentation((OFF, OFF), 32, (0.0,) * 3, (1.0,) * 3), 8, seed=1, device=CPU)
    view_a, view_b, labels, _ = next(iter(loader.epoch(0)))
    crops = loader._two_crops
    for row, index in enumerate(labels.tolist()):
        crop_a, crop_b, _ = crops[(index, 0)]
        torch.testing.assert_close(view_a[row], crop_a.float() / 255, atol=1e-6, rtol=0)
        torch.testing.assert_close(view_b[row], crop_b.float() / 255, atol=1e-6, rtol=0)
    again_a, _, again_labels, _ = next(iter(loader.epoch(1)))
    assert not torch.equal(view_a[labels.argsort()], again_a[again_labels.argsort()])


# ---------------------------------------------------------------------------------------------
# GPU decoding: everything but nvJPEG itself runs here with PIL as the decoder
# ---------------------------------------------------------------------------------------------


def pil_decode(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    import io

    images = [Image.open(io.BytesIO(bytes(e.numpy()))).convert("RGB") for e in encoded]
    return [pil_to_tensor(image).to(device) for image in images]


def test_encoded_samples_carry_the_same_boxes_and_decode_to_close_crops(jpeg_folder, tmp_path):
    png = tmp_path / "small.png"
    gradient_image(200, 150).save(png)
    data = FolderImages([*jpeg_folder.samples[:3], (str(png), 1)], ["a", "b"])
    seed = lambda index, epoch: 100 * epoch + index  # noqa: E731
    on_cpu = FolderCrops(data, 32, SCALES, seed)
    encoded = FolderCrops(data, 32, SCALES, seed, on_device=True)
    samples, labels = collate_encoded([encoded[(index, 2)] for index in range(len(data))])
    assert labels.tolist() == [0, 1, 0, 1]
    assert [s.crops is None for s in samples] == [True, True, True, False]  # the PNG is decoded in the worker
    assert all(s.encoded.numel() == 0 for s in samples[3:])
    crops = decode_crops_on_device(samples, 32, CPU, decode=pil_decode)
    assert crops.shape == (2, 4, 3, 32, 32) and crops.dtype == torch.float32
    for index, sample in enumerate(samples):
        crop_a, crop_b, _ = on_cpu[(index, 2)]
        assert isinstance(sample, EncodedSample)
        for view, reference in enumerate((crop_a, crop_b)):
            # The same box; the resize differs (torch's antialiased bilinear on the full image
            # vs PIL's on the reduced one), the content does not.
            difference = (crops[view, index] * 255 - reference.float()).abs().mean().item()
            assert difference < 3.0, (index, view, difference)


def test_custom_loaders_are_never_bypassed(jpeg_folder):
    data = FolderImages(jpeg_folder.samples, jpeg_folder.classes, loader=lambda path: Image.open(path).convert("L"))
    crops = FolderCrops(data, 16, SCALES, lambda index, epoch: index, on_device=True)
    assert not crops.on_device
    crop_a, _, _ = crops[(0, 0)]
    assert torch.equal(crop_a[0], crop_a[1])  # the loader's grayscale, repeated to RGB


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decoding_matches_cpu_crops_and_resumes_exactly(jpeg_folder):
    cuda = torch.device("cuda")

    def batches(device: torch.device, on_device: bool, start_batch: int = 0):
        augmentation = ViewPairAugmentation((OFF, OFF), 32, (0.0,) * 3, (1.0,) * 3).to(device)
        loader = TrainLoader(jpeg_folder, augmentation, 4, seed=3, device=device, decode_on_device=on_device)
        assert loader._two_crops.on_device == on_device
        return [batch[:3] for batch in loader.epoch(0, start_batch=start_batch)]

    gpu, cpu = batches(cuda, True), batches(CPU, False)
    for (ga, gb, gl), (ca, cb, cl) in zip(gpu, cpu):
        assert ga.device.type == "cuda" and torch.equal(gl.cpu(), cl)
        for g, c in ((ga, ca), (gb, cb)):
            assert (g.cpu() - c).abs().mean().item() < 3.0 / 255
    (resumed,) = batches(cuda, True, start_batch=1)
    assert all(torch.equal(x, y) for x, y in zip(resumed, gpu[1]))


def test_folder_data_gets_its_small_crops_cut_in_the_workers(jpeg_folder):
    pair = ViewPairAugmentation((OFF, OFF), 32, (0.5,) * 3, (0.25,) * 3)
    local = LocalCropAugmentation(
        LocalCrops(2, 12, dataclasses.replace(OFF, crop_scale=(0.05, 0.2))), (0.5,) * 3, (0.25,) * 3
    )

    def batches(num_workers: int):
        loader = TrainLoader(jpeg_folder, pair, 3, seed=7, device=CPU, num_workers=num_workers, local_crops=local)
        return list(loader.epoch(0))

    in_process, in_workers = batches(0), batches(2)
    assert len(in_process[0].local_views) == 2 and in_process[0].local_views[0].shape == (3, 3, 12, 12)
    for a, b in zip(in_process, in_workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.local_views, b.local_views, strict=True))
