"""`ssl-bench study`: the study file format, its runs (local, resumed after a kill, on SLURM) and
its report (intervals over seeds, paired tests against the reference).

Every run is tiny: tiny_convnet on the generated 600-image Fashion-MNIST-format data, 1 epoch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.eval.probes import protocol_for
from ssl_bench.launch.cli import main
from ssl_bench.report.stats import mean_interval, paired_t_test
from ssl_bench.run.record import base_record, is_done, read_result, write_record
from ssl_bench.store.rundir import RunDir
from ssl_bench.study.report import (
    ABOVE_UNTRAINED,
    DIFFERS,
    NOT_SIGNIFICANT,
    REFERENCE,
    TRAINING_FAILED,
    write_study_report,
)
from ssl_bench.study.spec import load_study, unique_configs

TINY = ["projector=32,16", "batch_size=64", "num_workers=0", "train_subset=none", "device=cpu"]

STUDY = """
question = "Does the tiny SimCLR's embedding probe as well as its representation, and does the margin loss?"
reference = "nt_xent"
measures = ["linear_top1", "knn_top1"]

[base]
methods = ["simclr"]
seeds = [0, 1]
set = {base}

[scales.tiny]
dataset = "fashion-mnist"
set = {scale}

[variants.nt_xent]
description = "the representation of the NT-Xent run"
set = []

[variants.embedding]
description = "the embedding of the same runs"
features = "embedding"
set = []

[variants.margin]
description = "the margin triplet loss"
set = ["loss.objective=margin_triplet"]
"""


def write_study(path: Path, data_root: Path, *, base: list[str] | None = None, text: str = STUDY) -> Path:
    base = ["eval_features=representation,embedding"] if base is None else base
    scale = ["epochs=1", f"data_root={data_root}", *TINY]
    path.write_text(text.format(base=json.dumps(base), scale=json.dumps(scale)))
    return path


# --- the file format ---------------------------------------------------------------------------


def test_a_study_resolves_to_one_run_per_method_variant_and_seed(tmp_path, fashion_root):
    study = load_study(str(write_study(tmp_path / "tiny.toml", fashion_root)))
    assert (study.name, study.reference, study.methods, study.seeds) == ("tiny", "nt_xent", ("simclr",), (0, 1))
    runs = study.runs()
    assert [(run.variant, run.seed) for run in runs] == [
        (variant, seed) for variant in ("nt_xent", "embedding", "margin", "untrained") for seed in (0, 1)
    ]
    margin = [run.config for run in runs if run.variant == "margin"]
    assert all(config.loss["objective"] == "margin_triplet" and config.epochs == 1 for config in margin)
    # The untrained network of every seed: the reference's backbone, not pre-trained.
    untrained = [run.config for run in runs if run.variant == "untrained"]
    assert [(config.method, config.epochs, config.seed) for config in untrained] == [
        ("random_init", 0, 0),
        ("random_init", 0, 1),
    ]
    assert {config.backbone for config in untrained} == {runs[0].config.backbone}
    # The embedding variant reads the reference's runs: 4 runs to carry out, not 6, and 2 untrained ones.
    assert len(unique_configs(runs)) == 6
    # A report names the study as it was given; a shipped study by its name, wherever it is installed.
    assert study.invocation == str(tmp_path / "tiny.toml")
    assert load_study("simclr_loss").invocation == "simclr_loss"
    assert len(unique_configs(study.runs(seeds=[5]))) == 3


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('reference = "nt_xent"', 'reference = "xent"'), "unknown reference variant"),
        (lambda t: t.replace("question =", "questoin ="), "unknown key in"),
        (lambda t: t.replace("seeds = [0, 1]", "seeds = []"), "seeds must be a non-empty list"),
        (lambda t: t.replace('set = ["loss.objective=margin_triplet"]', 'set = ["loss.objective=hinge"]'), "hinge"),
        (lambda t: t.replace('methods = ["simclr"]', 'methods = ["simclrr"]'), "did you mean 'simclr'"),
        (lambda t: t + "\n[variants.bad\n", "cannot read study file"),
        (lambda t: t + '\n[variants.untrained]\nset = ["projector="]\n', "'untrained' is reserved"),
        (lambda t: t.replace("[scales.tiny]", '[scales.tiny]\nsmoke_test = "yes"'), "smoke_test must be true or false"),
    ],
)
def test_bad_study_files_are_one_line_errors_and_create_nothing(tmp_path, fashion_root, capsys, edit, message):
    text = edit(STUDY)
    path = write_study(tmp_path / "bad.toml", fashion_root, text=text)
    results = tmp_path / "results"
    assert main(["study", str(path), "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not results.exists()


def test_reading_the_embedding_needs_its_evaluation(tmp_path, fashion_root, capsys):
    path = write_study(tmp_path / "tiny.toml", fashion_root, base=[])
    assert main(["study", str(path), "--dry-run"]) == 2
    assert "add eval_features=representation,embedding" in capsys.readouterr().err


def test_dry_run_lists_the_runs_once_and_runs_nothing(tmp_path, fashion_root, capsys):
    path = write_study(tmp_path / "tiny.toml", fashion_root)
    results = tmp_path / "results"
    assert main(["study", str(path), "--results-dir", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 runs (8 method x variant x seed entries)" in out
    assert out.count("nt_xent+embedding") == 2 and out.count("to run") == 6
    assert out.count("random_init    untrained") == 2
    assert not results.exists()


def test_the_shipped_studies_resolve_at_every_scale():
    studies = sorted(Path("experiments/studies").glob("*.toml"))
    assert len(studies) >= 7
    for path in studies:
        study = load_study(str(path))
        assert study.default_scale == "demo" and "cifar10" in study.scales
        assert study.reference in study.variants and 2 <= len(study.variants) <= 4
        assert len(study.seeds) >= 3
        assert study.scales["demo"].smoke_test and not study.scales["cifar10"].smoke_test
        assert set(study.scales) == {"demo", "cpu", "cifar10", "imagenet"} and not study.scales["cpu"].smoke_test
        for scale in ("demo", "cpu", "cifar10", "imagenet"):
            runs = study.runs(scale=scale)  # every variant and the untrained network, per method and seed
            assert len(runs) == len(study.methods) * (len(study.variants) + 1) * len(study.seeds)


# --- the report's statistics, on records with known numbers -------------------------------------


def _record(config, results: Path, **values) -> None:
    run_dir = RunDir.for_config(results, config)
    run_dir.path.mkdir(parents=True)
    record = base_record(config, run_dir, protocol_for(config.dataset), "finished")
    write_record(run_dir, {**record, **values}, lambda _: None)
    assert is_done(config, results)


def test_the_report_gives_intervals_and_paired_tests_against_the_reference(tmp_path, fashion_root):
    study = load_study(str(write_study(tmp_path / "tiny.toml", fashion_root)))
    runs = study.runs(seeds=[0, 1, 2])
    results = tmp_path / "results"
    reference = {0: 70.0, 1: 72.0, 2: 71.0}
    margin = {0: 60.0, 1: 61.5, 2: 60.7}  # lower on every seed, by about 10
    embedding = {0: 69.0, 1: 73.0, 2: 70.5}  # around the reference
    for config in unique_configs(runs):
        if config.method == "random_init":  # far below on linear, the same as every variant on kNN
            _record(config, results, linear_top1=40.0 + config.seed, knn_top1=50.0 + config.seed)
        elif config.loss.get("objective") == "margin_triplet":
            _record(config, results, linear_top1=margin[config.seed], knn_top1=50.0 + config.seed)
        else:
            features = {"embedding": {"linear_top1": embedding[config.seed], "knn_top1": 50.0 + config.seed}}
            _record(config, results, linear_top1=reference[config.seed], knn_top1=50.0 + config.seed, features=features)
    # A fourth seed of the reference alone, not finished: reported as such, left out of the numbers.
    (extra,) = [run.config for run in study.runs(seeds=[3]) if run.variant == "nt_xent"]
    RunDir.for_config(results, extra).path.mkdir(parents=True)
    RunDir.for_config(results, extra).write_status("running", step=3)

    report = write_study_report(study, [*runs, *study.runs(seeds=[3])], results, scale="tiny")
    table = report.table.set_index(["measure", "variant"])
    ref = table.loc[("linear_top1", "nt_xent")]
    interval = mean_interval(list(reference.values()))
    assert (ref["n"], ref["vs_reference"]) == (3, REFERENCE)
    assert (ref["mean"], ref["ci_low"], ref["ci_high"]) == pytest.approx((interval.mean, interval.low, interval.high))
    low = table.loc[("linear_top1", "margin")]
    test = paired_t_test(list(margin.values()), list(reference.values()))
    assert low["p_vs_reference"] == pytest.approx(test.p_value) and low["p_vs_reference"] < 0.05
    assert low["vs_reference"] == DIFFERS and low["diff_vs_reference"] == pytest.approx(test.mean_difference)
    assert low["diff_ci_high"] < 0  # the whole interval of the difference lies below 0
    emb = table.loc[("linear_top1", "embedding")]
    assert emb["vs_reference"] == NOT_SIGNIFICANT and emb["mean"] == pytest.approx(sum(embedding.values()) / 3)
    # Identical values on every seed: no difference at all.
    assert table.loc[("knn_top1", "margin"), "p_vs_reference"] == 1.0
    assert not report.complete and "seed 3: running" in report.markdown
    files = {path.name for path in report.files}
    assert files == {"study-tiny.md", "study-tiny.csv", "study-tiny.png"}
    assert pd.read_csv(results / "study-tiny.csv").shape[0] == 8  # 2 measures x (the untrained network + 3 variants)
    # Every variant beats the untrained network on linear; on kNN none does, the reference included.
    assert (table.loc[("linear_top1", "margin"), "gate"], table.loc[("knn_top1", "nt_xent"), "gate"]) == (
        ABOVE_UNTRAINED,
        TRAINING_FAILED,
    )
    assert table.loc[("knn_top1", "margin"), "verdict"].startswith("inconclusive at this scale")
    assert table.loc[("linear_top1", "margin"), "verdict"].startswith("margin is worse than nt_xent by 10.27 [")
    assert table.loc[("linear_top1", "embedding"), "verdict"].startswith(
        "no significant difference; the data rule out differences beyond ["
    )
    before = {path.name: path.read_bytes() for path in report.files}
    again = write_study_report(study, [*runs, *study.runs(seeds=[3])], results, scale="tiny")
    assert {path.name: path.read_bytes() for path in again.files} == before


def test_a_collapsed_variant_is_a_failed_training_not_a_finding(tmp_path, fashion_root):
    """The margin variant collapses (below the untrained network): the report says its training
    failed, with its diagnostics, and never that the margin loss is worse; nothing is a tie."""
    study = load_study(str(write_study(tmp_path / "tiny.toml", fashion_root)))
    runs = study.runs(seeds=[0, 1, 2])
    results = tmp_path / "results"
    for config in unique_configs(runs):
        seed = config.seed
        if config.method == "random_init":
            _record(config, results, linear_top1=70.0 + seed, knn_top1=60.0 + seed)
        elif config.loss.get("objective") == "margin_triplet":  # collapsed: one direction left
            _record(config, results, linear_top1=40.0 + seed, knn_top1=30.0, rankme_representation=1.5 + seed)
        else:
            features = {"embedding": {"linear_top1": 80.0 + seed, "knn_top1": 70.5 + seed}}
            _record(
                config,
                results,
                linear_top1=80.0 + seed,
                knn_top1=70.0 + seed,
                rankme_representation=40.0,
                features=features,
            )
    report = write_study_report(study, runs, results, scale="tiny")
    table = report.table.set_index(["measure", "variant"])
    for measure in ("linear_top1", "knn_top1"):
        assert table.loc[(measure, "margin"), "gate"] == TRAINING_FAILED
        assert (
            table.loc[(measure, "margin"), "verdict"]
            == "training failed at this scale: not above the untrained network"
        )
    margin_rows = [line for line in report.markdown.splitlines() if line.startswith("| simclr | margin |")]
    assert len(margin_rows) == 2 and not any("worse" in line for line in margin_rows)
    diagnostics = report.markdown.split("## Trainings that failed at this scale", 1)[1]
    assert "simclr, `margin`" in diagnostics and "rankme_representation 1.5000 (reference 40.0000)" in diagnostics
    # The embedding is 0.5 above the representation on every seed in kNN: a real, significant difference.
    assert table.loc[("knn_top1", "embedding"), "verdict"] == "embedding is better than nt_xent by 0.50 [0.50, 0.50]"
    words = report.markdown.lower()
    assert " tie" not in words and "tied" not in words and "equal" not in words


# --- running it ---------------------------------------------------------------------------------


def _ssl_bench(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssl_bench.launch.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_study_runs_end_to_end_and_resumes_after_a_kill(tmp_path, fashion_root):
    path = write_study(tmp_path / "tiny.toml", fashion_root)
    results = tmp_path / "results"
    study = load_study(str(path))
    configs = unique_configs(study.runs())
    args = ["study", str(path), "--results-dir", str(results), "--no-progress"]

    # Killed (SIGKILL, no chance to clean up) as soon as its first run is recorded as finished.
    proc = subprocess.Popen([sys.executable, "-m", "ssl_bench.launch.cli", *args], cwd=tmp_path)
    deadline = time.monotonic() + 300
    try:
        while not is_done(configs[0], results):
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the first run never finished"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = RunDir.for_config(results, configs[0]).path / "result.json"
    first_record = first.read_bytes()
    assert not all(is_done(config, results) for config in configs)

    done = _ssl_bench(args, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"[simclr] already evaluated in {RunDir.for_config(results, configs[0]).path}" in output
    assert first.read_bytes() == first_record  # the finished run was not redone
    assert all(is_done(config, results) for config in configs)
    assert "| simclr | **nt_xent** | 2 |" in output and "| simclr | embedding | 2 |" in output

    table = pd.read_csv(results / "study-tiny.csv").set_index(["measure", "variant"])
    for variant, reads in (("nt_xent", "representation"), ("embedding", "embedding")):
        values = [read_result(RunDir.for_config(results, c))["features"][reads]["linear_top1"] for c in configs[:2]]
        assert table.loc[("linear_top1", variant), "mean"] == pytest.approx(sum(values) / 2, abs=1e-3)
    assert table.loc[("linear_top1", "margin"), "n"] == 2
    assert table.loc[("linear_top1", "untrained"), "n"] == 2  # the untrained network ran with the study
    assert not math.isnan(table.loc[("linear_top1", "margin"), "p_vs_reference"])
    assert (results / "study-tiny.png").stat().st_size > 1000

    # Once more: nothing left to run, the same report.
    report = (results / "study-tiny.md").read_bytes()
    again = _ssl_bench(args, tmp_path)
    assert again.returncode == 0 and again.stdout.count("already evaluated in") == 6
    assert (results / "study-tiny.md").read_bytes() == report


@pytest.mark.slurm
def test_a_study_runs_through_slurm(slurm_cluster, fashion_root):
    from ssl_bench.launch import slurm

    study_path = write_study(
        slurm_cluster.workdir / "slurm_study.toml",
        fashion_root,
        text=STUDY.split("[variants.margin]")[0],  # the reference and the embedding: 2 runs, and 2 untrained
    )
    results = slurm_cluster.workdir / "study"
    args = [
        "study",
        str(study_path),
        "--results-dir",
        str(results),
        *slurm_cluster.cli_args(),
    ]
    try:
        proc = _ssl_bench(args, slurm_cluster.workdir)
    finally:
        ids = [job.job_id for job in slurm.read_manifest(results)]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    jobs = slurm.read_manifest(results)
    assert len(jobs) == 4 and len({job.job_id.split("_")[0] for job in jobs}) == 1, output
    for job in jobs:
        status = json.loads((Path(job.run_dir) / "status.json").read_text())
        assert status["status"] == "finished" and status["slurm"]["job_id"] == job.job_id
    table = pd.read_csv(results / "study-tiny.csv").set_index(["measure", "variant"])
    assert table.loc[("linear_top1", "nt_xent"), "n"] == 2 and table.loc[("linear_top1", "embedding"), "n"] == 2
    # Submitted again: every run is finished, nothing goes to the queue; the report is rewritten.
    again = _ssl_bench(args, slurm_cluster.workdir)
    assert again.returncode == 0 and "nothing to submit" in again.stdout
    assert len(slurm.read_manifest(results)) == 4


COMMITTED = sorted((Path(__file__).resolve().parents[1] / "results" / "studies").glob("*/study-*.md"))


@pytest.mark.parametrize("report", COMMITTED, ids=[f"{path.parent.name}-{path.stem}" for path in COMMITTED])
def test_the_committed_study_reports_regenerate_from_their_run_records(report, tmp_path):
    """results/studies/<name> holds the records of real runs and the report made from them."""
    committed = report.parent
    scale = report.stem.removeprefix("study-")
    copy = tmp_path / committed.name
    for path in committed.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            target = copy / path.relative_to(committed)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    # Exit 1 where a run of the study failed (a diverged seed, say): it is reported.
    failed = "## Runs not finished" in report.read_text()
    args = ["study", committed.name, "--scale", scale, "--results-dir", str(copy), "--report-only"]
    assert main(args) == int(failed)

    def without_paths(text: str) -> list[str]:  # the reproduce line names the results directory
        return [line for line in text.splitlines() if not line.startswith("- reproduce:")]

    assert without_paths((copy / report.name).read_text()) == without_paths(report.read_text())
    csv = report.with_suffix(".csv")
    assert (copy / csv.name).read_bytes() == csv.read_bytes()
    assert (committed / "READING.md").is_file()
