"""Which code and which machine produced a number.

Every record (``environment.json``, ``status.json``, ``checkpoint.pt``, ``result.json``) carries
:func:`code_hash`: a content hash of the installed package's Python source (``ssl_bench`` with
its ``methods``), the same whether the package runs from a git checkout, a dirty tree, a wheel or
a SLURM job's copy. Where the code is a git checkout the commit and a dirty flag come beside it
(:func:`git_state`). Two runs with the same configuration but another code hash are different
measurements: ``ssl_bench.run.record`` does not reuse a finished run of other code, and the
tables say when a comparison mixes code.

The machine: the CPU's model name (not ``platform.machine()``: the model decides the kernels, and
the same seed gives other losses on an Intel Xeon and an AMD EPYC) or the GPU's, and the torch
build. A run directory's ``environment.json`` holds :func:`environment`: these, the library
versions and the host. Nothing here imports torch at module level, so ``ssl-bench --help``
stays light.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ssl_bench.config import RunConfig

# The packages whose Python source is "the code". Recipes and studies (TOML) are not: what they set is
# in each run's resolved config, whose identity hash covers it.
CODE_PACKAGES = ("ssl_bench", "ssl_bench.methods", "ssl_bench.experiments")
CODE_HASH_LENGTH = 12


def source_files(package_dirs: dict[str, Path]) -> dict[str, Path]:
    """Every ``.py`` file under the packages' directories, keyed by its path as the package names
    it (``ssl_bench/methods/simclr.py``), so that a checkout (``methods/`` at the top) and a wheel
    (``ssl_bench/methods/``) give the same keys."""
    files: dict[str, Path] = {}
    for package, directory in package_dirs.items():
        prefix = package.replace(".", "/")
        for path in sorted(directory.rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[f"{prefix}/{path.relative_to(directory).as_posix()}"] = path
    return files


def hash_sources(files: dict[str, Path]) -> str:
    """A short SHA-256 over the (name, content) pairs, in name order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name].read_bytes()).digest())
    return digest.hexdigest()[:CODE_HASH_LENGTH]


def package_dirs() -> dict[str, Path]:
    """Where each of :data:`CODE_PACKAGES` is imported from in this process."""
    dirs = {}
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"cannot locate the package {package}")
        dirs[package] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return dirs


@functools.cache
def code_hash() -> str:
    """The content hash of the running ssl-bench source (computed once per process)."""
    return hash_sources(source_files(package_dirs()))


def same_code(record: Mapping[str, Any], config: RunConfig) -> bool:
    """The record (result.json, status.json or a checkpoint's state) was written by this code, or
    the config says to take it whatever code wrote it (``reuse_finished``, ``--reuse-finished``)."""
    return config.reuse_finished or record.get("code_hash") == code_hash()


def git_state(directory: Path | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout the package is imported from; ``(None, None)`` when
    the package is not a tracked file of a checkout (a wheel in a virtualenv that happens to sit
    inside some repository is not that repository's code)."""
    package = directory or package_dirs()["ssl_bench"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=package, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        git("ls-files", "--error-unmatch", "__init__.py")
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", str(top)))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's model."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def torch_build() -> dict[str, Any]:
    """The torch build: its version, the commit it was built from, and its CUDA/cuDNN versions."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "version": torch.__version__,
        "git_version": getattr(torch.version, "git_version", None),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
    }


@functools.cache
def code_identity() -> dict[str, Any]:
    """The fields every record carries about the code: hash, commit and dirty flag, taken once
    per process (like the code it imported: a checkout that moves on under a running command
    must not lend its later commit to that command's records)."""
    commit, dirty = git_state()
    return {"code_hash": code_hash(), "git_commit": commit, "git_dirty": dirty}


def environment(device: torch.device) -> dict[str, Any]:
    """What a reader needs to reproduce or compare a run (a run directory's ``environment.json``):
    versions, hardware, code revision."""
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_build": torch_build(),
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        **code_identity(),
    }
