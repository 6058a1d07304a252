"""The model card of an exported backbone: what it is, how it was trained and scored, how to load it.

One dict (:func:`model_card`, written as JSON) and its Markdown rendering
(:func:`render_model_card`). Every number is read from the run directory's own records
(``config.json``, ``status.json``, ``result.json``, ``environment.json``): the card says nothing
the run did not record. A run that was pre-trained but not evaluated has ``evaluation: null``.
"""

from __future__ import annotations

import json
from typing import Any

from ssl_bench import __version__
from ssl_bench.config import LINEAR_LR_SCALING, LR_SCALING_FORMS, RunConfig
from ssl_bench.data.datasets import dataset_info
from ssl_bench.provenance import code_identity
from ssl_bench.store.rundir import RunDir

CARD_VERSION = 1


def model_card(config: RunConfig, run_dir: RunDir, export: dict[str, Any]) -> dict[str, Any]:
    """The card of the export ``export`` (file, format, architecture, hash, loading code) of the run."""
    status = run_dir.read_status()
    result = run_dir.read_result()
    environment_path = run_dir.path / "environment.json"
    environment = json.loads(environment_path.read_text()) if environment_path.is_file() else {}
    info = dataset_info(config.dataset)
    return {
        "model_card_version": CARD_VERSION,
        "export": export,
        "method": config.method,
        "backbone": config.backbone,
        "recipe": {
            "source": config.source,
            "deviations": config.deviations,
            "config": config.to_dict(),
        },
        "data": {
            "dataset": config.dataset,
            "image_size": config.image_size,
            "train_subset": config.train_subset,
            "hold_out_val": config.hold_out_val,
            # What the backbone expects: RGB images (grayscale repeated) resized to image_size and
            # normalised per channel.
            "mean": list(info.mean),
            "std": list(info.std),
            "description": info.description,
        },
        "epochs": config.epochs,
        "epochs_done": status.get("epochs_done"),
        "seed": config.seed,
        "pretraining": {
            "final_loss": status.get("final_loss"),
            "pretrain_seconds": status.get("train_seconds"),
            "samples_per_second": status.get("samples_per_second"),
            "device": environment.get("device"),
            "device_name": environment.get("device_name"),
        },
        "evaluation": _evaluation(result),
        "provenance": {
            "run_directory": run_dir.path.as_posix(),
            "identity_hash": config.identity_hash(),
            "trained_at_commit": environment.get("git_commit"),
            "trained_with_code_hash": (result or {}).get("code_hash", environment.get("code_hash")),
            "torch": environment.get("torch"),
            "ssl_bench_version": __version__,
            "exported_at_commit": code_identity()["git_commit"],
            "exported_with_code_hash": code_identity()["code_hash"],
        },
    }


def _evaluation(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if result is None or result.get("status") != "finished":
        return None
    details = result.get("eval_details") or {}
    protocol = result.get("eval_protocol") or {}
    return {
        "linear_top1": result.get("linear_top1"),
        "linear_setting": (result.get("linear_choice") or {}).get("setting"),
        "knn_top1": result.get("knn_top1"),
        "knn_setting": (result.get("knn_choice") or {}).get("setting"),
        "knn_top1_fixed": result.get("knn_top1_fixed"),
        "online_top1": result.get("online_top1"),
        "selection_split": result.get("selection_split"),
        "reported_split": result.get("reported_split"),
        "protocol": protocol.get("name"),
        "protocol_hash": result.get("eval_protocol_hash"),
        "samples": {split: details.get(f"{split}_samples") for split in ("train", "val", "test")},
    }


def _number(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _setting(setting: dict[str, Any] | None) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in (setting or {}).items())


def render_model_card(card: dict[str, Any]) -> str:
    """The card as Markdown: summary, evaluation, loading code, recipe, data, provenance."""
    export, data, evaluation = card["export"], card["data"], card["evaluation"]
    lines = [
        f"# {card['method']} / {card['backbone']} / {data['dataset']}: an ssl-bench backbone",
        "",
        f"A {card['backbone']} pre-trained with **{card['method']}** on {data['dataset']} for {card['epochs_done']} "
        f"of {card['epochs']} epochs (seed {card['seed']}), exported as `{export['file']}` "
        f"({export['format']}, `{export['architecture']}`, {export['parameters']:,} parameters, "
        f"{export['representation_dim']}-d representation).",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation is None:
        lines.append("Not evaluated: the run has no finished `result.json`.")
    else:
        samples = evaluation["samples"]
        lines += [
            f"Frozen backbone, protocol `{evaluation['protocol']}` ({evaluation['protocol_hash']}): settings chosen on "
            f"the {evaluation['selection_split']} split, top-1 reported on the {evaluation['reported_split']} split "
            f"({samples['train']} train / {samples['val']} validation / {samples['test']} test images).",
            "",
            "| protocol | top-1 (%) | setting |",
            "|:--|--:|:--|",
            f"| linear probe | {_number(evaluation['linear_top1'])} | {_setting(evaluation['linear_setting'])} |",
            f"| weighted kNN | {_number(evaluation['knn_top1'])} | {_setting(evaluation['knn_setting'])} |",
            f"| weighted kNN | {_number(evaluation['knn_top1_fixed'])} | k 200, temperature 0.1 |",
        ]
        if evaluation.get("online_top1") is not None:
            lines.append(f"| online probe | {_number(evaluation['online_top1'])} | end of pre-training |")
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        export["load"].rstrip("\n"),
        "```",
        "",
        f"Inputs: RGB images (grayscale repeated to three channels) at {data['image_size']} px, normalised with "
        f"mean {data['mean']} and std {data['std']}. SHA-256 of the file: `{export['sha256']}`.",
    ]
    if export["cifar_stem"]:
        lines += [
            "",
            "The backbone has ssl-bench's CIFAR stem (a 3x3 stride-1 first convolution and no max-pool), which the "
            "library model gets first, as above.",
        ]
    recipe, pretraining = card["recipe"], card["pretraining"]
    config = recipe["config"]
    lines += [
        "",
        "## Method and recipe",
        "",
        f"- recipe: {recipe['source']}",
        f"- batch {config['batch_size']}, optimiser {config['optimizer']}, base lr {config['base_lr']:g} "
        f"(lr = {LR_SCALING_FORMS[config.get('lr_scaling', LINEAR_LR_SCALING)]}), "
        f"weight decay {config['weight_decay']:g}, "
        f"{config['warmup_epochs']} warm-up epochs, projector {config['projector']}",
        f"- loss parameters: {json.dumps(config['loss'], sort_keys=True)}",
        *(f"- deviation, {name}: {why}" for name, why in sorted(recipe["deviations"].items())),
        f"- pre-training: final loss {_number(pretraining['final_loss'], 4)}, "
        f"{_number(pretraining['pretrain_seconds'], 1)} s, {_number(pretraining['samples_per_second'], 0)} samples/s "
        f"on {pretraining['device_name'] or pretraining['device']}",
        "",
        "## Data",
        "",
        f"- {data['dataset']}: {data['description']}",
        f"- pre-training images: {data['train_subset'] or 'the whole train split'}"
        f"{', validation split held out' if data['hold_out_val'] else ''}",
        "",
        "## Provenance",
        "",
        f"- run directory `{card['provenance']['run_directory']}` (identity {card['provenance']['identity_hash']})",
        f"- trained at commit {card['provenance']['trained_at_commit']}, torch {card['provenance']['torch']}",
        f"- exported by ssl-bench {card['provenance']['ssl_bench_version']} at commit "
        f"{card['provenance']['exported_at_commit']}",
        "",
        "The full record is in the JSON card beside this file.",
    ]
    return "\n".join(lines) + "\n"
