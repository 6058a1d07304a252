"""`ssl-bench eval` on checkpoint files: a torchvision state dict scored with the runs' protocols and
record, the official VICReg / Barlow Twins layouts, and bad input as one line with nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ssl_bench.checkpoints.external import load_external
from ssl_bench.data.datasets import dataset_info, load_split
from ssl_bench.errors import UsageError
from ssl_bench.eval.features import FEATURES, extract_features
from ssl_bench.eval.probes import protocol_for
from ssl_bench.launch.cli import main
from ssl_bench.models.backbones import build_backbone
from ssl_bench.store.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SIZE = 16  # ResNet-18 at 16 px: a few seconds per evaluation on 2 cores


def exclude_bias_and_norm(p):
    """Stands for the function the official LARS keeps in its optimiser state (it pickles by name)."""
    return p.ndim == 1


def eval_args(checkpoint: Path, results: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "eval",
        str(checkpoint),
        "--data-root",
        str(data_root),
        "--results-dir",
        str(results),
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--image-size",
        str(IMAGE_SIZE),
        *extra,
    ]


def _equal_states(module: nn.Module, expected: dict[str, torch.Tensor]) -> bool:
    got = module.state_dict()
    return got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_eval_scores_a_torchvision_resnet18_state_dict(tmp_path, fashion_root, capsys):
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)  # with torchvision's classifier, as a library user saves it
    results = tmp_path / "results"

    assert main(eval_args(path, results, fashion_root, "--backbone", "resnet18")) == 0
    (run_dir,) = (results / "fashion-mnist").glob("checkpoint-resnet18-*")
    record = RunDir(run_dir).read_result()
    assert record["status"] == "finished" and record["method"] == "checkpoint" and record["epochs"] == 0
    # The runs' protocol and record: choices on the validation split, the test split reported.
    assert record["eval_protocol"] == protocol_for("fashion-mnist").to_dict()
    assert (record["selection_split"], record["reported_split"]) == ("val", "test")
    assert record["linear_top1"] == record["linear_choice"]["test_top1"]
    # Random ResNet-18 features still separate the bars' angles far above chance (10%).
    assert 20 < record["linear_top1"] <= 100 and 20 < record["knn_top1"] <= 100
    assert record["config"]["source"] == f"checkpoint: {path}"
    status = RunDir(run_dir).read_status()
    assert status["checkpoint"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert status["checkpoint"]["dropped_keys"] == ["fc.weight", "fc.bias"]
    assert record["pretrain_seconds"] is None  # pre-trained elsewhere: no time of ours

    # What was scored is the file's network: the cached test features are its features.
    model.fc = nn.Identity()
    info = dataset_info("fashion-mnist")
    expected = extract_features(
        model,
        load_split("fashion-mnist", fashion_root, "test"),
        image_size=IMAGE_SIZE,
        mean=info.mean,
        std=info.std,
        device=torch.device("cpu"),
    )
    cached = torch.load(run_dir / FEATURES, weights_only=True)["splits"]["test"]["features"]
    torch.testing.assert_close(cached, expected.features)

    # It is a row of `ssl-bench table`, its source the file.
    rows = [line for line in (results / "table.md").read_text().splitlines() if f"checkpoint: {path}" in line]
    assert len(rows) == 1
    assert "| finished |" in rows[0] and f"{record['linear_top1']:.2f}" in rows[0]
    assert rows[0].startswith("| checkpoint ")

    # The same command again reuses the record.
    capsys.readouterr()
    assert main(eval_args(path, results, fashion_root, "--backbone", "resnet18")) == 0
    assert "already evaluated" in capsys.readouterr().out
    assert RunDir(run_dir).read_result() == record


def test_the_official_vicreg_and_barlow_twins_layouts(tmp_path):
    torch.manual_seed(1)
    backbone, _ = build_backbone("resnet18")
    weights = backbone.state_dict()
    # The released resnet50.pth: `torch.save(model.module.backbone.state_dict(), ...)`, torchvision's
    # key names without fc (here at ResNet-18 size).
    released = tmp_path / "resnet.pth"
    torch.save(weights, released)
    external = load_external(released, "resnet18")
    assert _equal_states(external.backbone, weights) and external.dropped == () and external.key == ""

    # The full training checkpoint: DDP's `module.` and the model's `backbone.` before every key,
    # the projector beside it, and the LARS state naming a function of the training script.
    full = tmp_path / "model.pth"
    state = {f"module.backbone.{k}": v for k, v in weights.items()}
    state["module.projector.0.weight"] = torch.randn(16, 512)
    optimizer = {
        "state": {},
        "param_groups": [{"lr": 0.2, "weight_decay_filter": exclude_bias_and_norm, "params": [0]}],
    }
    torch.save({"epoch": 3, "model": state, "optimizer": optimizer}, full)
    external = load_external(full, "resnet18", "module.backbone.")
    assert _equal_states(external.backbone, weights) and external.key == "module.backbone."

    with pytest.raises(UsageError) as error:
        load_external(full, "resnet18")
    message = str(error.value)
    assert "\n" not in message
    assert "missing keys: conv1.weight, bn1.weight" in message
    assert "unexpected keys: module.backbone.conv1.weight" in message
    assert message.endswith("try --key module.backbone.")


def test_several_state_dicts_are_chosen_by_the_key(tmp_path):
    torch.manual_seed(2)
    student, teacher = build_backbone("resnet18")[0].state_dict(), build_backbone("resnet18")[0].state_dict()
    path = tmp_path / "distilled.pth"
    torch.save({"student": student, "teacher": teacher, "epoch": 10}, path)
    with pytest.raises(UsageError, match=r"several state dicts \(student, teacher\)"):
        load_external(path, "resnet18")
    assert _equal_states(load_external(path, "resnet18", "teacher.").backbone, teacher)


@pytest.fixture
def resnet18_file(tmp_path) -> Path:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--backbone", "resnet50"],
            "does not fit backbone resnet50; missing keys: layer1.0.conv3.weight, layer1.0.bn3.weight, "
            "layer1.0.bn3.bias, layer1.0.bn3.running_mean, layer1.0.bn3.running_var (+",
        ),
        (
            ["--backbone", "resnet18_cifar"],
            "does not fit backbone resnet18_cifar; shapes differ: conv1.weight (64, 3, 7, 7) in the file, "
            "(64, 3, 3, 3) in the backbone",
        ),
        (["--backbone", "resnet18", "--key", "module.backbone."], "no key of"),
        ([], "--backbone is needed"),
        (["--backbone", "resnet81"], "unknown backbone 'resnet81'"),
    ],
)
def test_mismatches_are_one_line_errors_and_leave_nothing(resnet18_file, tmp_path, capsys, extra, expected):
    results = tmp_path / "results"
    assert main(eval_args(resnet18_file, results, tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssl-bench: error: ") and err.count("\n") == 1 and expected in err
    assert not results.exists()


def test_unreadable_and_missing_checkpoints(tmp_path, capsys):
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    whole_model = tmp_path / "model.pth"
    torch.save(nn.Linear(2, 2), whole_model)  # a pickled module, not its state dict
    for path, expected in [
        (garbage, "cannot read checkpoint"),
        (tmp_path / "absent.pt", "no checkpoint file"),
        (whole_model, "holds a pickled object, not a state dict"),
    ]:
        assert main(eval_args(path, tmp_path / "results", tmp_path, "--backbone", "resnet18")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err
    assert not (tmp_path / "results").exists()


def test_an_evaluation_crash_is_recorded_as_a_failure(resnet18_file, tmp_path, fashion_root, monkeypatch, capsys):
    import ssl_bench.run.lifecycle as lifecycle

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(lifecycle, "cached_features", crash)
    results = tmp_path / "results"
    assert main(eval_args(resnet18_file, results, fashion_root, "--backbone", "resnet18")) == 1
    (run_dir,) = (results / "fashion-mnist").glob("checkpoint-resnet18-*")
    record = RunDir(run_dir).read_result()
    assert record["status"] == "failed" and record["error"] == "evaluation failed: RuntimeError: out of memory"
    assert "RuntimeError: out of memory" in (run_dir / "error.log").read_text()
    assert f"traceback: {run_dir / 'error.log'}" in capsys.readouterr().err
