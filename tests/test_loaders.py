"""Training and evaluation loaders: sharding, exact resume, RNG hygiene, both data shapes.

Labels are set to each sample's index, so a batch's labels say which samples it holds, and
images are constant with value = index (mod 256), so the views can be checked against them.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Resize
from torchvision.transforms.functional import pil_to_tensor

from ssl_bench.data.augment import ViewConfig, ViewPairAugmentation
from ssl_bench.data.images import FolderImages, TensorImages
from ssl_bench.data.loaders import TrainLoader, derive_seed, eval_batches, eval_resize_size

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)
CPU = torch.device("cpu")
OFF = ViewConfig((0.08, 1.0), 0.0, (0.0, 0.0, 0.0, 0.0), 0.0, 0.0, 0.0, 0.0)  # crop only


def indexed_images(n: int, channels: int = 3, side: int = 12) -> TensorImages:
    """Sample i is a constant image of value i % 256 with label i."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, channels, side, side).contiguous()
    return TensorImages(images, torch.arange(n), [str(i) for i in range(n)])


def collect(loader: TrainLoader, epoch: int, start_batch: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """The epoch's (view_a, view_b, labels): a two-view loader gives no local views."""
    batches = list(loader.epoch(epoch, start_batch=start_batch))
    assert all(batch.local_views == () for batch in batches)
    return [tuple(batch[:3]) for batch in batches]


def simclr_loader(data, **kwargs) -> TrainLoader:
    options = dict(seed=0, device=CPU)
    options.update(kwargs)
    batch_size = options.pop("batch_size", 8)
    return TrainLoader(data, ViewPairAugmentation("symmetric", 8, MEAN, STD), batch_size, **options)


# ---------------------------------------------------------------------------------------------
# TensorImages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_tensor_batches_shapes_dtypes_devices(channels, channels_last):
    loader = simclr_loader(indexed_images(50, channels), channels_last=channels_last)
    assert loader.steps_per_epoch() == len(loader) == 6  # 50 // 8, the last 2 samples dropped
    batches = collect(loader, 0)
    assert len(batches) == 6
    for view_a, view_b, labels in batches:
        assert view_a.shape == view_b.shape == (8, 3, 8, 8)
        assert view_a.dtype == view_b.dtype == torch.float32 and labels.dtype == torch.int64
        assert view_a.device == view_b.device == labels.device == CPU
        assert labels.shape == (8,)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        assert view_a.is_contiguous(memory_format=memory_format)


def test_views_come_from_the_labelled_samples():
    """With a crop-only augmentation a constant image stays constant: the views match the labels."""
    aug = ViewPairAugmentation((OFF, OFF), 8, MEAN, STD)
    loader = TrainLoader(indexed_images(40), aug, 8, seed=3, device=CPU)
    for view_a, view_b, labels, _ in loader.epoch(0):
        expected = ((labels.float() / 255).view(-1, 1, 1, 1) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
            STD
        ).view(1, 3, 1, 1)
        for view in (view_a, view_b):
            torch.testing.assert_close(view, expected.expand_as(view), atol=1e-5, rtol=0)


def test_epoch_covers_each_index_once_per_rank_and_ranks_are_disjoint():
    n, world, batch = 50, 3, 5
    seen = []
    for rank in range(world):
        loader = simclr_loader(indexed_images(n), batch_size=batch, seed=1, rank=rank, world_size=world)
        assert loader.steps_per_epoch() == 3  # 50 // 3 = 16 per rank, 3 full batches of 5
        ids = torch.cat([labels for _, _, labels, _ in loader.epoch(4)]).tolist()
        assert len(ids) == len(set(ids)) == 15
        seen.append(set(ids))
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    union = set().union(*seen)
    assert len(union) == world * 15 and union <= set(range(n))
    # Every index is visited within a few epochs: the dropped tail changes with the shuffle.
    loaders = [
        simclr_loader(indexed_images(n), batch_size=batch, seed=1, rank=r, world_size=world) for r in range(world)
    ]
    visited = {i for epoch in range(8) for loader in loaders for i in loader.epoch_indices(epoch).tolist()}
    assert visited == set(range(n))


def test_resume_from_start_batch_is_exact():
    data = indexed_images(60)
    full = collect(simclr_loader(data, seed=7), 2)
    for start in (1, 4, 7):
        # A fresh loader, as after a restart.
        tail = collect(simclr_loader(data, seed=7), 2, start_batch=start)
        assert len(tail) == len(full) - start
        for resumed, original in zip(tail, full[start:]):
            assert all(torch.equal(x, y) for x, y in zip(resumed, original))
    assert collect(simclr_loader(data, seed=7), 2, start_batch=len(full)) == []
    with pytest.raises(ValueError):
        simclr_loader(data, seed=7).epoch(2, start_batch=len(full) + 1)


def test_batches_depend_on_seed_epoch_and_rank():
    data = indexed_images(64)
    reference = collect(simclr_loader(data, seed=0), 0)[0]

    def differs(batch) -> bool:
        return not torch.equal(batch[0], reference[0]) and not torch.equal(batch[2], reference[2])

    assert differs(collect(simclr_loader(data, seed=0), 1)[0])
    assert differs(collect(simclr_loader(data, seed=1), 0)[0])
    assert differs(collect(simclr_loader(data, seed=0, rank=1, world_size=2), 0)[0])
    # Repeating an epoch repeats it; within it, every batch gets its own augmentation draws
    # (identical images, so only the augmentation can tell the batches apart).
    loader = simclr_loader(data, seed=0)
    first, second = collect(loader, 0)[0], collect(loader, 0)[0]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    one_image = torch.randint(0, 256, (1, 3, 12, 12), dtype=torch.uint8).expand(64, -1, -1, -1)
    same = TensorImages(one_image, torch.zeros(64), ["x"])
    views = [batch.view_a for batch in simclr_loader(same, seed=0).epoch(0)]
    assert all(not torch.equal(views[0], other) for other in views[1:])
    other_rank = next(iter(simclr_loader(same, seed=0, rank=1, world_size=2).epoch(0)))[0]
    assert not torch.equal(next(iter(simclr_loader(same, seed=0, rank=0, world_size=2).epoch(0)))[0], other_rank)


def test_derive_seed_mixes_its_inputs():
    assert derive_seed(1, 0, 0) != derive_seed(0, 1, 0) != derive_seed(0, 0, 1)
    assert derive_seed(5, 2, 3) == derive_seed(5, 2, 3)
    assert 0 <= derive_seed(-1, 2**70) < 2**63


def test_global_rng_state_is_untouched():
    loader = simclr_loader(indexed_images(40))
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    for _ in loader.epoch(0):
        pass
    assert torch.equal(torch.rand(5), expected)


# ---------------------------------------------------------------------------------------------
# Evaluation batches
# ---------------------------------------------------------------------------------------------


def test_eval_batches_order_and_normalisation():
    data = indexed_images(23, channels=1, side=8)
    batches = list(eval_batches(data, 10, 8, MEAN, STD, CPU))
    assert [len(labels) for _, labels in batches] == [10, 10, 3]  # every sample, in order
    images = torch.cat([x for x, _ in batches])
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(23))
    assert images.shape == (23, 3, 8, 8) and images.dtype == torch.float32
    value = (torch.arange(23).float() / 255).view(-1, 1, 1, 1)
    expected = (value - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(images, expected.expand_as(images), atol=1e-6, rtol=0)
    # Another side: resized (a constant image stays constant).
    resized = torch.cat([x for x, _ in eval_batches(data, 10, 12, MEAN, STD, CPU)])
    assert resized.shape == (23, 3, 12, 12)
    torch.testing.assert_close(resized, expected.expand_as(resized), atol=1e-5, rtol=0)


def test_eval_batches_are_deterministic():
    data = TensorImages(torch.randint(0, 256, (12, 3, 10, 10), dtype=torch.uint8), torch.zeros(12), ["x"])
    first = [x for x, _ in eval_batches(data, 5, 8, MEAN, STD, CPU)]
    second = [x for x, _ in eval_batches(data, 5, 8, MEAN, STD, CPU)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


# ---------------------------------------------------------------------------------------------
# FolderImages (an ImageFolder tree of PNG files)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def folder_images(tmp_path) -> FolderImages:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(5):
            path = tmp_path / name / f"{i}.png"
            pixels = torch.randint(0, 256, (18 + i, 24, 3), dtype=torch.uint8, generator=generator)
            Image.fromarray(pixels.numpy()).save(path)
            samples.append((str(path), label))

    def load(path: str) -> Image.Image:
        with open(path, "rb") as file:
            return Image.open(file).convert("RGB")

    return FolderImages(samples, ["cat", "dog"], load)


def test_folder_loader_batches_and_exact_resume(folder_images):
    loader = simclr_loader(folder_images, batch_size=3, seed=5)
    assert loader.steps_per_epoch() == 3
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    batches = collect(loader, 1)
    assert torch.equal(torch.rand(3), expected_draw)  # global RNG untouched
    assert len(batches) == 3
    for view_a, view_b, labels in batches:
        assert view_a.shape == view_b.shape == (3, 3, 8, 8) and view_a.dtype == torch.float32
        assert not torch.equal(view_a, view_b)
        assert set(labels.tolist()) <= {0, 1}
    tail = collect(simclr_loader(folder_images, batch_size=3, seed=5), 1, start_batch=1)
    for resumed, original in zip(tail, batches[1:]):
        assert all(torch.equal(x, y) for x, y in zip(resumed, original))


def test_folder_loader_does_not_depend_on_num_workers(folder_images):
    in_process = collect(simclr_loader(folder_images, batch_size=4, seed=2), 0)
    in_workers = collect(simclr_loader(folder_images, batch_size=4, seed=2, num_workers=2), 0)
    for a, b in zip(in_process, in_workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_folder_crops_are_redrawn_every_epoch(folder_images):
    """Crop-only views of each sample (labels = sample index) differ from one epoch to the next."""
    samples = [(path, index) for index, (path, _) in enumerate(folder_images.samples)]
    data = FolderImages(samples, folder_images.classes, folder_images.loader)
    loader = TrainLoader(data, ViewPairAugmentation((OFF, OFF), 8, MEAN, STD), len(data), seed=0, device=CPU)

    def crops_by_sample(epoch: int) -> torch.Tensor:
        view_a, _, labels, _ = next(iter(loader.epoch(epoch)))
        return view_a[labels.argsort()]

    first, again, second = crops_by_sample(0), crops_by_sample(0), crops_by_sample(1)
    assert torch.equal(first, again)
    assert all(not torch.equal(a, b) for a, b in zip(first, second))


def test_folder_eval_batches_resize_and_centre_crop(folder_images):
    batches = list(eval_batches(folder_images, 4, 8, MEAN, STD, CPU))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), folder_images.labels)
    assert eval_resize_size(224) == 256 and eval_resize_size(8) == 9
    image, _ = folder_images[7]
    reference = pil_to_tensor(CenterCrop(8)(Resize(9)(image))).float() / 255
    reference = (reference - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(batches[1][0][3], reference, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# CUDA (runs where a GPU is present)
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu_and_resume_exactly():
    data = indexed_images(40)
    cuda = torch.device("cuda")
    on_gpu = collect(simclr_loader(data, device=cuda), 0)
    on_cpu = collect(simclr_loader(data), 0)
    for gpu_batch, cpu_batch in zip(on_gpu, on_cpu):
        assert all(t.device.type == "cuda" for t in gpu_batch)
        # Parameters are drawn on the CPU: the same augmentation, up to float differences (loose
        # enough for TF32 matmuls in the crop; other parameters would differ by O(1)).
        for g, c in zip(gpu_batch, cpu_batch):
            torch.testing.assert_close(g.cpu().float(), c.float(), atol=2e-2, rtol=0)
    tail = collect(simclr_loader(data, device=cuda), 0, start_batch=2)
    for resumed, original in zip(tail, on_gpu[2:]):
        assert all(torch.equal(x, y) for x, y in zip(resumed, original))
