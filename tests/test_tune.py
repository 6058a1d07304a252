"""`ssl-bench tune`: equal budgets, trials as ordinary runs, choices from the validation split."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ssl_bench.launch.cli import main
from ssl_bench.launch.tune import search_space, trial_outcome, tune_methods
from ssl_bench.provenance import code_hash
from ssl_bench.recipes import resolve_config
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["projector=32,16", "batch_size=64", "num_workers=0", "device=cpu", "train_subset=none"]


def _tune(fashion_root: Path, results: Path, *extra: str, methods: tuple[str, ...] = ("simclr", "vicreg")) -> int:
    args = [
        "tune",
        *methods,
        "--budget",
        "2",
        "--epochs",
        "1",
        "--data-root",
        str(fashion_root),
        "--results-dir",
        str(results),
        "--no-progress",
        *[a for s in TINY for a in ("--set", s)],
        *extra,
    ]
    return main(args)


def test_tune_runs_equal_budgets_and_records_the_choice(fashion_root, tmp_path, capsys):
    results = tmp_path / "runs"
    assert _tune(fashion_root, results) == 0
    table = tomllib.loads((results / "tune" / "fashion-mnist.toml").read_text())
    for method in ("simclr", "vicreg"):
        provenance = table[method]["provenance"]
        trials = provenance["trials"]
        assert provenance["budget"] == len(trials) == 2 and provenance["selection_split"] == "val"
        assert provenance["trial_seed"] == 100 and provenance["final_seeds"] == []  # the trials' own seed
        assert [trial["outcome"] for trial in trials] == ["finished"] * 2
        assert (provenance["finished_trials"], provenance["diverged_trials"], provenance["failed_trials"]) == (2, 0, 0)
        assert provenance["code_hash"] == code_hash()
        best = max(trials, key=lambda trial: trial["val_top1"])
        assert provenance["best_score"] == best["val_top1"]
        assert table[method]["base_lr"] == best["base_lr"] and table[method]["weight_decay"] == best["weight_decay"]
        space = {d.key: d for d in search_space(method, "fashion-mnist")}
        for trial in trials:  # inside the declared space, and each an ordinary finished run
            assert space["base_lr"].low <= trial["base_lr"] <= space["base_lr"].high
            (run_dir,) = [
                p for p in (results / "fashion-mnist").glob(f"{method}-*") if trial["identity_hash"] in p.name
            ]
            record = RunDir(run_dir).read_result()
            assert record["status"] == "finished" and record["linear_choice"]["val_top1"] == trial["val_top1"]
    first = (results / "tune" / "fashion-mnist.toml").read_text().split("\n", 1)[1]
    capsys.readouterr()

    # The same command again: the seeded sampler proposes the same trials, found finished.
    assert _tune(fashion_root, results) == 0
    assert "already finished" in capsys.readouterr().out
    assert (results / "tune" / "fashion-mnist.toml").read_text().split("\n", 1)[1] == first


def test_a_trial_seed_among_the_final_seeds_is_refused(fashion_root, tmp_path, capsys):
    results = tmp_path / "runs"
    assert _tune(fashion_root, results, "--seed", "1", "--final-seeds", "0", "1", "2") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "trial seed 1 (--seed) is one of --final-seeds" in error
    assert not results.exists()


def test_trial_outcomes_tell_divergence_from_other_failures(tmp_path):
    config = resolve_config("simclr", "fashion-mnist", settings=TINY)
    run_dir = Run.of(tmp_path, config)
    assert trial_outcome(config, tmp_path) == (0.0, "failed")  # nothing recorded: not finished
    run_dir.path.mkdir(parents=True)
    run_dir.write_status("failed", error="non-finite loss at step 3: loss=nan")
    assert trial_outcome(config, tmp_path) == (0.0, "diverged")
    run_dir.write_status("failed", error="RuntimeError: out of memory")
    assert trial_outcome(config, tmp_path) == (0.0, "failed")
    (run_dir.path / "result.json").write_text(json.dumps({"status": "finished", "linear_choice": {"val_top1": 81.5}}))
    assert trial_outcome(config, tmp_path) == (81.5, "finished")


def test_tune_without_a_search_space_is_one_line(fashion_root, tmp_path, capsys):
    code = main(["tune", "simclr", "--dataset", "cifar10", "--budget", "1", "--results-dir", str(tmp_path / "r")])
    assert code == 2 and "has no search space" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_rounds_propose_together_and_the_same_values_as_one_at_a_time(fashion_root, tmp_path):
    """A round asks every method for `parallel` trials before any runs; a seeded study proposes the
    same values however its trials are grouped into rounds (and whichever executor runs them)."""
    batches: list[list[tuple[str, float, float]]] = []

    class RecordOnly:  # runs nothing: every trial scores 0
        def execute(self, configs, results_dir):
            batches.append([(c.method, c.base_lr, c.weight_decay) for c in configs])
            return []

    record_only = RecordOnly()

    overrides = {"epochs": 1, "data_root": str(fashion_root), "seed": 0}
    results = tmp_path / "runs"
    grouped = tune_methods(["simclr", "vicreg"], "fashion-mnist", 3, results, overrides, TINY, record_only, parallel=2)
    # Rounds of 2 then 1 trial per method, each round one call with every method's trials.
    assert [[method for method, *_ in batch] for batch in batches] == [
        ["simclr", "simclr", "vicreg", "vicreg"],
        ["simclr", "vicreg"],
    ]
    assert all(t["val_top1"] == 0.0 for r in grouped.values() for t in r["provenance"]["trials"])
    assert grouped["simclr"]["provenance"]["parallel"] == 2
    batches.clear()
    single = tune_methods(["simclr", "vicreg"], "fashion-mnist", 3, results, overrides, TINY, record_only)
    assert len(batches) == 3 and all(len(batch) == 2 for batch in batches)
    for method in ("simclr", "vicreg"):
        values = [(t["base_lr"], t["weight_decay"]) for t in grouped[method]["provenance"]["trials"]]
        assert values == [(t["base_lr"], t["weight_decay"]) for t in single[method]["provenance"]["trials"]]
    assert not results.exists()  # the executor ran nothing, so nothing was written


def test_a_bad_parallel_is_one_line(fashion_root, tmp_path, capsys):
    assert _tune(fashion_root, tmp_path / "r", "--parallel", "0") == 2
    assert capsys.readouterr().err.strip() == "ssl-bench: error: --parallel must be positive, got 0"
    assert not (tmp_path / "r").exists()


@pytest.mark.slurm
def test_tune_through_slurm_sends_each_round_as_one_job_array(slurm_cluster, fashion_root):
    """The real local cluster: trials go out as job arrays, and the chosen values are the local ones."""
    from ssl_bench.launch import slurm

    results = slurm_cluster.workdir / "tune"
    args = [
        sys.executable,
        "-m",
        "ssl_bench.launch.cli",
        "tune",
        "simclr",
        "--budget",
        "2",
        "--parallel",
        "2",
        "--epochs",
        "1",
        "--data-root",
        str(fashion_root),
        "--results-dir",
        str(results),
        "--no-progress",
        *[a for s in TINY for a in ("--set", s)],
        *slurm_cluster.cli_args(wait=False),
    ]
    try:
        proc = subprocess.run(args, cwd=slurm_cluster.workdir, capture_output=True, text=True, timeout=600)
    finally:
        ids = [job.job_id for job in slurm.read_manifest(results)]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = slurm.read_manifest(results)
    # One round of 2 trials (+ the random-init baseline of their seed): one array of 3 tasks.
    assert len(jobs) == 3 and len({job.job_id.split("_")[0] for job in jobs}) == 1
    assert sorted(job.method for job in jobs) == ["random_init", "simclr", "simclr"]
    tuned = tomllib.loads((results / "tune" / "fashion-mnist.toml").read_text())["simclr"]
    assert all(trial["val_top1"] > 0 for trial in tuned["provenance"]["trials"])  # both trials finished

    # The same command run locally proposes, runs and chooses the same (CPU runs are deterministic).
    local = slurm_cluster.workdir / "tune-local"
    assert _tune(fashion_root, local, "--parallel", "2", methods=("simclr",)) == 0
    here = tomllib.loads((local / "tune" / "fashion-mnist.toml").read_text())["simclr"]
    assert here["base_lr"] == tuned["base_lr"] and here["weight_decay"] == tuned["weight_decay"]
    assert here["provenance"]["trials"] == tuned["provenance"]["trials"]
