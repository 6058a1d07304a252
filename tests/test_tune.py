"""`ssl-bench tune`: equal budgets, trials as ordinary runs, choices from the validation split."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ssl_bench.launch.cli import main
from ssl_bench.launch.tune import search_space
from ssl_bench.run.record import read_result
from ssl_bench.run.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["projector=32,16", "batch_size=64", "num_workers=0", "device=cpu", "train_subset=none"]


def _tune(fashion_root: Path, results: Path, *extra: str) -> int:
    args = [
        "tune",
        "simclr",
        "vicreg",
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
        best = max(trials, key=lambda trial: trial["val_top1"])
        assert provenance["best_score"] == best["val_top1"]
        assert table[method]["base_lr"] == best["base_lr"] and table[method]["weight_decay"] == best["weight_decay"]
        space = {d.key: d for d in search_space(method, "fashion-mnist")}
        for trial in trials:  # inside the declared space, and each an ordinary finished run
            assert space["base_lr"].low <= trial["base_lr"] <= space["base_lr"].high
            (run_dir,) = [
                p for p in (results / "fashion-mnist").glob(f"{method}-*") if trial["identity_hash"] in p.name
            ]
            record = read_result(RunDir(run_dir))
            assert record["status"] == "finished" and record["linear_choice"]["val_top1"] == trial["val_top1"]
    first = (results / "tune" / "fashion-mnist.toml").read_text().split("\n", 1)[1]
    capsys.readouterr()

    # The same command again: the seeded sampler proposes the same trials, found finished.
    assert _tune(fashion_root, results) == 0
    assert "already finished" in capsys.readouterr().out
    assert (results / "tune" / "fashion-mnist.toml").read_text().split("\n", 1)[1] == first


def test_tune_without_a_search_space_is_one_line(fashion_root, tmp_path, capsys):
    code = main(["tune", "simclr", "--dataset", "cifar10", "--budget", "1", "--results-dir", str(tmp_path / "r")])
    assert code == 2 and "has no search space" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
