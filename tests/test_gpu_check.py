"""scripts/gpu-check.sh: its dry run lists valid commands; without a GPU it stops with one line."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from ssl_bench.launch.cli import build_parser
from ssl_bench.perf.settings import resolve_settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def dry_run_steps() -> list[tuple[str, int, list[str]]]:
    """(name, time limit, argv) of each step the dry run lists."""
    result = run_script("--dry-run")
    assert result.returncode == 0, result.stderr
    steps = []
    for line in result.stdout.splitlines()[1:]:
        match = re.fullmatch(r"  \[(.+)\] \(limit (\d+) s\) (.+)", line)
        assert match, line
        steps.append((match.group(1), int(match.group(2)), shlex.split(match.group(3))))
    return steps


def test_script_is_executable_and_strict():
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert "pip install" not in text and "apt-get" not in text  # installs nothing


def test_dry_run_lists_the_cuda_checks_within_eight_minutes():
    steps = dry_run_steps()
    assert sum(limit for _, limit, _ in steps) <= 8 * 60
    commands = {name: argv for name, _, argv in steps}
    tests = commands["cuda tests"]
    assert tests[1:4] == ["-m", "pytest", "-q"] and "cuda or gpu" in tests

    bench = commands["bench"]
    assert bench[0].endswith("ssl-bench") and bench[1] == "bench"
    assert bench[bench.index("--device") + 1] == "cuda"
    assert {"resnet18_cifar@32", "resnet50@224"} <= set(bench)
    assert bench[bench.index("--json") + 1] == "results/bench/"
    # Every option exists, and the names resolve (on the CPU: CUDA is checked when it runs).
    args = build_parser().parse_args(bench[1:])
    settings = resolve_settings(backbones=args.backbones, batch_size=args.batch_size, device="cpu")
    assert "folder" in settings.sections and len(settings.methods) >= 2

    (pretrain,) = [argv for name, argv in commands.items() if name.startswith("pretrain +")]
    args = build_parser().parse_args(pretrain[1:])
    assert args.command == "run" and len(args.methods) == 2
    assert {"device=cuda", "precision=bf16"} <= set(args.settings)
    table = commands["pretrain table"]
    assert table[1] == "table" and table[2] == args.results_dir and args.results_dir.startswith("results/bench/cuda-")


def test_bad_argument_is_a_one_line_error():
    result = run_script("--bogus")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--bogus" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_stops_before_running_anything():
    log = ROOT / "results" / "bench" / "cuda-check.log"
    existed = log.exists()
    result = run_script()
    assert result.returncode == 1 and "no CUDA device" in result.stderr
    assert log.exists() == existed  # nothing started, nothing written
