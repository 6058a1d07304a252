"""Every record knows its code: the code hash, and no silent reuse of a run made by other code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.provenance import code_hash, cpu_model, git_state, hash_sources, package_dirs, source_files
from ssl_bench.recipes import resolve_config
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


def _copy_as_wheel(target: Path) -> Path:
    """The package laid out as a wheel installs it: methods/ and experiments/ inside ssl_bench/."""
    dirs = package_dirs()
    shutil.copytree(dirs["ssl_bench"], target / "ssl_bench", ignore=shutil.ignore_patterns("__pycache__"))
    for package in ("methods", "experiments"):
        shutil.copytree(
            dirs[f"ssl_bench.{package}"], target / "ssl_bench" / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target


def _wheel_dirs(root: Path) -> dict[str, Path]:
    return {
        "ssl_bench": root / "ssl_bench",
        "ssl_bench.methods": root / "ssl_bench" / "methods",
        "ssl_bench.experiments": root / "ssl_bench" / "experiments",
    }


def test_the_code_hash_is_the_same_in_either_layout_and_changes_with_one_byte(tmp_path):
    copy = _copy_as_wheel(tmp_path / "wheel")
    assert hash_sources(source_files(_wheel_dirs(copy))) == code_hash()  # checkout layout here, wheel there
    # Caches and non-Python files are not the code.
    (copy / "ssl_bench" / "__pycache__").mkdir(exist_ok=True)
    (copy / "ssl_bench" / "__pycache__" / "x.py").write_text("stale")
    (copy / "ssl_bench" / "experiments" / "recipes" / "notes.toml").write_text("# a note")
    assert hash_sources(source_files(_wheel_dirs(copy))) == code_hash()
    loss = copy / "ssl_bench" / "methods" / "simclr.py"
    text = loss.read_bytes()
    loss.write_bytes(text + b"#")
    assert hash_sources(source_files(_wheel_dirs(copy))) != code_hash()


def test_git_state_is_none_outside_a_checkout_of_the_package(tmp_path):
    copy = _copy_as_wheel(tmp_path / "wheel")
    assert git_state(copy / "ssl_bench") == (None, None)
    commit, dirty = git_state()
    if (REPO / ".git").exists():  # a checkout: the commit of this tree
        assert commit is not None and len(commit) == 40 and isinstance(dirty, bool)


def test_the_cpu_is_named_by_its_model():
    model = cpu_model()
    assert model and model not in ("x86_64", "aarch64")


def test_a_run_of_other_code_is_measured_again(tmp_path):
    """The same config found finished by other code: its files go to superseded/, unless reused."""
    config = resolve_config("simclr", "fashion-mnist", settings=["device=cpu"])
    run_dir = Run.of(tmp_path, config)
    run_dir.path.mkdir(parents=True)
    run_dir.write_config(run_dir.resolved_config())
    (run_dir.path / "status.json").write_text(json.dumps({"status": "finished", "code_hash": "0ther0c0de000"}))
    (run_dir.path / "result.json").write_text(json.dumps({"status": "finished", "code_hash": "0ther0c0de000"}))
    (run_dir.path / "checkpoint.pt").write_bytes(b"weights")
    lines: list[str] = []

    reused = resolve_config("simclr", "fashion-mnist", settings=["device=cpu", "reuse_finished=true"])
    reusing = Run.of(tmp_path, reused)
    assert reusing.supersede_other_code(lines.append) is None and (run_dir.path / "checkpoint.pt").is_file()

    moved = run_dir.supersede_other_code(lines.append)
    assert moved == run_dir.path / "superseded" / "0ther0c0de000"
    assert sorted(p.name for p in moved.iterdir()) == ["checkpoint.pt", "config.json", "result.json", "status.json"]
    assert not (run_dir.path / "checkpoint.pt").exists() and "made by code 0ther0c0de000" in lines[-1]
    assert run_dir.supersede_other_code(lines.append) is None  # nothing left of other code


# One thread in the command, so that two runs of one code compute the same bits.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_one_changed_source_byte_makes_the_same_command_run_again(tmp_path):
    """A copied package, one byte changed in it: the same command does not reuse the finished run."""
    from support.fake_data import write_fashion_mnist

    root = write_fashion_mnist(tmp_path / "data", n_train=120, n_test=40)
    results = tmp_path / "results"
    package = _copy_as_wheel(tmp_path / "package")
    args = ["run", "simclr", "--backbone", "tiny_convnet", "--epochs", "1", "--batch-size", "16"]
    args += ["--data-root", str(root), "--results-dir", str(results), "--no-progress"]
    args += ["--set", "projector=16,16", "--set", "train_subset=none", "--set", "num_workers=0"]

    def run(*extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ssl_bench.launch.cli", *args, *extra],
            cwd=tmp_path,  # not the checkout: the copy on PYTHONPATH is the code
            env={**ENV, "PYTHONPATH": str(package)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    run()
    (run_dir,) = (results / "fashion-mnist").glob("simclr-*")
    first = RunDir(run_dir).read_result()
    assert first["code_hash"] == first["train_code_hash"] == hash_sources(source_files(_wheel_dirs(package)))
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["code_hash"] == first["code_hash"] and environment["cpu_model"] == cpu_model()

    assert "already evaluated" in run()  # same code: reused

    source = package / "ssl_bench" / "methods" / "simclr.py"
    source.write_bytes(source.read_bytes() + b"\n")
    changed = hash_sources(source_files(_wheel_dirs(package)))
    assert "already evaluated" in run("--reuse-finished")  # other code, reuse asked for: kept
    assert RunDir(run_dir).read_result()["code_hash"] == first["code_hash"]

    output = run()
    assert f"made by code {first['code_hash']}, this is code {changed}" in output
    second = RunDir(run_dir).read_result()
    assert second["code_hash"] == second["train_code_hash"] == changed and second["status"] == "finished"
    assert (run_dir / "superseded" / first["code_hash"] / "result.json").is_file()
    table = (results / "table.md").read_text()
    assert "mixed code" not in table  # the baseline was measured again too: one code in the group


def test_the_code_identity_is_taken_once_per_process(monkeypatch):
    """A checkout that moves on (a commit, an edit) under a running command does not change what
    that command's records say about the code it imported."""
    from ssl_bench import provenance

    first = provenance.code_identity()
    monkeypatch.setattr(provenance, "git_state", lambda directory=None: ("0" * 40, True))
    assert provenance.code_identity() == first
