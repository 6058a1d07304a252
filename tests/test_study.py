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

from ssl_bench.config import RunConfig
from ssl_bench.launch.cli import main
from ssl_bench.recipes import load_recipe_table, resolve_config
from ssl_bench.report.stats import mean_interval, paired_t_test
from ssl_bench.run.record import Run
from ssl_bench.study.report import (
    ABOVE_UNTRAINED,
    DIFFERS,
    NOT_SIGNIFICANT,
    REFERENCE,
    TRAINING_FAILED,
    write_study_report,
)
from ssl_bench.study.spec import load_study, unique_configs
from ssl_bench.train.trainer import Trainer

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


MARGIN = 'set = ["loss.objective=margin_triplet"]'  # the margin variant's overrides
BASE = 'methods = ["simclr"]'  # a line of [base]


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
        # (The text is formatted after the edit: an inline table's braces are doubled.)
        (lambda t: t.replace(MARGIN, MARGIN + "\nmultiply = {{ epochs = 0.5 }}"), "1 x 0.5 = 0.5 is not a whole"),
        (lambda t: t.replace(MARGIN, MARGIN + "\nmultiply = {{ epoch = 0.5 }}"), "did you mean 'epochs'"),
        (lambda t: t.replace(MARGIN, MARGIN + "\nmultiply = {{ seed = 2 }}"), "unknown numeric field"),
        (lambda t: t.replace(MARGIN, MARGIN + "\nmultiply = {{ train_subset = 0.5 }}"), "no train_subset to multiply"),
        (lambda t: t.replace(BASE, BASE + '\nmethod_set = {{ vicreg = ["base_lr=0.1"] }}'), "not in [base] methods"),
        (lambda t: t.replace(BASE, BASE + '\nmethod_set = {{ simclr = ["lr_scaling=cubic"] }}'), "lr_scaling 'cubic'"),
        (lambda t: t.replace(BASE, BASE + "\nlr_ladder = [0.5, 0.25]"), "decreasing positive factors starting at 1"),
        (lambda t: t.replace(BASE, BASE + "\nlr_ladder = [1, 1]"), "decreasing positive factors starting at 1"),
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
    run = Run.of(results, config)
    run.path.mkdir(parents=True)
    run.write_record({**run.base_record("finished"), **values}, lambda _: None)
    assert run.is_done()


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
    Run.of(results, extra).path.mkdir(parents=True)
    Run.of(results, extra).write_status("running", step=3)

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
        while not Run.of(results, configs[0]).is_done():
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the first run never finished"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = Run.of(results, configs[0]).path / "result.json"
    first_record = first.read_bytes()
    assert not all(Run.of(results, config).is_done() for config in configs)

    done = _ssl_bench(args, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"[simclr] already evaluated in {Run.of(results, configs[0]).path}" in output
    assert first.read_bytes() == first_record  # the finished run was not redone
    assert all(Run.of(results, config).is_done() for config in configs)
    assert "| simclr | **nt_xent** | 2 |" in output and "| simclr | embedding | 2 |" in output

    table = pd.read_csv(results / "study-tiny.csv").set_index(["measure", "variant"])
    for variant, reads in (("nt_xent", "representation"), ("embedding", "embedding")):
        values = [Run.of(results, c).read_result()["features"][reads]["linear_top1"] for c in configs[:2]]
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


# --- the batch-size study: equal epochs, equal steps, each method's lr rule ------------------------


def _arms(study, scale: str) -> dict[tuple[str, str], RunConfig]:
    return {(run.method, run.variant): run.config for run in study.runs(scale=scale, seeds=[0])}


# The factor of the batch-256 lr each method runs at batch 64: SimCLR's square-root rule, the
# linear rule of VICReg, Barlow Twins and SimSiam.
BATCH_64_LR = {"simclr": 0.5, "vicreg": 0.25, "barlow_twins": 0.25, "simsiam": 0.25}


@pytest.mark.parametrize("scale", ["demo", "cpu", "cifar10", "imagenet"])
def test_the_batch_size_arms_hold_epochs_or_steps_equal_at_each_methods_lr(scale):
    study = load_study("batch_size")
    arms = _arms(study, scale)
    for method, factor in BATCH_64_LR.items():
        reference = arms[method, "batch_256"]
        recipe = resolve_config(method, study.scales[scale].dataset)
        # The cpu answer ran SimSiam at its CIFAR row's lr (the scale pins it), the others at the row's.
        base_lr = (
            load_recipe_table("cifar").methods[method].base_lr
            if (scale, method) == ("cpu", "simsiam")
            else recipe.base_lr
        )
        assert reference.batch_size == 256 and reference.base_lr == base_lr
        assert reference.lr == pytest.approx(base_lr)  # the row's lr at batch 256, under either rule
        assert reference.lr_scaling == ("sqrt" if method == "simclr" else "linear")
        epochs, steps = arms[method, "batch_64_equal_epochs"], arms[method, "batch_64_equal_steps"]
        for small in (epochs, steps):
            assert small.batch_size == 64 and small.base_lr == reference.base_lr
            assert small.lr == pytest.approx(reference.lr * factor)
        assert (epochs.epochs, epochs.warmup_epochs) == (reference.epochs, reference.warmup_epochs)
        assert (steps.epochs, steps.warmup_epochs) == (reference.epochs // 4, reference.warmup_epochs / 4)
    assert study.lr_ladder == (1.0, 0.5, 0.25)


def test_at_the_cpu_scale_the_equal_steps_arm_takes_the_references_steps_and_warmup():
    """30k images: 117 steps an epoch at batch 256 for 8 epochs, 468 at 64 for 2; warmup 1 and 0.25 epochs."""
    arms = _arms(load_study("batch_size"), "cpu")
    assert (arms["vicreg", "batch_256"].epochs, arms["vicreg", "batch_256"].train_subset) == (8, 30000)

    def steps(config: RunConfig) -> tuple[int, int]:  # the trainer's total and warmup steps
        per_epoch = config.train_subset // config.batch_size
        return per_epoch * config.epochs, round(per_epoch * config.warmup_epochs)

    for method in BATCH_64_LR:
        assert steps(arms[method, "batch_256"]) == steps(arms[method, "batch_64_equal_steps"]) == (936, 117)
        assert steps(arms[method, "batch_64_equal_epochs"]) == (4 * 936, 468)
    # cifar10: a quarter of the recipe's 1000 epochs and 10 of warmup; the recipes' lrs 0.4 and 0.3.
    simclr, vicreg = (
        _arms(load_study("batch_size"), "cifar10")[m, "batch_64_equal_steps"] for m in ("simclr", "vicreg")
    )
    assert (vicreg.epochs, vicreg.warmup_epochs) == (250, 2.5)
    assert simclr.lr == pytest.approx(0.2) and vicreg.lr == pytest.approx(0.075)  # 0.4 x sqrt(64 / 256), 0.3 x 64 / 256


def test_the_trainer_takes_the_multiplied_epochs_and_a_fractional_warmup(tmp_path, fashion_root):
    """A variant a quarter of the scale's epochs long at a quarter of its batch: the same steps, the
    same warmup steps (256 images: 4 steps an epoch at batch 64 for 4 epochs, 16 at 16 for 1)."""
    text = STUDY.replace(MARGIN, 'set = ["batch_size=16"]\nmultiply = {{ epochs = 0.25, warmup_epochs = 0.25 }}')
    path = write_study(tmp_path / "tiny.toml", fashion_root, text=text)
    study = load_study(str(path))
    runs = study.runs(seeds=[0], extra_settings=["epochs=4", "warmup_epochs=1", "train_subset=256"])
    reference, quarter = (next(run.config for run in runs if run.variant == name) for name in ("nt_xent", "margin"))
    assert (quarter.epochs, quarter.warmup_epochs, quarter.batch_size) == (1, 0.25, 16)
    assert " ".join(study.variants["margin"].override_words()) == "batch_size=16 epochs*0.25 warmup_epochs*0.25"
    trainers = [
        Trainer(config, Run.of(tmp_path, config), progress=False, log=lambda _: None) for config in (reference, quarter)
    ]
    assert [(t.steps_per_epoch, t.total_steps, t.warmup_steps) for t in trainers] == [(4, 16, 4), (16, 16, 4)]


def test_method_set_overrides_one_methods_runs_only(tmp_path, fashion_root):
    text = STUDY.replace(
        'methods = ["simclr"]', 'methods = ["simclr", "vicreg"]\nmethod_set = {{ simclr = ["lr_scaling=sqrt"] }}'
    )
    text = text.replace(
        'set = ["loss.objective=margin_triplet"]',
        'set = ["batch_size=32"]\nmethod_set = {{ vicreg = ["base_lr=0.1"] }}',
    )
    study = load_study(str(write_study(tmp_path / "tiny.toml", fashion_root, text=text)))
    configs = {(run.method, run.variant): run.config for run in study.runs(seeds=[0]) if run.variant != "untrained"}
    assert {key: config.lr_scaling for key, config in configs.items()} == {
        ("simclr", "nt_xent"): "sqrt",
        ("simclr", "embedding"): "sqrt",
        ("simclr", "margin"): "sqrt",
        ("vicreg", "nt_xent"): "linear",
        ("vicreg", "embedding"): "linear",
        ("vicreg", "margin"): "linear",
    }
    assert configs["vicreg", "margin"].base_lr == 0.1 and configs["simclr", "margin"].base_lr != 0.1
    assert configs["vicreg", "margin"].lr == pytest.approx(0.1 * 32 / 256)
    assert configs["simclr", "margin"].lr == pytest.approx(configs["simclr", "nt_xent"].base_lr * math.sqrt(32 / 256))


@pytest.mark.parametrize("scale", ["cpu", "cifar10"])
def test_the_batch_size_dry_run_lists_each_arms_schedule(tmp_path, capsys, scale):
    results = tmp_path / "results"
    assert main(["study", "batch_size", "--scale", scale, "--results-dir", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # 4 methods x 3 arms x 3 seeds, and one untrained network per seed that every method shares.
    assert "39 runs (48 method x variant x seed entries)" in out and out.count("to run") == 39
    assert out.count("not trained") == 3 and not results.exists()
    lines = [line for line in out.splitlines() if "simclr" in line and "seed 0" in line]
    # The demo row's tuned base_lr at batch 256; SimCLR's square-root rule halves it at batch 64.
    demo_lr = resolve_config("simclr", "fashion-mnist", {}, []).base_lr
    expected = {
        "cpu": [
            f"batch 256 epochs 8 warmup 1 lr {demo_lr:.4g}",
            f"batch 64 epochs 8 warmup 1 lr {demo_lr / 2:.4g}",
            f"batch 64 epochs 2 warmup 0.25 lr {demo_lr / 2:.4g}",
        ],
        "cifar10": [
            "batch 256 epochs 1000 warmup 10 lr 0.4",
            "batch 64 epochs 1000 warmup 10 lr 0.2",
            "batch 64 epochs 250 warmup 2.5 lr 0.2",
        ],
    }[scale]
    assert [next(text for text in expected if text + " " in line) for line in lines] == expected


# --- the lr ladder: a diverged run is run again at a lower lr -------------------------------------

LADDER = 'methods = ["simclr"]\nlr_ladder = [1.0, 0.5, 0.25]'


class LadderExecutor:
    """Writes each run's record as if it had run: a run diverges (a non-finite loss) on the first
    ``diverging[(objective, seed)]`` rungs of its ladder; every other run finishes with linear_top1 =
    60 + 10 x its rung + its seed (the untrained network 40). Like the real executors, it skips a
    finished run; ``ran`` lists (objective, seed, rung) of each run it carried out."""

    def __init__(self, first_lr: float, diverging: dict[tuple[str, int], int]) -> None:
        self.first_lr, self.diverging = first_lr, diverging
        self.ran: list[tuple[str, int, int]] = []

    def rung(self, config: RunConfig) -> int:  # the untrained network's lr is 0: rung 0
        return round(math.log2(self.first_lr / config.base_lr)) if config.base_lr else 0

    @staticmethod
    def objective(config: RunConfig) -> str:
        return config.loss.get("objective", "nt_xent") if config.loss else "untrained"

    def execute(self, configs, results_dir):
        from ssl_bench.errors import NonFiniteLossError
        from ssl_bench.launch.executor import Outcome

        for config in configs:
            run = Run.of(results_dir, config)
            if run.is_done():
                continue
            key = (self.objective(config), config.seed)
            self.ran.append((*key, self.rung(config)))
            run.path.mkdir(parents=True, exist_ok=True)
            if self.rung(config) < self.diverging.get(key, 0):
                run.record_failure(NonFiniteLossError(3, {"loss": math.nan}), log=lambda _: None)
            else:
                value = 40.0 if config.method == "random_init" else 60.0 + 10 * self.rung(config) + config.seed
                run.write_record(
                    {**run.base_record("finished"), "linear_top1": value, "knn_top1": value}, lambda _: None
                )
        return [
            Outcome(c, Run.of(results_dir, c).path, Run.of(results_dir, c).read_result()["status"]) for c in configs
        ]


def test_a_diverged_run_is_run_again_down_the_lr_ladder_and_resumes(tmp_path, fashion_root, monkeypatch, capsys):
    from ssl_bench.launch import executor as executors

    text = (
        STUDY.replace('methods = ["simclr"]', LADDER).split("[variants.embedding]")[0]
        + STUDY.split('features = "embedding"\nset = []\n')[1]
    )
    path = write_study(tmp_path / "ladder.toml", fashion_root, text=text, base=[])
    study = load_study(str(path))
    first_lr = study.runs()[0].config.base_lr
    # nt_xent seed 0 diverges once; margin seed 1 twice; margin seed 0 on every rung (the ladder ends).
    fake = LadderExecutor(first_lr, {("nt_xent", 0): 1, ("margin_triplet", 1): 2, ("margin_triplet", 0): 3})
    monkeypatch.setattr(executors, "executor_for", lambda args: fake)
    results = tmp_path / "results"
    args = ["study", str(path), "--results-dir", str(results)]

    assert main(args) == 1  # margin seed 0 never finished
    out = capsys.readouterr().out
    assert sorted(fake.ran) == sorted(
        [("untrained", 0, 0), ("untrained", 1, 0), ("nt_xent", 0, 0), ("nt_xent", 1, 0)]
        + [("margin_triplet", 0, 0), ("margin_triplet", 1, 0)]  # round 1: every run on its first rung
        + [("nt_xent", 0, 1), ("margin_triplet", 0, 1), ("margin_triplet", 1, 1)]  # round 2: the 3 that diverged
        + [("margin_triplet", 0, 2), ("margin_triplet", 1, 2)]  # round 3: the 2 that diverged again
    )
    assert "3 run(s) diverged: running them again at the next lr of [1.0, 0.5, 0.25]" in out
    # The paired comparison takes each retry's numbers: 60 + 10 x rung + seed.
    table = pd.read_csv(results / "study-tiny.csv").set_index(["measure", "variant"])
    assert table.loc[("linear_top1", "nt_xent"), "per_seed"] == "0:70;1:61"
    assert table.loc[("linear_top1", "margin"), "per_seed"] == "1:81"  # seed 0 diverged on every rung
    report = (results / "study-tiny.md").read_text()
    assert "- lr ladder: x1, x0.5, x0.25: a run whose loss goes non-finite is run again at the next factor" in report
    retries = report.split("## Runs retried at a lower learning rate", 1)[1].split("\n## ")[0]
    lr = study.runs()[0].config.lr
    first = f"- simclr, `nt_xent`, seed 0: diverged at lr {lr:.4g} (x1); its numbers are of lr {lr / 2:.4g} (x0.5)"
    assert f"{first}: finished" in retries
    assert (
        f"- simclr, `margin`, seed 1: diverged at lr {lr:.4g} (x1), lr {lr / 2:.4g} (x0.5); its numbers are of lr "
        f"{lr / 4:.4g} (x0.25): finished" in retries
    )
    assert "- simclr, `margin`, seed 0: diverged at lr" in retries and "(x0.25): failed" in retries
    assert "simclr, margin, seed 0: failed (NonFiniteLossError: non-finite loss at step 3" in report

    # Run again: every diverged rung is found from its record and not run again; only the last
    # rung's failed run is, as any failed run is. The report is the same.
    fake.ran.clear()
    assert main(args) == 1
    assert fake.ran == [("margin_triplet", 0, 2)]
    assert (results / "study-tiny.md").read_text() == report
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("(x0.5: retry)") == 1 and listed.count("(x0.25: retry)") == 2
    assert main([*args, "--report-only"]) == 1 and (results / "study-tiny.md").read_text() == report


def test_a_study_without_a_ladder_does_not_retry(tmp_path, fashion_root, monkeypatch):
    from ssl_bench.launch import executor as executors

    path = write_study(tmp_path / "tiny.toml", fashion_root)
    study = load_study(str(path))
    fake = LadderExecutor(study.runs()[0].config.base_lr, {("nt_xent", 0): 1})
    monkeypatch.setattr(executors, "executor_for", lambda args: fake)
    assert main(["study", str(path), "--results-dir", str(tmp_path / "results")]) == 1
    assert all(rung == 0 for *_, rung in fake.ran) and len(fake.ran) == 6
    assert "Runs retried" not in (tmp_path / "results" / "study-tiny.md").read_text()


def test_the_trainers_non_finite_loss_sends_a_real_run_down_the_ladder(
    tmp_path, fashion_root, monkeypatch, capsys, one_thread
):
    """The real executor and trainer: at the study's own lr the loss is NaN (patched), at half of
    it the run trains; the retry is an ordinary run directory, and a second command runs nothing."""
    from ssl_bench.method import get_method
    from ssl_bench.run import lifecycle
    from ssl_bench.study.ladder import rung_config

    text = STUDY.replace('methods = ["simclr"]', LADDER).split("[variants.embedding]")[0]  # the reference alone
    path = write_study(tmp_path / "real.toml", fashion_root, text=text, base=[])
    (first,) = [run.config for run in load_study(str(path)).runs(seeds=[0]) if run.variant == "nt_xent"]
    retry = rung_config(first, 0.5)
    real_entry = lifecycle.run_entry

    def run_entry(run, **kwargs):
        with monkeypatch.context() as patch:
            if run.config.base_lr == first.base_lr:
                patch.setattr(get_method("simclr"), "loss", lambda self, z_a, z_b: ((z_a * math.nan).sum(), {}))
            return real_entry(run, **kwargs)

    monkeypatch.setattr(lifecycle, "run_entry", run_entry)
    results = tmp_path / "results"
    args = ["study", str(path), "--results-dir", str(results), "--seeds", "0", "--no-progress"]
    assert main(args) == 0
    failed = Run.of(results, first).read_result()
    assert failed["status"] == "failed" and "non-finite loss at step 0" in failed["error"]
    assert retry.base_lr == first.base_lr / 2 and Run.of(results, retry).is_done()
    recorded = Run.of(results, retry).read_result()
    table = pd.read_csv(results / "study-tiny.csv").set_index(["measure", "variant"])
    assert table.loc[("linear_top1", "nt_xent"), "per_seed"] == f"0:{recorded['linear_top1']:.6g}"
    assert f"its numbers are of lr {retry.lr:.4g} (x0.5): finished" in (results / "study-tiny.md").read_text()
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert str(Run.of(results, first).path) not in out and f"already evaluated in {Run.of(results, retry).path}" in out
