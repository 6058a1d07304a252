"""Monitoring during pre-training: RankMe, embedding std, the online probe, checkpointed state."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_bench.preemption import TrainingStopped
from ssl_bench.recipes import resolve_config
from ssl_bench.run.record import Run
from ssl_bench.store.rundir import RunDir
from ssl_bench.train.monitor import (
    MonitorConfig,
    TrainingMonitor,
    embedding_std,
    mean_abs_offdiag_correlation,
    rankme,
)
from ssl_bench.train.trainer import Trainer, pretrain

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# The diagnostics on matrices whose answer is known


def _with_singular_values(values: list[float], rows: int = 64, cols: int = 32, seed: int = 0) -> torch.Tensor:
    """U diag(values) V^T with random orthonormal U (rows x k) and V (cols x k)."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(values), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, len(values), generator=generator, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("rank", [1, 2, 7, 32])
def test_rankme_of_equal_singular_values_is_the_rank(rank):
    assert rankme(_with_singular_values([3.0] * rank)) == pytest.approx(rank, rel=1e-4)


def test_rankme_follows_the_entropy_formula():
    # Singular values 3 and 1: p = (0.75, 0.25), entropy = -(0.75 ln 0.75 + 0.25 ln 0.25).
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert rankme(_with_singular_values([3.0, 1.0])) == pytest.approx(expected, rel=1e-4)
    assert rankme(torch.zeros(8, 4)) == 0.0


def test_offdiag_correlation_of_correlated_independent_and_constant_columns():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4000, 1, generator=g)
    # Every column an affine copy of one (signs differ): |corr| = 1 off the diagonal.
    assert mean_abs_offdiag_correlation(torch.cat([base, -2 * base + 1, 3 * base], dim=1)) == pytest.approx(1.0)
    # Independent columns: the estimate's noise floor, E|r| = sqrt(2 / (pi N)) for N rows.
    n = 512
    independent = mean_abs_offdiag_correlation(torch.randn(n, 64, generator=g))
    assert independent == pytest.approx(math.sqrt(2 / (math.pi * n)), rel=0.1)
    # Hand-computed: columns x, y with corr(x, y) = -1/2 (x = [1, 0, -1], y = [0, 1, -1] centred).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    assert mean_abs_offdiag_correlation(x) == pytest.approx(0.5)
    # A constant (dead) column is left out rather than counted as 0 or NaN.
    with_dead = torch.cat([x, torch.full((3, 1), 7.0)], dim=1)
    assert mean_abs_offdiag_correlation(with_dead) == pytest.approx(0.5)
    assert mean_abs_offdiag_correlation(torch.cat([x[:, :1], torch.zeros(3, 2)], dim=1)) is None


def test_embedding_std_separates_spread_from_collapsed():
    d = 64
    spread = torch.randn(4096, d, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    collapsed = torch.ones(4096, d) * 5 + 1e-4 * spread  # a constant vector, barely perturbed
    assert embedding_std(collapsed) < 1e-3


def test_monitor_tells_a_collapsed_encoder_from_a_healthy_one():
    generator = torch.Generator().manual_seed(1)
    healthy, collapsed = TrainingMonitor(32, 4, CPU, seed=0), TrainingMonitor(32, 4, CPU, seed=0)
    constant = torch.randn(1, 32, generator=generator)
    for _ in range(4):
        h = torch.randn(128, 32, generator=generator)
        healthy.observe(h, h @ torch.randn(32, 16, generator=generator), torch.randint(0, 4, (128,)))
        collapsed.observe(constant.expand(128, 32), torch.zeros(128, 16) + 1.0, torch.randint(0, 4, (128,)))
    good, bad = healthy.end_epoch(), collapsed.end_epoch()
    assert good["rankme_representation"] > 20 and good["rankme_embedding"] > 10
    assert bad["rankme_representation"] == pytest.approx(1.0, abs=1e-3)
    assert bad["rankme_embedding"] == pytest.approx(1.0, abs=1e-3)
    assert good["embedding_std"] > 0.1 and bad["embedding_std"] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------------------------
# The online probe


def _separable_batch(generator: torch.Generator, n: int = 64, dim: int = 16, classes: int = 4):
    labels = torch.randint(0, classes, (n,), generator=generator)
    centres = torch.eye(dim)[:classes] * 6
    return centres[labels] + torch.randn(n, dim, generator=generator), labels


def test_online_probe_learns_and_ignores_unlabelled_samples():
    generator = torch.Generator().manual_seed(0)
    monitor = TrainingMonitor(16, 4, CPU, seed=0)
    accuracies = []
    for _ in range(3):
        for _ in range(10):
            features, labels = _separable_batch(generator)
            labels[::2] = -1  # unlabelled (STL-10's unlabeled split): no loss, not counted
            monitor.observe(features.requires_grad_(), None, labels)
        assert monitor.tallies()["labelled"] == 10 * 32
        accuracies.append(monitor.end_epoch()["online_probe_top1"])
    assert accuracies[-1] > 95 and accuracies[-1] >= accuracies[0]


def _reference_probe_step(probe, optimizer, features, labels, tallies):
    """The probe step written the plain way: index the labelled rows, read each tally back."""
    mask = labels >= 0
    if int(mask.sum()) < 2:
        return
    features, labels = features[mask], labels[mask]
    probe.train()
    logits = probe(features)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    tallies["correct"] += int((logits.detach().argmax(dim=1) == labels).sum())
    tallies["labelled"] += len(labels)
    tallies["loss_sum"] += float(loss.detach())
    tallies["loss_batches"] += 1


def _run_against_reference(all_labelled: bool, batches):
    monitor = TrainingMonitor(16, 4, CPU, seed=0, all_labelled=all_labelled)
    reference = TrainingMonitor(16, 4, CPU, seed=0)
    tallies = {"correct": 0, "labelled": 0, "loss_sum": 0.0, "loss_batches": 0}
    for features, labels in batches:
        monitor.observe(features, None, labels)
        _reference_probe_step(reference.probe, reference.optimizer, features, labels, tallies)
    return monitor, reference, tallies


def test_probe_without_mask_is_bit_identical_to_the_plain_step():
    generator = torch.Generator().manual_seed(0)
    monitor, reference, tallies = _run_against_reference(True, [_separable_batch(generator) for _ in range(8)])
    assert monitor.tallies() == tallies  # float64 on the device: the same sum as Python floats
    for (name, got), want in zip(monitor.probe.state_dict().items(), reference.probe.state_dict().values()):
        assert torch.equal(got, want), name
    values = monitor.end_epoch()
    assert values["online_probe_top1"] == 100.0 * tallies["correct"] / tallies["labelled"]
    assert values["online_probe_loss"] == tallies["loss_sum"] / tallies["loss_batches"]


def test_masked_probe_matches_the_plain_step_on_the_labelled_rows():
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(8):
        features, labels = _separable_batch(generator)
        labels[torch.rand(len(labels), generator=generator) < 0.6] = -1
        batches.append((features, labels))
    monitor, reference, tallies = _run_against_reference(False, batches)
    got = monitor.tallies()
    assert got["labelled"] == tallies["labelled"] and got["loss_batches"] == tallies["loss_batches"] == 8
    assert abs(got["correct"] - tallies["correct"]) <= 1  # a near-tie could flip under rounding
    assert got["loss_sum"] == pytest.approx(tallies["loss_sum"], rel=1e-5)
    # Weights and the running statistics the final probe is scored with (eval mode) agree.
    for (name, value), want in zip(monitor.probe.state_dict().items(), reference.probe.state_dict().values()):
        assert torch.allclose(value.double(), want.double(), rtol=1e-4, atol=1e-5), name


def test_masked_probe_leaves_everything_alone_below_two_labelled_rows():
    generator = torch.Generator().manual_seed(2)
    monitor = TrainingMonitor(16, 4, CPU, seed=0, config=MonitorConfig(probe_weight_decay=1e-3))

    def snapshot():
        return copy.deepcopy((monitor.probe.state_dict(), monitor.optimizer.state_dict(), monitor.tallies()))

    def assert_same(a, b):
        (probe_a, optim_a, tallies_a), (probe_b, optim_b, tallies_b) = a, b
        assert tallies_a == tallies_b
        assert all(torch.equal(probe_a[k], probe_b[k]) for k in probe_a)
        buffers_a = [s.get("momentum_buffer") for s in optim_a["state"].values()]
        buffers_b = [s.get("momentum_buffer") for s in optim_b["state"].values()]
        # A first batch that is skipped may leave a zero momentum buffer, which acts as none.
        assert all((x is None or not x.any()) if y is None else torch.equal(x, y) for x, y in zip(buffers_a, buffers_b))

    def few_labelled(labelled: int):
        features, labels = _separable_batch(generator, n=8)
        labels[labelled:] = -1
        return features, labels

    for labelled in (0, 1):  # before any step: the momentum buffers do not exist yet
        before = snapshot()
        features, labels = few_labelled(labelled)
        monitor.observe(features, None, labels)
        assert_same(snapshot(), before)
    features, labels = _separable_batch(generator)
    monitor.observe(features, None, labels)  # a real step: buffers and tallies move
    after_step = snapshot()
    assert after_step[2]["loss_batches"] == 1
    for labelled in (0, 1):
        features, labels = few_labelled(labelled)
        monitor.observe(features, None, labels)
        assert_same(snapshot(), after_step)


def test_probe_steps_read_nothing_back(monkeypatch):
    """No per-step host read-back: the tallies stay on the device until the epoch ends."""
    generator = torch.Generator().manual_seed(3)
    batches = [_separable_batch(generator) for _ in range(3)]
    batches[1][1][::2] = -1
    batches[2][1][1:] = -1  # one labelled row: skipped without looking
    monitors = [TrainingMonitor(16, 4, CPU, seed=0, all_labelled=True), TrainingMonitor(16, 4, CPU, seed=0)]

    def refuse(*args, **kwargs):
        raise AssertionError("read a tensor back to the host during a step")

    with monkeypatch.context() as patched:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
            patched.setattr(torch.Tensor, name, refuse)
        monitors[0].observe(batches[0][0], batches[0][0], batches[0][1])
        for features, labels in batches:
            monitors[1].observe(features, features, labels)
    assert monitors[0].tallies()["loss_batches"] == 1 and monitors[1].tallies()["loss_batches"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probe_steps_do_not_synchronise_cuda():
    cuda = torch.device("cuda")
    generator = torch.Generator().manual_seed(4)
    for all_labelled in (True, False):
        monitor = TrainingMonitor(16, 4, cuda, seed=0, all_labelled=all_labelled)
        batches = [tuple(t.to(cuda) for t in _separable_batch(generator)) for _ in range(3)]
        if not all_labelled:
            batches[1][1][::2] = -1
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for features, labels in batches:
                monitor.observe(features, features, labels)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert monitor.end_epoch()["online_probe_top1"] is not None


def test_online_probe_without_labels_reports_none():
    monitor = TrainingMonitor(16, 4, CPU, seed=0)
    monitor.observe(torch.randn(8, 16), torch.randn(8, 4), torch.full((8,), -1))
    values = monitor.end_epoch()
    assert values["online_probe_top1"] is None and values["online_probe_loss"] is None
    assert values["rankme_representation"] is not None


def test_monitor_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TrainingMonitor(16, 4, CPU, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_diagnostics_use_the_last_rows_only():
    monitor = TrainingMonitor(4, 2, CPU, seed=0, config=MonitorConfig(diagnostic_rows=8))
    monitor.observe(torch.randn(6, 4), None, None)
    for _ in range(3):
        monitor.observe(torch.ones(4, 4), None, None)  # the last 12 rows are one constant row
    assert sum(len(r) for r in monitor.representations) <= 8 + 4
    assert monitor.end_epoch()["rankme_representation"] == pytest.approx(1.0, abs=1e-3)


def test_monitor_state_round_trip_continues_identically():
    generator = torch.Generator().manual_seed(0)
    batches = [_separable_batch(generator) for _ in range(6)]
    straight = TrainingMonitor(16, 4, CPU, seed=0)
    first = TrainingMonitor(16, 4, CPU, seed=0)
    for features, labels in batches[:3]:
        straight.observe(features, features, labels)
        first.observe(features, features, labels)
    resumed = TrainingMonitor(16, 4, CPU, seed=99)  # other init: the state must overwrite it
    resumed.load_state_dict(first.state_dict())
    for features, labels in batches[3:]:
        straight.observe(features, features, labels)
        resumed.observe(features, features, labels)
    assert straight.end_epoch() == resumed.end_epoch()


# --------------------------------------------------------------------------------------------
# Wired into the trainer

# 256 of the 600 generated images in batches of 32: 8 steps per epoch.
TINY = ["projector=32,32", "batch_size=32", "num_workers=0", "device=cpu", "train_subset=256"]


def _config(data_root: Path, epochs: int = 1, method: str = "vicreg"):
    return resolve_config(method, "fashion-mnist", {"epochs": epochs, "data_root": str(data_root)}, TINY)


MONITOR_KEYS = (
    "online_probe_top1",
    "online_probe_loss",
    "embedding_std",
    "rankme_representation",
    "rankme_embedding",
    "offdiag_corr_representation",
    "offdiag_corr_embedding",
)


class _Collapsed(nn.Module):
    """A deliberately collapsed encoder: the same learnable vector for every image."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vector.expand(len(x), -1) + 0 * x.mean()


def test_metrics_show_a_collapsed_run(fashion_root, tmp_path, monkeypatch):
    import ssl_bench.train.assemble

    # No projector, so that the embedding is the representation: a projector's BatchNorm would
    # blow a constant input's rounding noise up to full-rank embeddings (then only the
    # representation's RankMe shows the collapse).
    config = resolve_config(
        "vicreg", "fashion-mnist", {"epochs": 1, "data_root": str(fashion_root)}, TINY + ["projector="]
    )
    healthy = pretrain(Run.of(tmp_path / "healthy", config), progress=False, log=lambda _: None)
    monkeypatch.setattr(
        ssl_bench.train.assemble, "build_backbone", lambda name, zero_init_residual=None: (_Collapsed(), 16)
    )
    collapsed = pretrain(Run.of(tmp_path / "collapsed", config), progress=False, log=lambda _: None)
    (good,), (bad,) = RunDir(healthy.run_dir).read_metrics(), RunDir(collapsed.run_dir).read_metrics()
    assert all(key in good for key in MONITOR_KEYS)
    assert good["online_probe_top1"] is not None and 0 <= good["online_probe_top1"] <= 100
    assert good["rankme_representation"] > 5 and bad["rankme_representation"] < 1.01
    assert good["embedding_std"] > 0.02 and bad["embedding_std"] < 1e-4
    assert bad["rankme_embedding"] < 1.01


def test_a_resumed_run_keeps_the_monitor(fashion_root, tmp_path):
    config = _config(fashion_root, epochs=2)
    straight = pretrain(Run.of(tmp_path / "straight", config), progress=False, log=lambda _: None)
    expected = RunDir(straight.run_dir).read_metrics()

    results = tmp_path / "stopped"
    run_dir = Run.of(results, config)
    steps = iter(range(100))
    trainer = Trainer(config, run_dir, progress=False, log=lambda _: None, should_stop=lambda: next(steps) == 11)
    with pytest.raises(TrainingStopped):
        trainer.fit()  # stops mid-epoch 2, after a checkpoint holding the probe's half-epoch
    assert trainer.monitor.all_labelled  # Fashion-MNIST: the probe runs without a mask
    assert trainer.run_dir.load_checkpoint()["monitor"]["tallies"]["labelled"] > 0
    resumed = Trainer(config, run_dir, progress=False, log=lambda _: None)
    assert resumed.restore() == 11
    resumed.fit()
    assert len(resumed.metrics) == len(expected) == 2
    for got, want in zip(resumed.metrics, expected):
        for key in MONITOR_KEYS:
            assert got[key] == want[key], key
