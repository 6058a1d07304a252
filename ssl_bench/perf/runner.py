"""One benchmark run: the selected sections in order, the targets, the printed report and files."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ssl_bench.perf.folder import bench_folder_pipeline
from ssl_bench.perf.load import bench_under_load
from ssl_bench.perf.losses import bench_loss
from ssl_bench.perf.machine import LoadMonitor, machine_info
from ssl_bench.perf.pipeline import augmentation_kinds, bench_per_sample_pipeline, bench_ssl_pipeline
from ssl_bench.perf.report import BenchReport, check_targets, format_header, format_report, resolve_output_path
from ssl_bench.perf.settings import BenchSettings, command_line
from ssl_bench.perf.step import bench_train_step


def run_bench(
    settings: BenchSettings,
    *,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    log: Callable[[str], None] = print,
    argv: Sequence[str] | None = None,
) -> BenchReport:
    """Run the selected sections, print the tables and write the JSON / CSV files."""
    device = torch.device(settings.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    saved_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _run_sections(settings, json_path, csv_path, log, argv)
    finally:
        torch.set_num_threads(saved_threads)  # a process-wide setting: leave it as found


def _run_sections(
    settings: BenchSettings,
    json_path: str | Path | None,
    csv_path: str | Path | None,
    log: Callable[[str], None],
    argv: Sequence[str] | None,
) -> BenchReport:
    device = torch.device(settings.device)
    monitor = LoadMonitor()
    started = time.monotonic()
    report = BenchReport(
        command=command_line(
            settings, None if json_path is None else str(json_path), None if csv_path is None else str(csv_path)
        ),
        argv=list(sys.argv if argv is None else argv),
        machine=machine_info(device),
        settings={k: v for k, v in asdict(settings).items() if k != "loss_cases"}
        | {"backbones": [str(b) for b in settings.backbones], "loss_cases": [asdict(c) for c in settings.loss_cases]},
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    report.settings["sections"] = list(settings.sections)
    report.load = {"load_average_start": monitor.load_start}  # completed by monitor.finish()
    log(format_header(report))
    if settings.quick:
        log("--quick: tiny sizes, for checking the tool; its figures mean nothing")

    if "step" in settings.sections:
        log("\n[training step]")
        for spec in settings.backbones:
            for method in settings.methods:
                step = bench_train_step(method, spec, settings, log)
                report.train_step.append(step)
                if step.error is None:
                    log(
                        f"  {method:<14} {spec!s:<20} harness {step.harness_samples_per_s:7.0f}/s  "
                        f"bare {step.bare_samples_per_s:7.0f}/s  ratio {step.overhead_ratio:.3f}"
                    )
    if "pipeline" in settings.sections:
        log("\n[data pipeline]")
        for size in settings.image_sizes:
            for kind in augmentation_kinds(settings.methods):
                for bench in (bench_ssl_pipeline, bench_per_sample_pipeline):
                    pipeline = bench(kind, size, settings)
                    report.pipeline.append(pipeline)
                    log(f"  {pipeline.pipeline:<10} {kind:<7} {size:>4} px  {pipeline.samples_per_s:8.0f} samples/s")
    if "folder" in settings.sections:
        log("\n[folder pipeline]")
        kinds = augmentation_kinds(settings.methods)
        if kinds:  # the recipe of the first method with a named augmentation
            report.folder.extend(bench_folder_pipeline(kinds[0], settings, log))
    if "loss" in settings.sections:
        log("\n[loss forward + backward]")
        for case in settings.loss_cases:
            loss = bench_loss(case, settings)
            report.loss.append(loss)
            log(
                f"  {case.method:<13} N={case.n:<5} D={case.d:<5} {case.form or '':<6} "
                + (f"{loss.ms:9.1f} ms" if loss.ms is not None else str(loss.error))
            )

    if "load" in settings.sections:
        log("\n[loaded machine: a process spinning on one core]")
        loaded = bench_under_load(settings.methods[0], settings.backbones[0], settings, log)
        report.under_load.append(loaded)
        if loaded.error is None:
            log(
                f"  {loaded.method} {loaded.backbone}@{loaded.image_size}: idle {loaded.idle_step_ms:.0f} ms, "
                f"loaded {loaded.loaded_step_ms:.0f} ms per step, slowdown {loaded.slowdown:.2f}x"
            )

    report.targets = check_targets(report.train_step, report.pipeline, report.loss, report.folder, report.under_load)
    report.load = monitor.finish()
    report.wall_seconds = round(time.monotonic() - started, 1)
    log("")
    log(format_report(report))
    if json_path is not None:
        path = resolve_output_path(json_path, report.machine, ".json")
        report.write_json(path)
        log(f"wrote {path}")
    if csv_path is not None:
        path = resolve_output_path(csv_path, report.machine, ".csv")
        report.write_csv(path)
        log(f"wrote {path}")
    return report
