"""BYOL, SimSiam and MoCo v3 end to end through `ssl-bench run`: a crash, then a resume.

The weights-level check (a resumed run ends bit-identical to an uninterrupted one, momentum
target included) is in test_momentum_target.py; this is the command a user types.
"""

from __future__ import annotations

import json

import pytest
from support.crash import TINY_RESUMABLE_RUN, crash_before_step

from ssl_bench.launch import cli

NEW_METHODS = ["byol", "simsiam", "mocov3"]


# Tiny tensors: one intra-op thread (the conftest fixture), for every test here.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_new_methods_run_crash_and_resume_through_the_cli(fashion_root, tmp_path, monkeypatch, capsys):
    # 64 images of 16 px, batch 16: 4 steps per epoch, 8 in all; checkpoints at steps 3, 4, 6, 8.
    settings = ["projector=64,32", "predictor=64,32", *TINY_RESUMABLE_RUN]
    args = [
        "run",
        *NEW_METHODS,
        "--epochs",
        "2",
        "--data-root",
        str(fashion_root),
        "--results-dir",
        str(tmp_path),
        "--no-progress",
        *[a for s in settings for a in ("--set", s)],
    ]

    crash_before_step(monkeypatch, 7)  # every run dies before step 7; the command goes on
    assert cli.main(args) == 1
    first = capsys.readouterr()
    for method in NEW_METHODS:
        assert f"ssl-bench: {method} failed: SimulatedCrash" in first.err
    monkeypatch.undo()

    assert cli.main(args) == 0
    output = capsys.readouterr().out
    for method in NEW_METHODS:
        assert f"[{method}] " in output and "resuming at step 6/8" in output
        (run_dir,) = (tmp_path / "fashion-mnist").glob(f"{method}-*")
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "finished" and status["epochs_done"] == 2
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "finished" and result["linear_top1"] is not None
        config = json.loads((run_dir / "config.json").read_text())
        assert config["predictor"] == [64, 32]
    assert output.count("resuming at step 6/8") == len(NEW_METHODS)
