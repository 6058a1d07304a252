"""Training crops of image files (ImageNet folders), decoding only what the crops need.

The classic pipeline (torchvision's ImageFolder + ``RandomResizedCrop``) decodes every JPEG at
full size, converts it, and then cuts each view out of it. Here, per sample:

1. the file is opened, not decoded: its size is in the header;
2. both crop boxes are drawn on that size with torchvision's own sampler
   (``RandomResizedCrop.get_params``, the same random calls in the same order), so under the
   same seed they are the boxes the classic pipeline draws, in the original image's pixels;
3. the JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (PIL's ``Image.draft``,
   libjpeg's scaled IDCT) whenever both boxes still keep at least ``size`` pixels on each side
   at that scale, so the resize after it still shrinks, as it would from the full image;
4. each box, mapped onto the decoded image, is cropped, converted to RGB (the crop only) and
   resized with PIL's antialiased bilinear filter; at full scale this is exactly
   torchvision's ``resized_crop`` on PIL images;
5. the crops stay uint8 (3, S, S) until the device: a quarter of the bytes of float32 to
   collate, pin and copy.

Files that are not JPEGs, or images a custom loader returns already decoded, skip step 3.

:class:`FolderCrops` is that per-sample work as a Dataset for DataLoader workers, each sample's
boxes drawn under its own seed. With ``on_device=True`` (CUDA) it moves steps 3-4 to the GPU:
the workers only read the file's bytes and draw the boxes (:class:`EncodedSample`), and
:func:`decode_crops_on_device` decodes the batch's JPEGs together with nvJPEG
(``torchvision.io.decode_jpeg(device="cuda")``) and crops them there with the antialiased
bilinear resize of the batched ops. Only JPEGs in RGB or grayscale go that way; anything else is
decoded in the worker as above.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.functional import pil_to_tensor

from ssl_bench.data.augment import CROP_RATIO
from ssl_bench.data.images import FolderImages
from ssl_bench.data.ops import resized_crop

__all__ = [
    "EncodedSample",
    "FolderCrops",
    "collate_encoded",
    "crop_views",
    "decode_crops_on_device",
    "draft_factor",
    "draw_boxes",
    "gpu_decodable",
]

# libjpeg's scaled decoding as PIL exposes it: 1/2, 1/4, 1/8.
_DRAFT_FACTORS = (8, 4, 2)

Box = tuple[int, int, int, int]  # (top, left, height, width), torchvision's order


def draw_boxes(image: Image.Image, scales: Sequence[tuple[float, float]]) -> list[Box]:
    """One RandomResizedCrop box per scale range, from torch's global generator.

    Exactly torchvision's ``RandomResizedCrop.get_params`` on ``image`` (which needs only its
    size, so a file that is opened but not decoded will do): a seeded call gives the classic
    pipeline's boxes.
    """
    return [tuple(RandomResizedCrop.get_params(image, list(scale), list(CROP_RATIO))) for scale in scales]


def draft_factor(boxes: Sequence[Box], size: int) -> int:
    """The largest JPEG reduction (1, 2, 4 or 8) that leaves every box >= ``size`` on each side."""
    shortest = min(min(height, width) for _, _, height, width in boxes)
    for factor in _DRAFT_FACTORS:
        if shortest >= factor * size:
            return factor
    return 1


def _decode_reduced(image: Image.Image, factor: int) -> float:
    """Ask the JPEG decoder for 1/factor scale; returns the scale it will decode at (1 if none)."""
    if factor == 1:
        return 1.0
    width, height = image.size
    drafted = image.draft("RGB", (width // factor, height // factor))
    if drafted is None:  # not a JPEG, or already decoded
        return 1.0
    _, (_, _, reduced_width, _) = drafted
    return width / reduced_width


def _resized_crop(image: Image.Image, box: Box, scale: float, size: int) -> Tensor:
    """``box`` (original pixels) of ``image`` (decoded at 1/scale) as uint8 (3, size, size)."""
    top, left, height, width = (value / scale for value in box)
    x0, y0 = math.floor(left), math.floor(top)
    x1 = min(math.ceil(left + width), image.width)
    y1 = min(math.ceil(top + height), image.height)
    # Crop first (pixels outside the box never enter the filter, as in torchvision), convert
    # only the crop, then resize the box's exact extent within it (fractional when reduced).
    region = image.crop((x0, y0, x1, y1))
    if region.mode != "RGB":
        region = region.convert("RGB")
    inner = (left - x0, top - y0, left - x0 + width, top - y0 + height)
    return pil_to_tensor(region.resize((size, size), Image.Resampling.BILINEAR, box=inner))


def crop_views(
    image: Image.Image, boxes: Sequence[Box], size: int, local_boxes: Sequence[Box] = (), local_size: int = 0
) -> list[Tensor]:
    """The boxes of ``image`` as uint8 (3, size, size) crops, then ``local_boxes`` as uint8
    (3, local_size, local_size) ones (multi-crop), decoding no more than they all need.

    ``image`` is best opened but not yet decoded (``PIL.Image.open``): a JPEG is then decoded
    once, at the largest reduction :func:`draft_factor` allows for every box at its size. The
    boxes are in the original image's pixels.
    """
    factor = draft_factor(boxes, size)
    if local_boxes:
        factor = min(factor, draft_factor(local_boxes, local_size))
    scale = _decode_reduced(image, factor)
    return [_resized_crop(image, box, scale, size) for box in boxes] + [
        _resized_crop(image, box, scale, local_size) for box in local_boxes
    ]


# --------------------------------------------------------------------------------------------
# GPU decoding


def gpu_decodable(image: Image.Image) -> bool:
    """A JPEG that nvJPEG decodes to RGB as PIL would: baseline or progressive, RGB or grayscale."""
    return image.format == "JPEG" and image.mode in ("RGB", "L")


@dataclass
class EncodedSample:
    """What a worker hands over for GPU decoding: the file's bytes and the crop boxes.

    ``encoded``: (N,) uint8, the JPEG file; ``boxes``: (V, 4) int64 (top, left, height, width)
    in the original image's pixels. When the file is not GPU-decodable, ``crops`` holds the
    views decoded in the worker instead, uint8 (V, 3, S, S), and ``encoded`` is empty.
    """

    encoded: Tensor
    boxes: Tensor
    crops: Tensor | None = None


def decode_crops_on_device(
    samples: Sequence[EncodedSample],
    size: int,
    device: torch.device,
    decode: Callable[[list[Tensor], torch.device], list[Tensor]] | None = None,
) -> Tensor:
    """Float (V, B, 3, size, size) crops in [0, 1] on ``device`` from a batch of encoded samples.

    The batch's JPEGs are decoded in one call (``decode``: nvJPEG through
    ``torchvision.io.decode_jpeg`` by default), and each image's boxes are cut and resized
    together by :func:`ssl_bench.data.ops.resized_crop` (antialiased bilinear); crops decoded
    in the worker are used as they are.
    """
    decode = decode or _decode_jpeg_batch
    encoded = [sample.encoded for sample in samples if sample.crops is None]
    decoded = iter(decode(encoded, device) if encoded else [])
    views = samples[0].boxes.shape[0]
    out = torch.empty(views, len(samples), 3, size, size, device=device)
    for index, sample in enumerate(samples):
        if sample.crops is not None:
            out[:, index] = sample.crops.to(device, non_blocking=True).float().div_(255.0)
            continue
        image = next(decoded).float().div_(255.0)  # (3, H, W)
        # (top, left, height, width) -> (left, top, width, height), the batched ops' order.
        boxes = sample.boxes[:, [1, 0, 3, 2]].float()
        out[:, index] = resized_crop(image.expand(views, -1, -1, -1), boxes, size)
    return out


def _decode_jpeg_batch(encoded: list[Tensor], device: torch.device) -> list[Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def collate_encoded(batch: list[tuple[EncodedSample, int]]) -> tuple[list[EncodedSample], Tensor]:
    """DataLoader collate for GPU decoding: the samples as a list (their sizes differ), labels stacked."""
    return [sample for sample, _ in batch], torch.tensor([label for _, label in batch], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# The per-sample Dataset


class FolderCrops(Dataset):
    """Folder samples keyed by (index, epoch) -> (crop_a, crop_b, label), uint8 (3, S, S) crops;
    with ``local``, (crop_a, crop_b, local crops uint8 (count, 3, s, s), label).

    ``sample_seed(index, epoch)`` seeds the draw of each sample's boxes (inside
    ``torch.random.fork_rng``: with ``num_workers=0`` this runs in the training process), so a
    sample's crops depend on neither the number of workers nor where an epoch resumed.
    ``on_device=True``: items are (:class:`EncodedSample`, label) for
    :func:`decode_crops_on_device`, batched with :func:`collate_encoded`.
    """

    def __init__(
        self,
        data: FolderImages,
        size: int,
        scales: Sequence[tuple[float, float]],
        sample_seed: Callable[[int, int], int],
        on_device: bool = False,
        local: tuple[int, int, tuple[float, float]] | None = None,
    ) -> None:
        self.data = data
        self.size = size
        self.scales = list(scales)
        self.sample_seed = sample_seed
        # Multi-crop's small crops: (count, size, scale range), their boxes drawn after the views'.
        self.local = local
        # Only files read by ssl-bench itself: a custom loader's images are decoded by it. Small
        # crops are cut in the workers: the GPU decoder takes one crop size.
        self.on_device = on_device and data.loader is None and local is None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        label = int(self.data.labels[index])
        if self.on_device:
            encoded = Path(self.data.samples[index][0]).read_bytes()
            image = Image.open(io.BytesIO(encoded))
        else:
            image = self.data.open(index)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(self.sample_seed(index, epoch))
            boxes = draw_boxes(image, self.scales)
            local_boxes = draw_boxes(image, [self.local[2]] * self.local[0]) if self.local else []
        if not self.on_device:
            local_size = self.local[1] if self.local else 0
            crop_a, crop_b, *local = crop_views(image, boxes, self.size, local_boxes, local_size)
            if self.local:
                return crop_a, crop_b, torch.stack(local), label
            return crop_a, crop_b, label
        box_tensor = torch.tensor(boxes, dtype=torch.long)
        if gpu_decodable(image):
            return EncodedSample(torch.frombuffer(bytearray(encoded), dtype=torch.uint8), box_tensor), label
        crops = torch.stack(crop_views(image, boxes, self.size))
        return EncodedSample(torch.empty(0, dtype=torch.uint8), box_tensor, crops), label
