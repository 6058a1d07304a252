"""`ssl-bench eval` (a backbone trained elsewhere, scored like a run) and `ssl-bench export` (a run's backbone out)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_checkpoint_parsers(commands: Any, default_dataset: str, default_results_dir: str) -> None:
    """The `eval` and `export` subcommands."""
    evaluate = commands.add_parser(
        "eval",
        help="evaluate a checkpoint trained elsewhere (or a run) with the runs' protocols; it joins `ssl-bench table`",
    )
    evaluate.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a state dict file (.pt/.pth/.safetensors, torchvision/timm or the official VICReg/Barlow Twins "
        "layout) or an ssl-bench run directory",
    )
    evaluate.add_argument(
        "--backbone", help="the architecture of its weights: resnet18, resnet50, ... (a run or an export names its own)"
    )
    evaluate.add_argument(
        "--dataset", help=f"dataset to evaluate on (default: the run's or export's, else {default_dataset})"
    )
    evaluate.add_argument(
        "--key",
        default="",
        metavar="PREFIX",
        help="take the state dict's keys under this prefix, e.g. module.backbone. in a full VICReg/Barlow checkpoint",
    )
    evaluate.add_argument(
        "--image-size",
        type=int,
        help="input side in pixels (default: the run's or export's, else the dataset recipe's)",
    )
    evaluate.add_argument(
        "--seed", type=int, help="seed of the linear probe's batch order (default: the run's or export's, else 0)"
    )
    evaluate.add_argument("--data-root", default="data", help="where datasets live (default: ./data)")
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ... (default: auto)")
    evaluate.add_argument("--num-workers", type=int, default=4, help="data loading workers (default: 4)")
    evaluate.add_argument(
        "--results-dir",
        default=default_results_dir,
        help=f"where its run directory goes (default: ./{default_results_dir})",
    )
    evaluate.set_defaults(default_dataset=default_dataset)

    export = commands.add_parser(
        "export", help="write a run's backbone as safetensors for torchvision or timm, with a model card"
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory whose pre-training finished")
    export.add_argument(
        "--format", default="torchvision", choices=("torchvision", "timm"), help="the library it loads into"
    )
    export.add_argument(
        "--output", metavar="FILE", help="the .safetensors file (default: RUN_DIR/backbone.<format>.safetensors)"
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from ssl_bench.checkpoints.external import checkpoint_config, load_external
    from ssl_bench.data.datasets import dataset_info
    from ssl_bench.errors import UsageError
    from ssl_bench.launch.slurm import check_datasets
    from ssl_bench.models.backbones import check_backbone_name
    from ssl_bench.recipes import recipe_table_for
    from ssl_bench.report.output import print_table
    from ssl_bench.run.lifecycle import evaluate_checkpoint
    from ssl_bench.run.record import ERROR_LOG, Run

    if args.image_size is not None and args.image_size <= 0:
        raise UsageError(f"--image-size must be positive, got {args.image_size}")
    if args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.backbone is not None:
        check_backbone_name(args.backbone)
    if args.dataset is not None:
        dataset_info(args.dataset)
    # Everything is checked before anything is written: a rejected command leaves no run directory.
    external = load_external(args.checkpoint, args.backbone, args.key)
    dataset = args.dataset or external.defaults.get("dataset") or args.default_dataset
    config = checkpoint_config(
        external,
        dataset=dataset,
        image_size=args.image_size or external.defaults.get("image_size") or recipe_table_for(dataset).image_size,
        seed=args.seed if args.seed is not None else external.defaults.get("seed", 0),
        data_root=args.data_root,
        device=args.device,
        num_workers=args.num_workers,
    )
    check_datasets([config])
    dropped = f" (classifier {', '.join(external.dropped)} left out)" if external.dropped else ""
    print(f"[checkpoint] {external.source}: {external.name} weights{dropped}, evaluated on {dataset}")
    run = Run.of(args.results_dir, config)
    try:
        evaluate_checkpoint(run, lambda: external.backbone, provenance=external.provenance())
    except UsageError:
        raise
    except Exception as error:  # recorded as a failed evaluation, with its traceback, like a run's
        error_log = run.path / ERROR_LOG
        print(
            f"ssl-bench: evaluation failed: {type(error).__name__}: {error} (traceback: {error_log})", file=sys.stderr
        )
        return 1
    print()
    print_table([args.results_dir])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ssl_bench.checkpoints.export import export_run

    export = export_run(args.run_dir, args.format, args.output)
    print(f"backbone: {export.weights} ({export.card['export']['format']}, {export.card['export']['architecture']})")
    print(f"model card: {export.card_markdown}, {export.card_json}")
    print("load it with:\n")
    print(export.card["export"]["load"])
    return 0
