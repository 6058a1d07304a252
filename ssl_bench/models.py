"""Backbones by name (torchvision, timm, and two small-image nets) and recipe projectors."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from ssl_bench.errors import UsageError, unknown_name_message

import torchvision  # noqa: E402  (ssl_bench/__init__ has made this import work on CPU-only torch)


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


def build_projector(in_dim: int, dims: Sequence[int], *, hidden_bias: bool = True, hidden_norm: bool = True,
                    last_bias: bool = False, last_bn: bool = False) -> nn.Module:
    """The recipes' projector (and predictor) MLP: (Linear-BN-ReLU) blocks, then a last Linear.

    dims lists the output width of every Linear, e.g. VICReg's 8192-8192-8192 or SimCLR's
    2048-2048-128. An empty list means no projector (the loss sees the representation).
    By default the last Linear has no bias, as in the VICReg / Barlow Twins code. The published
    heads of other methods differ from it: ``hidden_bias`` False drops the hidden Linears' biases
    (Barlow Twins, SimSiam, MoCo v3; a bias before BatchNorm has no effect on the output),
    ``hidden_norm`` False drops the hidden BatchNorms (solo-learn's SimCLR head:
    Linear-ReLU-Linear), ``last_bias`` gives the last Linear a bias
    (BYOL's heads, SimSiam's predictor, nn.Linear's default in solo-learn) and ``last_bn`` appends
    ``BatchNorm1d(affine=False)`` (SimSiam's and MoCo v3's projectors).
    """
    if not dims:
        return nn.Identity()
    layers: list[nn.Module] = []
    widths = [in_dim, *dims]
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=hidden_bias))
        if hidden_norm:
            layers.append(nn.BatchNorm1d(widths[i + 1]))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(widths[-2], widths[-1], bias=last_bias))
    if last_bn:
        layers.append(nn.BatchNorm1d(widths[-1], affine=False))
    return nn.Sequential(*layers)
