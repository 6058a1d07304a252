"""`ssl-bench table`: aggregation over seeds, failed/unfinished runs, corrupt run dirs, published
numbers, the three table files, byte-identical regeneration and the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ssl_bench.launch.cli import main
from ssl_bench.report import table as table_module
from ssl_bench.report.output import build_table, print_table
from ssl_bench.report.runs import NOT_EVALUATED, collect_runs
from ssl_bench.report.table import load_published, summarize

DATASET, BACKBONE, EPOCHS = "cifar10", "resnet18_cifar", 1000


def write_run(
    root: Path,
    method: str,
    seed: int,
    *,
    status: str = "finished",
    result: dict[str, Any] | None = None,
    epochs: int = EPOCHS,
    metrics: list[dict[str, Any]] | None = None,
    base_lr: float = 0.3,
    **status_details: Any,
) -> Path:
    """A run directory as the harness and the evaluation write it."""
    identity = f"{method[:3]}{epochs}{seed}{base_lr}"
    run_dir = root / DATASET / f"{method}-{BACKBONE}-e{epochs}-s{seed}-{identity}"
    run_dir.mkdir(parents=True)
    config = {
        "method": method,
        "dataset": DATASET,
        "backbone": BACKBONE,
        "epochs": epochs,
        "seed": seed,
        "batch_size": 256,
        "base_lr": base_lr,
        "loss": {},
        # solo-learn's classifier, as the CIFAR recipes train it: its published numbers are that probe's.
        "online_probe": "solo_learn",
        "probe_base_lr": 0.1,
        "device": "cpu",
        "identity_hash": identity,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "status.json").write_text(json.dumps({"status": status, "updated": 1.0, **status_details}))
    if metrics is None:
        metrics = [
            {
                "epoch": e,
                "loss": 5.0 - e - seed / 10,
                "lr": 0.1,
                "samples_per_second": 1000.0,
                "online_probe_top1": 10.0 * e + seed,
                "rankme_embedding": 3.0 + e,
            }
            for e in (1, 2, 3)
        ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    if result is not None:
        (run_dir / "result.json").write_text(
            json.dumps(
                {
                    "status": "finished",
                    "method": method,
                    "dataset": DATASET,
                    "backbone": BACKBONE,
                    "epochs": epochs,
                    "seed": seed,
                    "identity_hash": config["identity_hash"],
                    "eval_seconds": 5.0,
                    **result,
                }
            )
        )
    return run_dir


def evaluated(
    linear: float, knn: float, seconds: float, speed: float, online: float | None = None
) -> dict[str, float | None]:
    return {
        "linear_top1": linear,
        "knn_top1": knn,
        "online_top1": online,
        "pretrain_seconds": seconds,
        "samples_per_second": speed,
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return make_results(tmp_path / "runs")


def make_results(root: Path) -> Path:
    """Three methods x seeds, a failed and a running run, a baseline, a corrupt and a half-written dir."""
    for seed, (linear, knn, seconds, speed) in enumerate(
        [(90.0, 85.0, 100.0, 1000.0), (91.0, 86.0, 110.0, 1100.0), (92.5, 87.0, 120.0, 1200.0)]
    ):
        # The online probe's test top-1 (solo-learn's CIFAR protocol): 1 point under the linear probe.
        write_run(root, "simclr", seed, result=evaluated(linear, knn, seconds, speed, online=linear - 1))
    for seed, (linear, knn) in enumerate([(92.0, 88.0), (93.0, 90.0)]):
        write_run(root, "vicreg", seed, result=evaluated(linear, knn, 200.0, 500.0))
    failed = write_run(root, "vicreg", 2, status="failed", error="non-finite loss at step 40: loss=nan", failed_step=40)
    (failed / "error.log").write_text("Traceback ...\n")
    write_run(root, "barlow_twins", 0, status="running", step=30)
    write_run(root, "random_init", 0, epochs=0, metrics=[], result=evaluated(30.0, 25.0, 0.0, float("nan")))
    corrupt = write_run(root, "tico", 0)
    (corrupt / "status.json").write_text('{"status": "runn')  # half-written by a non-atomic writer
    only_config = write_run(root, "byol", 0)
    for name in ("status.json", "metrics.jsonl"):
        (only_config / name).unlink()
    return root


def ours(table: pd.DataFrame, method: str, status: str = "finished") -> pd.Series:
    rows = table[(table["method"] == method) & (table["source"] == "ours") & (table["status"] == status)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_mean_std_and_n_over_seeds(results):
    runs, _, _ = collect_runs([results])
    table = summarize(runs, load_published())
    simclr = ours(table, "simclr")
    assert simclr["n"] == 3 and simclr["seeds"] == "0,1,2"
    assert simclr["linear_top1_mean"] == pytest.approx((90.0 + 91.0 + 92.5) / 3)
    # sample std (ddof 1): deviations -7/6, -1/6, 4/3 -> sum of squares 19/6 -> / 2 -> sqrt
    assert simclr["linear_top1_std"] == pytest.approx((19 / 12) ** 0.5)
    assert simclr["knn_top1_mean"] == pytest.approx(86.0) and simclr["knn_top1_std"] == pytest.approx(1.0)
    assert simclr["pretrain_seconds"] == pytest.approx(110.0)
    assert simclr["samples_per_second"] == pytest.approx(1100.0)
    vicreg = ours(table, "vicreg")
    assert vicreg["n"] == 2  # the failed seed is not averaged in
    assert vicreg["linear_top1_mean"] == pytest.approx(92.5)
    assert vicreg["knn_top1_std"] == pytest.approx(2**0.5)
    baseline = ours(table, "random_init")
    assert baseline["n"] == 1 and baseline["linear_top1_mean"] == 30.0 and pd.isna(baseline["linear_top1_std"])


def test_failed_and_unfinished_runs_are_shown_not_averaged(results):
    runs, _, _ = collect_runs([results])
    table = summarize(runs, load_published())
    failed = ours(table, "vicreg", "failed")
    assert failed["seeds"] == "2" and pd.isna(failed["n"]) and pd.isna(failed["linear_top1_mean"])
    assert "at step 40: non-finite loss at step 40: loss=nan" in failed["note"]
    assert f"log: {DATASET}/vicreg-{BACKBONE}-e{EPOCHS}-s2-vic{EPOCHS}20.3/error.log" in failed["note"]
    running = ours(table, "barlow_twins", "running")
    assert running["note"] == "epoch 3/1000 done" and pd.isna(running["linear_top1_mean"])


def test_corrupt_and_half_written_run_dirs_are_named_and_skipped(results):
    runs, _, warnings = collect_runs([results])
    assert set(runs["method"]) == {"simclr", "vicreg", "barlow_twins", "random_init"}
    assert len(warnings) == 2
    assert any(f"tico-{BACKBONE}" in w and "status.json" in w for w in warnings)
    assert any(f"byol-{BACKBONE}" in w and "half-written" in w for w in warnings)


def test_records_of_the_wrong_types_are_named_and_skipped(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "simclr", 0, result=evaluated(90.0, 85.0, 100.0, 1000.0))
    wrong = write_run(root, "vicreg", 0, result={**evaluated(90.0, 85.0, 100.0, 1000.0), "status": 5, "method": None})
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "method": 7}))
    odd_number = write_run(root, "byol", 0, result={**evaluated(90.0, 85.0, 100.0, 1000.0), "linear_top1": "90"})
    runs, _, warnings = collect_runs([root])
    assert list(runs["method"]) == ["simclr"]
    assert len(warnings) == 2
    assert any(wrong.name in w and "result.json: its status is not str: 5" in w for w in warnings), warnings
    assert any(odd_number.name in w and "its linear_top1 is not int or float: '90'" in w for w in warnings), warnings


def test_a_group_of_mixed_code_is_named_in_a_warning_the_csv_and_the_tables(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "simclr", seed, result={**evaluated(90.0, 85.0, 100.0, 1000.0), "code_hash": "aaaa"})
    write_run(root, "vicreg", 0, result={**evaluated(90.0, 85.0, 100.0, 1000.0), "code_hash": "aaaa"})
    write_run(root, "vicreg", 1, result={**evaluated(91.0, 85.0, 100.0, 1000.0), "code_hash": "bbbb"})
    output = build_table([root], tmp_path / "out")
    assert output.warnings == [
        f"{DATASET}, {BACKBONE}, {EPOCHS} epochs: mixed code: the rows of this group come from 2 code versions "
        "(aaaa: simclr, vicreg; bbbb: vicreg)"
    ]
    csv = pd.read_csv(tmp_path / "out" / "table.csv").set_index("method")
    assert csv.loc["simclr", "code"] == "aaaa" and csv.loc["vicreg", "code"] == "aaaa+bbbb"
    assert "**Warning, mixed code:" in (tmp_path / "out" / "table.md").read_text()
    assert "Warning, mixed code:" in (tmp_path / "out" / "table.tex").read_text()
    assert "Warning, mixed code:" in (tmp_path / "out" / "report.html").read_text()
    # One code throughout: no warning, no line.
    (other,) = [p for p in (root / DATASET).iterdir() if "vicreg" in p.name and "-s1-" in p.name]
    (other / "result.json").unlink()  # not evaluated: listed, not compared
    assert build_table([root], tmp_path / "one").warnings == []


def test_random_init_is_a_row_of_every_group_of_its_dataset_and_backbone(results):
    write_run(results, "simclr", 0, epochs=100, result=evaluated(80.0, 75.0, 10.0, 1000.0))
    runs, _, _ = collect_runs([results])
    table = summarize(runs, load_published())
    baseline = table[table["method"] == "random_init"]
    assert sorted(baseline["epochs"]) == [100, EPOCHS]
    assert (baseline["note"] == "no pre-training (baseline)").all()
    first_of_each_group = table.groupby("epochs").head(1)
    assert (first_of_each_group["method"] == "random_init").all()


def test_published_numbers_only_for_matching_settings(results):
    # lightly's published kNN is at k = 200, T = 0.1: shown beside our value of that setting.
    write_run(results, "simclr", 0, epochs=800, result=evaluated(80.0, 75.0, 10.0, 1000.0) | {"knn_top1_fixed": 70.0})
    runs, _, _ = collect_runs([results])
    table = summarize(runs, load_published())
    published = table[table["source"] != "ours"]
    # CIFAR-10, ResNet-18 family, 1000 epochs: solo-learn's numbers, which are its online probe's,
    # in the online column beside ours (never in the offline linear column).
    at_1000 = published[published["epochs"] == EPOCHS]
    assert set(at_1000["source"]) == {"published: solo-learn"}
    simclr = at_1000[at_1000["method"] == "simclr"].iloc[0]
    assert simclr["online_top1_mean"] == "90.74" and pd.isna(simclr["linear_top1_mean"])
    assert pd.isna(simclr["knn_top1_mean"]) and "online linear probe" in simclr["note"]
    # 800 epochs: lightly's kNN numbers, in the kNN column.
    at_800 = published[published["epochs"] == 800]
    assert set(at_800["source"]) == {"published: lightly (batch 512)"}
    # lightly's kNN numbers are at k = 200, T = 0.1: the fixed-setting column.
    assert at_800.set_index("method").loc["simclr", "knn_fixed_top1_mean"] == "87.9"
    assert at_800["linear_top1_mean"].isna().all()
    # No ImageNet or CIFAR-100 number matches any of these runs.
    assert not published["linear_top1_mean"].isin(["73.2", "65.78"]).any()


def test_published_rows_need_the_same_backbone_family():
    published = pd.DataFrame(
        [
            {
                "source": "s",
                "dataset": "cifar10",
                "backbone": "resnet50",
                "epochs": 10,
                "protocol": "linear_aug",
                "method": "simclr",
                "top1": "1.0",
                "note": "",
            }
        ]
    )
    measured = {"linear_aug"}
    assert table_module.published_rows(published, "cifar10", "resnet18_cifar", 10, measured) == []
    assert len(table_module.published_rows(published, "cifar10", "resnet50_cifar", 10, measured)) == 1
    assert len(table_module.published_rows(published, "cifar10", "timm:resnet50", 10, measured)) == 1


def test_a_published_number_is_shown_only_beside_ours_of_its_protocol(results):
    """solo-learn's CIFAR numbers are online-probe numbers: runs without one get no solo-learn row."""
    published = load_published()
    runs, _, _ = collect_runs([results])
    without_online = runs.assign(online_top1=float("nan"))
    table = summarize(without_online, published)
    assert not (table["source"] == "published: solo-learn").any()
    # With an online value in the group, they are back, in that column only.
    table = summarize(runs, published)
    solo = table[table["source"] == "published: solo-learn"]
    expected = ((published["source"] == "solo-learn") & (published["dataset"] == "cifar10")).sum()
    assert (
        expected >= 7
        and len(solo) == expected
        and solo["online_top1_mean"].notna().all()
        and solo["linear_top1_mean"].isna().all()
    )
    # ... but only beside runs that trained solo-learn's classifier: another online probe is
    # another protocol, its values shown without solo-learn's beside them.
    other_probe = runs.assign(
        setting=runs["setting"].map(lambda s: json.dumps({**json.loads(s), "online_probe": "bn_linear_sgd"}))
    )
    table = summarize(other_probe, published)
    assert not (table["source"] == "published: solo-learn").any()
    ours_online = ours(summarize(runs, published), "simclr")["online_top1_mean"]
    assert ours(table, "simclr")["online_top1_mean"] == ours_online
    # A protocol no one knows is an error, not a silently empty column.
    odd = published.assign(protocol="offline")
    with pytest.raises(ValueError, match="unknown protocol"):
        table_module.published_rows(odd, "cifar10", "resnet18_cifar", 1000, {"linear"})


def test_runs_of_different_settings_are_not_averaged_together(results):
    write_run(results, "simclr", 0, base_lr=0.5, result=evaluated(50.0, 40.0, 10.0, 1000.0))
    runs, _, _ = collect_runs([results])
    table = summarize(runs, load_published())
    simclr = table[(table["method"] == "simclr") & (table["source"] == "ours")].set_index("note")
    assert simclr.loc["base_lr=0.3", "n"] == 3 and simclr.loc["base_lr=0.5", "n"] == 1
    assert simclr.loc["base_lr=0.5", "linear_top1_mean"] == 50.0


def test_writes_markdown_csv_latex_and_regenerates_them_byte_identically(results, tmp_path):
    first = build_table([results])
    assert [p.name for p in first.files] == ["table.md", "table.csv", "table.tex"]
    texts = {p.name: p.read_bytes() for p in first.files}
    assert texts["table.md"].decode() == first.markdown
    md = first.markdown
    assert "## cifar10, resnet18_cifar, 1000 epochs" in md
    cells = {
        tuple(cell.strip() for cell in line.split("|")[1:6]): [cell.strip() for cell in line.split("|")[6:-1]]
        for line in md.splitlines()
        if line.startswith("| ")
    }
    # mean ± std [95% interval]; vicreg (n=2) is best in both protocols, simclr not significantly
    # different from it in kNN only.
    # (These records carry no k=200 kNN value: that column stays empty.)
    # Only simclr has online values here, so it is the best of that column.
    assert cells["simclr", "ours", "finished", "3", "0,1,2"][:6] == [
        "91.17 ± 1.26 [88.04, 94.29]",
        "86.00* ± 1.00 [83.52, 88.48]",
        "–",
        "**90.17** ± 1.26 [87.04, 93.29]",
        "110.0",
        "1100",
    ]
    assert cells["vicreg", "ours", "finished", "2", "0,1"][:2] == [
        "**92.50** ± 0.71 [86.15, 98.85]",
        "**89.00** ± 1.41 [76.29, 101.71]",
    ]
    # The online column comes after the three always-shown ones.
    assert cells["simclr", "published: solo-learn", "", "", ""][:4] == ["–", "–", "–", "90.74"]
    assert cells["vicreg", "ours", "failed", "–", "2"][-1].startswith("at step 40: non-finite loss")
    assert cells["barlow_twins", "ours", "running", "–", "0"][-1] == "epoch 3/1000 done"
    assert str(tmp_path) not in md  # no absolute paths
    csv = pd.read_csv(first.files[1], dtype={"seeds": str})
    assert list(csv.columns) == table_module.CSV_COLUMNS
    simclr = ours(csv, "simclr")
    assert simclr["linear_top1_mean"] == pytest.approx(91.1667) and simclr["n"] == 3
    assert csv[csv["source"] == "published: solo-learn"]["online_top1_mean"].dtype == float
    tex = texts["table.tex"].decode()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"91.17 $\pm$ 1.26" in tex and r"barlow\_twins" in tex
    plots = {p.name: p.read_bytes() for p in first.plots}

    second = build_table([results])
    assert {p.name: p.read_bytes() for p in second.files} == texts
    assert {p.name: p.read_bytes() for p in second.plots} == plots


def test_the_same_table_from_another_working_directory(results, monkeypatch):
    first = build_table([results]).markdown
    monkeypatch.chdir(results.parent)
    assert build_table([Path("runs")]).markdown == first


def test_plots_are_written(results):
    output = build_table([results])
    names = sorted(p.name for p in output.plots)
    stem = f"{DATASET}_{BACKBONE}_e{EPOCHS}"
    assert names == sorted(
        f"{stem}_{suffix}.png" for suffix in ("loss", "online_probe_top1", "rankme_embedding", "accuracy_vs_time")
    )
    for path in output.plots:
        assert path.parent == results / "plots"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_output_dir_and_several_results_dirs(results, tmp_path):
    other = tmp_path / "more"
    write_run(other, "simclr", 7, result=evaluated(95.0, 90.0, 100.0, 1000.0))
    out = tmp_path / "out"
    output = build_table([results, other], out)
    assert all(p.parent == out for p in output.files)
    assert ours(pd.read_csv(out / "table.csv", dtype={"seeds": str}), "simclr")["seeds"] == "0,1,2,7"


def test_the_command_prints_the_table_warnings_and_paths(results, capsys, monkeypatch):
    monkeypatch.chdir(results.parent)
    assert main(["table"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith((results / "table.md").read_text())
    assert captured.out.endswith(
        "table: runs/table.md, runs/table.csv, runs/table.tex\nplots: runs/plots\nreport: runs/report.html\n"
    )
    assert captured.err.count("ssl-bench: warning: skipped runs/cifar10/") == 2


def test_no_runs_is_an_error_not_a_crash(tmp_path, capsys):
    assert print_table([tmp_path]) == 1
    assert "no run directories" in capsys.readouterr().err
    assert not (tmp_path / "table.md").exists()


def test_a_missing_results_dir_is_a_usage_error(tmp_path, capsys):
    assert main(["table", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_pre_trained_but_not_evaluated_and_interrupted_runs_are_listed(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "simclr", 0, result=evaluated(90.0, 85.0, 100.0, 1000.0))
    write_run(root, "simclr", 1, train_seconds=50.0)  # status finished, no result.json yet
    write_run(root, "simclr", 2, status="interrupted", step=12)
    (root / DATASET / f"simclr-{BACKBONE}-e{EPOCHS}-s2-sim{EPOCHS}20.3" / "simclr_0_log.err").write_text("")
    runs, _, warnings = collect_runs([root])
    table = summarize(runs, load_published())
    assert warnings == [] and ours(table, "simclr")["n"] == 1
    pending = ours(table, "simclr", NOT_EVALUATED)
    assert pending["seeds"] == "1" and pending["pretrain_seconds"] == 50.0
    interrupted = ours(table, "simclr", "interrupted")
    assert (
        interrupted["note"]
        == f"epoch 3/1000 done; log: {DATASET}/simclr-{BACKBONE}-e{EPOCHS}-s2-sim{EPOCHS}20.3/simclr_0_log.err"
    )


def test_published_csv_is_well_formed():
    published = load_published()
    assert list(published.columns) == ["source", "dataset", "backbone", "epochs", "protocol", "method", "top1", "note"]
    # The reference notes' "Published numbers", with solo-learn's and the official READMEs' numbers
    # for W-MSE, MoCo v2 and SwAV.
    assert len(published) == 44
    # Each row names the protocol its source measured with, and says it in words.
    assert set(published["protocol"]) == {"online", "linear_aug", "knn_fixed"}
    assert (published["note"] != "").all()
    solo_cifar = published[(published["source"] == "solo-learn") & published["dataset"].str.startswith("cifar")]
    assert (solo_cifar["protocol"] == "online").all()
    assert published["top1"].astype(float).between(0, 100).all()
    assert not published.duplicated(["source", "dataset", "backbone", "epochs", "protocol", "method"]).any()


def test_the_committed_demo_table_regenerates_byte_identically(tmp_path):
    """results/fashion-mnist-demo holds the records of a real run and the table made from them."""
    demo = Path(__file__).resolve().parents[1] / "results" / "fashion-mnist-demo"
    output = build_table([demo], tmp_path)
    assert output.files and not output.warnings
    for suffix in (".md", ".csv", ".tex"):
        assert (tmp_path / f"table{suffix}").read_bytes() == (demo / f"table{suffix}").read_bytes(), suffix


def make_ranked_results(root: Path) -> Path:
    """Three methods x seeds 0-2, a single-seed method, and a baseline above every method.

    linear: byol best, simclr not significantly different, vicreg clearly worse; kNN: simclr best,
    byol not significantly different, vicreg worse.
    """
    accuracies = {
        "byol": [(92.0, 85.0), (93.0, 86.0), (94.0, 87.0)],
        "simclr": [(91.0, 87.0), (93.5, 89.0), (93.0, 88.0)],
        "vicreg": [(80.0, 70.0), (81.0, 71.0), (82.5, 72.0)],
    }
    for method, per_seed in accuracies.items():
        for seed, (linear, knn) in enumerate(per_seed):
            write_run(root, method, seed, result=evaluated(linear, knn, 100.0, 1000.0))
    write_run(root, "barlow_twins", 0, result=evaluated(99.0, 50.0, 100.0, 1000.0))  # n=1: never best
    for seed, linear in enumerate([95.0, 95.5, 96.0]):  # a baseline above every method takes no part
        write_run(root, "random_init", seed, epochs=0, metrics=[], result=evaluated(linear, 30.0 + seed, 0.0, 1.0))
    return root


def test_intervals_best_and_ties_computed_by_hand(tmp_path):
    output = build_table([make_ranked_results(tmp_path / "runs")])
    # t_{0.975, 2} = 4.302653 (3 seeds); half-width of the interval = t * std / sqrt(3).
    t2 = 4.302653
    # Paired tests have 2 df; there P(|T| > |t|) = 1 - |t| / sqrt(2 + t^2).
    # linear, against byol (92, 93, 94; mean 93, std 1):
    #   simclr (91, 93.5, 93): d = -1, 0.5, -1, mean -0.5, s_d sqrt(0.75), t = -0.5 / (sqrt(0.75) / sqrt(3)) = -1
    #   vicreg (80, 81, 82.5): d = -12, -12, -11.5, mean -71/6, s_d sqrt(1/12), t = -71
    p_simclr_linear, p_vicreg_linear = (
        1 - 1 / 3**0.5,
        1 - 71 / (2 + 71**2) ** 0.5,
    )  # 0.4226 not significant, 0.0002 significant
    # kNN, against simclr (87, 89, 88; mean 88, std 1):
    #   byol (85, 86, 87): d = -2, -3, -1, mean -2, s_d 1, t = -2 sqrt(3)
    #   vicreg (70, 71, 72): d = -17, -18, -16, mean -17, s_d 1, t = -17 sqrt(3)
    p_byol_knn, p_vicreg_knn = (
        1 - 12**0.5 / 14**0.5,
        1 - 867**0.5 / 869**0.5,
    )  # 0.0742 not significant, 0.0012 significant
    assert p_simclr_linear > 0.05 and p_byol_knn > 0.05 and p_vicreg_linear < 0.05 and p_vicreg_knn < 0.05

    md = output.markdown
    assert (
        "two-sided paired Student t-test" in md
        and "alpha = 0.05" in md
        and "Not significant is not equal" in md
        and "tie" not in md.lower()
    )
    rows = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): [cell.strip() for cell in line.split("|")[3:-1]]
        for line in md.splitlines()
        if line.startswith("| ")
    }
    # status, n, seeds, linear, kNN, pre-train (s), samples/s, note
    assert rows["byol", "ours"][:5] == [
        "finished",
        "3",
        "0,1,2",
        "**93.00** ± 1.00 [90.52, 95.48]",
        "86.00* ± 1.00 [83.52, 88.48]",
    ]
    assert rows["simclr", "ours"][3:5] == ["92.50* ± 1.32 [89.21, 95.79]", "**88.00** ± 1.00 [85.52, 90.48]"]
    assert rows["vicreg", "ours"][3:5] == ["81.17 ± 1.26 [78.04, 84.29]", "71.00 ± 1.00 [68.52, 73.48]"]
    assert rows["barlow_twins", "ours"][3:5] == ["99.00", "50.00"]
    assert rows["barlow_twins", "ours"][-1] == "n=1, no interval; untested (n<2)"
    assert rows["random_init", "ours"][3:5] == ["95.50 ± 0.50 [94.26, 96.74]", "31.00 ± 1.00 [28.52, 33.48]"]
    assert rows["random_init", "ours"][-1] == "no pre-training (baseline)"
    # solo-learn's CIFAR-10 numbers are its online probe's; these runs have none: no such row.
    assert ("simclr", "published: solo-learn") not in rows
    assert all(cells[-1] == "" for key, cells in rows.items() if key[0] in ("byol", "simclr", "vicreg"))

    csv = pd.read_csv(output.files[1], dtype={"seeds": str}, keep_default_na=False, na_values=[""])
    csv = csv[csv["source"] == "ours"].set_index("method")
    expected = {
        # method: linear (mean, std, ci_low, ci_high, vs_best, p), kNN (same)
        "byol": (
            (93.0, 1.0, 93 - t2 / 3**0.5, 93 + t2 / 3**0.5, "best", None),
            (86.0, 1.0, 86 - t2 / 3**0.5, 86 + t2 / 3**0.5, "not significantly different", p_byol_knn),
        ),
        "simclr": (
            (
                92.5,
                1.75**0.5,
                92.5 - t2 * 1.75**0.5 / 3**0.5,
                92.5 + t2 * 1.75**0.5 / 3**0.5,
                "not significantly different",
                p_simclr_linear,
            ),
            (88.0, 1.0, 88 - t2 / 3**0.5, 88 + t2 / 3**0.5, "best", None),
        ),
        "vicreg": (
            # mean 243.5 / 3; deviations -7/6, -1/6, 4/3 -> std sqrt(19/12), std / sqrt(3) = sqrt(19/36)
            (
                243.5 / 3,
                (19 / 12) ** 0.5,
                243.5 / 3 - t2 * (19 / 36) ** 0.5,
                243.5 / 3 + t2 * (19 / 36) ** 0.5,
                "different",
                p_vicreg_linear,
            ),
            (71.0, 1.0, 71 - t2 / 3**0.5, 71 + t2 / 3**0.5, "different", p_vicreg_knn),
        ),
    }
    for method, protocols in expected.items():
        for protocol, (mean, std, low, high, vs_best, p_value) in zip(("linear", "knn"), protocols):
            row = csv.loc[method]
            got = [row[f"{protocol}_top1_{name}"] for name in ("mean", "std", "ci_low", "ci_high")]
            assert got == pytest.approx([mean, std, low, high], abs=1e-4), (method, protocol)
            assert row[f"{protocol}_vs_best"] == vs_best, (method, protocol)
            assert row[f"{protocol}_best"] == (vs_best == "best")
            assert row[f"{protocol}_not_different_from_best"] == (vs_best == "not significantly different")
            if p_value is None:
                assert pd.isna(row[f"{protocol}_p_vs_best"])
            else:
                assert row[f"{protocol}_p_vs_best"] == pytest.approx(p_value, rel=1e-4)
    assert csv.loc["simclr", "linear_top1_per_seed"] == "0:91;1:93.5;2:93"
    assert csv.loc["vicreg", "knn_top1_per_seed"] == "0:70;1:71;2:72"
    for method in ("barlow_twins", "random_init"):
        row = csv.loc[method]
        assert not row["linear_best"] and not row["linear_not_different_from_best"] and not row["knn_best"]
    assert csv.loc["barlow_twins", "linear_vs_best"] == "untested (n<2)"
    assert pd.isna(csv.loc["barlow_twins", "linear_top1_ci_low"]) and pd.isna(
        csv.loc["barlow_twins", "linear_top1_std"]
    )
    assert csv.loc["barlow_twins", "linear_top1_per_seed"] == "0:99"
    assert pd.isna(csv.loc["random_init", "linear_vs_best"])  # outside the ranking: empty
    assert csv.loc["random_init", "linear_top1_ci_high"] == pytest.approx(95.5 + t2 * 0.5 / 3**0.5, abs=1e-4)

    tex = output.files[2].read_text()
    assert r"\textbf{93.00} $\pm$ 1.00 [90.52, 95.48]" in tex and r"92.50$^{*}$ $\pm$ 1.32 [89.21, 95.79]" in tex
    assert r"untested (n\textless{}2)" in tex
    assert "paired Student t-test" in tex and "alpha = 0.05" in tex


def test_a_method_sharing_fewer_than_two_seeds_with_the_best_is_untested(tmp_path):
    root = tmp_path / "runs"
    for seed, linear in enumerate([90.0, 91.0, 92.0]):
        write_run(root, "simclr", seed, result=evaluated(linear, linear, 1.0, 1.0))
    for seed, linear in ((2, 80.0), (3, 81.0)):  # shares only seed 2 with simclr
        write_run(root, "byol", seed, result=evaluated(linear, linear, 1.0, 1.0))
    output = build_table([root])
    csv = pd.read_csv(output.files[1]).query("source == 'ours'").set_index("method")
    assert csv.loc["simclr", "linear_vs_best"] == "best"
    assert csv.loc["byol", "knn_vs_best"] == "untested (n<2)" and pd.isna(csv.loc["byol", "knn_p_vs_best"])
    row = next(line for line in output.markdown.splitlines() if line.startswith("| byol "))
    assert row.split("|")[6].strip() == "80.50 ± 0.71 [74.15, 86.85]" and "untested (n<2)" in row


def test_a_protocol_with_one_value_is_untested_in_that_protocol_only(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "simclr", seed, result=evaluated(90.0 + seed, 80.0 + seed, 1.0, 1.0))
        knn = {"knn_top1": 70.0} if seed == 0 else {}  # the second kNN evaluation is missing
        write_run(root, "byol", seed, result={"linear_top1": 85.0 + 2 * seed, **knn})
    output = build_table([root])
    csv = pd.read_csv(output.files[1]).query("source == 'ours'").set_index("method")
    # linear: d = 85 - 90, 87 - 91 = -5, -4; t = -4.5 / (sqrt(0.5) / sqrt(2)) = -9; 1 df: p = 1 - 2 atan(9) / pi
    assert csv.loc["byol", "linear_vs_best"] == "not significantly different"
    assert csv.loc["byol", "linear_p_vs_best"] == pytest.approx(0.0704466, rel=1e-5)
    assert csv.loc["byol", "knn_vs_best"] == "untested (n<2)"
    row = next(line for line in output.markdown.splitlines() if line.startswith("| byol "))
    assert row.split("|")[-2].strip() == "kNN untested (n<2)"


def test_probe_choices_on_their_grids_edge_are_noted(tmp_path):
    """The records' ``on_edge`` (ssl_bench.eval.probes.open_edges): the row's note cell says which
    probe chose at an open end of its grid, on which axes, in how many of its runs; records older
    than the field add nothing, so a table of them keeps its bytes."""
    root = tmp_path / "runs"

    def choice(on_edge: list[str] | None) -> dict[str, Any]:
        recorded = {"setting": {}, "val_top1": 80.0, "test_top1": 80.0, "grid": []}
        return recorded if on_edge is None else {**recorded, "on_edge": on_edge}

    edges = [(["lr"], ["temperature"]), ([], ["k", "temperature"]), ([], [])]
    for seed, (linear, knn) in enumerate(edges):
        choices = {"linear_choice": choice(linear), "knn_choice": choice(knn)}
        write_run(root, "simclr", seed, result={**evaluated(90.0, 80.0, 1.0, 1.0), **choices})
    for seed in range(2):
        choices = {"linear_choice": choice(None), "knn_choice": choice(None)}
        write_run(root, "vicreg", seed, result={**evaluated(90.0, 80.0, 1.0, 1.0), **choices})
    output = build_table([root])
    noted = "linear choice at grid edge (lr) in 1/3 runs; kNN choice at grid edge (k, temperature) in 2/3 runs"
    markdown = {line.split("|")[1].strip(): line for line in output.markdown.splitlines() if line.startswith("| ")}
    assert markdown["simclr"].split("|")[-2].strip() == noted
    assert markdown["vicreg"].split("|")[-2].strip() == ""
    assert noted in output.files[2].read_text() and output.report is not None and noted in output.report.read_text()
    # table.csv keeps its columns: its note is the row's own.
    csv = pd.read_csv(output.files[1], keep_default_na=False).query("source == 'ours'").set_index("method")
    assert csv.loc["simclr", "note"] == ""
