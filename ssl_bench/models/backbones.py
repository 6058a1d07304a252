"""Backbones by name: torchvision's ResNets (with a small-image stem), timm models, a tiny conv net."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torchvision  # ssl_bench.models (this package) has made the import work on CPU-only torch
from torch import nn

from ssl_bench.errors import UsageError, unknown_name_message


def _torchvision_resnet(name: str, cifar_stem: bool, zero_init_residual: bool | None) -> tuple[nn.Module, int]:
    # zero_init_residual: each residual branch's last BN starts with scale 0 (Goyal et al. 2017),
    # as the official VICReg, Barlow Twins, SimSiam and MoCo v3 code build their ResNet-50.
    model = getattr(torchvision.models, name)(weights=None, zero_init_residual=bool(zero_init_residual))
    if cifar_stem:
        # Small images: a 3x3 stride-1 first conv and no max-pool keep 32 px inputs at 32x32
        # through the first stage (the standard CIFAR ResNet used by solo-learn and lightly).
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model, feature_dim


class TinyConvNet(nn.Module):
    """Four conv-BN-ReLU blocks and global pooling (0.39 M params): tests and the CPU demo."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            in_channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.num_features = in_channels

    def forward(self, x):
        return self.net(x)


def _tiny_convnet(zero_init_residual: bool | None) -> tuple[nn.Module, int]:
    if zero_init_residual:
        raise UsageError("tiny_convnet has no residual branches: zero_init_residual does not apply")
    model = TinyConvNet()
    return model, model.num_features


# Names that mean one fixed architecture. Anything else is looked up in timm.
BUILTIN_BACKBONES: dict[str, Callable[[bool | None], tuple[nn.Module, int]]] = {
    "resnet18": lambda zero: _torchvision_resnet("resnet18", cifar_stem=False, zero_init_residual=zero),
    "resnet18_cifar": lambda zero: _torchvision_resnet("resnet18", cifar_stem=True, zero_init_residual=zero),
    "resnet50": lambda zero: _torchvision_resnet("resnet50", cifar_stem=False, zero_init_residual=zero),
    "resnet50_cifar": lambda zero: _torchvision_resnet("resnet50", cifar_stem=True, zero_init_residual=zero),
    "tiny_convnet": _tiny_convnet,
}


def check_backbone_name(name: str) -> None:
    """Raise a UsageError (with the closest name) unless `name` is a built-in or a timm model."""
    if name in BUILTIN_BACKBONES:
        return
    import timm

    if not timm.is_model(name.removeprefix("timm:")):
        listing = f"built-in: {', '.join(BUILTIN_BACKBONES)}; or any timm model name"
        candidates = [*BUILTIN_BACKBONES, *timm.list_models()]
        raise UsageError(unknown_name_message("backbone", name, candidates, listing))


def build_backbone(name: str, zero_init_residual: bool | None = None) -> tuple[nn.Module, int]:
    """A backbone without classifier head, and the dimension of its representation.

    `resnet18`/`resnet50` are torchvision's (as in the official VICReg/Barlow code), `*_cifar`
    swap in the small-image stem, `tiny_convnet` is for tests and the CPU demo, and any other
    name is a timm model (`timm:` prefix optional), e.g. `resnet10t` or `vit_small_patch16_224`.
    ``zero_init_residual``: start each residual branch's last norm at 0; None keeps the library's
    default (torchvision: no; timm's ResNets: yes, its ``zero_init_last``).
    """
    check_backbone_name(name)
    if name in BUILTIN_BACKBONES:
        return BUILTIN_BACKBONES[name](zero_init_residual)
    import timm

    options = {} if zero_init_residual is None else {"zero_init_last": zero_init_residual}
    try:
        model = timm.create_model(name.removeprefix("timm:"), pretrained=False, num_classes=0, **options)
    except TypeError:
        raise UsageError(f"timm model {name} has no zero_init_last option for zero_init_residual") from None
    return model, model.num_features
