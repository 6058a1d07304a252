"""Evaluating the embedding (projector output) beside the representation: `--set eval_features=...`."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.config import RunConfig
from ssl_bench.errors import UsageError
from ssl_bench.eval.features import features_path
from ssl_bench.recipes import resolve_config
from ssl_bench.run.lifecycle import pretrained_backbone, run_entry
from ssl_bench.run.record import Run

TINY = ["projector=32,16", "batch_size=32", "num_workers=0", "device=cpu", "train_subset=256"]
QUIET = {"log": lambda _: None, "progress": False}


def _config(data_root, *extra: str) -> RunConfig:
    return resolve_config("simclr", "fashion-mnist", {"epochs": 1, "data_root": str(data_root)}, [*TINY, *extra])


@pytest.fixture(scope="module")
def both(fashion_root, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    config = _config(fashion_root, "eval_features=representation,embedding")
    run_entry(Run.of(results, config), **QUIET)
    return config, results


def test_the_record_holds_both_features_scored_by_the_same_protocol(both):
    config, results = both
    run_dir = Run.of(results, config)
    record = run_dir.read_result()
    assert record["status"] == "finished"
    features = record["features"]
    assert set(features) == {"representation", "embedding"}
    rep, emb = features["representation"], features["embedding"]
    # The top-level numbers are the representation's.
    assert (rep["linear_top1"], rep["knn_top1"], rep["knn_top1_fixed"]) == (
        record["linear_top1"],
        record["knn_top1"],
        record["knn_top1_fixed"],
    )
    assert rep["feature_dim"] == record["eval_details"]["feature_dim"] and emb["feature_dim"] == 16
    for scores in (rep, emb):
        assert 0 <= scores["linear_top1"] <= 100 and 0 <= scores["knn_top1"] <= 100
        assert 0 < scores["offdiag_corr"] < 1
        assert scores["linear_choice"]["setting"].keys() == {"lr", "weight_decay"}
    # Different features, so (almost surely) different probe grids' validation scores.
    assert rep["linear_choice"]["grid"] != emb["linear_choice"]["grid"]
    assert features_path(run_dir, "embedding").is_file() and features_path(run_dir).is_file()


def test_the_embedding_features_are_the_projector_outputs_of_the_checkpoint(both):
    config, results = both
    run_dir = Run.of(results, config)
    cached = torch.load(features_path(run_dir, "embedding"), weights_only=True)
    assert cached["key"]["feature"] == "embedding"
    test = cached["splits"]["test"]["features"]
    assert test.shape[1] == 16
    encoder = pretrained_backbone(config, run_dir, "embedding").eval()
    representation = pretrained_backbone(config, run_dir).eval()
    x = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(encoder(x), encoder[1](representation(x)))


def test_the_default_leaves_the_config_and_its_identity_as_before(fashion_root):
    default = _config(fashion_root)
    explicit = _config(fashion_root, "eval_features=representation")
    both = _config(fashion_root, "eval_features=representation,embedding")
    assert "eval_features" not in default.to_dict()
    assert explicit.identity_hash() == default.identity_hash()
    assert both.identity_hash() != default.identity_hash()
    assert both.to_dict()["eval_features"] == ["representation", "embedding"]
    assert RunConfig.from_dict(both.to_dict()) == both and RunConfig.from_dict(default.to_dict()) == default


@pytest.mark.parametrize(
    "value, message",
    [
        ("embedding", "must start with 'representation'"),
        ("representation,representation", "name each feature once"),
        ("representation,logits", "unknown eval_features entry 'logits'"),
    ],
)
def test_bad_eval_features_are_usage_errors(fashion_root, value, message):
    with pytest.raises(UsageError, match=message):
        _config(fashion_root, f"eval_features={value}")


def test_the_table_gives_the_embedding_its_own_row(both, tmp_path):
    import pandas as pd

    from ssl_bench.report.output import build_table

    config, results = both
    output = build_table([results], tmp_path)
    table = pd.read_csv(tmp_path / "table.csv")
    simclr = table[table["method"] == "simclr"].set_index("note")
    record = Run.of(results, config).read_result()
    assert set(simclr.index) == {"evaluated=representation", "evaluated=embedding"}
    for feature in ("representation", "embedding"):
        assert simclr.loc[f"evaluated={feature}", "linear_top1_mean"] == pytest.approx(
            record["features"][feature]["linear_top1"], abs=1e-4
        )
    assert "evaluated=embedding" in output.markdown
