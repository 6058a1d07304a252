"""Every cited recipe row, resolved as a run resolves it, against the values typed in from its source.

Each expected value was read from the public file named beside it (repository and commit in
the block's heading) or from the paper section named. A row may differ from its source only
where its ``deviations`` table names the field with the reason; the test then checks that the
difference is real, so a stale deviation fails too.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from ssl_bench.recipes import load_recipe_table, resolve_config
from ssl_bench.run.describe import describe_run, flat_view


def linear(i: int, o: int, bias: bool) -> str:
    return f"Linear({i}, {o}, bias={bias})"


def bn(n: int, affine: bool = True) -> str:
    return f"BatchNorm1d({n}, affine={affine})"


RELU = "ReLU"


def view(crop=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur=0.0, solarize=0.0, flip=0.5, jitter_p=0.8, gray=0.2):
    """A view distribution as the sources state it (torchvision semantics)."""
    return {
        "crop_scale": list(crop),
        "flip_p": flip,
        "jitter": list(jitter),
        "jitter_p": jitter_p,
        "grayscale_p": gray,
        "blur_p": blur,
        "solarize_p": solarize,
    }


def views(a: dict, b: dict | None = None, where: str = "") -> dict[str, tuple[Any, str]]:
    b = a if b is None else b
    return {
        f"augmentation.view_{name}.{key}": (value, where)
        for name, config in (("a", a), ("b", b))
        for key, value in config.items()
    }


# ----------------------------------------------------------------------------------------------
# solo-learn, vturrisi/solo-learn at commit 9187ea39c2c3f43c455ab06664d2b019a9802954.
# Config paths relative to scripts/pretrain/cifar/.
# ----------------------------------------------------------------------------------------------

SOLO_COMMON = {
    "backbone.name": ("resnet18_cifar", "each yaml backbone.name resnet18; solo/methods/base.py:196-203 CIFAR stem"),
    "backbone.stem": ("conv 3x3 stride 1 padding 2, no max-pool", "solo/methods/base.py:196-203"),
    "backbone.zero_init_residual": (False, "solo/methods/base.py:277: no backbone kwargs in the yamls"),
    "data.mean": ([0.4914, 0.4822, 0.4465], "solo/data/pretrain_dataloader.py:207"),
    "data.std": ([0.2470, 0.2435, 0.2616], "solo/data/pretrain_dataloader.py:208"),
    "schedule.batch_size": (256, "each yaml optimizer.batch_size"),
    "schedule.epochs": (1000, "each yaml max_epochs"),
    "schedule.warmup_epochs": (10, "solo/methods/base.py:293"),
    "schedule.end_factor": (0.0, "solo/methods/base.py:291: min_lr 0.0"),
    "schedule.lr_scaling": ("base_lr x batch / 256", "solo/args/pretrain.py:151-157"),
    "schedule.form": (
        "per step: linear warmup from 3e-5 reaching the peak at step W - 1, then cosine",
        "solo/utils/lr_scheduler.py:127-149",
    ),
    "execution.precision": ("16-mixed", "each yaml precision"),
    "execution.sync_batchnorm": (True, "each yaml sync_batchnorm"),
    "augmentation.crop_ratio": ([3 / 4, 4 / 3], "torchvision RandomResizedCrop default ratio"),
    "augmentation.crop_interpolation": ("bicubic", "solo/data/pretrain_dataloader.py:221-225"),
    "augmentation.blur_sigma": ([0.1, 2.0], "solo/data/pretrain_dataloader.py:77-103"),
    "augmentation.solarize_threshold": (0.5, "pretrain_dataloader.py:106-119: ImageOps.solarize, threshold 128"),
}


def solo_lars(base_lr: float, weight_decay: float, yaml: str) -> dict[str, tuple[Any, str]]:
    return {
        "optimizer.name": ("lars", f"{yaml} optimizer.name"),
        "schedule.base_lr": (base_lr, f"{yaml} optimizer.lr"),
        "optimizer[all, adapted].lars": (
            "solo-learn, eta 0.02, clip_lr",
            f"{yaml} optimizer.kwargs; solo/utils/lars.py",
        ),
        "optimizer[all, adapted].weight_decay": (weight_decay, f"{yaml} optimizer.weight_decay"),
        "optimizer[all, adapted].momentum": (0.9, "solo/args/pretrain.py:164"),
        "optimizer[all, excluded].lars": ("none (plain momentum SGD)", "solo/utils/lars.py:140: exclude_bias_n_norm"),
        "optimizer[all, excluded].weight_decay": (0.0, "solo/utils/lars.py:140-150: 1-D params take the raw gradient"),
        "optimizer[all, excluded].peak_lr": (base_lr, f"{yaml} optimizer.lr"),
    }


def solo_probe(classifier_lr: float, yaml: str, optimizer: str = "lars") -> dict[str, tuple[Any, str]]:
    """solo-learn's online classifier: a group of the main optimiser (solo/methods/base.py)."""
    lr = (classifier_lr, f"{yaml} optimizer.classifier_lr x batch / 256 (solo/args/pretrain.py:153-157)")
    no_decay = (0.0, "solo/methods/base.py:322-330: the classifier's group has weight_decay 0")
    schedule = ("warmup + cosine", "solo/methods/base.py:362-382: one scheduler over every group")
    # base.py:210: nn.Linear(features_dim, num_classes) on ResNet-18's 512 features, CIFAR-10's 10 classes.
    weight, bias = (512 * 10, "solo/methods/base.py:210"), (10, "solo/methods/base.py:210")
    if optimizer == "sgd":
        group = "optimizer[online probe]"
        return {
            f"{group}.peak_lr": lr,
            f"{group}.weight_decay": no_decay,
            f"{group}.schedule": schedule,
            f"{group}.momentum": (0.9, "solo/args/pretrain.py:161-162"),
            f"{group}.parameters": (weight[0] + bias[0], "solo/methods/base.py:210"),
        }
    adapted, excluded = "optimizer[online probe, adapted]", "optimizer[online probe, excluded]"
    return {
        f"{adapted}.peak_lr": lr,
        f"{adapted}.weight_decay": no_decay,
        f"{adapted}.schedule": schedule,
        f"{adapted}.lars": ("solo-learn, eta 0.02, clip_lr", f"{yaml} optimizer.kwargs; solo/utils/lars.py:140-150"),
        f"{adapted}.parameters": weight,
        f"{excluded}.peak_lr": lr,
        f"{excluded}.lars": ("none (plain momentum SGD)", "solo/utils/lars.py:140: exclude_bias_n_norm"),
        f"{excluded}.parameters": bias,
    }


ASYM = "augmentations/asymmetric.yaml:3-45"

SOURCES: dict[tuple[str, str], dict[str, tuple[Any, str]]] = {
    ("cifar", "simclr"): {
        **SOLO_COMMON,
        **solo_lars(0.4, 1e-4, "simclr.yaml:29-37"),
        **solo_probe(0.1, "simclr.yaml:32"),
        "projector.layers": ([linear(512, 2048, True), RELU, linear(2048, 256, True)], "solo/methods/simclr.py:48-52"),
        "loss.params.temperature": (0.2, "simclr.yaml:21"),
        "loss.scale": (1.0, "solo/losses/simclr.py:58: mean over the 2N anchors"),
        **views(view(jitter=(0.8, 0.8, 0.8, 0.2), blur=0.5), where="augmentations/symmetric.yaml:3-22"),
    },
    ("cifar", "vicreg"): {
        **SOLO_COMMON,
        **solo_lars(0.3, 1e-4, "vicreg.yaml:59-67"),
        **solo_probe(0.1, "vicreg.yaml:62"),
        "projector.layers": (
            [
                linear(512, 2048, True),
                bn(2048),
                RELU,
                linear(2048, 2048, True),
                bn(2048),
                RELU,
                linear(2048, 2048, True),
            ],
            "solo/methods/vicreg.py:53-61",
        ),
        "loss.params.sim_coeff": (25.0, "vicreg.yaml:20"),
        # solo/losses/vicreg.py:52-56 sums the two views' variance terms: 25 on the sum.
        "loss.params.std_coeff": (25.0, "vicreg.yaml:21 (on the sum of both views, solo/losses/vicreg.py:52-56)"),
        "loss.params.cov_coeff": (1.0, "vicreg.yaml:22"),
        "loss.params.eps": (1e-4, "solo/losses/vicreg.py:52"),
        "loss.scale": (1.0, "solo/losses/vicreg.py:113"),
        **views(view(crop=(0.2, 1.0), solarize=0.1), where="vicreg.yaml:32-57"),
    },
    ("cifar", "barlow_twins"): {
        **SOLO_COMMON,
        **solo_lars(0.3, 1e-4, "barlow.yaml:29-37"),
        **solo_probe(0.1, "barlow.yaml:32"),
        "projector.layers": (
            [
                linear(512, 2048, True),
                bn(2048),
                RELU,
                linear(2048, 2048, True),
                bn(2048),
                RELU,
                linear(2048, 2048, True),
            ],
            "solo/methods/barlow_twins.py:51-59",
        ),
        "loss.params.lambd": (0.0051, "solo/methods/barlow_twins.py:77"),
        "loss.scale": (0.1, "barlow.yaml:21 scale_loss; solo/losses/barlow.py:59"),
        **views(view(), view(solarize=0.2), where=ASYM),
    },
    ("cifar", "byol"): {
        **SOLO_COMMON,
        **solo_lars(1.0, 1e-5, "byol.yaml:32-40"),
        **solo_probe(0.1, "byol.yaml:35"),
        "projector.layers": (
            [linear(512, 4096, True), bn(4096), RELU, linear(4096, 256, True)],
            "solo/methods/byol.py:50-55",
        ),
        "predictor.layers": (
            [linear(256, 4096, True), bn(4096), RELU, linear(4096, 256, True)],
            "solo/methods/byol.py:67-72",
        ),
        "loss.scale": (1.0, "solo/methods/byol.py:187-190: both directions summed"),
        "momentum_target.base": (0.99, "byol.yaml:23"),
        "momentum_target.final": (1.0, "byol.yaml:24"),
        "momentum_target.schedule": (
            "cosine over all steps, applied after every optimiser step",
            "solo/utils/momentum.py:43-87; solo/methods/base.py:814-837",
        ),
        **views(view(), view(solarize=0.2), where=ASYM),
    },
    ("cifar", "simsiam"): {
        **SOLO_COMMON,
        "optimizer.name": ("sgd", "simsiam.yaml:30"),
        "schedule.base_lr": (0.5, "simsiam.yaml:32"),
        "optimizer[all].weight_decay": (1e-5, "simsiam.yaml:34 (every parameter: exclude_bias_n_norm_wd False)"),
        "optimizer[all].momentum": (0.9, "solo/args/pretrain.py:161-162"),
        "optimizer[constant lr].peak_lr": (0.5, "solo/methods/simsiam.py:97 static_lr"),
        "optimizer[constant lr].schedule": ("constant", "solo/methods/base.py:389-401"),
        **solo_probe(0.1, "simsiam.yaml:33", optimizer="sgd"),
        "projector.layers": (
            [
                linear(512, 2048, False),
                bn(2048),
                RELU,
                linear(2048, 2048, False),
                bn(2048),
                RELU,
                linear(2048, 2048, False),
                bn(2048, affine=False),
            ],
            "solo/methods/simsiam.py:48-58 (the last bias is frozen ahead of BN(affine=False))",
        ),
        "predictor.layers": (
            [linear(2048, 512, False), bn(512), RELU, linear(512, 2048, True)],
            "solo/methods/simsiam.py:61-66",
        ),
        **views(view(jitter=(0.4, 0.4, 0.4, 0.1), blur=0.5), where="augmentations/symmetric_weak.yaml:3-22"),
    },
    ("cifar", "mocov3"): {
        **SOLO_COMMON,
        **solo_lars(0.3, 1e-6, "mocov3.yaml:33-41"),
        **solo_probe(0.3, "mocov3.yaml:36"),
        "projector.layers": (
            [linear(512, 4096, False), bn(4096), RELU, linear(4096, 256, False), bn(256, False)],
            "solo/methods/mocov3.py:50-73, 101-116",
        ),
        "predictor.layers": (
            [linear(256, 4096, False), bn(4096), RELU, linear(4096, 256, False)],
            "solo/methods/mocov3.py:101-116",
        ),
        "loss.params.temperature": (0.2, "mocov3.yaml:22"),
        "loss.scale": (1.0, "solo/losses/mocov3.py:53: 2 tau per direction, directions summed"),
        "momentum_target.base": (0.99, "mocov3.yaml:24"),
        "momentum_target.final": (1.0, "mocov3.yaml:25"),
        **views(view(), view(solarize=0.2), where=ASYM),
    },
    # No solo-learn TiCo: the optimiser of solo-learn's SimCLR row, TiCo's parts as lightly-ai/lightly
    # (commit e8d317fc) builds them.
    ("cifar", "tico"): {
        **SOLO_COMMON,
        **solo_lars(0.4, 1e-4, "simclr.yaml:29-37"),
        **solo_probe(0.1, "simclr.yaml:32"),
        "loss.params.beta": (0.9, "lightly/loss/tico_loss.py:46-51"),
        "loss.params.rho": (8.0, "lightly/loss/tico_loss.py:46-51; benchmarks/imagenet/resnet50/tico.py:33"),
        "momentum_target.base": (0.99, "benchmarks/imagenet/resnet50/tico.py:50-57"),
        "momentum_target.views": (
            "view b only (the online network sees view a)",
            "benchmarks/imagenet/resnet50/tico.py:60-68",
        ),
        "projector.layers": (
            [linear(512, 2048, False), bn(2048), RELU, linear(2048, 256, True)],
            "lightly/models/modules/heads.py:939-948",
        ),
    },
}

SOURCES[("cifar", "wmse")] = {
    **SOLO_COMMON,
    "schedule.form": (
        "per step: linear warmup from 0 reaching the peak at step W - 1, then cosine",
        "wmse.yaml:57-59 (warmup_start_lr 0); solo/utils/lr_scheduler.py:127-149",
    ),
    "optimizer.name": ("adam", "wmse.yaml:52; solo/methods/base.py:97-102: torch.optim.Adam"),
    "schedule.base_lr": (2e-3, "wmse.yaml:54"),
    "optimizer[all].peak_lr": (2e-3, "wmse.yaml:54 x batch / 256 (solo/args/pretrain.py:151-157)"),
    "optimizer[all].weight_decay": (1e-6, "wmse.yaml:56; every parameter (solo/methods/base.py:280-282, 341-343)"),
    "optimizer[all].momentum": (None, "Adam, no SGD momentum; solo/args/pretrain.py:159-174 sets no kwargs for it"),
    "optimizer[all].schedule": ("warmup + cosine", "wmse.yaml:57-58"),
    "optimizer[online probe].peak_lr": (3e-3, "wmse.yaml:55 classifier_lr x batch / 256"),
    "optimizer[online probe].weight_decay": (0.0, "solo/methods/base.py:322-330"),
    "optimizer[online probe].schedule": ("warmup + cosine", "solo/methods/base.py:362-382"),
    "optimizer[online probe].parameters": (512 * 10 + 10, "solo/methods/base.py:210"),
    "projector.layers": (
        [linear(512, 1024, True), bn(1024), RELU, linear(1024, 64, True)],
        "wmse.yaml:18-19; solo/methods/wmse.py:56-61",
    ),
    "loss.params.whitening_size": (128, "wmse.yaml:20"),
    "loss.params.w_iter": (1, "solo/methods/wmse.py:81-85: whitening_iters default 1"),
    "loss.params.eps": (0.0, "solo/methods/wmse.py:91: whitening_eps default 0.0"),
    "loss.params.detach_view_b": (True, "solo/losses/wmse.py:36-37 (simplified); solo/methods/wmse.py:150"),
    "loss.scale": (1.0, "solo/methods/wmse.py:152: the mean over iterations and pairs"),
    **views(view(crop=(0.2, 1.0), jitter=(0.8, 0.8, 0.8, 0.2)), where="wmse.yaml:27-50"),
}

SOURCES[("cifar", "mocov2")] = {
    **SOLO_COMMON,
    "optimizer.name": ("sgd", "mocov2plus.yaml:33"),
    "schedule.base_lr": (0.3, "mocov2plus.yaml:35"),
    "optimizer[all].peak_lr": (0.3, "mocov2plus.yaml:35 x batch / 256 (solo/args/pretrain.py:151-157)"),
    "optimizer[all].weight_decay": (1e-4, "mocov2plus.yaml:37; every parameter (solo/methods/base.py:280-282)"),
    "optimizer[all].momentum": (0.9, "solo/args/pretrain.py:161-162"),
    "optimizer[all].schedule": ("warmup + cosine", "mocov2plus.yaml:38-39"),
    **solo_probe(0.3, "mocov2plus.yaml:36", optimizer="sgd"),
    "projector.layers": (
        [linear(512, 2048, True), RELU, linear(2048, 256, True)],
        "mocov2plus.yaml:19-20; solo/methods/mocov2plus.py:53-57",
    ),
    "loss.params.temperature": (0.2, "mocov2plus.yaml:22"),
    "loss.params.queue_size": (32768, "mocov2plus.yaml:21"),
    "loss.params.symmetric": (True, "solo/methods/mocov2plus.py:186-190: both directions, one queue per view"),
    "loss.scale": (1.0, "solo/methods/mocov2plus.py:187-190: the mean of the two directions"),
    "momentum_target.base": (0.99, "mocov2plus.yaml:24"),
    "momentum_target.final": (0.999, "mocov2plus.yaml:25"),
    "momentum_target.schedule": (
        "cosine over all steps, applied after every optimiser step",
        "solo/utils/momentum.py:43-87; solo/methods/base.py:814-837",
    ),
    "momentum_target.views": ("both", "solo/methods/mocov2plus.py:179-182: queries and keys of both crops"),
    **views(view(jitter=(0.4, 0.4, 0.4, 0.1), blur=0.5), where="augmentations/symmetric_weak.yaml:3-22"),
}

# ----------------------------------------------------------------------------------------------
# ImageNet: each method's official code (commit in the comment) and paper.
# ----------------------------------------------------------------------------------------------

R50 = "conv 7x7 stride 2 padding 3, max-pool"


def official_lars(
    base_lr: float, weight_decay: float, where: str, group: str = "all", excluded_group: str | None = None
) -> dict[str, tuple[Any, str]]:
    excluded_group = excluded_group or group
    return {
        "optimizer.name": ("lars", where),
        "schedule.base_lr": (base_lr, where),
        f"optimizer[{group}, adapted].lars": ("official, eta 0.001", where),
        f"optimizer[{group}, adapted].weight_decay": (weight_decay, where),
        f"optimizer[{group}, adapted].momentum": (0.9, where),
        f"optimizer[{excluded_group}, excluded].lars": ("none (plain momentum SGD)", where),
        f"optimizer[{excluded_group}, excluded].weight_decay": (0.0, where),
    }


BYOL_VIEWS = (view(blur=1.0), view(blur=0.1, solarize=0.2))

SOURCES.update(
    {
        # The SimCLR v1 paper (arXiv:2002.05709): section 2.3's default setting, appendix A's
        # augmentations; google-research/simclr at 383d4143 (TF1, the SimCLRv2 code) for the rest.
        ("imagenet", "simclr"): {
            **official_lars(
                0.3,
                1e-6,
                "paper section 2.3; model_util.py:94-100, lars_optimizer.py:26-118 (eeta 0.001, BN and bias excluded)",
            ),
            "optimizer[all, adapted].weight_decay": (1e-4, "run.py:54-56; README.md:101-103 (SimCLRv2's)"),
            "optimizer[all, adapted].lars": (
                "official, eta 0.001, lr inside the momentum buffer",
                "lars_optimizer.py:111-118",
            ),
            "backbone.name": ("resnet50", "run.py:223-225 resnet_depth 50"),
            "backbone.zero_init_residual": (True, "resnet.py:480: init_zero=True on the last BN of each block"),
            "projector.layers": (
                [
                    linear(2048, 2048, False),
                    bn(2048),
                    RELU,
                    linear(2048, 2048, False),
                    bn(2048),
                    RELU,
                    linear(2048, 128, False),
                    "BatchNorm1d(128, scale only)",
                ],
                "run.py:202-208 (num_proj_layers 3); model_util.py:109-166",
            ),
            "loss.params.temperature": (0.1, "run.py:190-192; README.md:101-103"),
            "loss.scale": (2.0, "objective.py:86: loss_a + loss_b"),
            "schedule.batch_size": (4096, "paper section 2.3"),
            "schedule.epochs": (100, "paper section 2.3"),
            "schedule.warmup_epochs": (10, "paper section 2.3; run.py:50-52"),
            "schedule.lr_scaling": ("base_lr x batch / 256", "paper section 2.3: 4.8 = 0.3 x BatchSize / 256"),
            "schedule.end_factor": (0.0, "model_util.py:74-81"),
            "execution.precision": ("fp32", "run.py, model.py: no mixed-precision setting"),
            "augmentation.blur_kernel": (23, "data_util.py:413: kernel_size = height // 10 (radius 11)"),
            "augmentation.blur_sigma": ("[0.1, 2.0] once per batch and view", "data_util.py:397-444"),
            "augmentation.crop_interpolation": ("bicubic", "data_util.py:304-325"),
            "augmentation.crop_ratio": ([3 / 4, 4 / 3], "paper appendix A; data_util.py:321"),
            **views(view(jitter=(0.8, 0.8, 0.8, 0.2), blur=0.5), where="paper appendix A"),
            # Where the paper and the code at the cited commit (v2's defaults) differ.
            **{
                f"augmentation.view_{v}.crop_scale": (
                    "[0.08, 1.0] and min_object_covered 0.1, whole image after 100 failed draws",
                    "data_util.py:252-325",
                )
                for v in "ab"
            },
            **{
                f"augmentation.view_{v}.jitter": (
                    "additive brightness 0.8 (tf.image.random_brightness), TF contrast 0.8, saturation 0.8, hue 0.2",
                    "paper appendix A (colour distortion listing)",
                )
                for v in "ab"
            },
        },
        # facebookresearch/vicreg at 4e12602f.
        ("imagenet", "vicreg"): {
            **official_lars(0.2, 1e-6, "main_vicreg.py:52-55, 109-115, 245-299"),
            "backbone.name": ("resnet50", "main_vicreg.py:189-191"),
            "backbone.stem": (R50, "resnet.py:163, 179-188 (1-px pad layer + padding 2 = padding 3)"),
            "backbone.zero_init_residual": (True, "main_vicreg.py:190"),
            "projector.layers": (
                [
                    linear(2048, 8192, True),
                    bn(8192),
                    RELU,
                    linear(8192, 8192, True),
                    bn(8192),
                    RELU,
                    linear(8192, 8192, False),
                ],
                "main_vicreg.py:223-232",
            ),
            "loss.params.sim_coeff": (25.0, "main_vicreg.py:58-59"),
            "loss.params.std_coeff": (25.0, "main_vicreg.py:60-61"),
            "loss.params.cov_coeff": (1.0, "main_vicreg.py:62-63"),
            "loss.params.eps": (1e-4, "main_vicreg.py:211"),
            "loss.scale": (1.0, "main_vicreg.py:219"),
            "schedule.batch_size": (2048, "main_vicreg.py:50-51"),
            "schedule.epochs": (1000, "README.md:80"),
            "schedule.warmup_epochs": (10, "main_vicreg.py:170"),
            "schedule.end_factor": (0.001, "main_vicreg.py:178"),
            "execution.precision": ("fp16 torch.cuda.amp", "main_vicreg.py:128-142"),
            "execution.sync_batchnorm": (True, "main_vicreg.py:107-108"),
            "augmentation.crop_interpolation": ("bicubic", "augmentations.py:39-61"),
            **views(*BYOL_VIEWS, where="augmentations.py:39-84"),
        },
        # facebookresearch/barlowtwins at 8e8d284c.
        ("imagenet", "barlow_twins"): {
            **official_lars(
                0.2, 1e-6, "main.py:33-38, 99-101, 224-263", group="weights", excluded_group="biases and norms"
            ),
            "optimizer[biases and norms, excluded].peak_lr": (0.0048 * 2048 / 256, "main.py:35-36, 155-168"),
            "optimizer[biases and norms, excluded].weight_decay": (0.0, "main.py:99-101 weight_decay_filter"),
            "backbone.zero_init_residual": (True, "main.py:191"),
            "projector.layers": (
                [
                    linear(2048, 8192, False),
                    bn(8192),
                    RELU,
                    linear(8192, 8192, False),
                    bn(8192),
                    RELU,
                    linear(8192, 8192, False),
                ],
                "main.py:195-202",
            ),
            "loss.params.lambd": (0.0051, "main.py:39-40"),
            "loss.params.official_ddp_scale": (
                True,
                "main.py:212-216: c / batch_size summed by a non-autograd all_reduce; main.py:98: DDP averages",
            ),
            "loss.scale": (1.0, "main.py:212-220 (no --scale-loss since commit 046eec3c)"),
            "schedule.batch_size": (2048, "main.py:31-32"),
            "schedule.epochs": (1000, "main.py:29-30"),
            "schedule.end_factor": (0.001, "main.py:155-168"),
            "execution.precision": ("fp16 torch.cuda.amp", "main.py:122-134"),
            "augmentation.crop_interpolation": ("bicubic", "main.py:292-321"),
            **views(*BYOL_VIEWS, where="main.py:292-321"),
        },
        # google-deepmind/deepmind-research byol/ at f5de0ede, and the BYOL paper, section 3.3.
        ("imagenet", "byol"): {
            **official_lars(0.2, 1.5e-6, "configs/byol.py:21-22, 57-61; utils/optimizers.py"),
            "backbone.zero_init_residual": (False, "byol/README.md:101-111: the paper's results without it"),
            "projector.layers": (
                [linear(2048, 4096, True), bn(4096), RELU, linear(4096, 256, False)],
                "utils/networks.py:40-45",
            ),
            "predictor.layers": (
                [linear(256, 4096, True), bn(4096), RELU, linear(4096, 256, False)],
                "utils/networks.py:40-45",
            ),
            "momentum_target.base": (0.996, "configs/byol.py:23"),
            "momentum_target.init": (
                "the online network's initialisation from another seed",
                "byol_experiment.py:368-385",
            ),
            "schedule.batch_size": (4096, "main_loop.py:36-37"),
            "schedule.epochs": (1000, "main_loop.py:36"),
            "schedule.end_factor": (0.0, "utils/schedules.py:40-53"),
            "execution.precision": ("fp32", "byol/: no mixed-precision setting (byol_experiment.py, configs/byol.py)"),
            "augmentation.crop_interpolation": ("bicubic", "utils/dataset.py:184-233"),
            "augmentation.view_a.jitter": (
                "additive brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1",
                "utils/augmentations.py:30-42, 239-263",
            ),
            "augmentation.view_a.blur_p": (1.0, "utils/augmentations.py:43-49"),
            "augmentation.view_b.blur_p": (0.1, "utils/augmentations.py:63-64"),
            "augmentation.view_b.solarize_p": (0.2, "utils/augmentations.py:65"),
        },
        # facebookresearch/simsiam at a7bc1772.
        ("imagenet", "simsiam"): {
            "optimizer.name": ("sgd", "main_simsiam.py:199-201"),
            "schedule.base_lr": (0.05, "main_simsiam.py:56-57"),
            "optimizer[all].weight_decay": (1e-4, "main_simsiam.py:60-62"),
            "optimizer[constant lr].schedule": ("constant", "main_simsiam.py:363-364; README.md:32 --fix-pred-lr"),
            "backbone.zero_init_residual": (True, "simsiam/builder.py:24"),
            "projector.layers": (
                [
                    linear(2048, 2048, False),
                    bn(2048),
                    RELU,
                    linear(2048, 2048, False),
                    bn(2048),
                    RELU,
                    linear(2048, 2048, True),
                    bn(2048, False),
                ],
                "simsiam/builder.py:27-36",
            ),
            "predictor.layers": (
                [linear(2048, 512, False), bn(512), RELU, linear(512, 2048, True)],
                "simsiam/builder.py:39-42",
            ),
            "schedule.batch_size": (512, "main_simsiam.py:51-55"),
            "schedule.epochs": (100, "main_simsiam.py:47-48"),
            "schedule.warmup_epochs": (0, "main_simsiam.py:359-366"),
            "schedule.end_factor": (0.0, "main_simsiam.py:359-366"),
            "schedule.form": ("per epoch: cosine of epoch / epochs, no warmup", "main_simsiam.py:257, 359-366"),
            "execution.precision": ("fp32", "main_simsiam.py:294-302"),
            **views(view(crop=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), blur=0.5), where="main_simsiam.py:228-243"),
        },
        # facebookresearch/moco-v3 at c349e6e2: CONFIG.md's ResNet-50 100-epoch command.
        ("imagenet", "mocov3"): {
            **official_lars(0.6, 1e-6, "main_moco.py:65-71; moco/optimizer.py:10-43"),
            "backbone.zero_init_residual": (True, "main_moco.py:186"),
            "projector.layers": (
                [linear(2048, 4096, False), bn(4096), RELU, linear(4096, 256, False), bn(256, False)],
                "moco/builder.py:36-52, 99-106",
            ),
            "predictor.layers": (
                [linear(256, 4096, False), bn(4096), RELU, linear(4096, 256, False)],
                "moco/builder.py:108-109",
            ),
            "loss.params.temperature": (1.0, "main_moco.py:104-105"),
            "loss.scale": (1.0, "moco/builder.py:73, 96: 2T per direction, directions summed"),
            "momentum_target.base": (0.99, "main_moco.py:99-100"),
            "momentum_target.schedule": (
                "cosine over all steps, applied before every forward pass",
                "main_moco.py:344-345, 431-434; moco/builder.py:89-90",
            ),
            "schedule.batch_size": (4096, "main_moco.py:60-64"),
            "schedule.epochs": (100, "main_moco.py:56-57"),
            "schedule.warmup_epochs": (10, "main_moco.py:115-116"),
            "schedule.end_factor": (0.0, "main_moco.py:420-428"),
            "execution.precision": ("fp16 torch.cuda.amp", "main_moco.py:232, 352-363"),
            "augmentation.crop_interpolation": ("bilinear, antialiased", "main_moco.py:261-272: PIL bilinear resize"),
            **views(
                view(crop=(0.2, 1.0), blur=1.0),
                view(crop=(0.2, 1.0), blur=0.1, solarize=0.2),
                where="CONFIG.md:15 --crop-min=.2; main_moco.py:261-285",
            ),
        },
        # lightly-ai/lightly at e8d317fc, benchmarks/imagenet/resnet50/tico.py.
        ("imagenet", "tico"): {
            "optimizer.name": ("lars", "tico.py:92-118"),
            "schedule.base_lr": (0.2, "tico.py:92-118"),
            "optimizer[all, adapted].weight_decay": (1.5e-6, "tico.py:92-118"),
            "optimizer[all, adapted].lars": (
                "lightly: trust ratio eta ||p|| / (||g|| + wd ||p||)",
                "lightly/utils/lars.py:124-164",
            ),
            "optimizer[all, excluded].weight_decay": (0.0, "lightly/models/utils.py:1168-1209"),
            "schedule.warmup_epochs": (10, "tico.py:119-130"),
            "schedule.end_factor": (0.001, "lightly/utils/scheduler.py:174"),
            "backbone.zero_init_residual": (None, "tico.py:25: torchvision resnet50(), no zero_init_residual"),
            "projector.layers": (
                [linear(2048, 4096, False), bn(4096), RELU, linear(4096, 256, True)],
                "heads.py:939-948",
            ),
            "loss.params.beta": (0.9, "lightly/loss/tico_loss.py:46-51"),
            "loss.params.rho": (8.0, "tico.py:33: TiCoLoss(beta=0.9, rho=8.0)"),
            "loss.params.detach_batch_covariance": (
                True,
                "lightly/loss/tico_loss.py:124: B = torch.mm(z_a.T, z_a).detach() / N",
            ),
            "momentum_target.base": (0.99, "tico.py:50-57"),
            "momentum_target.schedule": (
                "cosine over max_steps - 1, applied before every forward pass",
                "tico.py:50-57; lightly/utils/scheduler.py:56-66",
            ),
            "execution.precision": ("16-mixed", "benchmarks/imagenet/resnet50/main.py:58"),
            "momentum_target.views": ("view b only (the online network sees view a)", "tico.py:60-68"),
            **views(*BYOL_VIEWS, where="lightly/transforms/byol_transform.py:38-53"),
        },
    }
)

# W-MSE: htdt/self-supervised at commit d9662c8d, the README's ImageNet-100 command for two views
# (README.md:72) and cfg.py's defaults. The paper has no ImageNet-1k or ResNet-50 setting.
SOURCES[("imagenet", "wmse")] = {
    "backbone.name": ("resnet18", "cfg.py:127-133: --arch default; README.md:72 leaves it"),
    "backbone.stem": (R50, "model.py:19-25: the torchvision stem kept for imagenet"),
    "backbone.zero_init_residual": (False, "model.py:21: torchvision resnet(pretrained=False)"),
    "data.mean": ([0.485, 0.456, 0.406], "datasets/imagenet.py:18-21"),
    "data.std": ([0.229, 0.224, 0.225], "datasets/imagenet.py:18-21"),
    "optimizer.name": ("adam", "train.py:39: torch.optim.Adam"),
    "schedule.lr": (2e-3, "README.md:72 --lr 2e-3, used as given (train.py:39)"),
    "optimizer[all].peak_lr": (2e-3, "train.py:39"),
    "optimizer[all].weight_decay": (1e-6, "cfg.py:66-68: adam_l2, on every parameter (train.py:39)"),
    "schedule.batch_size": (512, "cfg.py:111-113: --bs default"),
    "schedule.epochs": (240, "README.md:72"),
    "schedule.warmup_epochs": (2, "train.py:43-54: 500 steps, 2 epochs of ImageNet-100 at batch 512"),
    "schedule.end_factor": (0.04, "cfg.py:114-126, train.py:22-24: two MultiStepLR drops by 0.2"),
    "schedule.form": (
        "per step: linear warmup over 500 steps, then the peak with x0.2 at epochs 190 and 215",
        "train.py:14-24, 43-66; cfg.py:55-61, 114-126 (lr_step step, drop 50 25, drop_gamma 0.2)",
    ),
    "projector.widths": ([1024, 128], "cfg.py:76-81 (head_layers 2, head_size 1024); README.md:72 --emb 128"),
    "projector.options.hidden_norm": (True, "cfg.py:50-52; model.py:11-12"),
    "projector.options.hidden_bias": (True, "model.py:10: nn.Linear"),
    "projector.options.last_bias": (True, "model.py:15: nn.Linear"),
    "projector.options.last_bn": (False, "model.py:5-16"),
    "loss.params.whitening_size": (256, "README.md:72 --w_size 256"),
    "loss.params.w_iter": (1, "cfg.py:87-91"),
    "loss.params.eps": (0.0, "cfg.py:73-75: --w_eps"),
    "loss.scale": (1.0, "methods/w_mse.py:35: the mean over iterations and pairs"),
    "augmentation.crop_ratio": ([3 / 4, 4 / 3], "cfg.py:40-41"),
    "augmentation.crop_interpolation": ("bicubic", "datasets/transforms.py:12-17: interpolation=3"),
    "augmentation.blur_sigma": ([0.1, 2.0], "datasets/imagenet.py:9-16, 30: PIL GaussianBlur radius U(0.1, 2)"),
    "execution.precision": ("fp32", "train.py: no mixed precision"),
    **views(
        view(crop=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), blur=0.5),
        where="README.md:72 (--crop_s0 0.08 --cj0-3 0.8 0.8 0.8 0.2 --gs_p 0.2); cfg.py:32-42; datasets/imagenet.py:30",
    ),
}

# SwAV: solo-learn's swav.yaml (commit above) for CIFAR; facebookresearch/swav at 06b1b7c,
# scripts/swav_800ep_pretrain.sh and main_swav.py, for ImageNet.
SWAV_VIEW = view(crop=(0.14, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), blur=0.5)
SOURCES[("cifar", "swav")] = {
    **SOLO_COMMON,
    **solo_lars(0.6, 1e-6, "swav.yaml:33-41"),
    **solo_probe(0.1, "swav.yaml:36"),
    "projector.layers": (
        [linear(512, 2048, True), bn(2048), RELU, linear(2048, 128, True)],
        "swav.yaml:19, 21; solo/methods/swav.py:65-70",
    ),
    "loss.params.temperature": (0.1, "swav.yaml:25"),
    "loss.params.epsilon": (0.05, "solo/methods/swav.py:102: sk_epsilon default"),
    "loss.params.sinkhorn_iterations": (3, "solo/methods/swav.py:103: sk_iters default"),
    "loss.method_params.prototypes": (3000, "swav.yaml:22"),
    "loss.method_params.freeze_prototypes_epochs": (2, "swav.yaml:24; solo/methods/swav.py:239-242"),
    "loss.method_params.queue_size": (3840, "swav.yaml:20"),
    "loss.method_params.epoch_queue_starts": (50, "swav.yaml:23; solo/methods/swav.py:174-181"),
    "loss.scale": (1.0, "solo/losses/swav.py:47: the mean over (code, prediction) pairs"),
    "augmentation.local_crops": (None, "augmentations/symmetric.yaml:22: num_crops 2"),
    **views(view(jitter=(0.8, 0.8, 0.8, 0.2), blur=0.5), where="augmentations/symmetric.yaml:1-21"),
}
SOURCES[("imagenet", "swav")] = {
    **official_lars(
        0.3, 1e-6, "swav_800ep_pretrain.sh --base_lr 4.8 --wd 0.000001 at batch 4096; main_swav.py:170-177"
    ),
    "optimizer[all, excluded].lars": ("LARC, trust 0.001, clip False", "main_swav.py:177: every parameter"),
    "optimizer[all, excluded].weight_decay": (1e-6, "main_swav.py:170-175: SGD weight_decay on every parameter"),
    "backbone.name": ("resnet50", "swav_800ep_pretrain.sh --arch resnet50"),
    "backbone.stem": (R50, "src/resnet50.py"),
    "backbone.zero_init_residual": (False, "main_swav.py:145-149; src/resnet50.py:139"),
    "data.mean": ([0.485, 0.456, 0.406], "src/multicropdataset.py:33-34"),
    "data.std": ([0.228, 0.224, 0.225], "src/multicropdataset.py:33-34"),
    "schedule.batch_size": (4096, "swav_800ep_pretrain.sh --batch_size 64 on 64 GPUs"),
    "schedule.epochs": (800, "swav_800ep_pretrain.sh --epochs 800"),
    "schedule.warmup_epochs": (10, "swav_800ep_pretrain.sh --warmup_epochs 10"),
    "schedule.end_factor": (0.001, "swav_800ep_pretrain.sh --final_lr 0.0048 = 0.001 x --base_lr 4.8"),
    "schedule.form": (
        "per step: linear warmup from 0.3 to the peak, then cosine to final_lr",
        "main_swav.py:178-182 (--start_warmup 0.3)",
    ),
    "projector.layers": (
        [linear(2048, 2048, True), bn(2048), RELU, linear(2048, 128, True)],
        "src/resnet50.py:205-210; main_swav.py:107-108; --feat_dim 128",
    ),
    "loss.params.temperature": (0.1, "swav_800ep_pretrain.sh --temperature 0.1"),
    "loss.params.epsilon": (0.05, "swav_800ep_pretrain.sh --epsilon 0.05"),
    "loss.params.sinkhorn_iterations": (3, "swav_800ep_pretrain.sh --sinkhorn_iterations 3"),
    "loss.method_params.prototypes": (3000, "swav_800ep_pretrain.sh --nmb_prototypes 3000"),
    "loss.method_params.queue_size": (0, "swav_800ep_pretrain.sh --queue_length 0"),
    "loss.method_params.freeze_prototypes_epochs": (
        313 / 312,
        "swav_800ep_pretrain.sh --freeze_prototypes_niters 313; 312 steps an epoch at batch 4096",
    ),
    "loss.scale": (1.0, "main_swav.py:308-315: the mean over (code, prediction) pairs"),
    "execution.precision": ("fp16 (apex amp O1)", "swav_800ep_pretrain.sh --use_fp16 true; main_swav.py:185-187"),
    "augmentation.crop_ratio": ([3 / 4, 4 / 3], "src/multicropdataset.py:42-46: RandomResizedCrop's default ratio"),
    "augmentation.blur_sigma": ([0.1, 2.0], "src/multicropdataset.py:64-86: radius_min 0.1, radius_max 2"),
    **views(SWAV_VIEW, where="src/multicropdataset.py:37-52, 88-95; --min_scale_crops 0.14 --max_scale_crops 1."),
    "augmentation.local_crops.count": (6, "swav_800ep_pretrain.sh --nmb_crops 2 6"),
    "augmentation.local_crops.size": (96, "swav_800ep_pretrain.sh --size_crops 224 96"),
    **{
        f"augmentation.local_crops.{key}": (value, "src/multicropdataset.py:37-52; --min/max_scale_crops 0.05 0.14")
        for key, value in {**SWAV_VIEW, "crop_scale": [0.05, 0.14]}.items()
    },
}

# MoCo v2: facebookresearch/moco at commit 7397dfe1, the README's ImageNet command with the MoCo v2
# flags (README.md:44-51: --mlp --moco-t 0.2 --aug-plus --cos) and main_moco.py's defaults.
SOURCES[("imagenet", "mocov2")] = {
    "optimizer.name": ("sgd", "main_moco.py:291-296"),
    "schedule.base_lr": (0.03, "README.md:46; main_moco.py:78-86"),
    "optimizer[all].peak_lr": (0.03, "README.md:46-47: lr 0.03 at batch 256"),
    "optimizer[all].weight_decay": (1e-4, "main_moco.py:97-105; every parameter (main_moco.py:291-296)"),
    "optimizer[all].momentum": (0.9, "main_moco.py:94-96"),
    "backbone.name": ("resnet50", "README.md:45; main_moco.py:42-49"),
    "backbone.stem": (R50, "builder.py:31-32: torchvision's resnet50"),
    "backbone.zero_init_residual": (False, "builder.py:31-32: resnet50(num_classes=128), torchvision's default"),
    "data.mean": ([0.485, 0.456, 0.406], "main_moco.py:323-325"),
    "data.std": ([0.229, 0.224, 0.225], "main_moco.py:323-325"),
    "projector.layers": (
        [linear(2048, 2048, True), RELU, linear(2048, 128, True)],
        "builder.py:34-41 (--mlp); main_moco.py:153-155 --moco-dim 128",
    ),
    "loss.params.temperature": (0.2, "README.md:51 --moco-t 0.2"),
    "loss.params.queue_size": (65536, "main_moco.py:156-161 --moco-k"),
    "loss.scale": (1.0, "main_moco.py:289, 418: CrossEntropyLoss, the mean over the queries"),
    "momentum_target.base": (0.999, "main_moco.py:162-167 --moco-m"),
    "momentum_target.final": (0.999, "builder.py:55-63: the same m at every step"),
    "momentum_target.schedule": ("constant, applied before every forward pass", "builder.py:55-63, 142-143"),
    "momentum_target.init": ("a copy of the online backbone and projector", "builder.py:43-47"),
    "momentum_target.views": (
        "view b only (the online network sees view a)",
        "builder.py:137-152: queries from im_q, keys from im_k",
    ),
    "schedule.batch_size": (256, "README.md:47"),
    "schedule.epochs": (200, "main_moco.py:58-60"),
    "schedule.warmup_epochs": (0, "main_moco.py:488-497"),
    "schedule.end_factor": (0.0, "main_moco.py:488-497: lr x (1 + cos(pi epoch / epochs)) / 2"),
    "schedule.form": ("per epoch: cosine of epoch / epochs, no warmup", "main_moco.py:372, 488-497"),
    "execution.precision": ("fp32", "main_moco.py: no mixed precision"),
    "execution.sync_batchnorm": (
        "per-GPU BatchNorm, the key encoder's batch shuffled across GPUs",
        "main_moco.py:258-277 (DDP, no SyncBatchNorm); builder.py:81-126, 145-152",
    ),
    "augmentation.crop_ratio": ([3 / 4, 4 / 3], "main_moco.py:329: torchvision RandomResizedCrop default ratio"),
    "augmentation.crop_interpolation": ("bilinear, antialiased", "main_moco.py:329: PIL bilinear resize"),
    "augmentation.blur_sigma": ([0.1, 2.0], "main_moco.py:334; moco/loader.py:24-33"),
    **views(view(crop=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), blur=0.5), where="main_moco.py:326-338 (--aug-plus)"),
}

DATASET = {"cifar": "cifar10", "imagenet": "imagenet"}


def _resolved(table: str, method: str) -> tuple[dict[str, Any], dict[str, str]]:
    config = resolve_config(method, DATASET[table])
    return flat_view(describe_run(config)), config.deviations


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-15)
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        return all(_equal(a, e) for a, e in zip(actual, expected))
    return actual == expected


@pytest.mark.parametrize("table, method", sorted(SOURCES))
def test_row_equals_its_source(table: str, method: str) -> None:
    flat, deviations = _resolved(table, method)
    mismatches = []
    for key, (expected, where) in SOURCES[(table, method)].items():
        assert key in flat, f"{table}/{method}: no resolved field {key!r}"
        same = _equal(flat[key], expected)
        if key in deviations:
            assert not same, f"{table}/{method}: {key} is named a deviation but equals the source ({where})"
        elif not same:
            mismatches.append(f"{key}: resolved {flat[key]!r}, source {expected!r} ({where})")
    assert not mismatches, f"{table}/{method} differs from its source:\n" + "\n".join(mismatches)


@pytest.mark.parametrize("table, method", sorted(SOURCES))
def test_every_deviation_is_checked_against_the_source(table: str, method: str) -> None:
    _, deviations = _resolved(table, method)
    unchecked = sorted(set(deviations) - set(SOURCES[(table, method)]))
    assert not unchecked, f"{table}/{method} names deviations no source value backs: {unchecked}"
    assert all(reason.strip() for reason in deviations.values())


@pytest.mark.parametrize("table", sorted(DATASET))
def test_every_cited_row_is_covered(table: str) -> None:
    rows = load_recipe_table(table).methods
    assert sorted(method for (t, method) in SOURCES if t == table) == sorted(rows)
