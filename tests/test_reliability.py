"""Bad input, damaged files and a hostile machine: one line on stderr, never a traceback, nothing left behind.

Every rejected command exits 2 with one ``ssl-bench: error:`` line, creates no run directory and
changes no file of the runs already in the results directory. Damaged records are skipped with
one warning line; a full disk costs the runs, not the command; a corrupt checkpoint is named,
moved aside and the run starts over.
"""

from __future__ import annotations

import errno
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from ssl_bench.launch.cli import main
from ssl_bench.launch.sweep import resolve_sweep
from ssl_bench.preemption import TrainingStopped
from ssl_bench.recipes import resolve_config
from ssl_bench.run.lifecycle import evaluate_run
from ssl_bench.run.record import Run
from ssl_bench.store import atomic
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.trainer import pretrain


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """200 train / 50 test images in Fashion-MNIST's files: 180 pre-train, 20 validation images."""
    from support.fake_data import write_fashion_mnist

    return write_fashion_mnist(tmp_path_factory.mktemp("tiny-fashion"), n_train=200, n_test=50)


def tiny_run(root: Path, results: Path, *extra: str, methods: tuple[str, ...] = ("simclr",)) -> list[str]:
    return [
        "run",
        *methods,
        "--backbone",
        "tiny_convnet",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--data-root",
        str(root),
        "--results-dir",
        str(results),
        "--no-progress",
        "--set",
        "projector=16,16",
        "--set",
        "train_subset=none",
        "--set",
        "num_workers=0",
        *extra,
    ]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results directory that already holds another run, whose files nothing may change."""
    other = tmp_path / "runs" / "fashion-mnist" / "vicreg-tiny_convnet-e1-s0-0123456789"
    other.mkdir(parents=True)
    for name, record in [("config.json", {"method": "vicreg"}), ("status.json", {"status": "finished"})]:
        (other / name).write_text(json.dumps(record))
    return tmp_path / "runs"


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` with the hash of its bytes."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("ssl-bench: error: "), err
    assert message in err, err


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, no run directory, other runs untouched


@pytest.mark.parametrize(
    "settings, message",
    [
        (["--set", "device=tpu"], "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        (["--set", "base_lr=nan"], "base_lr must be a finite number, got nan"),
        (["--set", "weight_decay=nan"], "weight_decay must be a finite number, got nan"),
        (["--set", "weight_decay=inf"], "weight_decay must be a finite number, got inf"),
        (["--set", "loss.temperature=0"], "loss.temperature must be positive"),
        (["--set", "loss.temperature=-0.5"], "loss.temperature must be positive"),
        (["--seed", str(2**64)], "seed must be in [0, 9223372036854775807]"),
        (["--seed", "-1"], "seed must be in [0, 9223372036854775807]"),
        (["--batch-size", "1"], "batch_size must be at least 2"),
        (["--batch-size", "512"], "simclr: batch 512 is larger than the 180 pre-training images of fashion-mnist"),
        (["--set", "train_subset=20", "--batch-size", "32"], "train_subset (20) is smaller than one batch (32)"),
        (["--set", "projector=wide"], "expected comma-separated integers, e.g. 2048,2048,128"),
        (["--set", "method_params.momentum=0.9"], "(simclr has no method_params parameters)"),
        (["--dataset", "cifar10"], "CIFAR-10 not found"),
        (["--set", "device=cuda:64"], "device=cuda:64"),
    ],
)
def test_bad_values_are_refused_before_any_run_directory(tiny_root, results, settings, message, capsys):
    before = snapshot(results)
    assert_one_line_error(main(tiny_run(tiny_root, results, *settings)), capsys.readouterr().err, message)
    assert snapshot(results) == before  # no baseline directory, nothing else touched


def test_cuda_without_a_gpu_is_refused(tiny_root, results, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = snapshot(results)
    code = main(tiny_run(tiny_root, results, "--set", "device=cuda"))
    assert_one_line_error(code, capsys.readouterr().err, "no CUDA GPU is visible here")
    assert snapshot(results) == before


def test_a_data_root_that_does_not_exist_is_not_created(tiny_root, results, tmp_path, capsys):
    missing = tmp_path / "no-such-root"
    code = main(tiny_run(tiny_root, results, "--data-root", str(missing)))
    assert_one_line_error(code, capsys.readouterr().err, f"data root {missing} does not exist")
    assert not missing.exists()


def test_a_corrupt_dataset_file_is_called_corrupt(tmp_path, results, capsys):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (raw / f"{name}.gz").write_bytes(b"not gzip at all")
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    code = main(tiny_run(tmp_path / "data", results))
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "corrupt")
    assert "writable" not in err


# --- method files ------------------------------------------------------------------------------

BROKEN_METHOD_FILES = {
    "syntax": ("def loss(:\n    pass\n", "line 1: syntax error"),
    "raises": ("x = 1\nraise RuntimeError('no GPU, no method')\n", "line 2: RuntimeError: no GPU, no method"),
    "imports": ("import a_module_nobody_installed\n", "imports 'a_module_nobody_installed', which is not installed"),
    "clash": (
        "from ssl_bench.method import Method, register_method\n\n\n@register_method\nclass Impostor(Method):\n"
        "    name = 'simclr'\n\n    def loss(self, z_a, z_b):\n        return z_a.sum(), {}\n",
        "cannot register its method: method name 'simclr' is taken by ssl_bench.methods.simclr.SimCLR",
    ),
    "not_a_method": (
        "from ssl_bench.method import register_method\n\n\n@register_method\nclass Plain:\n    name = 'plain'\n",
        "cannot register its method: @register_method needs a subclass of ssl_bench.method.Method",
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_METHOD_FILES))
def test_a_broken_method_file_is_one_line(kind, tiny_root, results, tmp_path, capsys):
    from ssl_bench.method import available_methods, get_method

    source, message = BROKEN_METHOD_FILES[kind]
    path = tmp_path / f"{kind}.py"
    path.write_text(source)
    before = snapshot(results)
    code = main(tiny_run(tiny_root, results, "--method-file", str(path)))
    err = capsys.readouterr().err
    assert_one_line_error(code, err, message)
    assert err.startswith(f"ssl-bench: error: method file {path}")
    assert snapshot(results) == before
    # The failed file left nothing registered, and the built-in method it clashed with stands.
    assert "plain" not in available_methods() and get_method("simclr").__module__ == "ssl_bench.methods.simclr"


# --- output files checked before the work that fills them ----------------------------------------


def test_bench_json_to_an_unwritable_path_fails_before_the_benchmark(tmp_path, monkeypatch, capsys):
    import ssl_bench.perf.runner

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran before the output path was checked")

    monkeypatch.setattr(ssl_bench.perf.runner, "run_bench", must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["bench", "--quick", "--json", str(blocker / "bench.json")])
    assert_one_line_error(code, capsys.readouterr().err, f"{blocker} is not a directory")


def test_a_read_only_results_directory_is_refused_up_front(tiny_root, results, monkeypatch, capsys):
    import ssl_bench.launch.validate as validate

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(validate.tempfile, "TemporaryFile", read_only)
    before = snapshot(results)
    code = main(tiny_run(tiny_root, results))
    assert_one_line_error(code, capsys.readouterr().err, f"cannot write into the results directory {results}")
    assert snapshot(results) == before


def test_a_results_directory_below_a_file_is_refused(tiny_root, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(tiny_run(tiny_root, blocker / "runs"))
    assert_one_line_error(code, capsys.readouterr().err, f"{blocker} is not a directory")


def test_a_disk_that_fills_up_costs_the_runs_not_the_command(tiny_root, results, monkeypatch, capsys):
    """Every method is still attempted, each failure is one line, and the closing table's failure too."""

    @contextmanager
    def disk_full(path: Path):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield path  # pragma: no cover

    monkeypatch.setattr(atomic, "atomic_path", disk_full)  # every record, checkpoint and table file
    code = main(tiny_run(tiny_root, results, methods=("simclr", "vicreg")))
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    for method in ("random_init", "simclr", "vicreg"):
        assert any(line.startswith(f"ssl-bench: {method} failed: OSError: [Errno 28]") for line in lines), lines
    assert lines[-1] == "ssl-bench: error: [Errno 28] No space left on device"


# --------------------------------------------------------------------------------------------
# Damaged records: skipped with a warning, never a crash


def fake_run(root: Path, name: str, *, seed: object = 0, result: object = None) -> Path:
    run_dir = root / "fashion-mnist" / name
    run_dir.mkdir(parents=True)
    config = {"method": "simclr", "dataset": "fashion-mnist", "backbone": "tiny_convnet", "epochs": 1, "seed": seed}
    (run_dir / "config.json").write_text(json.dumps({**config, "identity_hash": name}))
    (run_dir / "status.json").write_text(json.dumps({"status": "finished", "epochs_done": 1}))
    record = {"status": "finished", **config, "identity_hash": name, "linear_top1": 50.0, "knn_top1": 40.0}
    (run_dir / "result.json").write_text(json.dumps(record if result is None else result))
    return run_dir


def test_table_skips_records_that_are_json_but_not_records(tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, "good")
    fake_run(runs, "a-list", result=[])
    fake_run(runs, "a-word-for-a-seed", seed="zero", result={"status": "finished", "seed": "zero"})
    assert main(["table", str(runs)]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.splitlines()
    assert len(warnings) == 2 and "Traceback" not in captured.err
    assert any("a-list: result.json is not a JSON object" in line for line in warnings)
    assert any("a-word-for-a-seed: result.json: its seed is not int: 'zero'" in line for line in warnings)
    assert "| simclr" in captured.out and "50.00" in captured.out


def test_status_skips_manifest_lines_that_are_not_jobs(tmp_path, monkeypatch, capsys):
    from ssl_bench.launch import slurm

    # The cluster's answer is not what this is about (and sacct may take long to say "unknown").
    monkeypatch.setattr(slurm, "slurm_states", lambda job_ids: dict.fromkeys(job_ids, "UNKNOWN"))
    runs = tmp_path / "runs"
    job = {
        "job_id": "41_0",
        "method": "simclr",
        "dataset": "fashion-mnist",
        "seed": 0,
        "run_dir": str(runs / "fashion-mnist" / "x"),
        "stdout": "a.out",
        "stderr": "a.err",
        "submitted": 1.0,
    }
    manifest = runs / "slurm" / "jobs.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps(job) + "\n[]\n" + '{"job_id": "42_0", "meth')  # the last line cut short
    assert main(["status", str(runs)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert f"skipped 2 unreadable line(s) of {manifest} (line 2, 3)" in captured.err
    assert "41_0" in captured.out


# --------------------------------------------------------------------------------------------
# A corrupt checkpoint: named, moved aside, and the run starts over


def tiny_config(root: Path, epochs: int = 2):
    (config,) = resolve_sweep(
        ["simclr"],
        ["fashion-mnist"],
        [0],
        {"epochs": epochs, "backbone": "tiny_convnet", "batch_size": 16, "data_root": str(root)},
        ["projector=16,16", "train_subset=none", "num_workers=0"],
    )
    return config


def test_a_corrupt_checkpoint_is_moved_aside_and_the_run_starts_over(tiny_root, tmp_path, one_thread):
    config = tiny_config(tiny_root)
    results = tmp_path / "runs"
    with pytest.raises(TrainingStopped):
        pretrain(Run.of(results, config), progress=False, log=lambda _: None, should_stop=lambda: True)
    run_dir = Run.of(results, config)
    run_dir.checkpoint_path.write_bytes(b"PK\x03\x04 half a zip file")
    lines: list[str] = []
    result = pretrain(Run.of(results, config), progress=False, log=lines.append)

    kept = list(run_dir.path.glob("checkpoint.pt.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"PK\x03\x04 half a zip file"
    warning = next(line for line in lines if "warning" in line)
    assert str(run_dir.checkpoint_path) in warning and kept[0].name in warning and "starting over" in warning
    assert result.status == "finished" and result.resumed_from_step is None
    # Started over from step 0: the same weights as a run that never had a checkpoint.
    reference = pretrain(Run.of(tmp_path / "reference", config), progress=False, log=lambda _: None)
    assert reference.final_loss == result.final_loss
    ours = run_dir.load_checkpoint()["method"]
    theirs = Run.of(tmp_path / "reference", config).load_checkpoint()["method"]
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_a_finished_run_whose_checkpoint_is_corrupt_fails_consistently_then_retrains(tiny_root, tmp_path, one_thread):
    config = tiny_config(tiny_root, epochs=1)
    results = tmp_path / "runs"
    pretrain(Run.of(results, config), progress=False, log=lambda _: None)
    run_dir = Run.of(results, config)
    run_dir.checkpoint_path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="run the same command again to pre-train anew"):
        evaluate_run(Run.of(results, config), log=lambda _: None)
    status, record = run_dir.read_status(), json.loads((run_dir.path / "result.json").read_text())
    assert status["status"] == record["status"] == "failed"
    assert str(run_dir.checkpoint_path) in status["error"] and "checkpoint.pt.corrupt-" in record["error"]
    assert not run_dir.has_checkpoint()
    assert pretrain(Run.of(results, config), progress=False, log=lambda _: None).status == "finished"  # the way out


@pytest.mark.slow
def test_a_crash_before_training_leaves_status_and_record_agreeing(tiny_root, tmp_path, monkeypatch, capsys):
    """status.json must not say "running" while result.json says "failed"."""
    import ssl_bench.train.trainer as trainer_module

    results = tmp_path / "runs"
    config = resolve_config(
        "simclr",
        "fashion-mnist",
        {"epochs": 1, "backbone": "tiny_convnet", "batch_size": 16, "data_root": str(tiny_root)},
        ["projector=16,16", "train_subset=none", "num_workers=0"],
    )
    run_dir = Run.of(results, config)
    run_dir.path.mkdir(parents=True)
    run_dir.write_status("running", step=3)  # as an attempt killed earlier left it

    def broken_restore(self):
        raise RuntimeError("simulated fault while restoring")

    monkeypatch.setattr(trainer_module.Trainer, "restore", broken_restore)
    assert main(tiny_run(tiny_root, results)) == 1
    status, record = run_dir.read_status(), json.loads((run_dir.path / "result.json").read_text())
    assert status["status"] == record["status"] == "failed"
    assert "simulated fault" in status["error"] and "simulated fault" in record["error"]
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# SLURM: requests checked against the partition, SLURM's time formats, a truthful status


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("90", 90),
        ("1:00:00", 60),
        ("90:30", 91),
        ("2-0", 2880),
        ("1-02:03", 1563),
        ("0-0:0:30", 1),
        ("7-00:00:00", 10080),
    ],
)
def test_slurm_time_formats(text, minutes):
    from ssl_bench.launch.cli import build_parser
    from ssl_bench.launch.slurm_options import slurm_minutes, slurm_options

    assert slurm_minutes(text) == minutes
    args = build_parser().parse_args(["run", "simclr", "--executor", "slurm", "--time", text])
    assert slurm_options(args).time_min == minutes


def test_a_malformed_slurm_time_is_one_line(capsys):
    code = main(["run", "simclr", "--executor", "slurm", "--time", "1h"])
    assert_one_line_error(code, capsys.readouterr().err, "--time '1h': expected minutes or SLURM's format")


def test_requests_beyond_the_partition_are_refused():
    from ssl_bench.errors import UsageError
    from ssl_bench.launch.slurm import _partition_limits, check_limits
    from ssl_bench.launch.slurm_options import SlurmOptions

    partitions = _partition_limits("debug*|7-00:00:00|2\nlong|infinite|4+\nlong|infinite|16\n")
    debug, long = partitions["debug"], partitions["long"]
    assert (debug.default, debug.max_time_min, debug.max_cpus_per_node) == (True, 10080, 2)
    assert (long.default, long.max_time_min, long.max_cpus_per_node) == (False, None, 16)
    with pytest.raises(UsageError, match="--time 20000 min exceeds partition debug's time limit of 10080 min"):
        check_limits(SlurmOptions(time_min=20000), "debug", debug)
    with pytest.raises(UsageError, match=r"16 CPUs per node .* exceed the 2 CPUs of partition debug's largest node"):
        check_limits(SlurmOptions(cpus_per_task=16), "debug", debug)
    check_limits(SlurmOptions(time_min=20000, cpus_per_task=16), "long", long)  # within its limits


def test_status_shows_live_progress_and_a_job_that_ended_without_a_word(tmp_path, monkeypatch, capsys):
    from ssl_bench.launch import slurm

    runs = tmp_path / "runs"
    jobs = []
    for job_id, method, step in [("7_0", "simclr", 40), ("7_1", "vicreg", 15)]:
        run_dir = RunDir(runs / "fashion-mnist" / method)
        run_dir.path.mkdir(parents=True)
        run_dir.write_status("running", step=step, total_steps=100)
        jobs.append(slurm.SubmittedJob(job_id, method, "fashion-mnist", 0, str(run_dir.path), "o.out", "o.err"))
    slurm._append_manifest(runs, jobs)
    monkeypatch.setattr(slurm, "slurm_states", lambda job_ids: {"7_0": "RUNNING", "7_1": "CANCELLED"})
    assert main(["status", str(runs)]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "| running " in rows["7_0"] and "step 40/100" in rows["7_0"]
    assert "| stopped (cancelled) " in rows["7_1"] and "step 15/100" in rows["7_1"]
    assert "| fashion-mnist/simclr " in rows["7_0"]  # the run directory, relative to RESULTS_DIR


@pytest.mark.slurm
def test_the_cluster_refuses_what_it_cannot_grant_before_submitting(slurm_cluster, tiny_root, tmp_path, capsys):
    """The local cluster's partition has MaxTime 7-00:00:00; its node has fewer than 256 CPUs."""
    results = tmp_path / "runs"
    slurm_args = ["--executor", "slurm", "--partition", slurm_cluster.partition]
    for extra, message in [
        (["--time", "20000"], f"exceeds partition {slurm_cluster.partition}'s time limit of 10080 min"),
        (["--cpus-per-task", "256"], f"of partition {slurm_cluster.partition}'s largest node"),
    ]:
        code = main(tiny_run(tiny_root, results, *slurm_args, *extra))
        assert_one_line_error(code, capsys.readouterr().err, message)
    assert not results.exists()  # nothing submitted, no manifest, no run directory
