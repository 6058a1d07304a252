"""Recipes as data: table loading and inheritance, lr scaling, --set parsing (fidelity: test_recipe_fidelity)."""

from __future__ import annotations

import pytest

from ssl_bench.config import scaled_lr
from ssl_bench.errors import UsageError
from ssl_bench.preemption import TrainingStopped
from ssl_bench.recipes import recipe_rows, resolve_config
from ssl_bench.run.describe import describe_run
from ssl_bench.run.record import Run
from ssl_bench.train.trainer import pretrain


def test_recipe_rows_print_the_cheatsheet_columns():
    rows = {(r["setting"], r["method"]): r for r in recipe_rows()}
    barlow = rows[("imagenet", "barlow_twins")]
    assert barlow["lr"] == "1.6 (biases and norms 0.0384)"
    assert barlow["latent dim"] == 8192 and barlow["batch"] == 2048 and barlow["epochs"] == 1000
    assert rows[("imagenet", "simclr")]["lr"] == "4.8"
    assert rows[("imagenet", "tico")]["weight decay"] == "1.5e-06"
    assert rows[("imagenet", "vicreg")]["schedule"] == "linear warmup, cosine decay"


def test_lr_follows_the_batch_size():
    config = resolve_config("vicreg", "imagenet", {"batch_size": 256})
    assert config.lr == pytest.approx(0.2)
    config = resolve_config("barlow_twins", "imagenet", {"batch_size": 512})
    assert config.lr == pytest.approx(0.4)
    assert config.bias_norm_lr == pytest.approx(0.0048 * 2)


def test_the_sqrt_rule_keeps_the_lr_at_batch_256_and_halves_it_at_64():
    linear = resolve_config("simclr", "cifar10", settings=["batch_size=64"])
    sqrt = resolve_config("simclr", "cifar10", settings=["batch_size=64", "lr_scaling=sqrt"])
    assert (linear.base_lr, linear.lr, sqrt.lr) == (0.4, pytest.approx(0.1), pytest.approx(0.2))
    at_256 = resolve_config("simclr", "cifar10", settings=["batch_size=256", "lr_scaling=sqrt"])
    assert at_256.lr == pytest.approx(0.4) and scaled_lr(0.4, 1024, "sqrt") == pytest.approx(0.8)
    # Every lr of the optimiser follows the rule: Barlow Twins' biases and norms, solo-learn's probe.
    barlow = resolve_config("barlow_twins", "imagenet", settings=["batch_size=64", "lr_scaling=sqrt"])
    assert (barlow.lr, barlow.bias_norm_lr) == (pytest.approx(0.1), pytest.approx(0.0024))
    assert sqrt.probe_lr == pytest.approx(0.05)
    # At its default the rule stays out of the config (and the identity of every earlier run).
    assert "lr_scaling" not in linear.to_dict() and sqrt.to_dict()["lr_scaling"] == "sqrt"
    assert describe_run(sqrt)["schedule"]["lr_scaling"] == "base_lr x sqrt(batch / 256)"
    assert describe_run(sqrt)["optimizer"]["groups"][0]["peak_lr"] == pytest.approx(0.2)


def test_warmup_may_be_a_fraction_of_an_epoch_and_a_whole_one_is_the_recipes_run():
    quarter = resolve_config("vicreg", "cifar10", settings=["warmup_epochs=2.5"])
    assert quarter.warmup_epochs == 2.5 and quarter.to_dict()["warmup_epochs"] == 2.5
    same = resolve_config("vicreg", "cifar10", settings=["warmup_epochs=10"])
    assert same.to_dict()["warmup_epochs"] == 10 and isinstance(same.to_dict()["warmup_epochs"], int)
    assert same.identity_hash() == resolve_config("vicreg", "cifar10").identity_hash()


def test_warmup_stays_ten_epochs_unless_the_run_is_shorter():
    assert resolve_config("vicreg", "cifar10", {"epochs": 100}).warmup_epochs == 10
    # Shorter than the warmup itself: the warmup keeps its share of training (10 / 1000).
    assert resolve_config("vicreg", "cifar10", {"epochs": 8}).warmup_epochs == 0
    assert resolve_config("vicreg", "imagenet", {"epochs": 5}).warmup_epochs == 0
    assert resolve_config("simclr", "imagenet", {"epochs": 5}).warmup_epochs == 0  # 10/100 * 5 = 0.5 -> 0


def test_set_parses_by_field_type():
    config = resolve_config(
        "simclr",
        "cifar10",
        settings=[
            "projector=64, 32",
            "loss.temperature=0.5",
            "train_subset=none",
            "base_lr=1e-3",
            "download=true",
            "seed=7",
            "bias_norm_base_lr=0.01",
        ],
    )
    assert config.projector == (64, 32)
    assert config.loss == {"temperature": 0.5}
    assert config.train_subset is None
    assert config.base_lr == 1e-3
    assert config.download is True
    assert config.seed == 7
    assert config.bias_norm_base_lr == 0.01


@pytest.mark.parametrize(
    "setting, message",
    [
        ("epochs", "expected key=value"),
        ("=3", "expected key=value"),
        ("epochs=three", "expected int"),
        ("download=maybe", "expected bool"),
        ("projector=a,b", "projector"),
        ("epoch=3", "did you mean 'epochs'"),
        ("loss.temprature=0.5", "did you mean 'temperature'"),
        ("dataset=cifar100", "unknown --set key 'dataset'"),
        ("batch_size=0", "batch_size must be positive"),
        ("base_lr=-1", "base_lr must be >= 0"),
        ("precision=fp8", "precision"),
        ("warmup_epochs=5000", "exceeds epochs"),
        ("lr_scaling=cubic", "unknown lr_scaling 'cubic'"),
    ],
)
def test_bad_settings_are_usage_errors(setting, message):
    with pytest.raises(UsageError, match=message):
        resolve_config("simclr", "cifar10", settings=[setting])


def test_identity_hash_ignores_execution_settings():
    base = resolve_config("simclr", "cifar10")
    moved = resolve_config("simclr", "cifar10", settings=["device=cpu", "num_workers=0", "data_root=/elsewhere"])
    changed = resolve_config("simclr", "cifar10", settings=["loss.temperature=0.5"])
    assert base.identity_hash() == moved.identity_hash()
    assert base.identity_hash() != changed.identity_hash()


def test_unknown_dataset_suggests_the_closest():
    with pytest.raises(UsageError, match="did you mean 'cifar10'"):
        resolve_config("simclr", "cifar01")


def test_the_runs_log_names_the_lr_rule_it_uses(fashion_root, tmp_path):
    settings = ["batch_size=64", "lr_scaling=sqrt", "train_subset=none", "num_workers=0", "device=cpu"]
    config = resolve_config("simclr", "fashion-mnist", {"data_root": str(fashion_root)}, settings)
    lines: list[str] = []
    with pytest.raises(TrainingStopped):
        pretrain(Run.of(tmp_path, config), progress=False, log=lines.append, should_stop=lambda: True)
    assert f"lr {config.lr:.4g} (base {config.base_lr:g} x sqrt(batch / 256))" in lines[0]
