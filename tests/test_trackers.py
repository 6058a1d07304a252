"""Experiment trackers against the real libraries, read back with each library's own reader.

One tiny VICReg run (2 epochs of 8 steps, a checkpoint every 3 steps) logs to TensorBoard, W&B
(offline) and MLflow at once, in three attempts: the first crashes before step 6, after its
checkpoint at step 3 (so steps 4 and 5 are trained, and logged, twice); the second resumes at
step 3 and is stopped at a step boundary after step 10, as a preemption stops it; the third
finishes. What each tracker holds is read back with the library's reader: TensorBoard's
``EventAccumulator`` on the event files, W&B's ``wandb leet inspect --json`` on the offline
runs' ``.wandb`` logs, and ``MlflowClient`` on the tracking store. They must hold every step's
loss, terms and lr, the epoch rows of metrics.jsonl, the final evaluation of result.json, the
resolved configuration, the run's name and group, and each resumed attempt must continue the
same tracker run.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.crash import SimulatedCrash, crash_before_step

from ssl_bench.launch.cli import main
from ssl_bench.preemption import TrainingStopped
from ssl_bench.recipes import resolve_config
from ssl_bench.run.lifecycle import run_entry
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir
from ssl_bench.track.fanout import STATE_FILE, open_trackers

pytestmark = pytest.mark.usefixtures("one_thread")

LOGGERS = ("tensorboard", "wandb", "mlflow")
SETTINGS = ["projector=32,32", "batch_size=64", "num_workers=0", "device=cpu", "train_subset=none"]
STEPS_PER_EPOCH, EPOCHS = 8, 2  # 540 pre-training images (600 less validation) / 64
TOTAL = STEPS_PER_EPOCH * EPOCHS
CHECKPOINT_EVERY, CRASH_AFTER, STOP_AFTER = 3, 5, 10
TRACKER_ENV = ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")
QUIET = {"progress": False, "log": lambda _: None}


@pytest.fixture(autouse=True)
def default_tracker_settings(monkeypatch):
    """The defaults under test, whatever the environment sets; no console capture by W&B."""
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _config(fashion_root: Path, *extra: str):
    overrides = {"epochs": EPOCHS, "data_root": str(fashion_root)}
    return resolve_config("vicreg", "fashion-mnist", overrides, [*SETTINGS, *extra])


def wandb_records(log: Path) -> list[dict]:
    """The records of a W&B offline run's .wandb log, as W&B's own inspector prints them."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wandb_history(records: list[dict]) -> dict[int, dict]:
    """step -> the values logged at that step (W&B writes one history row per step)."""
    return {r["history"]["step"]["num"]: r["history"]["item"] for r in records if r["type"] == "history"}


def tensorboard_scalars(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def tracked_run(fashion_root, tmp_path_factory):
    """The run's three attempts (crashed, stopped, finished); the trackers' state after each."""
    mp = pytest.MonkeyPatch()
    for name in TRACKER_ENV:
        mp.delenv(name, raising=False)
    mp.setenv("WANDB_CONSOLE", "off")
    mp.setenv("WANDB_SILENT", "true")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the one_thread fixture
    try:
        results = tmp_path_factory.mktemp("tracked")
        config = _config(fashion_root, f"checkpoint_every_steps={CHECKPOINT_EVERY}")
        run_dir = Run.of(results, config).path
        states = []
        with mp.context() as crashing:
            crash_before_step(crashing, CRASH_AFTER)
            with pytest.raises(SimulatedCrash):
                run_entry(Run.of(results, config), loggers=LOGGERS, **QUIET)
        states.append(json.loads((run_dir / STATE_FILE).read_text()))
        # Asked before each step from the checkpoint's (step 3) on: stop before step 11.
        asked = itertools.count(CHECKPOINT_EVERY)
        with pytest.raises(TrainingStopped):
            run_entry(Run.of(results, config), should_stop=lambda: next(asked) == STOP_AFTER, loggers=LOGGERS, **QUIET)
        states.append(json.loads((run_dir / STATE_FILE).read_text()))
        run_entry(Run.of(results, config), loggers=LOGGERS, **QUIET)
        states.append(json.loads((run_dir / STATE_FILE).read_text()))
        # Run again: the run is done, so nothing is logged a second time.
        run_entry(Run.of(results, config), loggers=LOGGERS, **QUIET)
        yield {"config": config, "results": results, "run_dir": run_dir, "states": states}
    finally:
        mp.undo()
        torch.set_num_threads(threads)


def _expected(tracked_run) -> tuple[list[dict], dict]:
    run_dir = RunDir(tracked_run["run_dir"])
    return run_dir.read_metrics(), run_dir.read_result()


def test_tensorboard_holds_steps_epochs_evaluation_and_config(tracked_run):
    rows, record = _expected(tracked_run)
    assert record["status"] == "finished" and len(rows) == EPOCHS
    log_dir = tracked_run["run_dir"] / "tensorboard"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 3  # one file per attempt
    events = tensorboard_scalars(log_dir)
    loss = events.Scalars("train/loss")
    # Every step once: what the crashed attempt logged past its checkpoint (steps 4, 5) is purged.
    assert [e.step for e in loss] == list(range(1, TOTAL + 1))
    assert {"train/invariance", "train/variance", "train/covariance", "train/lr"} <= set(events.Tags()["scalars"])
    for epoch, row in enumerate(rows):
        # The epoch's mean of the per-step losses is metrics.jsonl's (TensorBoard keeps float32).
        steps = loss[epoch * STEPS_PER_EPOCH : (epoch + 1) * STEPS_PER_EPOCH]
        assert sum(e.value for e in steps) / STEPS_PER_EPOCH == pytest.approx(row["loss"], rel=1e-5)
    for key in ("loss", "lr", "online_probe_top1", "rankme_embedding"):
        logged = events.Scalars(f"epoch/{key}")
        assert [e.step for e in logged] == [row["step"] for row in rows]
        assert [e.value for e in logged] == pytest.approx([row[key] for row in rows], rel=1e-6)
    for key in ("linear_top1", "knn_top1", "knn_top1_fixed"):
        (logged,) = events.Scalars(f"eval/{key}")
        assert (logged.step, logged.value) == (TOTAL, pytest.approx(record[key], rel=1e-6))

    from tensorboard.util import tensor_util

    (text,) = events.Tensors("config/text_summary")
    config = json.loads(tensor_util.make_ndarray(text.tensor_proto).item().decode())
    assert config["identity_hash"] == tracked_run["config"].identity_hash() and config["loss"]["sim_coeff"] == 25.0
    (group,) = events.Tensors("group/text_summary")
    assert tensor_util.make_ndarray(group.tensor_proto).item().decode() == "fashion-mnist/tiny_convnet/e2"


def test_wandb_offline_runs_are_one_run_continued_by_each_attempt(tracked_run):
    rows, record = _expected(tracked_run)
    run_id = tracked_run["states"][0]["wandb"]["run_id"]
    assert [state["wandb"]["run_id"] for state in tracked_run["states"]] == [run_id] * 3
    # One offline run directory per attempt (none for the run that was already done), one run id.
    offline = sorted((tracked_run["run_dir"] / "wandb").glob("offline-run-*"))
    assert len(offline) == 3 and all(path.name.endswith(run_id) for path in offline)
    attempts = [wandb_records(path / f"run-{run_id}.wandb") for path in offline]

    for records in attempts:
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert (run["run_id"], run["project"]) == (run_id, "ssl-bench")
        assert run["display_name"] == tracked_run["run_dir"].name
        assert run["run_group"] == "fashion-mnist/tiny_convnet/e2"
        assert run["config"]["update"]["identity_hash"] == tracked_run["config"].identity_hash()
        assert run["config"]["update"]["loss"] == {"cov_coeff": 1, "eps": 0.0001, "sim_coeff": 25, "std_coeff": 50}
    crashed, stopped, finished = (wandb_history(records) for records in attempts)
    assert sorted(crashed) == list(range(1, CRASH_AFTER + 1))
    assert sorted(stopped) == list(range(CHECKPOINT_EVERY + 1, STOP_AFTER + 1))
    assert sorted(finished) == list(range(STOP_AFTER + 1, TOTAL + 1))
    for step in range(CHECKPOINT_EVERY + 1, CRASH_AFTER + 1):  # trained twice, from the same checkpoint
        assert crashed[step]["train/loss"] == stopped[step]["train/loss"]
    history = {**crashed, **stopped, **finished}
    for epoch, row in enumerate(rows):
        losses = [history[step]["train/loss"] for step in range(epoch * STEPS_PER_EPOCH + 1, row["step"] + 1)]
        assert sum(losses) / len(losses) == pytest.approx(row["loss"], rel=1e-9)
        assert history[row["step"]]["epoch/rankme_embedding"] == pytest.approx(row["rankme_embedding"], rel=1e-9)
    for key in ("linear_top1", "knn_top1", "knn_top1_fixed"):
        assert history[TOTAL][f"eval/{key}"] == pytest.approx(record[key])


def test_mlflow_run_is_one_run_continued_by_each_attempt(tracked_run):
    from mlflow.tracking import MlflowClient

    rows, record = _expected(tracked_run)
    state = tracked_run["states"][0]["mlflow"]
    assert [s["mlflow"] for s in tracked_run["states"]] == [state] * 3
    assert state["tracking_uri"] == f"sqlite:///{tracked_run['results'] / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    experiment = client.get_experiment_by_name("ssl-bench")
    (run,) = client.search_runs([experiment.experiment_id])  # one run for all attempts
    assert run.info.run_id == state["run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == tracked_run["run_dir"].name
    assert run.data.tags["group"] == "fashion-mnist/tiny_convnet/e2" and run.data.tags["method"] == "vicreg"
    assert run.data.params["identity_hash"] == tracked_run["config"].identity_hash()
    assert run.data.params["loss.sim_coeff"] == "25.0" and run.data.params["projector"] == "[32, 32]"

    history = client.get_metric_history(run.info.run_id, "train/loss")
    # MLflow keeps every value it is sent: the steps trained twice (after the crash) appear twice.
    twice = range(CHECKPOINT_EVERY + 1, CRASH_AFTER + 1)
    assert sorted(m.step for m in history) == sorted([*range(1, TOTAL + 1), *twice])
    loss = {m.step: m.value for m in history}
    for step in twice:
        assert len({m.value for m in history if m.step == step}) == 1  # the same value both times
    for epoch, row in enumerate(rows):
        steps = range(epoch * STEPS_PER_EPOCH + 1, row["step"] + 1)
        assert sum(loss[step] for step in steps) / STEPS_PER_EPOCH == pytest.approx(row["loss"], rel=1e-9)
    online = sorted(client.get_metric_history(run.info.run_id, "epoch/online_probe_top1"), key=lambda m: m.step)
    assert [m.step for m in online] == [row["step"] for row in rows]
    assert [m.value for m in online] == pytest.approx([row["online_probe_top1"] for row in rows])
    for key in ("linear_top1", "knn_top1", "knn_top1_fixed"):
        assert run.data.metrics[f"eval/{key}"] == pytest.approx(record[key])


def test_environment_overrides_and_a_failed_run(fashion_root, tmp_path, monkeypatch):
    """WANDB_DIR / WANDB_PROJECT and MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME are obeyed (here
    MLflow's plain-directory file store), and a run that raises ends its tracker runs as failed."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-elsewhere"))
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it behind this switch
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "my-experiment")
    (tmp_path / "wandb-elsewhere").mkdir()
    config = _config(fashion_root)
    results = tmp_path / "results"
    Run.of(results, config).path.mkdir(parents=True)
    trackers = open_trackers(["wandb", "mlflow"], Run.of(results, config))
    with pytest.raises(RuntimeError, match="boom"), trackers:
        trackers.start(0)
        trackers.log_step(1, {"loss": 2.5, "lr": 0.1, "flag": True, "missing": None})
        raise RuntimeError("boom")

    state = json.loads((Run.of(results, config).path / STATE_FILE).read_text())
    assert not (results / "mlflow.db").exists()
    assert len(list((tmp_path / "mlruns").glob(f"*/{state['mlflow']['run_id']}/meta.yaml"))) == 1
    run = MlflowClient(tracking_uri=uri).get_run(state["mlflow"]["run_id"])
    assert run.info.status == "FAILED" and run.data.metrics == {"train/loss": 2.5, "train/lr": 0.1}
    assert MlflowClient(tracking_uri=uri).get_experiment(run.info.experiment_id).name == "my-experiment"
    (log,) = (tmp_path / "wandb-elsewhere").glob(f"wandb/offline-run-*/run-{state['wandb']['run_id']}.wandb")
    records = wandb_records(log)
    assert [r["run"]["project"] for r in records if r["type"] == "run"] == ["mine"]
    assert wandb_history(records)[1]["train/loss"] == 2.5
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [1]


def _run_args(fashion_root: Path, results: Path) -> list[str]:
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    return ["run", "vicreg", "--epochs", "1", "--data-root", str(fashion_root), "--results-dir", str(results), *sets]


def test_a_tracker_that_is_not_installed_is_one_line_and_writes_nothing(fashion_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what importlib sees when wandb is not installed
    results = tmp_path / "results"
    assert main([*_run_args(fashion_root, results), "--logger", "tensorboard", "--logger", "wandb"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "ssl-bench: error: --logger wandb needs the wandb package: pip install 'ssl-bench[wandb]'"
    ]
    assert not results.exists()


def test_a_tracker_that_is_not_installed_is_refused_before_a_slurm_submission(
    fashion_root, tmp_path, monkeypatch, capsys
):
    """The job would import it in this same environment: refused here, before anything is queued."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # had it got further: "sbatch not found"
    results = tmp_path / "results"
    assert main([*_run_args(fashion_root, results), "--logger", "mlflow", "--executor", "slurm"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "ssl-bench: error: --logger mlflow needs the mlflow package: pip install 'ssl-bench[mlflow]'"
    ]
    assert not results.exists()
