"""The resolved configuration: recipe tables that build on others, the fields a run computes
with, --set on heads and views, and `ssl-bench run --dry-run`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from ssl_bench.data.augment import view_pair
from ssl_bench.errors import UsageError
from ssl_bench.launch.cli import main
from ssl_bench.launch.tune import search_space
from ssl_bench.recipes import load_recipe_table, resolve_config
from ssl_bench.run.describe import describe_run, flat_view

TRAINING_FIELDS = (
    "lars_variant",
    "base_lr",
    "weight_decay",
    "loss",
    "loss_scale",
    "lr_end_factor",
    "views",
    "view_a",
    "view_b",
    "projector_options",
    "predictor_options",
    "method_params",
    "optimizer",
    "online_probe",
    "probe_base_lr",
)


# Method parameters that are sizes: a demo row may scale them down with its heads.
SIZE_PARAMS = ("prototypes",)

# The values and provenance `ssl-bench tune` wrote for the demo: the first four methods in
# results/fashion-mnist-tune, the six that joined them in results/fashion-mnist-tune-lineup.
_RESULTS = Path(__file__).resolve().parents[1] / "results"
_TUNE_FILES = [
    _RESULTS / name / "tune" / "fashion-mnist.toml" for name in ("fashion-mnist-tune", "fashion-mnist-tune-lineup")
]
TUNED = {
    method: {key: value for key, value in row.items() if key != "provenance"}
    for path in _TUNE_FILES
    for method, row in tomllib.loads(path.read_text()).items()
}


# Loss parameters tied to the size of the dataset, scaled down with it: MoCo v2's queue holds the
# same share of an epoch in the demo as in the CIFAR row (fashion_mnist.toml).
SCALED_LOSS_PARAMS = {"mocov2": {"queue_size": 6656}}


@pytest.mark.parametrize("method", sorted(load_recipe_table("fashion_mnist").methods))
def test_demo_rows_are_the_cifar_rows_scaled_down(method):
    """Sizes scaled down; lr and weight decay as `ssl-bench tune` chose them."""
    demo, cifar = load_recipe_table("fashion_mnist").methods[method], load_recipe_table("cifar").methods[method]
    tuned = TUNED.get(method, {})
    scaled = SCALED_LOSS_PARAMS.get(method, {})
    for field in TRAINING_FIELDS:
        if field in tuned:
            assert getattr(demo, field) == tuned[field], field
        elif field == "loss" and scaled:
            assert demo.loss == {**cifar.loss, **scaled} and all(demo.loss[k] < cifar.loss[k] for k in scaled)
        elif field == "method_params":
            # Sizes among them (SwAV's number of prototypes) scale down with the heads.
            sizes = [name for name in SIZE_PARAMS if name in cifar.method_params]
            assert {k: v for k, v in demo.method_params.items() if k not in sizes} == {
                k: v for k, v in cifar.method_params.items() if k not in sizes
            }
            assert all(demo.method_params[name] < cifar.method_params[name] for name in sizes)
        else:
            assert getattr(demo, field) == getattr(cifar, field), field
    # Every demo row takes both values from a committed tune.
    assert set(tuned) == {"base_lr", "weight_decay"} and "tuned on validation" in demo.source
    assert (demo.epochs, demo.warmup_epochs) == (5, 1) and demo.projector != cifar.projector
    # Scaled down in width, not in depth: as many Linear layers as the CIFAR row's heads.
    assert len(demo.projector) == len(cifar.projector) and len(demo.predictor) == len(cifar.predictor)
    assert demo.online_probe == "solo_learn"  # solo-learn's classifier, as the CIFAR rows
    # What documents the CIFAR row's source does not travel with it.
    assert demo.source.startswith("CPU demo") and demo.deviations == {}


@pytest.mark.parametrize("method", sorted(load_recipe_table("fashion_mnist").methods))
def test_every_demo_row_searches_the_same_span_around_its_optimizers_scale(method):
    """Equal chances in `ssl-bench tune`: the same weight-decay space and a base_lr range of the same
    width (40x on a log scale) that holds the CIFAR row's base_lr, so an Adam row (W-MSE, 2e-3) is
    not searched at SGD's and LARS's scale, where every trial diverges."""
    space = {dimension.key: dimension for dimension in search_space(method, "fashion-mnist")}
    lr, decay = space["base_lr"], space["weight_decay"]
    assert lr.log and lr.high / lr.low == pytest.approx(40)
    assert lr.low <= load_recipe_table("cifar").methods[method].base_lr <= lr.high
    assert (decay.low, decay.high, decay.log) == (1e-6, 1e-3, True)


def test_set_reaches_views_and_heads():
    config = resolve_config(
        "barlow_twins",
        "cifar10",
        settings=[
            "view_b.solarize_p=0.5",
            "view_a.crop_scale=0.3,1",
            "projector_options.hidden_norm=false",
            "loss_scale=1",
        ],
    )
    assert config.view_b["solarize_p"] == 0.5 and config.view_a["crop_scale"] == [0.3, 1.0]
    assert config.view_a["solarize_p"] == 0.0  # the other view keeps its own
    layers = flat_view(describe_run(config))["projector.layers"]
    assert "BatchNorm1d(2048, affine=True)" not in layers and config.loss_scale == 1.0
    with pytest.raises(UsageError, match="crop_scale"):
        resolve_config("barlow_twins", "cifar10", settings=["view_a.crop_scale=1.5,1"])
    with pytest.raises(UsageError, match="view_a parameter"):
        resolve_config("barlow_twins", "cifar10", settings=["view_a.cutout_p=0.5"])
    with pytest.raises(UsageError, match="lars_variant"):
        resolve_config("barlow_twins", "cifar10", settings=["lars_variant=lamb"])


def test_identity_follows_what_a_run_computes_not_its_documentation():
    config = resolve_config("vicreg", "cifar10")
    base = config.identity_hash()
    config.deviations = {"schedule.form": "reworded"}
    config.source = "another wording"
    assert config.identity_hash() == base
    for setting in (
        "view_b.blur_p=0.5",
        "loss_scale=2",
        "lars_variant=official",
        "projector_options.last_bias=false",
        "zero_init_residual=true",
        "lr_end_factor=0.001",
    ):
        assert resolve_config("vicreg", "cifar10", settings=[setting]).identity_hash() != base, setting


def test_loss_scale_scales_the_optimised_loss_not_its_terms():
    from ssl_bench.train.assemble import build_method

    torch.manual_seed(0)
    x_a, x_b = torch.randn(8, 3, 28, 28), torch.randn(8, 3, 28, 28)
    outs = []
    for scale in ("1", "0.1"):
        config = resolve_config("barlow_twins", "fashion-mnist", settings=["projector=32,16", f"loss_scale={scale}"])
        torch.manual_seed(1)
        outs.append(build_method(config)(x_a, x_b))
    torch.testing.assert_close(outs[1].loss, 0.1 * outs[0].loss)
    for name, term in outs[0].terms.items():
        torch.testing.assert_close(outs[1].terms[name], term)


def test_dry_run_prints_every_run_and_runs_nothing(tmp_path, capsys):
    results = tmp_path / "runs"
    code = main(
        [
            "run",
            "simclr",
            "tico",
            "vicreg",
            "barlow_twins",
            "byol",
            "simsiam",
            "mocov3",
            "--dataset",
            "cifar10",
            "--seeds",
            "0",
            "1",
            "--dry-run",
            "--json",
            "--results-dir",
            str(results),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 14 and not results.exists()
    runs = [json.loads(line) for line in lines]
    assert [(r["method"], r["seed"]) for r in runs[:2]] == [("simclr", 0), ("simclr", 1)]
    byol = next(r for r in runs if r["method"] == "byol")
    assert byol["momentum_target"]["base"] == 0.99 and byol["predictor"]["layers"][-1] == "Linear(4096, 256, bias=True)"
    groups = {g["group"]: g for g in byol["optimizer"]["groups"]}
    assert groups["all, adapted"]["lars"] == "solo-learn, eta 0.02, clip_lr"
    assert groups["all, excluded"]["weight_decay"] == 0.0
    assert byol["augmentation"]["view_b"]["solarize_p"] == 0.2 and byol["backbone"]["zero_init_residual"] is False


def test_dry_run_text_names_the_deviations(tmp_path, capsys):
    assert (
        main(["run", "barlow_twins", "--dataset", "imagenet", "--data-root", str(tmp_path / "absent"), "--dry-run"])
        == 0
    )
    out = capsys.readouterr().out
    assert "optimizer[weights, adapted].lars" in out and "official, eta 0.001" in out
    assert "deviations from the cited source:" in out and "1.5e-6 as the paper states" in out


def test_json_without_dry_run_is_a_usage_error(capsys):
    assert main(["run", "simclr", "--json"]) == 2
    assert "--json goes with --dry-run" in capsys.readouterr().err


def test_the_trainer_runs_what_the_configuration_resolves(fashion_root, tmp_path):
    """The resolved fields reach the run: views, backbone init, LARS rule, schedule end value."""
    from ssl_bench.run.record import Run
    from ssl_bench.train.optim import warmup_cosine
    from ssl_bench.train.trainer import Trainer

    config = resolve_config(
        "vicreg",
        "fashion-mnist",
        {"epochs": 2, "data_root": str(fashion_root)},
        [
            "projector=32,16",
            "batch_size=32",
            "num_workers=0",
            "device=cpu",
            "train_subset=none",
            "lr_end_factor=0.25",
            "view_b.solarize_p=0.7",
            "backbone=resnet18_cifar",
            "zero_init_residual=true",
            "image_size=16",
        ],
    )
    trainer = Trainer(config, Run.of(tmp_path, config), progress=False, log=lambda _: None)
    assert trainer.loader.augmentation.configs == view_pair(config)
    assert all(bool((block.bn2.weight == 0).all()) for block in trainer.method.backbone.layer1)
    group = trainer.optimizer.param_groups[0]
    assert (group["variant"], group["eta"], group["clip_lr"]) == ("solo-learn", 0.02, True)
    trainer.step = trainer.total_steps - 1
    x = torch.randn(32, 3, 16, 16)
    lr = trainer.train_step(x, x.flip(0))["lr"]
    assert lr == warmup_cosine(trainer.total_steps - 1, trainer.total_steps, trainer.warmup_steps, config.lr, 0.25)
