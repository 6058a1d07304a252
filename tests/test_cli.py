"""The command line: bad input is one line and exit status 2; one method's failure spares the rest."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssl_bench.launch.cli import main


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "vicrg"], "unknown method 'vicrg'; did you mean 'vicreg'?"),
        (["run", "simclr", "--dataset", "cifar11"], "unknown dataset 'cifar11'; did you mean 'cifar10'?"),
        (["run", "simclr", "--backbone", "resnet181"], "unknown backbone 'resnet181'; did you mean 'resnet18'?"),
        (["run", "simclr", "--epochs", "0"], "--epochs must be positive"),
        (["run", "simclr", "--batch-size", "-4"], "--batch-size must be positive"),
        (["run", "simclr", "--set", "lr"], "malformed --set 'lr'"),
        (["run", "simclr", "--set", "epochs=ten"], "malformed --set epochs=ten"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_dataset_names_where_it_looked(tmp_path, capsys):
    assert main(["run", "simclr", "--dataset", "cifar10", "--data-root", str(tmp_path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "Traceback" not in err


def test_console_script_reports_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_bench.launch.cli", "run", "barlow"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ssl-bench: error: unknown method 'barlow'")
    assert "Traceback" not in proc.stderr


def test_methods_prints_the_recipe_table(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert (
        "| imagenet      | barlow_twins |         8192 |    2048 | LARS        | 1.6 (biases and norms 0.0384)" in out
    )
    for name in ("simclr", "tico", "vicreg", "barlow_twins"):
        assert name in out


def test_a_nan_in_one_method_does_not_stop_the_others(fashion_root, tmp_path, monkeypatch, capsys):
    import ssl_bench.methods.simclr

    monkeypatch.setattr(ssl_bench.methods.simclr, "nt_xent_loss", lambda z_a, z_b, *_, **__: (z_a * float("nan")).sum())
    code = main(
        [
            "run",
            "simclr",
            "vicreg",
            "--epochs",
            "1",
            "--data-root",
            str(fashion_root),
            "--results-dir",
            str(tmp_path),
            "--no-progress",
            "--batch-size",
            "64",
            "--set",
            "projector=32,32",
            "--set",
            "train_subset=none",
            "--set",
            "num_workers=0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "non-finite loss at step 0" in out
    simclr_line = next(line for line in out.splitlines() if line.startswith("| simclr"))
    vicreg_line = next(line for line in out.splitlines() if line.startswith("| vicreg"))
    assert "failed" in simclr_line and "finished" in vicreg_line
