"""The plug-in API: method files, entry points, recipes carried by a method, parameter checks.

A new method needs one file (methods/, any path given to --method-file, or a package exposing it
under the `ssl_bench.methods` entry-point group) plus a recipe row: in experiments/recipes/*.toml,
or carried by the class itself (`recipes`).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import ssl_bench.method as method_module
from ssl_bench.errors import UsageError
from ssl_bench.launch import cli
from ssl_bench.method import Method, available_methods, get_method, load_method_file, register_method
from ssl_bench.models.backbones import TinyConvNet
from ssl_bench.recipes import load_recipe_table, recipe_row, resolve_config
from ssl_bench.train.optim import build_optimizer, parameter_groups, set_scheduled_lr

TOY_METHOD = '''
"""Toy: cosine alignment of the two views (no collapse prevention; for tests only)."""

import torch.nn.functional as F

from ssl_bench.method import Method, register_method


@register_method
class {cls}(Method):
    """Toy {name}: pull the two views together."""

    name = "{name}"
    loss_param_names = ("scale",)
    recipes = {{
        "fashion_mnist": dict(projector=[32, 16], batch_size=16, optimizer="sgd", base_lr=0.1,
                              weight_decay=0.0, warmup_epochs=0, epochs=1, loss={{"scale": 2.0}},
                              source="toy recipe carried by the method"),
    }}

    def loss(self, z_a, z_b):
        return -self.loss_params["scale"] * F.cosine_similarity(z_a, z_b).mean(), {{}}
'''


@pytest.fixture
def registry():
    """Whatever a test registers is gone afterwards (the registry is process-wide)."""
    available_methods()  # discover the built-in methods first
    saved, discovered = dict(method_module._REGISTRY), method_module._discovered
    modules = set(sys.modules)
    yield method_module._REGISTRY
    method_module._REGISTRY.clear()
    method_module._REGISTRY.update(saved)
    method_module._discovered = discovered
    for name in set(sys.modules) - modules:
        if name.startswith(("ssl_bench_user_method_", "toy_plugin", "broken_plugin")):
            del sys.modules[name]


def _write_toy(directory: Path, name: str = "toy_align", cls: str = "ToyAlign") -> Path:
    path = directory / f"{name}.py"
    path.write_text(TOY_METHOD.format(name=name, cls=cls))
    return path


# --- method files --------------------------------------------------------------------------


def test_load_method_file_registers_and_can_be_loaded_again(registry, tmp_path):
    path = _write_toy(tmp_path)
    assert load_method_file(path) == ["toy_align"]
    assert load_method_file(path) == ["toy_align"]  # running the file again re-registers it
    cls = get_method("toy_align")
    assert cls.__module__ in sys.modules  # importable by name, as dataclasses and pickle need
    assert "toy_align" in available_methods()


def test_method_file_errors_are_one_line_usage_errors(registry, tmp_path):
    with pytest.raises(UsageError, match="method file not found"):
        load_method_file(tmp_path / "missing.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(UsageError, match="registers no method"):
        load_method_file(empty)


def test_cli_method_file_and_missing_recipe(registry, tmp_path, capsys):
    path = _write_toy(tmp_path)
    # The file carries a Fashion-MNIST row only: CIFAR is a clear one-line error, exit 2.
    code = cli.main(
        [
            "run",
            "toy_align",
            "--method-file",
            str(path),
            "--dataset",
            "cifar10",
            "--results-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no cifar recipe for method 'toy_align'" in err and "ToyAlign.recipes" in err
    assert cli.main(["run", "toy_align", "--method-file", str(tmp_path / "nope.py")]) == 2
    assert "method file not found" in capsys.readouterr().err


def test_carried_recipe_is_used_where_the_table_has_no_row(registry, tmp_path):
    load_method_file(_write_toy(tmp_path))
    config = resolve_config("toy_align", "fashion-mnist", settings=["loss.scale=3"])
    assert config.projector == (32, 16) and config.optimizer == "sgd" and config.loss == {"scale": 3.0}
    assert config.source == "fashion_mnist: toy recipe carried by the method"
    with pytest.raises(UsageError, match="no imagenet recipe"):
        resolve_config("toy_align", "imagenet")


def test_the_recipe_table_wins_over_a_carried_row(registry, tmp_path):
    load_method_file(_write_toy(tmp_path))
    table = load_recipe_table("fashion_mnist")
    carried = recipe_row("toy_align", table)
    assert carried.batch_size == 16
    with_row = dataclasses.replace(
        table, methods={**table.methods, "toy_align": dataclasses.replace(carried, batch_size=64)}
    )
    assert recipe_row("toy_align", with_row).batch_size == 64


def test_a_carried_row_with_a_typo_is_a_usage_error(registry):
    @register_method
    class Typo(Method):
        """Carries a row with a misspelt field."""

        name = "typo_method"
        recipes = {"fashion_mnist": {"projecter": [8], "batch_size": 8}}

        def loss(self, z_a, z_b):
            return (z_a - z_b).square().mean(), {}

    with pytest.raises(UsageError, match="did you mean 'projector'"):
        resolve_config("typo_method", "fashion-mnist")


# --- entry points --------------------------------------------------------------------------


def _install_dist(site: Path, dist: str, module: str, source: str, entry: str) -> None:
    """A minimal installed distribution: a module and a .dist-info with an entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ssl_bench.methods]\n{entry}\n")


def test_entry_point_plugins_are_discovered(registry, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    # One plug-in names its module (the class registers itself), one names an unregistered class.
    _install_dist(
        site, "toy_plugin", "toy_plugin", TOY_METHOD.format(name="toy_plugin", cls="ToyPlugin"), "toy = toy_plugin"
    )
    _install_dist(
        site,
        "toy_plugin_cls",
        "toy_plugin_cls",
        textwrap.dedent('''
        from ssl_bench.method import Method

        class Undecorated(Method):
            """Registered by the harness because the entry point names the class."""

            name = "toy_plugin_cls"

            def loss(self, z_a, z_b):
                return (z_a - z_b).square().mean(), {}
        '''),
        "cls = toy_plugin_cls:Undecorated",
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    method_module._discovered = False
    names = available_methods()
    assert {"toy_plugin", "toy_plugin_cls", "vicreg", "byol"} <= set(names)
    assert get_method("toy_plugin_cls").__name__ == "Undecorated"


def test_a_broken_plugin_is_skipped_with_a_warning(registry, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _install_dist(
        site,
        "broken_plugin",
        "broken_plugin",
        "raise ImportError('missing dependency xyz')\n",
        "broken = broken_plugin",
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    method_module._discovered = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = available_methods()
    assert "simclr" in names
    assert any("broken_plugin" in str(w.message) and "missing dependency xyz" in str(w.message) for w in caught)


# --- declarations are checked ----------------------------------------------------------------


def test_register_method_rejects_incomplete_or_clashing_classes(registry):
    with pytest.raises(TypeError, match="must implement loss"):

        @register_method
        class NoLoss(Method):
            name = "no_loss"

    with pytest.raises(TypeError, match="needs a class attribute `name`"):

        @register_method
        class NoName(Method):
            def loss(self, z_a, z_b):
                return z_a.sum(), {}

    with pytest.raises(ValueError, match="'simclr' is taken"):

        @register_method
        class Impostor(Method):
            name = "simclr"

            def loss(self, z_a, z_b):
                return z_a.sum(), {}


@pytest.mark.parametrize(
    "method, setting, message",
    [
        ("byol", "predictor=", "byol needs a predictor"),
        ("byol", "predictor=64,100", "must end at the embedding width 128"),
        ("vicreg", "predictor=64,1024", "vicreg has no predictor"),
        ("byol", "method_params.momentum_base=1.5", "momentum_base must be in"),
        ("byol", "method_params.momentum=0.9", "unknown method_params parameter of byol 'momentum'"),
        ("mocov3", "loss.temprature=0.2", "did you mean 'temperature'"),
    ],
)
def test_recipe_and_set_errors_name_the_problem(method, setting, message):
    with pytest.raises(UsageError, match=message):
        resolve_config(method, "fashion-mnist", settings=[setting])


def test_method_params_are_set_by_type():
    config = resolve_config("byol", "fashion-mnist", settings=["method_params.momentum_base=0.9"])
    assert config.method_params == {"momentum_base": 0.9}
    config = resolve_config("simsiam", "fashion-mnist", settings=["method_params.fixed_predictor_lr=false"])
    assert config.method_params == {"fixed_predictor_lr": False}
    assert config.predictor == (128, 512)
    # The new fields are part of the run's identity.
    assert config.identity_hash() != resolve_config("simsiam", "fashion-mnist").identity_hash()


def test_constructor_checks_parameter_names():
    with pytest.raises(UsageError, match="vicreg needs the loss parameter"):
        get_method("vicreg")(TinyConvNet((4, 8)), 8, (6,), loss_params={"sim_coeff": 1.0})
    with pytest.raises(UsageError, match=r"byol needs the method_params parameter.*momentum_base"):
        get_method("byol")(TinyConvNet((4, 8)), 8, (6,), (6,))


# --- constant learning rates -----------------------------------------------------------------


def test_constant_lr_group_keeps_its_peak_through_warmup_and_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    fixed = list(model[1].parameters())
    groups = parameter_groups(model, lr=0.4, weight_decay=1e-4, constant_lr_params=fixed)
    assert [g.get("constant_lr", False) for g in groups] == [False, True]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in fixed}
    optimizer = build_optimizer("sgd", groups)
    for step, scheduled in [(0, 0.0), (5, 0.2), (10, 0.4), (99, None)]:
        lr = set_scheduled_lr(optimizer, step, total_steps=100, warmup_steps=10)
        if scheduled is not None:
            assert lr == pytest.approx(scheduled)
        assert optimizer.param_groups[1]["lr"] == 0.4
    assert optimizer.param_groups[0]["lr"] < 0.01  # the other group did decay


def test_trainer_gives_simsiam_predictor_a_constant_lr_and_byol_target_no_group(fashion_root, tmp_path):
    from ssl_bench.run.record import Run
    from ssl_bench.train.trainer import Trainer

    settings = ["batch_size=16", "train_subset=64", "image_size=16", "device=cpu", "projector=16,16,8"]
    config = resolve_config("simsiam", "fashion-mnist", {"data_root": str(fashion_root)}, [*settings, "predictor=4,8"])
    trainer = Trainer(config, Run.of(tmp_path, config), progress=False, log=lambda _: None)
    last = trainer.optimizer.param_groups[-1]
    assert last["constant_lr"] and {id(p) for p in last["params"]} == {
        id(p) for p in trainer.method.predictor.parameters()
    }

    config = resolve_config(
        "byol", "fashion-mnist", {"data_root": str(fashion_root)}, [*settings[:-1], "projector=16,8", "predictor=16,8"]
    )
    trainer = Trainer(config, Run.of(tmp_path, config), progress=False, log=lambda _: None)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in trainer.method.parameters() if p.requires_grad}
    assert not optimised & {id(t) for _, t in trainer.method.momentum_pairs()}
