"""Offline evaluation: kNN and linear probe on data whose answer is known, the random-init
baseline, the feature cache, and result.json after real (tiny) end-to-end runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import ssl_bench.eval.features as features_module
import ssl_bench.run.lifecycle as lifecycle
from ssl_bench.config import RunConfig
from ssl_bench.eval.features import FEATURES, extract_features
from ssl_bench.eval.probes import (
    KNN_NATURAL_LOW,
    LINEAR_NATURAL_LOW,
    EvalProtocol,
    KnnConfig,
    LinearProbeConfig,
    SplitFeatures,
    knn_scores,
    knn_top1,
    linear_probe,
    open_edges,
    protocol_for,
    select_knn,
    select_linear_probe,
)
from ssl_bench.launch.cli import main
from ssl_bench.provenance import code_hash, cpu_model
from ssl_bench.recipes import resolve_config
from ssl_bench.run.lifecycle import evaluate_baseline, evaluate_run, initial_backbone, random_init_config
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.trainer import Trainer, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------------------------
# kNN and linear probe on data whose accuracy is known


def test_knn_hand_worked_example():
    # Cosine similarities of the query (2, 0) to the four train points: 1, 0.6, 0.6, -1.
    train = SplitFeatures(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]]), torch.tensor([0, 1, 1, 0]))
    query = torch.tensor([[2.0, 0.0]])
    scores = knn_scores(train, query, KnnConfig(k=3, temperature=0.1), num_classes=2)
    # The 3 nearest: class 0 at similarity 1, class 1 twice at 0.6; votes exp(sim / T), each
    # query's divided by exp(its highest similarity / T) = exp(10).
    assert scores[0, 0].item() == pytest.approx(1.0)
    assert scores[0, 1].item() == pytest.approx(2 * math.exp(6.0 - 10.0))
    assert scores.argmax(dim=1).item() == 0  # the close neighbour outweighs a 2-to-1 majority
    # At a high temperature the weights flatten (exp(0.1) < 2 exp(0.06)) and the majority wins.
    flat = knn_scores(train, query, KnnConfig(k=3, temperature=10.0), num_classes=2)
    assert flat[0].tolist() == pytest.approx([1.0, 2 * math.exp(0.06 - 0.1)])
    assert flat.argmax(dim=1).item() == 1
    # k larger than the bank: every train point votes (class 0 adds exp((-1 - 1) / T)).
    everyone = knn_scores(train, query, KnnConfig(k=200, temperature=0.1), num_classes=2)
    assert everyone[0, 0].item() == pytest.approx(1.0 + math.exp(-20.0))


def _clusters(n: int, seed: int, classes: int = 10, dim: int = 32, spread: float = 1.0, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) * 4
    labels = torch.arange(n) % classes
    features = (centres[labels] + spread * torch.randn(n, dim, generator=generator)) * scale
    return SplitFeatures(features, labels)


FAST_LINEAR = LinearProbeConfig(epochs=10)


@pytest.mark.parametrize("scale", [1.0, 1000.0])  # standardising makes the feature scale irrelevant
def test_well_separated_clusters_are_classified_perfectly(scale):
    train, test = _clusters(1000, seed=0, scale=scale), _clusters(500, seed=1, scale=scale)
    assert linear_probe(train, test, FAST_LINEAR, num_classes=10, seed=0) >= 99.0
    assert knn_top1(train, test, KnnConfig(k=20), num_classes=10) >= 99.0


def test_random_labels_give_chance_accuracy():
    train, test = _clusters(1000, seed=0), _clusters(1000, seed=1)
    generator = torch.Generator().manual_seed(5)
    train.labels = torch.randint(0, 10, (1000,), generator=generator)
    test.labels = torch.randint(0, 10, (1000,), generator=generator)
    assert 4.0 <= linear_probe(train, test, FAST_LINEAR, num_classes=10, seed=0) <= 16.0
    assert 4.0 <= knn_top1(train, test, KnnConfig(), num_classes=10) <= 16.0


def test_linear_probe_is_deterministic_given_the_seed():
    train, test = _clusters(300, seed=0, spread=6.0), _clusters(300, seed=1, spread=6.0)
    runs = [linear_probe(train, test, FAST_LINEAR, num_classes=10, seed=s) for s in (0, 0, 1, 2)]
    assert runs[0] == runs[1]
    # ... and the seed is what it depends on: other seeds train other heads (the overlapping
    # clusters leave room for the initialisation and shuffling to show).
    assert len(set(runs)) > 1


def test_features_come_from_the_frozen_backbone_in_eval_mode(fashion_root):
    from ssl_bench.data.datasets import dataset_info, load_split

    backbone = initial_backbone(resolve_config("vicreg", "fashion-mnist", {"data_root": str(fashion_root)}))
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    data = load_split("fashion-mnist", fashion_root, "test")
    info = dataset_info("fashion-mnist")
    kwargs = dict(image_size=28, mean=info.mean, std=info.std, device=torch.device("cpu"), batch_size=64)
    first = extract_features(backbone, data, **kwargs)
    assert not backbone.training  # BatchNorm used its running statistics and did not update them
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    assert first.features.shape == (len(data), 256) and not first.features.requires_grad
    assert torch.equal(first.labels, data.labels)
    # A different batch size gives the same features (no batch statistics in eval mode).
    again = extract_features(backbone, data, **{**kwargs, "batch_size": 200})
    assert torch.allclose(first.features, again.features, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The random-init baseline


def test_every_method_of_a_seed_shares_one_baseline(fashion_root):
    configs = [
        resolve_config(m, "fashion-mnist", {"data_root": str(fashion_root)}) for m in ("simclr", "vicreg", "byol")
    ]
    baselines = {random_init_config(c).identity_hash() for c in configs}
    assert len(baselines) == 1
    baseline = random_init_config(configs[0])
    assert baseline.method == "random_init" and baseline.epochs == 0
    assert random_init_config(baseline) == baseline
    other_seed = resolve_config("vicreg", "fashion-mnist", {"data_root": str(fashion_root), "seed": 1})
    assert random_init_config(other_seed).identity_hash() not in baselines


def test_baseline_backbone_is_the_trainers_initial_backbone(fashion_root, tmp_path):
    config = resolve_config(
        "simclr",
        "fashion-mnist",
        {"data_root": str(fashion_root), "seed": 3},
        ["train_subset=none", "num_workers=0", "device=cpu"],
    )
    trainer = Trainer(config, Run.of(tmp_path, config), progress=False, log=lambda _: None)
    expected = trainer.method.backbone.state_dict()
    got = initial_backbone(random_init_config(config)).state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


# --------------------------------------------------------------------------------------------
# End to end: `ssl-bench run` on a generated Fashion-MNIST-format dataset

# 256 of the 600 generated images in batches of 32: 8 steps per epoch.
TINY = ["projector=32,32", "num_workers=0", "device=cpu", "train_subset=256"]
RECORD_FIELDS = {
    "schema_version",
    "status",
    "method",
    "dataset",
    "backbone",
    "epochs",
    "seed",
    "identity_hash",
    "code_hash",
    "git_commit",
    "git_dirty",
    "train_code_hash",
    "device_name",
    "linear_top1",
    "knn_top1",
    "knn_top1_fixed",
    "online_top1",
    "online_scores",
    "linear_aug_top1",
    "linear_aug_scores",
    "linear_choice",
    "knn_choice",
    "selection_split",
    "reported_split",
    "epochs_done",
    "final_loss",
    "online_probe_top1",
    "embedding_std",
    "rankme_representation",
    "rankme_embedding",
    "offdiag_corr_representation",
    "offdiag_corr_embedding",
    "features",
    "pretrain_seconds",
    "samples_per_second",
    "peak_memory_mb",
    "eval_seconds",
    "eval_peak_memory_mb",
    "eval_details",
    "eval_protocol",
    "eval_protocol_hash",
    "device",
    "config",
    "error",
    "updated",
}
QUIET = {"log": lambda _: None}


def _vicreg_run_args(fashion_root: Path, results: Path) -> list[str]:
    """`ssl-bench run vicreg` for 1 epoch on the tiny data, as the tests here run it."""
    settings = [a for s in TINY for a in ("--set", s)]
    return [
        "run",
        "vicreg",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--data-root",
        str(fashion_root),
        "--results-dir",
        str(results),
        "--no-progress",
        *settings,
    ]


def _config(data_root: Path, method: str = "vicreg", extra: list[str] = ()):
    return resolve_config(
        method, "fashion-mnist", {"epochs": 1, "data_root": str(data_root), "batch_size": 32}, [*TINY, *extra]
    )


@pytest.fixture(scope="module")
def finished(fashion_root, tmp_path_factory) -> Path:
    """A results directory after `ssl-bench run vicreg` (1 epoch): the baseline and the run, evaluated."""
    results = tmp_path_factory.mktemp("results")
    args = _vicreg_run_args(fashion_root, results)
    assert main(args) == 0
    return results


def _no_extraction(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(features_module, "extract_features", refuse)


def test_run_writes_the_documented_record(finished, fashion_root):
    config = _config(fashion_root)
    run_dir = Run.of(finished, config)
    record = run_dir.read_result()
    assert set(record) == RECORD_FIELDS
    assert record["status"] == "finished" and record["error"] is None
    assert (record["method"], record["dataset"], record["backbone"], record["epochs"], record["seed"]) == (
        "vicreg",
        "fashion-mnist",
        "tiny_convnet",
        1,
        0,
    )
    assert record["identity_hash"] == config.identity_hash() and record["config"] == config.to_dict()
    assert 0 <= record["linear_top1"] <= 100 and 0 <= record["knn_top1"] <= 100
    assert record["pretrain_seconds"] > 0 and record["samples_per_second"] > 0
    assert record["peak_memory_mb"] > 10 and record["eval_peak_memory_mb"] > 10 and record["eval_seconds"] > 0
    assert record["epochs_done"] == 1 and math.isfinite(record["final_loss"])
    assert record["rankme_representation"] > 1 and record["online_probe_top1"] is not None
    protocol = protocol_for("fashion-mnist")
    assert record["eval_protocol"] == protocol.to_dict()
    assert record["eval_protocol_hash"] == protocol.identity_hash()
    # 600 generated train images, 60 per class: the validation split takes a tenth of each class.
    details = record["eval_details"]
    assert (details["train_samples"], details["val_samples"], details["test_samples"]) == (540, 60, 200)
    assert record["device"] == "cpu" and record["device_name"] == cpu_model()
    assert record["code_hash"] == record["train_code_hash"] == code_hash()
    cache = torch.load(run_dir.path / FEATURES, weights_only=True)
    assert cache["splits"]["train"]["features"].shape == (540, 256)
    assert cache["splits"]["val"]["features"].shape == (60, 256)
    # Every choice was made on the validation split; the reported numbers are the chosen ones' test top-1.
    assert (record["selection_split"], record["reported_split"]) == ("val", "test")
    linear, knn = record["linear_choice"], record["knn_choice"]
    assert record["linear_top1"] == linear["test_top1"] and record["knn_top1"] == knn["test_top1"]
    assert linear["val_top1"] == max(point["val_top1"] for point in linear["grid"])
    assert len(linear["grid"]) == len(protocol.linear.lr_grid) * len(protocol.linear.weight_decay_grid)
    assert knn["val_top1"] == max(point["val_top1"] for point in knn["grid"])
    assert 0 <= record["knn_top1_fixed"] <= 100
    # Which axes of each grid the choice sits on the open edge of, as open_edges tells it.
    axes = ("lr", "weight_decay")
    assert linear["on_edge"] == open_edges(linear["grid"], axes, natural_low=LINEAR_NATURAL_LOW)
    natural_high = {"k": details["train_samples"]}
    assert knn["on_edge"] == open_edges(
        knn["grid"], ("k", "temperature"), natural_low=KNN_NATURAL_LOW, natural_high=natural_high
    )
    assert record["features"]["representation"]["knn_choice"]["on_edge"] == knn["on_edge"]


def test_the_online_probe_protocol_scores_the_checkpointed_probe_on_test(finished, fashion_root):
    """solo-learn's CIFAR protocol: the final online probe, in eval mode, on the test images."""
    config = _config(fashion_root)
    run_dir = Run.of(finished, config)
    record = run_dir.read_result()
    weights = run_dir.load_checkpoint()["monitor"]["probe"]
    splits = torch.load(run_dir.path / FEATURES, weights_only=True)["splits"]
    scores = {}
    for split in ("val", "test"):
        features, labels = splits[split]["features"], splits[split]["labels"]
        # By hand: solo-learn's classifier, the linear layer alone (the demo rows train it).
        assert "norm.running_mean" not in weights
        logits = features @ weights["linear.weight"].T + weights["linear.bias"]
        scores[split] = 100.0 * int((logits.argmax(dim=1) == labels).sum()) / len(labels)
    assert record["online_top1"] == pytest.approx(scores["test"], abs=1e-9)
    assert record["online_scores"] == pytest.approx({"val_top1": scores["val"], "test_top1": scores["test"]})
    # The baseline never trained a probe: no online number.
    baseline = Run.of(finished, random_init_config(config)).read_result()
    assert baseline["online_top1"] is None and baseline["online_scores"] is None


def test_a_second_run_skips_what_is_done(finished, fashion_root, monkeypatch, capsys):
    config = _config(fashion_root)
    run_dir = Run.of(finished, config)
    before = run_dir.read_result()
    _no_extraction(monkeypatch)
    assert main(_vicreg_run_args(fashion_root, finished)) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "already evaluated" in out
    assert run_dir.read_result() == before


def test_baseline_is_created_once_and_reused(finished, fashion_root, monkeypatch):
    (baseline_dir,) = (finished / "fashion-mnist").glob("random_init-*")
    record = RunDir(baseline_dir).read_result()
    assert record["status"] == "finished" and record["method"] == "random_init" and record["epochs"] == 0
    assert record["pretrain_seconds"] == 0.0 and record["samples_per_second"] is None
    assert 0 <= record["linear_top1"] <= 100 and 0 <= record["knn_top1"] <= 100
    assert RunDir(baseline_dir).read_status()["status"] == "finished"
    assert RunConfig.read(baseline_dir) == random_init_config(_config(fashion_root))
    # Another method of the same seed finds the same baseline, already evaluated.
    _no_extraction(monkeypatch)
    assert evaluate_baseline(Run.of(finished, random_init_config(_config(fashion_root, "simclr"))), **QUIET) == record
    assert len(list((finished / "fashion-mnist").glob("random_init-*"))) == 1


def test_another_protocol_reuses_features_and_keeps_the_old_record(finished, fashion_root, monkeypatch, tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(finished, results)
    config = _config(fashion_root)
    run_dir = Run.of(results, config)
    old = run_dir.read_result()
    _no_extraction(monkeypatch)  # same images: the cached features serve the new protocol
    protocol = EvalProtocol(name="quick", train_samples=10_000, linear=LinearProbeConfig(epochs=3), knn=KnnConfig(k=5))
    new = evaluate_run(Run.of(results, config, protocol), **QUIET)
    assert new["eval_protocol"]["knn"]["k"] == 5 and new["eval_details"]["features_cached"]
    assert json.loads((run_dir.path / f"result-{old['eval_protocol_hash']}.json").read_text()) == old
    # Other images (a smaller train subset) do need new features.
    monkeypatch.undo()
    smaller = evaluate_run(Run.of(results, config, EvalProtocol(train_samples=100)), **QUIET)
    assert smaller["eval_details"]["train_samples"] == 100 and not smaller["eval_details"]["features_cached"]


def test_a_failed_run_gets_a_failed_record(fashion_root, tmp_path, monkeypatch):
    from ssl_bench.methods.vicreg import VICReg

    monkeypatch.setattr(VICReg, "loss", lambda self, z_a, z_b: ((z_a * float("nan")).sum(), {}))
    config = _config(fashion_root)
    Run.of(tmp_path, config).record_running(**QUIET)
    assert Run.of(tmp_path, config).read_result()["status"] == "running"
    assert pretrain(Run.of(tmp_path, config), progress=False, **QUIET).status == "failed"
    record = evaluate_run(Run.of(tmp_path, config), **QUIET)
    assert record == Run.of(tmp_path, config).read_result()
    assert record["status"] == "failed" and "non-finite loss at step 0" in record["error"]
    assert record["linear_top1"] is None and record["knn_top1"] is None


def test_a_crash_and_an_evaluation_error_are_recorded(fashion_root, tmp_path, monkeypatch):
    config = _config(fashion_root)
    record = Run.of(tmp_path, config).record_failure("RuntimeError: out of memory", **QUIET)
    assert Run.of(tmp_path, config).read_result() == record and record["status"] == "failed"

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(features_module, "extract_features", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        evaluate_baseline(Run.of(tmp_path, random_init_config(config)), **QUIET)
    (baseline_dir,) = (tmp_path / "fashion-mnist").glob("random_init-*")
    record = RunDir(baseline_dir).read_result()
    assert record["status"] == "failed" and "disk on fire" in record["error"]
    assert (baseline_dir / "error.log").is_file()


def test_running_mark_never_replaces_a_finished_record(finished, fashion_root):
    config = _config(fashion_root)
    before = Run.of(finished, config).read_result()
    Run.of(finished, config).record_running(**QUIET)
    assert Run.of(finished, config).read_result() == before


def test_a_collapsed_encoder_scores_no_better_than_chance_by_knn(tmp_path, fashion_root, monkeypatch):
    """Sanity check of the whole chain: a constant representation cannot beat chance."""

    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(x), 8)

    monkeypatch.setattr(lifecycle, "build_backbone", lambda name, zero_init_residual=None: (Constant(), 8))
    baseline = Run.of(tmp_path, random_init_config(_config(fashion_root)), EvalProtocol(linear=FAST_LINEAR))
    record = evaluate_baseline(baseline, **QUIET)
    assert record["knn_top1"] <= 15 and record["linear_top1"] <= 15


def test_scrambled_test_labels_change_no_choice(finished, fashion_root, tmp_path):
    """The test split is only ever scored: scrambling its labels leaves every chosen probe setting
    (and every validation score behind the choice) unchanged, through the whole evaluation."""
    import shutil

    config = _config(fashion_root)
    original = Run.of(finished, config)
    copy = tmp_path / "results"
    shutil.copytree(original.path.parent.parent, copy)
    run_dir = Run.of(copy, config)
    cache = torch.load(run_dir.path / FEATURES, weights_only=True)
    labels = cache["splits"]["test"]["labels"]
    cache["splits"]["test"]["labels"] = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(9))]
    assert not torch.equal(cache["splits"]["test"]["labels"], labels)
    torch.save(cache, run_dir.path / FEATURES)
    (run_dir.path / "result.json").unlink()

    scrambled = evaluate_run(Run.of(copy, config), **QUIET)
    before = original.read_result()
    assert scrambled["eval_details"]["features_cached"]  # the same features, only the test labels differ
    for choice in ("linear_choice", "knn_choice"):
        for key in ("setting", "val_top1", "grid", "on_edge"):
            assert scrambled[choice][key] == before[choice][key], (choice, key)


@pytest.mark.parametrize("seed", [0, 1])
def test_probe_choices_depend_on_validation_not_test(seed):
    """The same at the function level, on overlapping clusters where the grid's points differ."""
    train, val = _clusters(400, seed=seed, spread=5.0), _clusters(200, seed=seed + 10, spread=5.0)
    test = _clusters(200, seed=seed + 20, spread=5.0)
    scrambled = SplitFeatures(test.features, test.labels[torch.randperm(len(test.labels))])
    config = LinearProbeConfig(epochs=5, lr_grid=(0.001, 0.1, 3.0), weight_decay_grid=(0.0, 0.1))
    for split in (test, scrambled):
        linear = select_linear_probe(train, val, split, config, num_classes=10, seed=0)
        knn = select_knn(train, val, split, KnnConfig(k_grid=(1, 20), temperature_grid=(0.05, 1.0)), num_classes=10)
        chosen = (linear.setting, linear.grid, linear.on_edge, knn.setting, knn.grid, knn.on_edge)
        if split is test:
            reference = chosen
            assert len({point["val_top1"] for point in linear.grid}) > 1  # the grid's points do differ
        assert chosen == reference
    # ... while the reported test numbers are the chosen settings' scores on whatever test labels are given.
    assert select_linear_probe(train, val, scrambled, config, num_classes=10, seed=0).test_top1 < 50


# --------------------------------------------------------------------------------------------
# The grids and their edges


def _scored_grid(axes: tuple[str, str], values: tuple[tuple, tuple], best: list[tuple]) -> list[dict]:
    """Every setting of two axes, scoring 90 at the ``best`` settings and 80 elsewhere."""
    return [
        {axes[0]: a, axes[1]: b, "val_top1": 90.0 if (a, b) in best else 80.0} for a in values[0] for b in values[1]
    ]


def test_open_edges_names_the_axes_whose_best_lies_at_an_open_end():
    axes, values = ("lr", "weight_decay"), ((0.1, 1.0, 10.0), (0.0, 1e-4, 1e-2))

    def edges(*best, natural=LINEAR_NATURAL_LOW):
        return open_edges(_scored_grid(axes, values, list(best)), axes, natural_low=natural)

    assert edges((1.0, 1e-4)) == []  # inside on both axes
    assert edges((10.0, 1e-4)) == ["lr"]  # the largest lr: the optimum may lie beyond it
    assert edges((0.1, 1e-2)) == ["lr", "weight_decay"]  # the smallest lr, the largest decay
    assert edges((1.0, 0.0)) == []  # weight decay 0 is a natural end ...
    assert edges((1.0, 0.0), natural={}) == ["weight_decay"]  # ... because it is declared one
    assert edges((10.0, 1e-4), (1.0, 1e-4)) == []  # an interior value ties the best: bracketed
    assert edges((10.0, 1e-4), (10.0, 1e-2)) == ["lr"]  # every best at the edge of lr
    # k = 1 (the nearest neighbour alone) is a natural end; so is the largest k where every train
    # feature votes. At k = 1 every temperature scores the same: no temperature is on an edge.
    knn_axes, knn_values = ("k", "temperature"), ((1, 10, 100), (0.01, 0.1, 1.0))
    at_k1 = _scored_grid(knn_axes, knn_values, [(1, t) for t in knn_values[1]])
    assert open_edges(at_k1, knn_axes, natural_low=KNN_NATURAL_LOW) == []
    at_k100 = _scored_grid(knn_axes, knn_values, [(100, 0.1)])
    assert open_edges(at_k100, knn_axes, natural_low=KNN_NATURAL_LOW) == ["k"]
    assert open_edges(at_k100, knn_axes, natural_low=KNN_NATURAL_LOW, natural_high={"k": 100}) == []
    # An axis of a single value is not swept: it has no edge to be on.
    assert open_edges([{"k": 5, "temperature": 0.1, "val_top1": 50.0}], knn_axes) == []


def test_the_default_grids_reach_past_the_ends_the_demo_chose():
    """With k 10-200 and T 0.04-0.2 the demo's kNN chose k 10 (and mostly T 0.04) nearly every time;
    with lr up to 1 and weight decay up to 1e-3 its baseline chose weight decay 1e-3 every time.
    The default grids go beyond those ends, and select_knn flags a choice at the grid's end."""
    knn, linear = KnnConfig(), LinearProbeConfig()
    assert min(knn.k_grid) < 10 and min(knn.temperature_grid) < 0.04 and max(knn.temperature_grid) > 0.2
    assert max(linear.lr_grid) > 1.0 and max(linear.weight_decay_grid) > 1e-3
    assert protocol_for("fashion-mnist").knn == knn and protocol_for("fashion-mnist").linear == linear
    # Well-separated clusters: every setting scores 100%, the first of them (k 1, the smallest T)
    # is chosen, and interior settings tie it: nothing is on an edge.
    train, val = _clusters(1000, seed=0, spread=0.5), _clusters(200, seed=1, spread=0.5)
    chosen = select_knn(train, val, val, knn, num_classes=10)
    assert chosen.val_top1 == 100.0 and chosen.setting["temperature"] == min(knn.temperature_grid)
    assert chosen.on_edge == []
    # Overlapping clusters, where more neighbours help: a grid that stops at k 3 chooses its edge.
    train, val = _clusters(1000, seed=0, spread=4.0), _clusters(500, seed=1, spread=4.0)
    wider = select_knn(train, val, val, KnnConfig(k_grid=(1, 3, 10, 50), temperature_grid=(0.1,)), num_classes=10)
    assert wider.setting["k"] == 10 and wider.on_edge == []
    narrow = select_knn(train, val, val, KnnConfig(k_grid=(1, 3), temperature_grid=(0.1,)), num_classes=10)
    assert narrow.setting["k"] == 3 and narrow.on_edge == ["k"]


def test_small_temperatures_keep_the_votes_finite_and_ordered():
    # Unshifted, exp(similarity / T) overflows float64 below T = 0.0014 and every vote of a query
    # ties at inf. Shifted by each query's highest similarity, the largest weight is 1 at any T.
    bank = SplitFeatures(torch.ones(200, 4), torch.arange(200) % 2)
    for temperature in (min(KnnConfig().temperature_grid), 1e-5):
        scores = knn_scores(bank, torch.ones(3, 4), KnnConfig(k=200, temperature=temperature), num_classes=2)
        assert torch.isfinite(scores).all() and scores.tolist() == [[100.0, 100.0]] * 3
    # Neighbours 0.001 apart in cosine similarity: at T 0.0002 the nearest (class 0) outvotes
    # nine slightly farther ones of class 1 (exp(-0.001 / 0.0002) = 0.0067 each); at T 0.01 the
    # nine win. Unshifted, T 0.0002 gives inf against inf and no order at all.
    angles = torch.tensor([0.0] + [math.acos(1 - 0.001)] * 9)
    train = SplitFeatures(torch.stack([angles.cos(), angles.sin()], dim=1), torch.tensor([0] + [1] * 9))
    query = torch.tensor([[1.0, 0.0]])
    sharp = knn_scores(train, query, KnnConfig(k=10, temperature=0.0002), num_classes=2)
    assert torch.isfinite(sharp).all() and sharp.argmax(dim=1).item() == 0
    assert knn_scores(train, query, KnnConfig(k=10, temperature=0.01), num_classes=2).argmax(dim=1).item() == 1
    with pytest.raises(ValueError, match="positive"):
        KnnConfig(temperature_grid=(0.0, 0.1))


def test_a_crash_in_run_entry_is_recorded_once_with_its_context(fashion_root, tmp_path, monkeypatch):
    """run_entry records a crash; an evaluation error keeps the record the evaluation wrote."""
    from ssl_bench.run.lifecycle import run_entry

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(features_module, "extract_features", broken)
    baseline = random_init_config(_config(fashion_root))
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_entry(Run.of(tmp_path, baseline), **QUIET)
    record = Run.of(tmp_path, baseline).read_result()
    assert record["status"] == "failed" and record["error"] == "evaluation failed: RuntimeError: disk on fire"
    assert "disk on fire" in (Run.of(tmp_path, baseline).path / "error.log").read_text()
