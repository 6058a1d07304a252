"""A backbone trained elsewhere, read and fitted to an ssl-bench architecture (``ssl-bench eval``).

What can be read
----------------
- A state dict file: ``.safetensors`` (timm's and ssl-bench's exports), or ``.pt`` / ``.pth`` /
  anything ``torch.load`` reads. The official VICReg and Barlow Twins releases ship the
  ResNet-50's ``state_dict()`` as ``resnet50.pth`` (facebookresearch/vicreg ``main_vicreg.py``
  and facebookresearch/barlowtwins ``main.py``: ``torch.save(model.module.backbone.state_dict(),
  ...)``), with torchvision's key names and no ``fc``: it loads into ``--backbone resnet50`` as it
  is.
- A full training checkpoint: a dict whose one state dict sits under an entry (``model`` in
  VICReg's ``model.pth`` and Barlow Twins' ``checkpoint.pth``, ``state_dict`` in Lightning's,
  ``method`` in ssl-bench's ``checkpoint.pt``), the backbone's keys under a prefix
  (``module.backbone.`` there: DistributedDataParallel's ``module.`` and the model's ``backbone``
  attribute). ``--key module.backbone.`` takes the keys under that prefix and strips it; the
  rest (projector, optimiser state) is ignored. With several state dicts (a student and a
  teacher, say) the entry's name starts the key: ``--key teacher.backbone.``.
- An ssl-bench run directory: its last checkpoint's backbone, with the run's seed, image size
  and dataset as defaults.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers, never
arbitrary code. Other objects a training checkpoint may name (the official LARS optimisers keep
their ``exclude_bias_and_norm`` filter function in the optimiser state) are read as inert
placeholders: the weights do not depend on them.

Fitting
-------
The backbone is built by name (``ssl_bench.models.backbones``) without a classifier; a
classifier in the file (torchvision's ``fc``, timm's ``pretrained_cfg["classifier"]``) is dropped.
Every other key must match by name and shape, both ways (strict loading); a mismatch is one
``UsageError`` line naming the first missing, unexpected and mis-shaped keys, and the ``--key``
that would strip a prefix the file's keys carry.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_bench.config import RunConfig, untrained_fields
from ssl_bench.errors import UsageError
from ssl_bench.models.backbones import BUILTIN_BACKBONES, build_backbone
from ssl_bench.run.record import CHECKPOINT_METHOD
from ssl_bench.store.rundir import CHECKPOINT, RunDir

SAFETENSORS_SUFFIX = ".safetensors"
# The safetensors metadata entry of ssl-bench's exports: a JSON object (see ssl_bench.checkpoints.export).
METADATA_KEY = "ssl_bench"
_SHOWN_KEYS = 5  # keys named per kind of mismatch in the one-line error


@dataclass(frozen=True)
class ExternalBackbone:
    """A backbone read from a checkpoint, and where it came from."""

    backbone: nn.Module
    name: str  # the ssl-bench backbone name it was fitted to
    source: str  # the file or run directory, as given
    sha256: str  # of the file holding the weights (a run directory's checkpoint.pt)
    key: str  # the prefix taken from the file's state dict ("" for none)
    dropped: tuple[str, ...] = ()  # classifier keys left out
    # What the checkpoint says about itself (an ssl-bench run or export): dataset, seed, image_size.
    defaults: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        """For the evaluation's status.json: which weights were evaluated."""
        return {
            "checkpoint": {
                "source": self.source,
                "sha256": self.sha256,
                "key": self.key,
                "backbone": self.name,
                "dropped_keys": list(self.dropped),
            }
        }


def checkpoint_config(
    external: ExternalBackbone,
    *,
    dataset: str,
    image_size: int,
    seed: int,
    data_root: str,
    device: str = "auto",
    num_workers: int = 4,
) -> RunConfig:
    """The evaluation's RunConfig: the backbone, the data and the probe's seed; the weights by hash.

    Method ``checkpoint``, no pre-training fields (like the random-init baseline's config); the
    file's hash and key are in ``method_params``, so other weights get another run directory,
    and ``source`` reads ``checkpoint: <file>``, which the table shows.
    """
    return RunConfig(
        method=CHECKPOINT_METHOD,
        dataset=dataset,
        backbone=external.name,
        image_size=image_size,
        **untrained_fields(),
        source=f"checkpoint: {external.source}",
        method_params={"sha256": external.sha256, "key": external.key},
        seed=seed,
        data_root=data_root,
        device=device,
        num_workers=num_workers,
    )


# --------------------------------------------------------------------------------------------
# Reading


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Placeholder:
    """Stands in for an object a checkpoint names but the weights do not need (an optimiser's filter)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Globals outside torch's allow-list (e.g. __main__.exclude_bias_and_norm in the official
        # VICReg / Barlow Twins optimiser state): read each as an inert placeholder.
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        with torch.serialization.safe_globals([(_Placeholder, name) for name in unsafe]):
            return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: Path) -> tuple[Any, dict[str, Any]]:
    """The file's content and, for ssl-bench's exports, what its metadata says about the run."""
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
            return load_file(path), json.loads(metadata.get(METADATA_KEY, "{}"))
        return _torch_load(path), {}
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        message = " ".join(str(error).split())[:200]
        raise UsageError(f"cannot read checkpoint {path}: {type(error).__name__}: {message}") from None


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())
    )


def select_state_dict(content: Any, key: str, source: str) -> dict[str, Tensor]:
    """The state dict under ``key`` (a prefix, stripped).

    ``content`` is a state dict, or a dict holding state dicts in some of its entries; the one
    entry is used, or the entry the key starts with (``teacher.`` in ``teacher.backbone.``).
    """
    if _is_state_dict(content):
        state = dict(content)
    elif isinstance(content, Mapping):
        entries = [name for name, value in content.items() if isinstance(name, str) and _is_state_dict(value)]
        chosen = [name for name in entries if key.startswith(f"{name}.")]
        if chosen:
            state = {f"{chosen[0]}.{k}": v for k, v in content[chosen[0]].items()}
        elif len(entries) == 1:
            state = dict(content[entries[0]])
        elif entries:
            raise UsageError(
                f"{source} holds several state dicts ({', '.join(entries)}): choose one with --key, "
                f"e.g. --key {entries[0]}."
            )
        else:
            top = ", ".join(map(str, list(content)[:8]))
            raise UsageError(f"{source} holds no state dict (a mapping of names to tensors); its entries: {top}")
    else:
        kind = "a pickled object" if isinstance(content, _Placeholder) else f"a {type(content).__name__}"
        raise UsageError(f"{source} holds {kind}, not a state dict (save the model's state_dict())")
    if not key:
        return state
    taken = {name[len(key) :]: value for name, value in state.items() if name.startswith(key)}
    if not taken:
        prefixes = sorted({name.split(".")[0] + "." for name in state})
        raise UsageError(f"no key of {source} starts with --key {key!r}; its keys start with {', '.join(prefixes)}")
    return taken


# --------------------------------------------------------------------------------------------
# Fitting


def classifier_prefixes(name: str, backbone: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the architecture's classifier, which ssl-bench's backbones leave out."""
    if name in BUILTIN_BACKBONES:
        return ("fc.",) if name.startswith("resnet") else ()
    classifier = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier")
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier] if classifier else []
    return tuple(f"{name}." for name in names)


def _first(keys: list[str]) -> str:
    more = len(keys) - _SHOWN_KEYS
    return ", ".join(keys[:_SHOWN_KEYS]) + (f" (+{more} more)" if more > 0 else "")


def _prefix_hint(unexpected: list[str], expected: set[str]) -> str | None:
    """The prefix whose removal turns most unexpected keys into expected ones (``module.backbone.``)."""
    counts: Counter[str] = Counter()
    for name in unexpected:
        parts = name.split(".")
        for cut in range(1, len(parts)):
            if ".".join(parts[cut:]) in expected:
                counts[".".join(parts[:cut]) + "."] += 1
                break
    return counts.most_common(1)[0][0] if counts else None


def fit_state_dict(backbone: nn.Module, name: str, state: dict[str, Tensor], source: str, key: str) -> tuple[str, ...]:
    """Load ``state`` into ``backbone`` strictly (classifier keys dropped first); returns the dropped keys.

    Raises a one-line UsageError naming the first missing, unexpected and mis-shaped keys.
    """
    expected = backbone.state_dict()
    classifier = classifier_prefixes(name, backbone)
    dropped = tuple(k for k in state if k not in expected and k.startswith(classifier))
    state = {k: v for k, v in state.items() if k not in dropped}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the backbone"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [f"{source}{f' (--key {key})' if key else ''} does not fit backbone {name}"]
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        if shapes:
            parts.append(f"shapes differ: {_first(shapes)}")
        hint = _prefix_hint(unexpected, set(expected))
        if hint:
            parts.append(f"try --key {key}{hint}")
        raise UsageError("; ".join(parts))
    backbone.load_state_dict(state, strict=True)
    return dropped


# --------------------------------------------------------------------------------------------
# The whole read


def load_external(path: str | Path, backbone_name: str | None, key: str = "") -> ExternalBackbone:
    """A checkpoint file or an ssl-bench run directory, fitted to its backbone (see the module docstring).

    ``backbone_name`` may be left out for a run directory or an ssl-bench export (they name
    their own); given, it must agree with theirs.
    """
    source = str(path)
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no checkpoint file or run directory {source!r}")
    if path.is_dir():
        if key:
            raise UsageError("--key selects keys of a checkpoint file; a run directory names its own backbone")
        return _from_run_dir(RunDir(path), backbone_name, source)
    content, metadata = read_checkpoint(path)
    name = _backbone_name(backbone_name, metadata.get("backbone"), source)
    state = select_state_dict(content, key, source)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights the file replaces
        backbone, _ = build_backbone(name)
    dropped = fit_state_dict(backbone, name, state, source, key)
    defaults = {k: metadata[k] for k in ("dataset", "seed", "image_size") if k in metadata}
    return ExternalBackbone(backbone, name, source, file_sha256(path), key, dropped, defaults)


def _backbone_name(given: str | None, own: str | None, source: str) -> str:
    if given is None and own is None:
        raise UsageError(f"--backbone is needed for {source}: name the architecture its weights are for, e.g. resnet50")
    if given is not None and own is not None and given != own:
        raise UsageError(f"{source} holds a {own} backbone, not {given}")
    return given or own  # type: ignore[return-value]


def _from_run_dir(run_dir: RunDir, backbone_name: str | None, source: str) -> ExternalBackbone:
    from ssl_bench.run.lifecycle import pretrained_backbone

    if not (run_dir.path / "config.json").is_file():
        raise UsageError(f"{source} is a directory but not an ssl-bench run directory (no config.json)")
    config = RunConfig.read(run_dir.path)
    if not run_dir.has_checkpoint():
        raise UsageError(f"run {source} has no {CHECKPOINT}: a baseline or an evaluation has no weights of its own")
    status = run_dir.read_status()["status"]
    if status != "finished":
        raise UsageError(f"run {source} is {status}: eval takes a run whose pre-training finished")
    name = _backbone_name(backbone_name, config.backbone, source)
    backbone = pretrained_backbone(config, run_dir)
    defaults = {"dataset": config.dataset, "seed": config.seed, "image_size": config.image_size}
    return ExternalBackbone(backbone, name, source, file_sha256(run_dir.path / CHECKPOINT), "", (), defaults)
