"""Ctrl-C, SIGTERM and a second command on the same run, against real `ssl-bench run` processes.

An interrupted run stops at a step boundary and resumes to exactly the state (weights, BatchNorm
buffers, optimiser) of a run that was never interrupted; SIGTERM is recorded like Ctrl-C; two
identical commands do the work once, the second waiting for the first, and a lock whose holder
died is taken over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ssl_bench.launch.sweep import resolve_sweep
from ssl_bench.run.record import Run
from ssl_bench.store.lock import LOCK_FILE, hold_run_dir
from ssl_bench.train.trainer import pretrain

EPOCHS = 3
SETTINGS = ["projector=16,16", "train_subset=none", "num_workers=0"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """200 train / 50 test images in Fashion-MNIST's files: 180 pre-train images, 11 steps of 16 per epoch."""
    from support.fake_data import write_fashion_mnist

    return write_fashion_mnist(tmp_path_factory.mktemp("tiny-fashion"), n_train=200, n_test=50)


def command(root: Path, results: Path, epochs: int = EPOCHS) -> list[str]:
    args = ["run", "simclr", "--backbone", "tiny_convnet", "--epochs", str(epochs), "--batch-size", "16"]
    args += ["--data-root", str(root), "--results-dir", str(results), "--no-progress"]
    for setting in SETTINGS:
        args += ["--set", setting]
    return [sys.executable, "-u", "-m", "ssl_bench.launch.cli", *args]


def config_of(root: Path, epochs: int = EPOCHS):
    overrides = {"epochs": epochs, "backbone": "tiny_convnet", "batch_size": 16, "data_root": str(root)}
    (config,) = resolve_sweep(["simclr"], ["fashion-mnist"], [0], overrides, SETTINGS)
    return config


# One thread in the command as in this process: the same arithmetic, so equal states are equal bits.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _terminal_signals() -> None:
    # As a command started from a terminal takes them, whatever this process inherited: a shell
    # starts background jobs with SIGINT ignored, and a run respects an ignored SIGINT.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, preexec_fn=_terminal_signals
    )


def interrupt_after(argv: list[str], marker: str, signum: int, delay: float = 0.0) -> tuple[int, str]:
    """Run the command, send ``signum`` ``delay`` seconds after a line containing ``marker``; exit status, output."""
    process = start(argv)
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        output.append(line)
        if marker in line:
            time.sleep(delay)
            process.send_signal(signum)
            break
    output.append(process.stdout.read())
    return process.wait(timeout=120), "".join(output)


@pytest.mark.slow
def test_interrupted_runs_resume_to_the_state_of_an_uninterrupted_run(tiny_root, tmp_path, one_thread):
    results = tmp_path / "runs"
    argv = command(tiny_root, results)
    run_dir = Run.of(results, config_of(tiny_root))
    stops = []
    for marker, signum, delay in [
        (f"epoch 1/{EPOCHS}", signal.SIGINT, 0.0),  # Ctrl-C at the end of an epoch
        ("resuming at step", signal.SIGINT, 0.3),  # Ctrl-C a few steps into the resumed run
        ("resuming at step", signal.SIGTERM, 0.6),  # SIGTERM, as `kill` or a scheduler sends it
    ]:
        code, output = interrupt_after(argv, marker, signum, delay)
        name = signal.Signals(signum).name
        assert code == 128 + signum, output
        assert "Traceback" not in output
        status = run_dir.read_status()
        if status["status"] == "finished":  # on a fast machine the signal can come after the last step
            break
        assert f"(signal {name}); checkpoint saved; run the same command again to resume" in output
        assert status["status"] == "interrupted" and status["reason"] == f"signal {name}", status
        assert run_dir.load_checkpoint()["step"] == status["step"]
        stops.append(status["step"])
    assert stops and stops == sorted(stops) and len(set(stops)) == len(stops), stops

    # Finish here (the comparison needs no evaluation), and train a reference run without a stop.
    pretrain(Run.of(results, config_of(tiny_root)), progress=False, log=lambda _: None)
    pretrain(Run.of(tmp_path / "reference", config_of(tiny_root)), progress=False, log=lambda _: None)
    resumed = run_dir.load_checkpoint()
    reference = Run.of(tmp_path / "reference", config_of(tiny_root)).load_checkpoint()
    assert resumed["step"] == reference["step"] == EPOCHS * 11
    buffers = [key for key in reference["method"] if key.endswith("num_batches_tracked")]
    assert buffers and all(int(reference["method"][key]) == EPOCHS * 11 * 2 for key in buffers)  # two views a step
    for key, tensor in reference["method"].items():
        assert torch.equal(resumed["method"][key], tensor), key
    for index, state in reference["optimizer"]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(resumed["optimizer"]["state"][index][name], tensor), (index, name)
    assert [row["loss"] for row in resumed["metrics"]] == [row["loss"] for row in reference["metrics"]]


@pytest.mark.slow
def test_two_identical_commands_do_the_work_once(tiny_root, tmp_path):
    """Both start at once, while this test holds the run's lock: both wait (naming this process),
    then one trains and the other waits for it and finds the run done."""
    results = tmp_path / "runs"
    run_dir = Run.of(results, config_of(tiny_root, epochs=1))
    argv = command(tiny_root, results, epochs=1)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with hold_run_dir(run_dir.path, log=lambda _: None):
            held.set()
            release.wait(timeout=300)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(timeout=10)
    processes = [start(argv), start(argv)]
    outputs: list[list[str]] = [[], []]
    readers = [threading.Thread(target=lambda p=p, out=out: out.extend(p.stdout)) for p, out in zip(processes, outputs)]
    for reader in readers:
        reader.start()
    waiting = f"is in use by PID {os.getpid()}"
    deadline = time.monotonic() + 240
    while not all(any(waiting in line for line in out) for out in outputs) and time.monotonic() < deadline:
        time.sleep(0.2)
    release.set()
    holder.join()
    codes = [process.wait(timeout=240) for process in processes]
    for reader in readers:
        reader.join()
    texts = ["".join(out) for out in outputs]
    assert codes == [0, 0], texts
    assert all(waiting in text for text in texts), texts
    trained = [text for text in texts if "[simclr] epoch 1/1" in text]
    assert len(trained) == 1, texts  # the work was done once
    other = texts[1 - texts.index(trained[0])]
    assert "[simclr] already finished" in other and "[simclr] already evaluated" in other
    assert run_dir.read_status()["status"] == "finished"


def test_a_lock_whose_holder_died_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from ssl_bench.store.lock import hold_run_dir\n"
            "with hold_run_dir(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(300)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == holder.pid
    holder.kill()  # SIGKILL: no cleanup of any kind
    holder.wait()
    lines: list[str] = []
    done = threading.Event()

    def take() -> None:
        with hold_run_dir(run_dir, log=lines.append):
            done.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert done.wait(timeout=10), lines  # taken over at once, no waiting
    assert lines == []
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_an_interrupt_during_the_evaluation_is_recorded_in_both_files_and_resumes(
    tiny_root, tmp_path, monkeypatch, one_thread
):
    """Ctrl-C or SIGTERM (a KeyboardInterrupt here) while the probes train: result.json and
    status.json both read interrupted; the next command evaluates without pre-training again."""
    from ssl_bench.run import lifecycle

    config = config_of(tiny_root, epochs=1)
    results = tmp_path / "runs"
    run_dir = Run.of(results, config)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lifecycle, "select_knn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.run_entry(run_dir, progress=False, log=lambda _: None)
    status, record = run_dir.read_status(), run_dir.read_result()
    assert status["status"] == record["status"] == "interrupted" and status["interrupted_in"] == "evaluation"
    assert status["epochs_done"] == 1 and status["final_loss"] is not None  # pre-training's own fields kept

    monkeypatch.undo()
    lines: list[str] = []
    lifecycle.run_entry(run_dir, progress=False, log=lines.append)
    assert any("already finished" in line for line in lines), lines  # not pre-trained again
    status, record = run_dir.read_status(), run_dir.read_result()
    assert status["status"] == record["status"] == "finished" and "interrupted_in" not in status
    assert record["linear_top1"] is not None and record["epochs_done"] == 1
