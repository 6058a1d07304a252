"""One executor for every command: `run`, `tune` and `study` hand their runs to it alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_bench.launch import executor as executors
from ssl_bench.launch.cli import main

TINY = ["projector=32,16", "batch_size=64", "num_workers=0", "train_subset=none", "device=cpu"]


class FakeExecutor:
    """Trains nothing: every run it is handed gets a finished record with made-up numbers."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, int]]] = []

    def execute(self, configs, results_dir: Path) -> list[executors.Outcome]:
        runs = executors.entry_runs(configs, results_dir)
        self.calls.append([(run.config.method, run.config.seed) for run in runs])
        for run in runs:
            config = run.config
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(run.resolved_config())
            run.write_status("finished", epochs_done=config.epochs)
            score = 50.0 + 10 * config.base_lr + config.seed
            record = run.base_record("finished")
            record |= {"linear_top1": score, "knn_top1": score - 5, "linear_choice": {"val_top1": score}}
            run.write_record(record, lambda _: None)
        return executors.outcomes(runs)


@pytest.fixture
def fake(monkeypatch) -> FakeExecutor:
    executor = FakeExecutor()
    monkeypatch.setattr(executors, "executor_for", lambda args, **kwargs: executor)
    return executor


def _common(fashion_root: Path, results: Path) -> list[str]:
    args = ["--data-root", str(fashion_root), "--results-dir", str(results), "--no-progress"]
    return args + [part for setting in TINY for part in ("--set", setting)]


def test_run_tune_and_study_all_go_through_the_executor(fake, fashion_root, tmp_path, capsys):
    common = _common(fashion_root, tmp_path / "run")
    assert main(["run", "simclr", "vicreg", "--seeds", "0", "1", "--epochs", "1", *common]) == 0
    assert fake.calls == [
        [("random_init", 0), ("random_init", 1), ("simclr", 0), ("simclr", 1), ("vicreg", 0), ("vicreg", 1)]
    ]
    assert "| simclr" in capsys.readouterr().out  # the table of what the executor recorded

    fake.calls.clear()
    common = _common(fashion_root, tmp_path / "tune")
    assert main(["tune", "simclr", "--budget", "2", "--epochs", "1", "--final-seeds", "0", "1", *common]) == 0
    # Two rounds of one trial (and its baseline) on the trial seed, then the final seeds.
    assert fake.calls == [
        [("random_init", 100), ("simclr", 100)],
        [("random_init", 100), ("simclr", 100)],
        [("random_init", 0), ("random_init", 1), ("simclr", 0), ("simclr", 1)],
    ]

    fake.calls.clear()
    study = tmp_path / "tiny.toml"
    study.write_text(
        'question = "q"\nreference = "a"\n[base]\nmethods = ["simclr"]\nseeds = [0, 1]\n'
        '[scales.tiny]\ndataset = "fashion-mnist"\nset = ["epochs=1"]\n'
        '[variants.a]\nset = []\n[variants.b]\nset = ["base_lr=0.5"]\n'
    )
    common = _common(fashion_root, tmp_path / "study")
    assert main(["study", str(study), *common]) == 0
    (call,) = fake.calls  # one call with every run, the untrained network's included
    assert sorted(call) == [
        ("random_init", 0),
        ("random_init", 1),
        ("simclr", 0),
        ("simclr", 0),
        ("simclr", 1),
        ("simclr", 1),
    ]
    assert "| simclr | b | 2 |" in capsys.readouterr().out
