"""Dataset loading on small files written in each dataset's real on-disk format.

No real dataset is needed (only an optional check runs on the Debian Fashion-MNIST package when it
is installed). Every fixture writes the bytes the way the official archives lay them out, so the
tests check torchvision's parsing plus our conversion, orientation included: a marker pixel at
a known (channel, row, column) must come back at exactly that place.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tv_datasets

from ssl_bench.data import datasets as D
from ssl_bench.data.images import FolderImages, TensorImages
from ssl_bench.errors import UsageError


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _trust_generated_files(monkeypatch: pytest.MonkeyPatch, cls: type, folder: Path) -> None:
    """Make torchvision's integrity check accept our generated files, and only them.

    CIFAR and STL-10 compare every file's md5 with the checksum of the official release, which
    a generated file can never match. Rather than switching the check off, swap the expected
    checksums (class attributes, restored by monkeypatch after the test) for those of the files
    just written: the check still runs, so a file changed afterwards still fails it.
    """
    for attribute in ("train_list", "test_list"):
        entries = [[name, _md5(folder / name)] for name, _ in getattr(cls, attribute)]
        monkeypatch.setattr(cls, attribute, entries)
    if hasattr(cls, "meta"):
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def _random_images(count: int, channels: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8, generator=generator)


# --------------------------------------------------------------------------------------------
# CIFAR: python pickles of {"data": (n, 3072) uint8 rows of R, G, B planes, row-major; labels}


CIFAR10_TRAIN_PER_BATCH, CIFAR10_TEST = 4, 6


def _write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def _cifar_rows(images: torch.Tensor) -> np.ndarray:
    # The format: each row is the 1024 red values, then green, then blue, each plane row-major.
    return images.numpy().reshape(len(images), 3 * 32 * 32)


@pytest.fixture
def cifar10_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """ROOT/cifar-10-batches-py with 5 train batches, a test batch and batches.meta."""
    folder = tmp_path / "cifar-10-batches-py"
    n_train = 5 * CIFAR10_TRAIN_PER_BATCH
    images = _random_images(n_train + CIFAR10_TEST, 3, 32, seed=0)
    images[0] = 0
    images[0, 0, 1, 2] = 255  # marker: red, row 1, column 2 -> byte 0 * 1024 + 1 * 32 + 2
    labels = torch.arange(n_train + CIFAR10_TEST) % 10
    for b in range(5):
        part = slice(b * CIFAR10_TRAIN_PER_BATCH, (b + 1) * CIFAR10_TRAIN_PER_BATCH)
        _write_pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": labels[part].tolist(),
                "data": _cifar_rows(images[part]),
                "filenames": [f"img_{i}.png" for i in range(CIFAR10_TRAIN_PER_BATCH)],
            },
        )
    _write_pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": labels[n_train:].tolist(),
            "data": _cifar_rows(images[n_train:]),
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 4, "num_vis": 3072})
    _trust_generated_files(monkeypatch, tv_datasets.CIFAR10, folder)
    return tmp_path, images, labels


def test_cifar10_round_trip(cifar10_root):
    root, images, labels = cifar10_root
    n_train = 5 * CIFAR10_TRAIN_PER_BATCH
    train = D.load_split("cifar10", root, "train", hold_out_val=False)
    assert isinstance(train, TensorImages)
    assert train.images.shape == (n_train, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.images.is_contiguous()
    assert torch.equal(train.images, images[:n_train])
    assert torch.equal(train.labels, labels[:n_train]) and train.labels.dtype == torch.long
    # Orientation: the marker byte at offset 34 of image 0 is red, row 1, column 2.
    assert _cifar_rows(images[:1])[0, 34] == 255
    assert train.images[0, 0, 1, 2] == 255 and int(train.images[0].sum()) == 255
    assert train.classes[1] == "automobile" and len(train.classes) == 10

    test = D.load_split("cifar10", root, "test")
    assert len(test) == CIFAR10_TEST and torch.equal(test.images, images[n_train:])
    assert torch.equal(test.labels, labels[n_train:])
    pretrain = D.load_split("cifar10", root, "pretrain", hold_out_val=False)
    assert torch.equal(pretrain.images, train.images)


def test_cifar10_corrupted_file_fails_checksum(cifar10_root):
    root, _, _ = cifar10_root
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(UsageError, match="checksum") as caught:
        D.load_split("cifar10", root, "train", hold_out_val=False)
    assert str(root / "cifar-10-batches-py") in str(caught.value)


def test_cifar10_missing_names_path_and_archive(tmp_path):
    with pytest.raises(UsageError) as caught:
        D.load_split("cifar10", tmp_path, "train", hold_out_val=False)
    message = str(caught.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message and "download=true" in message
    assert "\n" not in message


def test_cifar10_failed_download_is_a_usage_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(UsageError, match="could not download CIFAR-10"):
        D.load_split("cifar10", tmp_path, "train", download=True, hold_out_val=False)


def test_cifar100_round_trip(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    images = _random_images(12, 3, 32, seed=1)
    images[7] = 0
    images[7, 2, 30, 0] = 200  # blue, row 30, column 0
    fine = [0, 99, 5, 42, 17, 3, 64, 88, 1, 2, 3, 4]
    for name, part in (("train", slice(0, 8)), ("test", slice(8, 12))):
        _write_pickle(
            folder / name,
            {
                "filenames": ["x.png"] * len(fine[part]),
                "fine_labels": fine[part],
                "coarse_labels": [f % 20 for f in fine[part]],
                "data": _cifar_rows(images[part]),
            },
        )
    _write_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse{i:02d}" for i in range(20)],
        },
    )
    _trust_generated_files(monkeypatch, tv_datasets.CIFAR100, folder)

    train = D.load_split("cifar100", tmp_path, "train", hold_out_val=False)
    test = D.load_split("cifar100", tmp_path, "test")
    assert train.images.shape == (8, 3, 32, 32) and len(test) == 4
    assert torch.equal(train.images, images[:8]) and torch.equal(test.images, images[8:])
    assert train.labels.tolist() == fine[:8] and test.labels.tolist() == fine[8:]
    assert train.images[7, 2, 30, 0] == 200 and int(train.images[7].sum()) == 200
    assert len(train.classes) == 100 and train.classes[99] == "fine99"


# --------------------------------------------------------------------------------------------
# STL-10: raw uint8 binaries, each image 3 planes of 96x96 stored column-major; labels 1..10

STL_TRAIN, STL_UNLABELED, STL_TEST = 4, 3, 5


def _stl_bytes(images: torch.Tensor) -> bytes:
    # Column-major planes: (n, c, row, col) -> (n, c, col, row) in C order.
    return images.permute(0, 1, 3, 2).contiguous().numpy().tobytes()


@pytest.fixture
def stl10_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = _random_images(STL_TRAIN + STL_UNLABELED + STL_TEST, 3, 96, seed=2)
    images[0] = 0
    images[0, 1, 3, 5] = 255  # marker: green, row 3, column 5 (not symmetric, so a transpose shows)
    train, unlabeled, test = images.split([STL_TRAIN, STL_UNLABELED, STL_TEST])
    train_labels = [1, 10, 4, 7]  # on disk 1-based
    test_labels = [2, 2, 9, 10, 1]
    (folder / "train_X.bin").write_bytes(_stl_bytes(train))
    (folder / "train_y.bin").write_bytes(bytes(train_labels))
    (folder / "unlabeled_X.bin").write_bytes(_stl_bytes(unlabeled))
    (folder / "test_X.bin").write_bytes(_stl_bytes(test))
    (folder / "test_y.bin").write_bytes(bytes(test_labels))
    (folder / "class_names.txt").write_text("\n".join(D._STL10_CLASSES) + "\n")
    _trust_generated_files(monkeypatch, tv_datasets.STL10, folder)
    return tmp_path, images, train_labels, test_labels


def test_stl10_splits_orientation_and_unlabeled(stl10_root):
    root, images, train_labels, test_labels = stl10_root
    assert _stl_bytes(images[:1])[1 * 96 * 96 + 5 * 96 + 3] == 255  # where the marker sits on disk

    train = D.load_split("stl10", root, "train", hold_out_val=False)
    assert train.images.shape == (STL_TRAIN, 3, 96, 96) and train.images.dtype == torch.uint8
    assert train.images.is_contiguous()
    assert train.images[0, 1, 3, 5] == 255 and int(train.images[0].sum()) == 255
    assert torch.equal(train.images, images[:STL_TRAIN])
    assert train.labels.tolist() == [label - 1 for label in train_labels]
    assert train.classes == D._STL10_CLASSES

    pretrain = D.load_split("stl10", root, "pretrain", hold_out_val=False)
    assert len(pretrain) == STL_TRAIN + STL_UNLABELED
    assert torch.equal(pretrain.images, images[: STL_TRAIN + STL_UNLABELED])
    assert pretrain.labels[STL_TRAIN:].tolist() == [-1] * STL_UNLABELED
    assert pretrain.labels[:STL_TRAIN].tolist() == train.labels.tolist()

    test = D.load_split("stl10", root, "test")
    assert torch.equal(test.images, images[STL_TRAIN + STL_UNLABELED :])
    assert test.labels.tolist() == [label - 1 for label in test_labels]


def test_stl10_without_class_names_file_uses_builtin_names(stl10_root):
    root = stl10_root[0]
    (root / "stl10_binary" / "class_names.txt").unlink()
    assert D.load_split("stl10", root, "test").classes == D._STL10_CLASSES


def test_stl10_out_of_range_label_is_reported(stl10_root, monkeypatch):
    root = stl10_root[0]
    folder = root / "stl10_binary"
    (folder / "test_y.bin").write_bytes(bytes([0, 1, 2, 3, 4]))  # 0 is not a valid 1-based label
    _trust_generated_files(monkeypatch, tv_datasets.STL10, folder)
    with pytest.raises(UsageError, match="labels"):
        D.load_split("stl10", root, "test")


def test_stl10_missing_lists_files_and_path(tmp_path):
    (tmp_path / "stl10_binary").mkdir()
    (tmp_path / "stl10_binary" / "train_X.bin").write_bytes(b"")
    with pytest.raises(UsageError) as caught:
        D.load_split("stl10", tmp_path, "pretrain", hold_out_val=False)
    message = str(caught.value)
    assert str(tmp_path / "stl10_binary") in message and "unlabeled_X.bin" in message
    assert "train_X.bin," not in message  # present files are not reported missing
    assert "stl10_binary.tar.gz" in message


# --------------------------------------------------------------------------------------------
# Fashion-MNIST: big-endian IDX files, gzipped as distributed


def _idx_bytes(array: np.ndarray) -> bytes:
    # Magic: two zero bytes, type 0x08 (unsigned byte), number of dimensions; then big-endian sizes.
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


FASHION_SIZES = {"train": 12, "t10k": 5}


def _fashion_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    arrays = {}
    for prefix, n in FASHION_SIZES.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 3) % 10
        arrays[prefix] = (images, labels.astype(np.uint8))
    arrays["train"][0][0] = 0
    arrays["train"][0][0, 2, 7] = 255  # marker: row 2, column 7
    return arrays


def _write_fashion(directory: Path, arrays, gzipped: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in arrays.items():
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if gzipped:
                (directory / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
            else:
                (directory / name).write_bytes(_idx_bytes(array))


@pytest.fixture
def system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for /usr/share/datasets/fashion-mnist (empty until a test writes into it)."""
    directory = tmp_path / "usr-share-datasets-fashion-mnist"
    directory.mkdir()
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIR", directory)
    return directory


def _check_fashion(root: Path, arrays) -> None:
    train = D.load_split("fashion-mnist", root, "train", hold_out_val=False)
    test = D.load_split("fashion-mnist", root, "test")
    assert train.images.shape == (FASHION_SIZES["train"], 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (FASHION_SIZES["t10k"], 1, 28, 28)
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k"][0])
    assert train.labels.tolist() == arrays["train"][1].tolist() and train.labels.dtype == torch.long
    assert test.labels.tolist() == arrays["t10k"][1].tolist()
    assert train.images[0, 0, 2, 7] == 255 and int(train.images[0].sum()) == 255
    assert train.classes[9] == "Ankle boot"
    assert torch.equal(D.load_split("fashion-mnist", root, "pretrain", hold_out_val=False).images, train.images)


def test_fashion_mnist_copied_from_system_package(tmp_path, system_dir):
    arrays = _fashion_arrays()
    _write_fashion(system_dir, arrays, gzipped=True)
    root = tmp_path / "data"
    _check_fashion(root, arrays)
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]  # unzipped, and no temporary files left behind


def test_fashion_mnist_from_raw_folder(tmp_path, system_dir):
    arrays = _fashion_arrays()
    _write_fashion(tmp_path / "FashionMNIST" / "raw", arrays, gzipped=False)
    _check_fashion(tmp_path, arrays)


def test_fashion_mnist_gz_in_raw_folder_is_unzipped(tmp_path, system_dir):
    # What an interrupted torchvision download leaves: the .gz files in raw/.
    arrays = _fashion_arrays()
    _write_fashion(tmp_path / "FashionMNIST" / "raw", arrays, gzipped=True)
    _check_fashion(tmp_path, arrays)


def test_fashion_mnist_truncated_archive_leaves_nothing_behind(tmp_path, system_dir):
    arrays = _fashion_arrays()
    _write_fashion(system_dir, arrays, gzipped=True)
    archive = system_dir / "train-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(UsageError, match="could not unzip") as caught:
        D.load_split("fashion-mnist", tmp_path, "train", hold_out_val=False)
    assert str(archive) in str(caught.value)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not [p for p in raw.iterdir() if p.name.endswith(".tmp")]


def test_fashion_mnist_missing_message(tmp_path, system_dir):
    with pytest.raises(UsageError) as caught:
        D.load_split("fashion-mnist", tmp_path, "train", hold_out_val=False)
    message = str(caught.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert str(system_dir) in message
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message


@pytest.mark.skipif(
    not (Path("/usr/share/datasets/fashion-mnist") / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist(tmp_path):
    train = D.load_split("fashion-mnist", tmp_path, "train", hold_out_val=False)
    test = D.load_split("fashion-mnist", tmp_path, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]
    mean = train.images.float().div(255).mean().item()
    assert mean == pytest.approx(D.dataset_info("fashion-mnist").mean[0], abs=1e-3)


# --------------------------------------------------------------------------------------------
# ImageFolder trees


def _pattern(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth (JPEG-friendly) RGB picture of PIL size (width, height) that shows any flip or transpose.

    Red grows left to right, green top to bottom, blue is a per-image constant.
    """
    width, height = size
    array = np.empty((height, width, 3), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    array[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    array[..., 2] = (37 * seed) % 256
    return array


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """train/{cat,dog}: PNG and JPEG files of different sizes; val/{cat,dog}."""
    for split, per_class in (("train", 3), ("val", 1)):
        for c, cls in enumerate(("cat", "dog")):
            directory = tmp_path / split / cls
            directory.mkdir(parents=True)
            for i in range(per_class):
                array = _pattern(100 * c + i, (20 + i, 16))
                Image.fromarray(array).save(directory / f"{i}.png")
                Image.fromarray(array).save(directory / f"{i}.JPEG", quality=95)
            (directory / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagefolder_samples_and_pixels(folder_root):
    train = D.load_split("imagefolder", folder_root, "train", hold_out_val=False)
    assert isinstance(train, FolderImages)
    assert train.classes == ["cat", "dog"] and len(train) == 12
    assert torch.bincount(train.labels).tolist() == [6, 6]
    assert all(not path.endswith(".txt") for path, _ in train.samples)

    png_index = next(i for i, (path, _) in enumerate(train.samples) if path.endswith("dog/1.png"))
    image, label = train[png_index]
    assert label == 1 and image.mode == "RGB" and image.size == (21, 16)  # PIL size is (width, height)
    assert np.array_equal(np.asarray(image), _pattern(101, (21, 16)))  # PNG is lossless

    jpeg_index = next(i for i, (path, _) in enumerate(train.samples) if path.endswith("cat/2.JPEG"))
    image, label = train[jpeg_index]
    assert label == 0 and image.mode == "RGB" and image.size == (22, 16)
    difference = np.abs(np.asarray(image).astype(int) - _pattern(2, (22, 16)).astype(int))
    assert difference.max() < 24  # lossy, but the same picture the right way round

    test = D.load_split("imagefolder", folder_root, "test")
    assert len(test) == 4 and all("/val/" in path for path, _ in test.samples)
    assert D.load_split("imagefolder", folder_root, "pretrain", hold_out_val=False).samples == train.samples


def test_grayscale_image_loads_as_rgb(folder_root):
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8), mode="L").save(folder_root / "val" / "cat" / "gray.png")
    test = D.load_split("imagefolder", folder_root, "test")
    index = next(i for i, (path, _) in enumerate(test.samples) if path.endswith("gray.png"))
    image, _ = test[index]
    assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [77, 77, 77]


def test_val_labels_follow_train_classes(folder_root):
    # val/ without "cat": ImageFolder on val/ alone would call "dog" class 0.
    for path in (folder_root / "val" / "cat").iterdir():
        path.unlink()
    (folder_root / "val" / "cat").rmdir()
    test = D.load_split("imagefolder", folder_root, "test")
    assert test.classes == ["cat", "dog"] and set(test.labels.tolist()) == {1}


def test_val_class_unknown_to_train_is_an_error(folder_root):
    extra = folder_root / "val" / "zebra"
    extra.mkdir()
    Image.fromarray(_pattern(9, (8, 8))).save(extra / "z.png")
    with pytest.raises(UsageError, match="zebra"):
        D.load_split("imagefolder", folder_root, "test")


def test_imagenet_missing_val_names_path_and_layout(folder_root):
    (folder_root / "val").rename(folder_root / "validation")
    with pytest.warns(UserWarning, match="1000 classes"):
        assert len(D.load_split("imagenet", folder_root, "train", hold_out_val=False)) == 12
    with pytest.raises(UsageError) as caught:
        D.load_split("imagenet", folder_root, "test")
    message = str(caught.value)
    assert str(folder_root / "val") in message and "<class>" in message


def test_empty_train_class_and_download_are_errors(folder_root, tmp_path):
    (folder_root / "train" / "empty").mkdir()
    with pytest.raises(UsageError, match="empty"):
        D.load_split("imagefolder", folder_root, "train", hold_out_val=False)
    with pytest.raises(UsageError, match="cannot be downloaded"):
        D.load_split("imagenet100", tmp_path, "train", download=True, hold_out_val=False)


# --------------------------------------------------------------------------------------------
# Registry and names


def test_registry_and_infos():
    names = D.available_datasets()
    assert names == ["fashion-mnist", "cifar10", "cifar100", "stl10", "imagenet", "imagenet100", "imagefolder"]
    for name in names:
        info = D.dataset_info(name)
        assert info.name == name and len(info.mean) == 3 and len(info.std) == 3
        assert info.in_memory == (info.image_size <= 96)  # the small datasets load as tensors, folders lazily
        assert info.description and "\n" not in info.description
    assert D.dataset_info("fashion-mnist").channels == 1 and D.dataset_info("stl10").image_size == 96
    assert D.dataset_info("cifar100").num_classes == 100


@pytest.mark.parametrize(
    "typo, suggestion", [("cifar-10", "cifar10"), ("fashion_mnist", "fashion-mnist"), ("imagenet-100", "imagenet100")]
)
def test_unknown_dataset_suggests_close_name(typo, suggestion, tmp_path):
    with pytest.raises(UsageError, match=f"did you mean '{suggestion}'"):
        D.dataset_info(typo)
    with pytest.raises(UsageError, match=f"did you mean '{suggestion}'"):
        D.load_split(typo, tmp_path, "train", hold_out_val=False)


def test_unknown_split(tmp_path):
    with pytest.raises(UsageError, match="did you mean 'test'"):
        D.load_split("cifar10", tmp_path, "tset")


# --------------------------------------------------------------------------------------------
# balanced_subset


def _tensor_data(per_class: list[int], unlabeled: int = 0) -> TensorImages:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)] + [torch.full((unlabeled,), -1)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8).view(-1, 1, 1, 1)
    return TensorImages(images.expand(-1, 1, 2, 2).contiguous(), labels, [f"c{i}" for i in range(len(per_class))])


def test_balanced_subset_per_class_and_determinism():
    data = _tensor_data([50, 40, 30], unlabeled=20)
    subset = D.balanced_subset(data, per_class=10, seed=1)
    assert isinstance(subset, TensorImages) and subset.classes == data.classes
    assert torch.bincount(subset.labels).tolist() == [10, 10, 10]  # no unlabeled (-1) picked

    def picked(**kwargs) -> list[int]:
        # images hold their index mod 256 (all < 256 here), so they identify the samples
        return D.balanced_subset(data, **kwargs).images[:, 0, 0, 0].tolist()

    assert picked(per_class=10, seed=1) == picked(per_class=10, seed=1)
    assert picked(per_class=10, seed=1) != picked(per_class=10, seed=2)
    assert picked(per_class=10, seed=1) == sorted(picked(per_class=10, seed=1))  # original order kept
    assert set(picked(per_class=5, seed=1)) <= set(picked(per_class=10, seed=1))  # nested


def test_balanced_subset_total_and_errors():
    data = _tensor_data([50, 40, 30])
    assert torch.bincount(D.balanced_subset(data, total=32).labels).tolist() == [11, 11, 10]
    with pytest.raises(UsageError, match="'c2' has only 30"):
        D.balanced_subset(data, per_class=31)
    with pytest.raises(UsageError, match="exactly one"):
        D.balanced_subset(data, per_class=2, total=6)
    with pytest.raises(UsageError, match="exactly one"):
        D.balanced_subset(data)
    with pytest.raises(UsageError, match="positive"):
        D.balanced_subset(data, per_class=0)


def test_balanced_subset_of_folder_data(folder_root):
    train = D.load_split("imagefolder", folder_root, "train", hold_out_val=False)
    subset = D.balanced_subset(train, per_class=2, seed=0)
    assert isinstance(subset, FolderImages) and len(subset) == 4
    assert torch.bincount(subset.labels).tolist() == [2, 2]
    assert set(subset.samples) <= set(train.samples)


# ----------------------------------------------------------------------------------------------
# The validation split


def test_validation_split_is_class_balanced_fixed_and_held_out(cifar10_root):
    root, _, _ = cifar10_root
    full = D.load_split("cifar10", root, "train", hold_out_val=False)
    val = D.load_split("cifar10", root, "val")
    train = D.load_split("cifar10", root, "train")
    pretrain = D.load_split("cifar10", root, "pretrain")
    # Each class keeps at least one train image: the split takes a tenth of a small class (at
    # least one), where a full-size one gives val_per_class (500 for CIFAR-10).
    per_class = torch.bincount(full.labels, minlength=10)
    expected = [max(1, int(count) // 10) if count <= 500 else 500 for count in per_class]
    assert torch.bincount(val.labels, minlength=10).tolist() == expected
    assert len(train) + len(val) == len(full) and torch.equal(train.images, pretrain.images)
    # Disjoint, and together the whole labelled train split.
    rows = {tuple(image.flatten().tolist()) for image in full.images}
    assert {tuple(image.flatten().tolist()) for image in val.images} | {
        tuple(image.flatten().tolist()) for image in train.images
    } == rows
    # The same images every time, whatever the run.
    assert torch.equal(D.load_split("cifar10", root, "val").images, val.images)


def test_validation_indices_take_per_class_and_ignore_unlabeled():
    labels = torch.tensor([0] * 30 + [1] * 30 + [-1] * 50)
    chosen = D.validation_indices(labels, per_class=4)
    assert torch.bincount(labels[chosen]).tolist() == [4, 4]
    # Unlabeled samples after the labelled ones (STL-10's train+unlabeled) change nothing.
    assert torch.equal(D.validation_indices(labels[:60], per_class=4), chosen)
    assert torch.equal(D.validation_indices(labels, per_class=4, seed=D.VAL_SEED), chosen)
    assert not torch.equal(D.validation_indices(labels, per_class=4, seed=1), chosen)
