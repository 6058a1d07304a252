"""The datasets ssl-bench knows: what they are (:class:`DatasetInfo`) and how to load a split.

Small datasets (Fashion-MNIST, CIFAR-10/100, STL-10) are parsed once by torchvision's own dataset
classes and handed over whole as uint8 ``(N, C, H, W)`` tensors (:class:`TensorImages`), so
training never decodes a sample twice. ImageNet-sized data stays on disk as an ImageFolder tree
read on demand (:class:`FolderImages`).

Nothing is downloaded unless the caller asks (``download=True``). Every way a dataset can be
missing or unreadable ends in one :class:`UsageError` naming the directory that was searched and
how to get the data, never in a torchvision traceback.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets as tv_datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ssl_bench.data.images import FolderImages, ImageData, TensorImages
from ssl_bench.errors import UsageError, unknown_name_message

# Where the Debian package ``dataset-fashion-mnist`` installs the four original ``*-ubyte.gz``
# files. A module attribute (read at call time) so tests can point it at a fake directory.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

SPLITS = ("train", "val", "test", "pretrain")
# The validation split's draw: fixed, so every run of a dataset holds out the same images.
VAL_SEED = 0

# Statistics of ImageNet's train split, the usual choice for any natural-image folder dataset.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision only reads STL-10's class names from class_names.txt when that file exists.
_STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of ssl-bench needs to know about a dataset before loading it.

    ``num_classes`` is 0 for ``imagefolder``, whose classes are whatever folders the tree has:
    use ``len(data.classes)`` of the loaded split there (it is right for every dataset).
    """

    name: str
    num_classes: int
    image_size: int  # native side length, or the train crop size for folder data
    channels: int  # channels as stored: 1 for Fashion-MNIST, else 3
    # Per-channel normalisation of the 3-channel view (grayscale is repeated to RGB later).
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool  # True: load_split gives TensorImages; False: FolderImages
    description: str  # one line for the CLI's listing
    # Images of every class carved from the labelled train split as the validation split
    # (class-balanced, the same for every run): all selection happens on it, never on test.
    val_per_class: int = 0


_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            name="fashion-mnist",
            num_classes=10,
            image_size=28,
            channels=1,
            # Measured on the 60k train images (pixel values / 255).
            mean=(0.2860, 0.2860, 0.2860),
            std=(0.3530, 0.3530, 0.3530),
            in_memory=True,
            description="Fashion-MNIST: 60k train / 10k test 28x28 grayscale clothing images, 10 classes "
            "(offline: apt-get install dataset-fashion-mnist)",
            val_per_class=500,
        ),
        DatasetInfo(
            name="cifar10",
            num_classes=10,
            image_size=32,
            channels=3,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            in_memory=True,
            description="CIFAR-10: 50k train / 10k test 32x32 RGB images, 10 classes",
            val_per_class=500,
        ),
        DatasetInfo(
            name="cifar100",
            num_classes=100,
            image_size=32,
            channels=3,
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            in_memory=True,
            description="CIFAR-100: 50k train / 10k test 32x32 RGB images, 100 classes",
            val_per_class=50,
        ),
        DatasetInfo(
            name="stl10",
            num_classes=10,
            image_size=96,
            channels=3,
            mean=(0.4467, 0.4398, 0.4066),
            std=(0.2603, 0.2566, 0.2713),
            in_memory=True,
            description="STL-10: 5k labelled + 100k unlabelled train / 8k test 96x96 RGB images, 10 classes "
            "(pre-trains on train+unlabeled)",
            val_per_class=50,
        ),
        DatasetInfo(
            name="imagenet",
            num_classes=1000,
            image_size=224,
            channels=3,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            in_memory=False,
            description="ImageNet-1k (ILSVRC2012) as an ImageFolder tree ROOT/{train,val}/<class>/*.JPEG, 1000 classes",
            val_per_class=10,
        ),
        DatasetInfo(
            name="imagenet100",
            num_classes=100,
            image_size=224,
            channels=3,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            in_memory=False,
            description="ImageNet-100 (100-class ImageNet subset) as an ImageFolder tree "
            "ROOT/{train,val}/<class>/*.JPEG",
            val_per_class=50,
        ),
        DatasetInfo(
            name="imagefolder",
            num_classes=0,
            image_size=224,
            channels=3,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            in_memory=False,
            description="any ImageFolder tree ROOT/{train,val}/<class>/<image> "
            "(classes from the folders, ImageNet stats)",
            val_per_class=10,
        ),
    ]
}

_DISPLAY_NAMES = {
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "stl10": "STL-10",
    "imagenet": "ImageNet",
    "imagenet100": "ImageNet-100",
    "imagefolder": "ImageFolder data",
}


def available_datasets() -> list[str]:
    """The dataset names :func:`load_split` accepts, in listing order (small ones first)."""
    return list(_INFOS)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; :class:`UsageError` with the closest name if unknown."""
    try:
        return _INFOS[name]
    except KeyError:
        raise UsageError(unknown_name_message("dataset", name, _INFOS)) from None


def load_split(
    name: str, root: str | Path, split: str, download: bool = False, *, hold_out_val: bool = True
) -> ImageData:
    """Load one split of dataset ``name`` stored under ``root``.

    split: ``"train"`` (the labelled train split without the validation images), ``"val"`` (the
    validation split: :attr:`DatasetInfo.val_per_class` images of every class carved from the
    labelled train split, see :func:`validation_indices`), ``"test"`` (the labelled evaluation
    split; ``val/`` for folder data; only ever reported, never used to choose anything) or
    ``"pretrain"`` (what self-supervised pre-training uses: the train split without the
    validation images, and for STL-10 train+unlabeled, where the unlabeled images have label -1).
    hold_out_val: False keeps the validation images in "train" and "pretrain".
    download: let torchvision fetch a missing small dataset (needs internet).
    """
    info = dataset_info(name)  # a UsageError, with the closest name, for an unknown one
    if split not in SPLITS:
        raise UsageError(unknown_name_message("split", split, SPLITS))
    root = Path(root).expanduser().absolute()
    data = _LOADERS[name](
        root, "test" if split == "test" else ("pretrain" if split == "pretrain" else "train"), download
    )
    if isinstance(data, TensorImages):
        _check_labels(name, root, data)
    if split == "test" or (split != "val" and not hold_out_val):
        return data
    val = validation_indices(data.labels, info.val_per_class)
    if split == "val":
        return data.subset(val)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[val] = False
    return data.subset(torch.nonzero(keep).flatten())


def validation_indices(labels: Tensor, per_class: int, seed: int = VAL_SEED) -> Tensor:
    """The validation split's indices into a labelled train split: ``per_class`` of each class.

    Each class's samples (label >= 0, in index order) are shuffled by a generator seeded with
    ``seed`` and the first ``per_class`` taken, so the split depends on the labels alone: the
    same images for every run, and the same whether unlabeled samples follow (STL-10's
    train+unlabeled holds its labelled train split first). A class with fewer samples gives a
    tenth of them, at least one.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == label).flatten()
        order = torch.randperm(len(members), generator=generator)
        count = per_class if per_class < len(members) else max(1, len(members) // 10)
        chosen.append(members[order[:count]])
    if not chosen:
        return torch.zeros(0, dtype=torch.long)
    return torch.sort(torch.cat(chosen)).values


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def _load_fashion_mnist(root: Path, split: str, download: bool) -> TensorImages:
    cls = tv_datasets.FashionMNIST
    raw = root / cls.__name__ / "raw"  # torchvision's layout: ROOT/FashionMNIST/raw/<file>
    wanted = [archive.removesuffix(".gz") for archive, _ in cls.resources]
    _copy_fashion_mnist_locally(raw, wanted)

    missing = [f for f in wanted if not (raw / f).is_file()]
    if missing and not download:
        raise UsageError(
            f"Fashion-MNIST not found: {raw} lacks {', '.join(missing)}, and {FASHION_MNIST_SYSTEM_DIR} has no "
            f".gz copies of them; install the offline copy with `apt-get install dataset-fashion-mnist` "
            f"(it is then copied into {raw} on first use), or pass --set download=true on a machine with internet"
        )
    with _translated_errors("Fashion-MNIST", raw, download):
        dataset = cls(str(root), train=split != "test", download=download)
    # (N, 28, 28) -> (N, 1, 28, 28): a view, no copy.
    return TensorImages(dataset.data.unsqueeze(1), dataset.targets.long(), list(dataset.classes))


def _copy_fashion_mnist_locally(raw: Path, wanted: list[str]) -> None:
    """Unzip every file of ``wanted`` that is missing in ``raw`` from a local ``.gz`` copy.

    Sources, in order: ``raw/<file>.gz`` (left there by an earlier torchvision download) and the
    Debian package's directory. It is a local copy, not a download, so it happens even with
    ``download=False``.
    """
    for filename in wanted:
        target = raw / filename
        if target.is_file():
            continue
        for source in (raw / f"{filename}.gz", FASHION_MNIST_SYSTEM_DIR / f"{filename}.gz"):
            if source.is_file():
                try:
                    _gunzip_atomically(source, target)
                except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # BadGzipFile is an OSError: first
                    raise UsageError(
                        f"could not unzip Fashion-MNIST's {source}: it is corrupt or truncated ({error}); replace it "
                        "with the original (apt-get install --reinstall dataset-fashion-mnist, or delete it and "
                        "download again)"
                    ) from error
                except OSError as error:
                    raise UsageError(
                        f"could not unzip Fashion-MNIST's {source} into {raw} ({error}); pass a writable "
                        f"dataset root, or unzip the four *-ubyte.gz files of {source.parent} into {raw} yourself"
                    ) from error
                break


def _gunzip_atomically(source: Path, target: Path) -> None:
    """Decompress ``source`` to ``target`` so that ``target`` is either absent or complete.

    A run killed halfway (or two runs unzipping at once) must not leave a truncated file that
    torchvision would later accept as present, hence: write a uniquely named temporary file in the
    same directory, then ``os.replace`` it (atomic on one filesystem).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        # "xb" rather than mkstemp: mkstemp's 0600 mode would make a shared root unreadable to others.
        with gzip.open(source, "rb") as compressed, open(temporary, "xb") as out:
            shutil.copyfileobj(compressed, out, length=1 << 20)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def _load_cifar(cls: type[tv_datasets.CIFAR10], name: str, root: Path, split: str, download: bool) -> TensorImages:
    folder = root / cls.base_folder
    display = _DISPLAY_NAMES[name]
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise UsageError(
            f"{display} not found: {folder} lacks {', '.join(missing)}; download {cls.url} and extract it "
            f"under {root} (it unpacks to {cls.base_folder}/), or pass --set download=true on a machine with internet"
        )
    with _translated_errors(display, folder, download, refetch=f"; re-extract {cls.url} under {root}"):
        dataset = cls(str(root), train=split != "test", download=download)
    # torchvision holds (N, 32, 32, 3) HWC numpy; one copy to contiguous NCHW.
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return TensorImages(images, torch.as_tensor(dataset.targets, dtype=torch.long), list(dataset.classes))


# --------------------------------------------------------------------------------------------
# STL-10


def _load_stl10(root: Path, split: str, download: bool) -> TensorImages:
    cls = tv_datasets.STL10
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise UsageError(
            f"STL-10 not found: {folder} lacks {', '.join(missing)}; download {cls.url} and extract it "
            f"under {root} (it unpacks to {cls.base_folder}/), or pass --set download=true on a machine with internet"
        )
    tv_split = {"train": "train", "test": "test", "pretrain": "train+unlabeled"}[split]
    with _translated_errors("STL-10", folder, download, refetch=f"; re-extract {cls.url} under {root}"):
        dataset = cls(str(root), split=tv_split, download=download)
    # torchvision already turned STL's column-major images into row-major (N, 3, 96, 96); the
    # "train" split is a transposed view, so make it contiguous (train+unlabeled already is).
    images = torch.from_numpy(dataset.data).contiguous()
    labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
    classes = list(getattr(dataset, "classes", None) or _STL10_CLASSES)
    return TensorImages(images, labels, classes)


# --------------------------------------------------------------------------------------------
# ImageFolder trees (ImageNet, ImageNet-100, any folder)

_FOLDER_LAYOUT = "ROOT/train/<class>/<image> and ROOT/val/<class>/<image>"


def _load_folder(name: str, root: Path, split: str, download: bool) -> FolderImages:
    display = _DISPLAY_NAMES[name]
    how = f"expected the ImageFolder layout {_FOLDER_LAYOUT.replace('ROOT', str(root))}"
    if name.startswith("imagenet"):
        how += " (ImageNet's val images sorted into their class folders)"
    if download:
        raise UsageError(f"{display} cannot be downloaded automatically; {how}")

    # Class indices always come from train/, so that a class missing from val/ cannot shift
    # the labels of the others (ImageFolder on val/ alone would renumber them).
    train_dir = root / "train"
    split_dir = root / ("val" if split == "test" else "train")
    for directory in (train_dir, split_dir):
        if not directory.is_dir():
            raise UsageError(f"{display} not found: {directory} is not a directory; {how}")
    try:
        classes, class_to_idx = find_classes(train_dir)
    except FileNotFoundError:
        raise UsageError(f"{display}: {train_dir} has no class folders; {how}") from None

    if split_dir != train_dir:
        unknown = sorted({entry.name for entry in os.scandir(split_dir) if entry.is_dir()} - set(classes))
        if unknown:
            raise UsageError(
                f"{display}: {split_dir} has class folders that {train_dir} lacks ({', '.join(unknown[:5])}"
                f"{', ...' if len(unknown) > 5 else ''}); train and val must share class names"
            )
    try:
        # val/ may lack some classes (a small held-out set); train/ may not.
        samples = make_dataset(split_dir, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=split_dir != train_dir)
    except FileNotFoundError as error:
        raise UsageError(f"{display}: {error.args[0] if error.args else error} (in {split_dir})") from None
    if not samples:
        raise UsageError(f"{display}: no images ({', '.join(IMG_EXTENSIONS)}) in the class folders of {split_dir}")

    expected = _INFOS[name].num_classes
    if expected and len(classes) != expected:
        warnings.warn(
            f"{display} should have {expected} classes but {train_dir} has {len(classes)} class folders",
            stacklevel=2,
        )
    return FolderImages(samples, classes)  # read by PIL: JPEGs decode at the size the crops need


# --------------------------------------------------------------------------------------------
# Shared helpers


@contextmanager
def _translated_errors(display: str, folder: Path, download: bool, refetch: str = "") -> Iterator[None]:
    """Turn torchvision's failures to find, read or download a dataset into one UsageError.

    torchvision signals a missing or corrupted dataset with a bare RuntimeError ("Dataset not
    found or corrupted ..."), a failed download with RuntimeError or urllib's OSError, and a
    damaged file with whatever its parser trips over; none of that is a bug in ssl-bench, and the
    user needs the folder that was read, not a traceback.
    """
    try:
        yield
    except UsageError:
        raise
    except (RuntimeError, OSError) as error:
        if download:
            raise UsageError(
                f"could not download {display} into {folder} ({_one_line(error)}); "
                "no internet? Copy the dataset files there instead"
            ) from error
        if isinstance(error, RuntimeError) and "corrupted" in str(error):
            raise UsageError(
                f"{display} in {folder} failed torchvision's checksum test (corrupted, truncated or "
                f"not the official files){refetch}"
            ) from error
        raise UsageError(f"could not read {display} from {folder} ({_one_line(error)})") from error
    except (ValueError, AssertionError, EOFError, KeyError, pickle.UnpicklingError) as error:
        raise UsageError(
            f"could not read {display} from {folder} ({type(error).__name__}: {_one_line(error)}); "
            "the files look corrupted"
        ) from error


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_labels(name: str, root: Path, data: TensorImages) -> None:
    """Reject labels outside [-1, num_classes): a sign of damaged or mismatched label files."""
    if len(data) == 0:
        raise UsageError(f"{_DISPLAY_NAMES[name]} under {root} has no images")
    low, high = int(data.labels.min()), int(data.labels.max())
    if low < -1 or high >= len(data.classes):
        raise UsageError(
            f"{_DISPLAY_NAMES[name]} under {root} has labels in [{low}, {high}] but {len(data.classes)} "
            "classes; the label files look corrupted"
        )


_LOADERS: dict[str, Callable[[Path, str, bool], ImageData]] = {
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": partial(_load_cifar, tv_datasets.CIFAR10, "cifar10"),
    "cifar100": partial(_load_cifar, tv_datasets.CIFAR100, "cifar100"),
    "stl10": _load_stl10,
    "imagenet": partial(_load_folder, "imagenet"),
    "imagenet100": partial(_load_folder, "imagenet100"),
    "imagefolder": partial(_load_folder, "imagefolder"),
}


# --------------------------------------------------------------------------------------------
# Subsets

Data = TypeVar("Data", TensorImages, FolderImages)


def balanced_subset(data: Data, *, per_class: int | None = None, total: int | None = None, seed: int = 0) -> Data:
    """A deterministic class-balanced subset of ``data`` (same type), for demos and quick runs.

    Give exactly one of ``per_class`` (that many samples of every class present) or ``total``
    (split evenly over the classes present; the remainder goes one each to the lowest labels).
    Unlabeled samples (label -1) are never picked. The same ``seed`` gives the same subset, and
    for a fixed seed a smaller ``per_class`` picks a subset of a larger one's samples (each
    class draws one fixed random order and takes its first k). Samples keep their original order.
    """
    if (per_class is None) == (total is None):
        raise UsageError("balanced_subset needs exactly one of per_class and total")
    count = per_class if per_class is not None else total
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError(
            f"balanced_subset: {'per_class' if per_class is not None else 'total'} must be a positive "
            f"integer, got {count!r}"
        )

    labels = data.labels
    present = torch.unique(labels[labels >= 0]).tolist()  # sorted
    if not present:
        raise UsageError("balanced_subset: the dataset has no labelled samples")
    if per_class is not None:
        quotas = [per_class] * len(present)
    else:
        base, extra = divmod(total, len(present))
        quotas = [base + (i < extra) for i in range(len(present))]

    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label, quota in zip(present, quotas):
        members = torch.nonzero(labels == label).flatten()
        # Draw the permutation even when quota is 0, so every class's order depends on the seed only.
        order = torch.randperm(len(members), generator=generator)
        if quota > len(members):
            name = data.classes[label] if label < len(data.classes) else label
            raise UsageError(f"balanced_subset: class {name!r} has only {len(members)} samples, {quota} were asked for")
        chosen.append(members[order[:quota]])
    indices = torch.sort(torch.cat(chosen)).values
    return data.subset(indices)


__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
    "SPLITS",
    "DatasetInfo",
    "available_datasets",
    "balanced_subset",
    "dataset_info",
    "load_split",
    "validation_indices",
]
