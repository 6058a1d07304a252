"""The online probe's final accuracy: the protocol of solo-learn's published CIFAR numbers.

solo-learn trains a linear classifier on the detached backbone output alongside pre-training and
reports its top-1 on the held-out split at the end (``solo/methods/base.py``: the classifier of
``BaseMethod``, scored in ``validation_step`` with the backbone in eval mode). A run whose recipe
sets ``online_probe = "solo_learn"`` trains that classifier as solo-learn does; the
``bn_linear_sgd`` probe is another (ssl_bench.train.monitor). Either is checkpointed with the run
(the monitor's state); here the final probe, in eval mode, scores the cached validation and test
features (backbone in eval mode, no augmentation). Nothing is chosen: both numbers are reported,
the test one as the protocol's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.eval.probes import SplitFeatures
from ssl_bench.train.monitor import OnlineProbe


@dataclass(frozen=True)
class OnlineProbeResult:
    val_top1: float
    test_top1: float

    def to_dict(self) -> dict[str, Any]:
        return {"val_top1": self.val_top1, "test_top1": self.test_top1}


def online_probe_from_state(monitor_state: dict[str, Any] | None) -> OnlineProbe | None:
    """The probe saved in a checkpoint's ``monitor`` entry; None when the run had none.

    Which probe it is shows in its weights: the ``bn_linear_sgd`` probe's BatchNorm keeps running
    statistics, solo-learn's classifier is the linear layer alone."""
    if not monitor_state or monitor_state.get("probe") is None:
        return None
    weights = monitor_state["probe"]
    num_classes, feature_dim = weights["linear.weight"].shape
    probe = OnlineProbe(feature_dim, num_classes, standardise="norm.running_mean" in weights)
    probe.load_state_dict(weights)
    return probe


@torch.no_grad()
def _top1(probe: OnlineProbe, split: SplitFeatures, device: torch.device, batch_size: int = 4096) -> float:
    correct = 0
    for start in range(0, len(split.labels), batch_size):
        features = split.features[start : start + batch_size].to(device)
        labels = split.labels[start : start + batch_size].to(device)
        correct += int((probe(features).argmax(dim=1) == labels).sum())
    return 100.0 * correct / len(split.labels)


def score_online_probe(
    probe: OnlineProbe, val: SplitFeatures, test: SplitFeatures, device: torch.device
) -> OnlineProbeResult:
    """Top-1 (%) of the final online probe on the validation and test features (eval mode)."""
    probe = probe.to(device).eval()
    return OnlineProbeResult(val_top1=_top1(probe, val, device), test_top1=_top1(probe, test, device))
