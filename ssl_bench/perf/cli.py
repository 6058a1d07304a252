"""`ssl-bench bench`: how fast the harness runs on this machine, and what it costs in memory.

Four measurements, each printed as a table and saved (``--json``, ``--csv``) with a description
of the machine, so that figures from different machines and commits can be compared:

Training step (:mod:`ssl_bench.perf.step`)
    samples/s of ``Trainer.train_step`` per method and backbone on one batch of synthetic
    images, interleaved with a bare PyTorch loop (same model, loss, optimizer and batch; forward,
    backward and step, nothing else); harness / bare samples/s is the harness overhead. Also
    the peak memory of one step.
Data pipeline (:mod:`ssl_bench.perf.pipeline`)
    samples/s of the real TrainLoader against the classic per-sample pipeline with the same
    recipe: PIL + ``torchvision.transforms`` in a DataLoader with worker processes.
Folder pipeline (:mod:`ssl_bench.perf.folder`)
    samples/s at 224 px of the TrainLoader on a folder of ImageNet-like JPEGs the benchmark
    writes, against torchvision's ImageFolder + transforms with the same recipe and workers
    (and on CUDA with nvJPEG decoding), in alternating rounds.
Loss (:mod:`ssl_bench.perf.losses`)
    forward + backward time and peak memory of each method's loss (found through the method
    registry) at recipe sizes; for VICReg and Barlow Twins both the Gram (N x N) and the direct
    (D x D) form, with the loss values of both.
Loaded machine (:mod:`ssl_bench.perf.load`, ``--loaded``)
    the training step with and without a burner process spinning on one core: the slowdown.
Targets (:mod:`ssl_bench.perf.report`)
    harness / bare >= 0.95, Gram-form speed-up >= 3x, pipeline speed-up >= 3x at 32 px,
    folder-pipeline speed-up >= 2x, and (``--loaded``) slowdown <= 2x, each PASS or FAIL.

Timing and memory: :mod:`ssl_bench.perf.timing` (warm-up excluded, median of repeats, CUDA
events). The machine and the load other processes put on it: :mod:`ssl_bench.perf.machine`.
Settings and defaults: :mod:`ssl_bench.perf.settings`; the run itself: :mod:`ssl_bench.perf.runner`.

This module holds the parser and the command. Importing it imports no torch: the run's modules
are imported when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from ssl_bench.perf.settings import (
    DEFAULT_CPU_BACKBONES,
    DEFAULT_CUDA_BACKBONES,
    DEFAULT_METHODS,
    DEFAULT_SECTIONS,
    LOSS_SIZES,
    SECTIONS,
    resolve_settings,
)


def add_bench_parser(commands: Any) -> None:
    """The ``bench`` subcommand's arguments; ``commands`` is the parser's ``add_subparsers()`` object."""
    bench = commands.add_parser(
        "bench",
        help="measure training-step, data-pipeline, folder-pipeline and loss speed and memory on this machine",
        description="Training step (harness vs a bare PyTorch loop), data pipeline (vs per-sample PIL), "
        "folder pipeline on ImageNet-like JPEGs (vs ImageFolder + transforms), loss forward+backward "
        "(Gram vs direct form), and with --loaded the slowdown beside a busy core; PASS/FAIL targets.",
    )
    bench.add_argument("--methods", nargs="+", metavar="METHOD", help=f"default: {' '.join(DEFAULT_METHODS)}")
    bench.add_argument(
        "--backbones",
        nargs="+",
        metavar="NAME[@SIZE]",
        help=f"backbones, each optionally at its own image size (default on CPU: "
        f"{' '.join(DEFAULT_CPU_BACKBONES)}; on CUDA: {' '.join(DEFAULT_CUDA_BACKBONES)})",
    )
    bench.add_argument("--image-size", type=int, help="image side for backbones without @SIZE (default: 32)")
    bench.add_argument("--batch-size", type=int, help="batch size (default: 128 on CPU, 256 on CUDA)")
    bench.add_argument("--repeats", type=int, help="timed repeats; the median is reported (default: 5)")
    bench.add_argument("--warmup", type=int, help="untimed warm-up steps/batches/calls (default: 1)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: checks that the tool works in seconds")
    bench.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    bench.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        help=f"run only these sections (default: {' '.join(DEFAULT_SECTIONS)})",
    )
    bench.add_argument(
        "--loaded",
        action="store_true",
        help="add the 'load' section: the training step beside a process spinning on one core (the slowdown)",
    )
    bench.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, usually the cores)")
    bench.add_argument(
        "--workers", type=int, help="DataLoader workers of the per-sample and folder pipelines (default: usable cores)"
    )
    bench.add_argument(
        "--dataset", help="whose recipe and normalisation to use (default: cifar10 up to 96 px, imagenet above)"
    )
    bench.add_argument(
        "--loss-sizes",
        default="auto",
        choices=LOSS_SIZES,
        help="loss sizes: recipe (N=512/2048 x D=8192, ...), cpu (what fits a small CPU), "
        "quick; auto = recipe on CUDA, cpu on CPU",
    )
    bench.add_argument("--json", metavar="PATH", help="write the report as JSON (a directory: <dir>/<machine>.json)")
    bench.add_argument(
        "--csv", metavar="PATH", help="write one CSV row per measurement (a directory: <dir>/<machine>.csv)"
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """``ssl-bench bench``. Exit status 0 whenever it ran, whatever the targets say: timings on
    shared machines are too noisy to gate on, and the verdicts are in the output and the files."""
    from ssl_bench.launch.validate import check_output_file
    from ssl_bench.perf.runner import run_bench

    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path is not None:  # before the benchmark, not after it has run for minutes
            check_output_file(path, flag)
    settings = resolve_settings(
        methods=args.methods,
        backbones=args.backbones,
        image_size=args.image_size,
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        quick=args.quick,
        sections=_sections(args.sections, args.loaded),
        workers=args.workers,
        dataset=args.dataset,
        loss_sizes=args.loss_sizes,
        threads=args.threads,
    )
    run_bench(settings, json_path=args.json, csv_path=args.csv)
    return 0


def _sections(chosen: list[str] | None, loaded: bool) -> list[str] | None:
    """``--sections`` (None: the defaults), with "load" added by ``--loaded``."""
    if not loaded:
        return chosen
    sections = list(chosen or DEFAULT_SECTIONS)
    return sections if "load" in sections else [*sections, "load"]
