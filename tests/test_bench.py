"""`ssl-bench bench`: runs end to end, writes its files, and compares like with like.

No timing assertions: speed is what the benchmark prints, not what a test checks.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from ssl_bench.device import configure_cpu_runtime
from ssl_bench.launch.cli import main
from ssl_bench.method import get_method
from ssl_bench.perf.folder import FolderResult
from ssl_bench.perf.load import LoadResult, bench_under_load, burner
from ssl_bench.perf.losses import LossResult, bench_loss, loss_value
from ssl_bench.perf.machine import machine_slug
from ssl_bench.perf.pipeline import PipelineResult
from ssl_bench.perf.report import BenchReport, check_targets, format_report
from ssl_bench.perf.settings import BackboneSpec, parse_backbone, resolve_settings
from ssl_bench.perf.step import StepResult, bench_config, compare_harness_and_bare
from ssl_bench.perf.synthetic import synthetic_images

# The smallest full run: every section, one method, a tiny batch, one repeat, one torch thread
# (a loaded 2-core CI machine runs many tiny ops much faster on one thread).
QUICK = [
    "bench",
    "--quick",
    "--methods",
    "vicreg",
    "--batch-size",
    "8",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--workers",
    "0",
    "--threads",
    "1",
]


def test_quick_bench_runs_end_to_end_and_writes_json_and_csv(tmp_path, capsys):
    threads = torch.get_num_threads()
    json_path, csv_path = tmp_path / "bench.json", tmp_path / "bench.csv"
    assert main([*QUICK, "--json", str(json_path), "--csv", str(csv_path)]) == 0
    assert torch.get_num_threads() == threads  # --threads is undone afterwards
    printed = capsys.readouterr().out
    for heading in ("Training step", "Data pipeline", "Folder pipeline", "Loss forward + backward", "Targets"):
        assert heading in printed

    report = json.loads(json_path.read_text())
    assert report["schema"] == "ssl-bench-bench/1"
    assert report["command"].startswith("ssl-bench bench --device cpu --methods vicreg")
    machine = report["machine"]
    for key in ("device", "device_name", "cpu_model", "cpu_threads", "torch", "git_commit", "python"):
        assert key in machine
    assert machine["torch"] == torch.__version__ and machine["device"] == "cpu"
    assert set(report["load"]) >= {"load_average_start", "load_average_end", "other_processes_cpu_share", "under_load"}

    (step,) = report["train_step"]
    assert step["method"] == "vicreg" and step["backbone"] == "tiny_convnet" and step["error"] is None
    for key in ("harness_samples_per_s", "bare_samples_per_s", "overhead_ratio", "harness_step_ms"):
        assert step[key] > 0
    assert "peak_memory_mb" in step and "step_memory_mb" in step

    pipelines = {(p["pipeline"], p["recipe"]) for p in report["pipeline"]}
    kind = get_method("vicreg").augmentation  # VICReg's recipe augmentation, in both pipelines
    assert pipelines == {("ssl-bench", kind), ("per-sample", kind)}
    assert all(p["samples_per_s"] > 0 for p in report["pipeline"])

    folder = {f["pipeline"]: f for f in report["folder"]}
    assert set(folder) == {"ssl-bench", "classic"} and folder["ssl-bench"]["recipe"] == kind
    assert all(f["samples_per_s"] > 0 and f["error"] is None for f in folder.values())
    assert folder["ssl-bench"]["speedup"] == pytest.approx(
        folder["ssl-bench"]["samples_per_s"] / folder["classic"]["samples_per_s"]
    )  # one round: the ratio of the two rates

    losses = {r["form"]: r for r in report["loss"]}
    assert set(losses) == {"gram", "direct"}
    assert losses["gram"]["loss"] == pytest.approx(losses["direct"]["loss"], rel=1e-5)
    assert all(r["ms"] > 0 for r in report["loss"])

    verdicts = {t["name"].split(":")[0]: t["verdict"] for t in report["targets"]}
    assert set(verdicts) == {"harness overhead", "Gram-form speed-up", "pipeline speed-up", "folder speed-up"}
    assert verdicts["folder speed-up"] == "n/a"  # --quick views are 64 px; the target is at 224
    assert set(verdicts.values()) <= {"PASS", "FAIL", "n/a"}

    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    sections = [row["section"] for row in rows]
    assert sections.count("train_step") == 1 and sections.count("pipeline") == 2 and sections.count("folder") == 2
    assert sections.count("loss") == 2 and sections.count("target") == len(report["targets"])
    for row in rows:
        assert row["machine_torch"] == torch.__version__ and row["machine_git_commit"] == str(machine["git_commit"])


def test_a_json_directory_gets_the_machine_name(tmp_path):
    out = tmp_path / "results" / "bench"
    out.mkdir(parents=True)
    assert main([*QUICK, "--sections", "loss", "--json", str(out)]) == 0
    (written,) = out.glob("*.json")
    report = json.loads(written.read_text())
    assert written.stem == machine_slug(report["machine"]) and written.stem.startswith("cpu-")
    assert report["train_step"] == [] and report["pipeline"] == [] and report["folder"] == []
    assert len(report["loss"]) == 2


@pytest.mark.parametrize("method", ["vicreg", "tico", "simclr", "barlow_twins"])
def test_bare_loop_takes_the_same_steps_as_the_harness(method):
    """The reference loop computes the harness's loss, and its update gives the same next loss."""
    settings = resolve_settings(methods=[method], quick=True, batch_size=8, device="cpu")
    config = bench_config(method, settings.backbones[0], settings)
    data = synthetic_images(8, 16)
    pairs = compare_harness_and_bare(config, data, steps=2)
    for harness_loss, bare_loss in pairs:
        assert harness_loss == pytest.approx(bare_loss, rel=1e-6, abs=1e-7)
    # The first update changed the weights (the lr is not 0), so the second comparison has teeth.
    assert pairs[0][0] != pairs[1][0]


@pytest.mark.parametrize("method", ["vicreg", "barlow_twins"])
@pytest.mark.parametrize("n, d", [(64, 256), (96, 48)])
def test_gram_and_direct_forms_compute_the_same_loss(method, n, d):
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(n, d, generator=generator)
    z_b = z_a + 0.5 * torch.randn(n, d, generator=generator)
    gram = loss_value(method, z_a, z_b, "gram")
    direct = loss_value(method, z_a, z_b, "direct")
    assert gram == pytest.approx(direct, rel=1e-5)
    # The form is an argument of each call, not a module switch: nothing is left set, and the
    # method's own loss (its form chosen by shape) gives the same value.
    assert not hasattr(sys.modules[get_method(method).__module__], "_FORM_OVERRIDE")
    assert loss_value(method, z_a, z_b) == pytest.approx(direct, rel=1e-5)


def test_bench_loss_times_both_forms_on_the_same_inputs():
    settings = resolve_settings(methods=["barlow_twins"], quick=True, repeats=1, warmup=0, device="cpu")
    results = [bench_loss(case, settings) for case in settings.loss_cases]
    assert [r.form for r in results] == ["gram", "direct"]
    assert results[0].loss == pytest.approx(results[1].loss, rel=1e-5)


def _step(ratio: float) -> StepResult:
    return StepResult("vicreg", "tiny_convnet", 32, 8, "fp32", False, "lars", [8], overhead_ratio=ratio)


def test_targets_pass_fail_and_not_measured():
    losses = [LossResult("vicreg", 512, 8192, "gram", ms=10.0), LossResult("vicreg", 512, 8192, "direct", ms=45.0)]
    pipelines = [
        PipelineResult("ssl-bench", "simclr", 32, 8, 0, samples_per_s=900.0),
        PipelineResult("per-sample", "simclr", 32, 8, 2, samples_per_s=400.0),
    ]
    checks = check_targets([_step(0.99), _step(0.97), _step(0.5)], pipelines, losses)
    by_name = {c.name.split(":")[0]: c for c in checks}
    assert by_name["harness overhead"].verdict == "PASS"  # the median: one outlier does not decide
    assert by_name["harness overhead"].value == pytest.approx(0.97)
    assert "lowest 0.500" in by_name["harness overhead"].detail
    assert by_name["Gram-form speed-up"].verdict == "PASS" and by_name["Gram-form speed-up"].value == pytest.approx(4.5)
    assert by_name["pipeline speed-up"].verdict == "FAIL" and by_name["pipeline speed-up"].value == pytest.approx(2.25)

    empty = check_targets([], [], [])
    assert {c.verdict for c in empty} == {"n/a"}


def test_folder_and_load_targets():
    folder = [
        FolderResult("ssl-bench", "asymmetric", 224, 32, 2, samples_per_s=50.0, speedup=2.5),
        FolderResult("ssl-bench gpu-decode", "asymmetric", 224, 32, 2, samples_per_s=30.0, speedup=1.5),
        FolderResult("classic", "asymmetric", 224, 32, 2, samples_per_s=20.0),
        FolderResult("ssl-bench", "asymmetric", 64, 8, 0, samples_per_s=50.0, speedup=1.2),
    ]
    loads = [
        LoadResult("simclr", "resnet18", 32, 64, 2, 1, "PASSIVE", slowdown=1.6),
        LoadResult("simclr", "resnet18", 32, 64, 2, 1, None, slowdown=9.0),
    ]
    checks = [c for c in check_targets([], [], [], folder, loads) if c.name.startswith(("folder", "slowdown"))]
    assert [c.verdict for c in checks] == ["PASS", "FAIL", "n/a", "PASS", "FAIL"]  # 64 px: informational
    assert checks[0].value == 2.5 and checks[3].at_most and not checks[0].at_most
    report = BenchReport("cmd", [], {}, {}, folder=folder, under_load=loads, targets=checks)
    printed = format_report(report)
    assert "(target <= 2)" in printed and "(target >= 2)" in printed and "Loaded machine" in printed


def test_loaded_mode_measures_the_slowdown_and_stops_its_burner():
    settings = resolve_settings(methods=["simclr"], quick=True, batch_size=8, repeats=1, warmup=0, device="cpu")
    result = bench_under_load("simclr", settings.backbones[0], settings, print)
    assert result.error is None and result.rounds == 1
    assert result.idle_step_ms > 0 and result.loaded_step_ms > 0
    assert result.slowdown == pytest.approx(result.loaded_step_ms / result.idle_step_ms)
    with burner(None) as process:
        assert process.poll() is None  # spinning
    assert process.poll() is not None  # stopped with the block


def test_configure_cpu_runtime_keeps_the_users_choice():
    environ: dict[str, str] = {}
    applied = configure_cpu_runtime(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert applied["omp_wait_policy_applied"] is False  # torch is already loaded in this process
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied["heap_keeps_freed_memory"] is True
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert configure_cpu_runtime(environ)["omp_wait_policy"] == "ACTIVE" and environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_command_sets_the_wait_policy_before_torch_loads():
    probe = (
        "import os, sys\n"
        "from ssl_bench.launch import cli\n"
        "cli.configure_cpu_runtime = (lambda original: lambda: (print('torch' in sys.modules), original())[1])"
        "(cli.configure_cpu_runtime)\n"
        "try:\n    cli.main(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environ, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "False" and lines[-1] == "PASSIVE"  # set before torch was imported


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backbones", "resnet18@x"], "image size"),
        (["--methods", "vicrg"], "unknown method"),
        (["--batch-size", "0"], "--batch-size must be positive"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message, capsys):
    assert main(["bench", "--quick", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(capsys):
    assert main(["bench", "--quick", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_backbone_specs_and_defaults():
    assert parse_backbone("resnet50@224", 32) == BackboneSpec("resnet50", 224)
    assert parse_backbone("tiny_convnet", 32) == BackboneSpec("tiny_convnet", 32)
    settings = resolve_settings(device="cpu")
    assert [str(b) for b in settings.backbones] == ["tiny_convnet@32", "resnet18@32"]
    assert settings.batch_size == 128 and settings.loss_sizes == "cpu"
    cases = {(c.method, c.n, c.d, c.form) for c in settings.loss_cases}
    assert {("vicreg", 512, 8192, "gram"), ("vicreg", 512, 8192, "direct")} <= cases
