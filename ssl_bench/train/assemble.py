"""A run's parts, built from its resolved configuration: the method, the optimiser, the views.

Pre-training (``ssl_bench.train.trainer``), evaluation and ``ssl-bench run --dry-run``
(``ssl_bench.run.describe``) all build through these functions, so what a dry run shows is what a
run computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssl_bench.config import SOLO_LEARN_PROBE, RunConfig
from ssl_bench.data.augment import LocalCropAugmentation, ViewPairAugmentation, local_crops_of, view_pair
from ssl_bench.data.datasets import dataset_info
from ssl_bench.method import Method, get_method
from ssl_bench.models.backbones import build_backbone
from ssl_bench.train.monitor import new_probe
from ssl_bench.train.optim import build_optimizer, parameter_groups


def build_method(config: RunConfig) -> Method:
    """Backbone, heads and loss of the run, on the current default device; with solo-learn's
    online probe (``config.online_probe``), its classifier as ``method.online_probe``."""
    method_cls = get_method(config.method)
    backbone, feature_dim = build_backbone(config.backbone, config.zero_init_residual)
    method = method_cls(
        backbone,
        feature_dim,
        config.projector,
        config.predictor,
        loss_params=config.loss,
        method_params=config.method_params,
        projector_options=config.projector_options,
        predictor_options=config.predictor_options,
        loss_scale=config.loss_scale,
    )
    if config.online_probe == SOLO_LEARN_PROBE:
        # Part of the method, as solo-learn's BaseMethod owns its classifier: checkpointed with it
        # and, under DDP, its gradients averaged over ranks with the method's.
        num_classes = dataset_info(config.dataset).num_classes
        method.online_probe = new_probe(feature_dim, num_classes, config.seed, standardise=False)
    return method


def build_run_optimizer(config: RunConfig, method: Method) -> torch.optim.Optimizer:
    """The optimiser over the method's trainable parameters, each group holding its peak lr.

    Every lr follows the global batch (``config.batch_size``) by ``config.lr_scaling``: base_lr x
    batch / 256 under the linear rule (and the online classifier's, when the method has one,
    probe_base_lr x batch / 256).
    """
    # Only trainable parameters: a momentum target (requires_grad False) is not optimised.
    groups = parameter_groups(
        method,
        lr=config.lr,
        weight_decay=config.weight_decay,
        bias_norm_lr=config.bias_norm_lr,
        constant_lr_params=method.constant_lr_parameters(),
        probe_params=() if method.online_probe is None else method.online_probe.parameters(),
        probe_lr=config.probe_lr,
    )
    return build_optimizer(config.optimizer, groups, lars_variant=config.lars_variant, lars_eta=config.lars_eta)


def build_augmentation(config: RunConfig, mean: Sequence[float], std: Sequence[float]) -> ViewPairAugmentation:
    """The two views exactly as the configuration resolves them (no implicit small-image rule)."""
    return ViewPairAugmentation(view_pair(config), config.image_size, mean, std, small_images=False)


def build_local_crops(config: RunConfig, mean: Sequence[float], std: Sequence[float]) -> LocalCropAugmentation | None:
    """Multi-crop's small views as the configuration resolves them; None for a two-view run."""
    crops = local_crops_of(config.local_crops)
    return None if crops is None else LocalCropAugmentation(crops, mean, std)
