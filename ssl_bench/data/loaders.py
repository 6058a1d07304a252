"""Training and evaluation batches, sharded across ranks and reproducible batch by batch.

Training batches are a pure function of (seed, epoch, batch index, rank): the index order comes
from ``DistributedSampler`` (seeded by seed + epoch), and every random draw of the augmentation
happens under a generator seeded from those four numbers, inside ``torch.random.fork_rng`` so the
caller's global RNG state is untouched. A run resumed mid-epoch with ``epoch(e, start_batch=b)``
therefore sees exactly the batches it would have seen.

Two data shapes (see :mod:`ssl_bench.data.images`):

- :class:`TensorImages` (Fashion-MNIST, CIFAR, STL): the batch is indexed straight out of the
  uint8 tensor, moved to the device (pinned, non-blocking on CUDA) and augmented there: no
  per-sample Python, no DataLoader.
- :class:`FolderImages` (ImageNet-sized): a DataLoader whose workers cut each file's two
  RandomResizedCrops to uint8 S x S tensors, decoding a JPEG only at the resolution the crops
  need (:class:`~ssl_bench.data.folder.FolderCrops`; with ``decode_on_device`` the JPEGs are
  decoded and cropped on the GPU instead); the rest of the augmentation then runs batched on
  the device. Each sample's crops are seeded from (seed, epoch, sample index), so they too do
  not depend on the number of workers or on where an epoch resumed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import CenterCrop, Resize
from torchvision.transforms.functional import pil_to_tensor

from ssl_bench.data.augment import LocalCropAugmentation, ViewPairAugmentation
from ssl_bench.data.folder import FolderCrops, collate_encoded, decode_crops_on_device
from ssl_bench.data.images import FolderImages, ImageData, TensorImages

__all__ = ["TrainBatch", "TrainLoader", "derive_seed", "eval_batches", "eval_resize_size"]

# Streams of derived seeds, so that a batch seed never equals a sample seed.
_BATCH_STREAM, _SAMPLE_STREAM, _LOADER_STREAM = 0, 1, 2


def derive_seed(*numbers: int) -> int:
    """A 63-bit seed mixed from non-negative integers (numpy's SeedSequence hashing).

    Unlike sums or tuples fed to ``hash``, nearby inputs such as (seed 1, epoch 0) and
    (seed 0, epoch 1) give unrelated seeds, and the value is the same on every platform.
    """
    words = np.random.SeedSequence([n % 2**63 for n in numbers]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


@contextmanager
def _seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global CPU generator (and ``device``'s, on CUDA) for a block; restore them after."""
    cuda_devices: list[int] = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda_devices:
            # Only this device's generator (torch.manual_seed would reseed every visible GPU,
            # and fork_rng restores only the listed ones).
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        # Pinned memory makes the copy asynchronous; the next kernel on the stream waits for it.
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _sample_seed(seed: int, index: int, epoch: int) -> int:
    """The seed of one folder sample's crop boxes (a module function: workers may pickle it)."""
    return derive_seed(seed, epoch, index, _SAMPLE_STREAM)


class TrainBatch(NamedTuple):
    """One training step's input on the device: the two views, the labels (-1 where unknown),
    and multi-crop's small views (empty for two-view runs)."""

    view_a: Tensor
    view_b: Tensor
    labels: Tensor
    local_views: tuple[Tensor, ...] = ()


class TrainLoader:
    """Yields :class:`TrainBatch` es on ``device``, drop_last batches, for one epoch at a time.

    batch_size is per rank. ``augmentation`` produces the two views and ``local_crops``, where
    given, the small views (in-memory data only), after the two views from the same seeded
    stream, so that a two-view run draws what it drew without them; for folder data the crop
    happens in the DataLoader workers (per sample, on the decoded image) and the rest on the device.
    ``decode_on_device`` (folder data on CUDA): the workers only read the files and draw the
    boxes; the JPEGs are decoded (nvJPEG) and cropped on the device.
    """

    def __init__(
        self,
        data: TensorImages | FolderImages,
        augmentation: ViewPairAugmentation,
        batch_size: int,
        *,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        channels_last: bool = False,
        decode_on_device: bool = False,
        local_crops: LocalCropAugmentation | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.rank = rank
        self.num_workers = num_workers
        self.channels_last = channels_last
        # Only len() of the data is used: the sampler shards indices, we do the loading.
        self.sampler = DistributedSampler(
            range(len(data)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        if isinstance(data, TensorImages):
            self.augmentation, self.local_crops = augmentation, local_crops
            self._two_crops = None
        elif isinstance(data, FolderImages):
            # The workers cut every crop (FolderCrops); the augmentations do the rest on the device.
            self.augmentation = augmentation.without_crop()
            self.local_crops = None if local_crops is None else local_crops.without_crop()
            scales = [config.crop_scale for config in augmentation.configs]
            on_device = decode_on_device and self.device.type == "cuda"
            sample_seed = functools.partial(_sample_seed, seed)
            spec = None if local_crops is None else local_crops.crops
            local = None if spec is None else (spec.count, spec.size, spec.view.crop_scale)
            self._two_crops = FolderCrops(
                data, augmentation.image_size, scales, sample_seed, on_device=on_device, local=local
            )
        else:
            raise TypeError(f"data must be TensorImages or FolderImages, got {type(data).__name__}")

    def steps_per_epoch(self) -> int:
        """Full batches per rank and epoch (the incomplete last batch is dropped)."""
        return self.sampler.num_samples // self.batch_size

    def __len__(self) -> int:
        return self.steps_per_epoch()

    def epoch_indices(self, epoch: int) -> Tensor:
        """This rank's sample order for ``epoch``: (steps_per_epoch * batch_size,) int64."""
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        return order[: self.steps_per_epoch() * self.batch_size]

    def _batch_seed(self, epoch: int, batch: int) -> int:
        return derive_seed(self.seed, epoch, batch, self.rank, _BATCH_STREAM)

    def _finish(
        self,
        epoch: int,
        batch: int,
        images: Tensor,
        images_b: Tensor | None,
        labels: Tensor,
        local_crops: Tensor | None = None,
    ) -> TrainBatch:
        """The batch's views; ``local_crops``: the small crops the loader cut (B, count, 3, s, s), if any."""
        local: tuple[Tensor, ...] = ()
        with torch.no_grad(), _seeded_rng(self._batch_seed(epoch, batch), self.device):
            view_a, view_b = self.augmentation(images, images_b)
            if self.local_crops is not None:
                source = images if local_crops is None else local_crops.transpose(0, 1).flatten(0, 1)
                local = self.local_crops(source)
        if self.channels_last:
            view_a, view_b, *rest = (v.contiguous(memory_format=torch.channels_last) for v in (view_a, view_b, *local))
            local = tuple(rest)
        return TrainBatch(view_a, view_b, labels, local)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[TrainBatch]:
        """The batches start_batch, start_batch + 1, ... of ``epoch``, identical to a full pass's."""
        steps = self.steps_per_epoch()
        if not 0 <= start_batch <= steps:
            raise ValueError(f"start_batch {start_batch} outside 0..{steps}")
        batches = self.epoch_indices(epoch).view(steps, self.batch_size)[start_batch:]
        # Not a generator itself, so that a bad start_batch raises here rather than at next().
        if self._two_crops is None:
            return self._tensor_epoch(epoch, start_batch, batches)
        return self._folder_epoch(epoch, start_batch, batches)

    def _tensor_epoch(self, epoch: int, start_batch: int, batches: Tensor) -> Iterator[TrainBatch]:
        assert isinstance(self.data, TensorImages)
        images, labels = self.data.images, self.data.labels
        for batch, indices in enumerate(batches, start=start_batch):
            index = indices.to(images.device)
            yield self._finish(
                epoch,
                batch,
                _to_device(images.index_select(0, index), self.device),
                None,
                _to_device(labels.index_select(0, indices.to(labels.device)), self.device),
            )

    def _folder_epoch(self, epoch: int, start_batch: int, batches: Tensor) -> Iterator[TrainBatch]:
        keys = [[(index, epoch) for index in indices] for indices in batches.tolist()]
        assert self._two_crops is not None
        on_device = self._two_crops.on_device
        loader = DataLoader(
            self._two_crops,
            batch_sampler=keys,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=collate_encoded if on_device else None,
            # The loader draws its workers' base seed from this generator, not the global one.
            generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, self.rank, _LOADER_STREAM)),
        )
        if on_device:
            for batch, (samples, labels) in enumerate(loader, start=start_batch):
                crops_a, crops_b = decode_crops_on_device(samples, self._two_crops.size, self.device)
                yield self._finish(epoch, batch, crops_a, crops_b, labels.to(self.device, non_blocking=True))
            return
        for batch, (crops_a, crops_b, *local, labels) in enumerate(loader, start=start_batch):
            yield self._finish(
                epoch,
                batch,
                crops_a.to(self.device, non_blocking=True),
                crops_b.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
                local[0].to(self.device, non_blocking=True) if local else None,
            )


def eval_resize_size(image_size: int) -> int:
    """Shorter side before the centre crop: image_size x 256 / 224 (256 for 224), rounded."""
    return math.floor(image_size * 256 / 224 + 0.5)


class _EvalFolder(Dataset):
    """Folder samples -> (uint8 (3, S, S), label): resize the shorter side, centre-crop."""

    def __init__(self, data: FolderImages, image_size: int) -> None:
        self.data = data
        self.resize = Resize(eval_resize_size(image_size), antialias=True)
        self.crop = CenterCrop(image_size)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.data[index]
        return pil_to_tensor(self.crop(self.resize(image.convert("RGB")))), label


def _normalise(images: Tensor, image_size: int, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, H, W) on the device -> float (B, 3, S, S), normalised."""
    x = images.to(torch.float32).div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean) / std


def eval_batches(
    data: ImageData,
    batch_size: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    *,
    num_workers: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) on ``device`` in dataset order, every sample once, no augmentation.

    Grayscale is repeated to three channels and images are normalised. Small data is resized
    only when its side differs from image_size; folder data gets the standard evaluation
    transform: shorter side to image_size x 256 / 224, then a centre crop of image_size.
    ``num_workers`` decodes folder data in DataLoader workers.
    """
    device = torch.device(device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    # (No ``with torch.no_grad()`` around the yields: a suspended generator would leave grad mode
    # off in the caller's code. Nothing here requires grad, so no graph is built anyway.)
    if isinstance(data, TensorImages):
        for start in range(0, len(data), batch_size):
            images = _to_device(data.images[start : start + batch_size], device)
            labels = _to_device(data.labels[start : start + batch_size], device)
            yield _normalise(images, image_size, mean_t, std_t), labels
    elif isinstance(data, FolderImages):
        loader = DataLoader(
            _EvalFolder(data, image_size),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(0),  # keeps the global RNG untouched
        )
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            yield _normalise(images, image_size, mean_t, std_t), labels.to(device, non_blocking=True)
    else:
        raise TypeError(f"data must be TensorImages or FolderImages, got {type(data).__name__}")
