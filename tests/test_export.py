"""`ssl-bench export`: a run's backbone loads strictly into torchvision's and timm's models and computes
what the run's backbone computes; the model card; what cannot be exported; and an export (or the run
directory itself) evaluated by `ssl-bench eval` scores exactly what the run scored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

from ssl_bench import __version__
from ssl_bench.checkpoints.export import export_target
from ssl_bench.checkpoints.model_card import render_model_card
from ssl_bench.launch.cli import main
from ssl_bench.models.backbones import build_backbone
from ssl_bench.recipes import resolve_config
from ssl_bench.run.lifecycle import pretrained_backbone, run_entry
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SIZE = 16
# One step of VICReg on 32 images with a ResNet-18 at 16 px: seconds on 2 cores.
TINY = ["projector=32,32", "num_workers=0", "device=cpu", "train_subset=32", f"image_size={IMAGE_SIZE}"]


@pytest.fixture(scope="module")
def run(fashion_root, tmp_path_factory):
    """A pre-trained and evaluated ResNet-18 run: (results dir, config, run dir)."""
    results = tmp_path_factory.mktemp("results")
    overrides = {"epochs": 1, "batch_size": 32, "backbone": "resnet18", "data_root": str(fashion_root)}
    config = resolve_config("vicreg", "fashion-mnist", overrides, TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before the one_thread fixture of the tests; see tests/conftest.py
    try:
        assert run_entry(Run.of(results, config), progress=False, log=lambda _: None).status == "finished"
    finally:
        torch.set_num_threads(threads)
    return results, config, Run.of(results, config)


def _images() -> torch.Tensor:
    return torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(7))


@torch.no_grad()
def _same_output(model: nn.Module, reference: nn.Module) -> None:
    torch.testing.assert_close(model.eval()(_images()), reference.eval()(_images()))


def _loaded_by_the_card(card: dict, directory: Path) -> nn.Module:
    """Run the model card's loading code (in the export's directory) and return its model."""
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        exec(card["export"]["load"], namespace)
    finally:
        os.chdir(cwd)
    return namespace["model"]


def test_torchvision_export_loads_strictly_and_computes_the_runs_backbone(run, tmp_path, capsys):
    _, config, run_dir = run
    output = tmp_path / "vicreg-resnet18.safetensors"
    assert main(["export", str(run_dir.path), "--output", str(output)]) == 0
    assert "strict=True" in capsys.readouterr().out  # the loading code is printed
    state = load_file(output)
    expected = pretrained_backbone(config, run_dir)

    model = torchvision.models.resnet18()
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"fc.weight\", \"fc.bias\""):
        model.load_state_dict(state, strict=True)  # an SSL backbone has no classifier: fc is Identity
    model.fc = nn.Identity()
    model.load_state_dict(state, strict=True)
    _same_output(model, expected)

    # The model card: the run's method, recipe, data, epochs, evaluation, version and commit.
    card = json.loads(output.with_suffix(".json").read_text())
    record = run_dir.read_result()
    assert (card["method"], card["backbone"], card["epochs"], card["seed"]) == ("vicreg", "resnet18", 1, 0)
    assert card["recipe"]["source"] == config.source and card["recipe"]["config"] == config.to_dict()
    assert card["data"]["dataset"] == "fashion-mnist" and card["data"]["image_size"] == IMAGE_SIZE
    evaluation = card["evaluation"]
    assert evaluation["linear_top1"] == record["linear_top1"] and evaluation["knn_top1"] == record["knn_top1"]
    assert evaluation["linear_setting"] == record["linear_choice"]["setting"]
    assert evaluation["protocol_hash"] == record["eval_protocol_hash"]
    environment = json.loads((run_dir.path / "environment.json").read_text())
    assert card["provenance"]["trained_at_commit"] == environment["git_commit"]
    assert card["provenance"]["ssl_bench_version"] == __version__
    assert card["export"]["file"] == output.name and card["export"]["representation_dim"] == 512
    markdown = output.with_suffix(".md").read_text()
    assert f"| linear probe | {record['linear_top1']:.2f} |" in markdown
    assert card["export"]["load"] in markdown and config.source in markdown
    # The lr rule the run used, as its config gives it.
    assert "(lr = base_lr x batch / 256)" in markdown
    card["recipe"]["config"]["lr_scaling"] = "sqrt"
    assert "(lr = base_lr x sqrt(batch / 256))" in render_model_card(card)
    # The card's own loading code gives the same network.
    _same_output(_loaded_by_the_card(card, output.parent), expected)


def test_timm_export_loads_strictly_into_timm_create_model(run):
    _, config, run_dir = run
    assert main(["export", str(run_dir.path), "--format", "timm"]) == 0
    output = run_dir.path / "backbone.timm.safetensors"  # the default place
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    model.load_state_dict(load_file(output), strict=True)
    _same_output(model, pretrained_backbone(config, run_dir))
    card = json.loads(output.with_suffix(".json").read_text())
    _same_output(_loaded_by_the_card(card, output.parent), model)


@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
def test_the_cifar_stem_exports_with_the_stem_put_into_the_library_model(fmt, tmp_path):
    torch.manual_seed(3)
    backbone, _ = build_backbone("resnet18_cifar")
    target = export_target("resnet18_cifar", fmt)
    assert (target.architecture, target.cifar_stem) == ("resnet18", True)
    state = backbone.state_dict()
    library = torchvision.models.resnet18() if fmt == "torchvision" else timm.create_model("resnet18", num_classes=0)
    with pytest.raises(RuntimeError, match=r"size mismatch for conv1\.weight"):
        library.load_state_dict(state, strict=False)  # the library's own 7x7 stride-2 stem does not fit
    model = target.build()
    model.load_state_dict(state, strict=True)
    _same_output(model, backbone)
    save_file(state, str(tmp_path / "backbone.safetensors"))
    card = {"export": {"load": target.loading_code("backbone.safetensors")}}
    _same_output(_loaded_by_the_card(card, tmp_path), backbone)


def test_a_timm_backbone_exports_to_timm(tmp_path):
    torch.manual_seed(4)
    backbone, _ = build_backbone("resnet10t")
    target = export_target("resnet10t", "timm")
    model = target.build()
    model.load_state_dict(backbone.state_dict(), strict=True)
    _same_output(model, backbone)


def _config_only_run(results: Path, fashion_root: Path, backbone: str, status: str | None = None) -> RunDir:
    config = resolve_config("vicreg", "fashion-mnist", {"backbone": backbone, "data_root": str(fashion_root)})
    run_dir = Run.of(results, config)
    run_dir.write_config(run_dir.resolved_config())
    if status:
        run_dir.write_status(status)
    return run_dir


@pytest.mark.parametrize(
    "backbone, fmt, expected",
    [
        ("tiny_convnet", "torchvision", "tiny_convnet is ssl-bench's own small test network"),
        ("tiny_convnet", "timm", "neither torchvision nor timm has it"),
        ("resnet10t", "torchvision", "resnet10t is a timm model, which torchvision does not have: export it with"),
        ("resnet18", "torchvision", "has no checkpoint.pt"),
    ],
)
def test_what_cannot_be_exported_is_one_line_and_writes_nothing(
    backbone, fmt, expected, tmp_path, fashion_root, capsys
):
    run_dir = _config_only_run(tmp_path, fashion_root, backbone, status="running")
    before = sorted(p.name for p in run_dir.path.iterdir())
    assert main(["export", str(run_dir.path), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssl-bench: error: ") and err.count("\n") == 1 and expected in err
    assert sorted(p.name for p in run_dir.path.iterdir()) == before


def test_bad_output_and_non_run_directories(run, tmp_path, capsys):
    _, _, run_dir = run
    output = tmp_path / "backbone.pt"
    assert main(["export", str(run_dir.path), "--output", str(output)]) == 2
    assert "must end with .safetensors" in capsys.readouterr().err and not output.exists()
    assert main(["export", str(tmp_path)]) == 2
    assert "not an ssl-bench run directory" in capsys.readouterr().err


PROTOCOL_RESULTS = ("linear_top1", "knn_top1", "knn_top1_fixed", "linear_choice", "knn_choice", "eval_protocol_hash")


def test_an_export_and_the_run_directory_evaluated_by_eval_score_what_the_run_scored(run, tmp_path, fashion_root):
    results, _, run_dir = run
    own = run_dir.read_result()
    exported = tmp_path / "exported.safetensors"
    assert main(["export", str(run_dir.path), "--output", str(exported)]) == 0
    common = ["--data-root", str(fashion_root), "--results-dir", str(results), "--device", "cpu", "--num-workers", "0"]
    # No --backbone, --image-size or --seed: the export names its backbone, image size and seed.
    assert main(["eval", str(exported), *common]) == 0
    assert main(["eval", str(run_dir.path), *common]) == 0
    records = {}
    for path in (results / "fashion-mnist").glob("checkpoint-*"):
        record = RunDir(path).read_result()
        records[record["config"]["source"]] = record
    assert set(records) == {f"checkpoint: {exported}", f"checkpoint: {run_dir.path}"}
    for record in records.values():
        assert record["status"] == "finished" and record["backbone"] == "resnet18" and record["seed"] == 0
        assert {field: record[field] for field in PROTOCOL_RESULTS} == {field: own[field] for field in PROTOCOL_RESULTS}
    # Both stand beside the run in its group of `ssl-bench table`, with the run's numbers.
    table = (results / "table.md").read_text()
    section = table.split("## fashion-mnist, resnet18, 1 epoch")[1]
    linear = f"{own['linear_top1']:.2f}"
    rows = [line for line in section.splitlines() if line.startswith(("| vicreg ", "| checkpoint "))]
    assert len(rows) == 3 and all(linear in row for row in rows)
    assert sum(f"checkpoint: {exported}" in row for row in rows) == 1
