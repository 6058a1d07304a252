"""Checks of a local sweep before anything is written: bad input fails here, as one line.

``resolve_config`` checks what a configuration says; these check it against this machine and
its files, for a command that is about to run here: the device exists, the data root and
datasets are there, every batch fits its pre-training data, and the results directory takes
writes. They run before the first run directory is created, so a rejected command leaves none
behind, and before the random-init baseline spends its evaluation on a sweep that cannot run.
(A SLURM submission checks its own way: ``ssl_bench.launch.slurm``; the nodes' devices are not
this machine's.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ssl_bench.config import RunConfig
from ssl_bench.distributed import collectives, ddp
from ssl_bench.errors import UsageError

# RunConfig's own default data root: a fresh checkout has none until Fashion-MNIST's offline copy
# is unpacked into it (ssl_bench.data.datasets), so only another root must already exist.
DEFAULT_DATA_ROOT = RunConfig.__dataclass_fields__["data_root"].default


def check_local_sweep(configs: Sequence[RunConfig], results_dir: str | Path) -> None:
    """Everything :func:`ssl_bench.run.lifecycle.run_entry` needs from this machine; a UsageError otherwise."""
    for device in dict.fromkeys(config.device for config in configs):
        check_device(device)
    check_data(configs)
    check_writable_directory(results_dir, "results directory")


def check_device(name: str) -> None:
    """``auto`` always works; ``cuda``/``cuda:N`` need that GPU visible here, ``mps`` Apple's backend."""
    if name in ("auto", "cpu"):
        return
    device = torch.device(name)  # the name's syntax is checked by RunConfig.validate
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--set device={name}: no CUDA GPU is visible here; use device=cpu or device=auto")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--set device={name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--set device={name}: the MPS backend is not available here; use device=cpu or device=auto")


def check_data(configs: Sequence[RunConfig]) -> None:
    """Each data root exists, each dataset loads, and each run's batch fits its pre-training images.

    Loads every (dataset, root) pre-training split once, as the trainer will; its errors are
    ssl_bench.data's one-line UsageErrors (missing, corrupt, unreadable).
    """
    from ssl_bench.data.datasets import load_split

    sizes: dict[tuple[str, str, bool], int] = {}
    world_size = collectives.world_size()
    for config in configs:
        root = Path(config.data_root).expanduser()
        if config.data_root != DEFAULT_DATA_ROOT and not root.is_dir() and not config.download:
            what = "is not a directory" if root.exists() else "does not exist"
            raise UsageError(
                f"data root {config.data_root} {what}; pass the directory that holds the datasets "
                "(--data-root), or add --set download=true to download into it"
            )
        key = (config.dataset, config.data_root, config.hold_out_val)
        if key not in sizes:
            data = load_split(
                config.dataset, root, "pretrain", download=config.download, hold_out_val=config.hold_out_val
            )
            sizes[key] = len(data)
        if config.method == "random_init" or config.epochs == 0:
            continue  # the baseline trains nothing
        images = sizes[key] if config.train_subset is None else min(config.train_subset, sizes[key])
        local_batch = ddp.local_batch_size(config.batch_size, world_size)
        if local_batch < 2:
            raise UsageError(
                f"{config.method}: a batch of {local_batch} per process is too small; BatchNorm in training mode "
                "needs at least 2 samples (--batch-size)"
            )
        per_process = images // world_size
        if per_process < local_batch:
            subset = " (train_subset)" if config.train_subset is not None and config.train_subset < sizes[key] else ""
            raise UsageError(
                f"{config.method}: batch {config.batch_size} is larger than the {images} pre-training images of "
                f"{config.dataset}{subset}" + (f" over {world_size} processes" if world_size > 1 else "")
            )


def check_writable_directory(path: str | Path, what: str) -> None:
    """``path`` is (or can be made) a directory that takes writes: UsageError naming it otherwise.

    Creates nothing: the nearest existing ancestor must be a directory that a file can be
    created in (a read-only file system or a full disk fail here, not mid-run).
    """
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot use {path} as the {what}: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".ssl-bench-write-test-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise UsageError(f"cannot write into the {what} {path}: {error.strerror or error}") from None


def check_output_file(given: str | Path, flag: str) -> None:
    """An output file (or a directory for it, ``dir/``) can be written: checked before the work that fills it."""
    path = Path(given)
    directory = path if path.is_dir() or str(given).endswith(("/", os.sep)) else path.parent
    check_writable_directory(directory, f"{flag} directory")
