"""The projector and predictor MLPs of the recipes."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def build_projector(
    in_dim: int,
    dims: Sequence[int],
    *,
    hidden_bias: bool = True,
    hidden_norm: bool = True,
    last_bias: bool = False,
    last_bn: bool = False,
) -> nn.Module:
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

    The projector variants of the studies (experiments/studies) are these options and widths, set
    with ``--set``: none (``projector=``: the loss sees the representation), linear
    (``projector=128``: one Linear), MLPs of any depth (``projector=512,512,128``), without
    normalisation in the hidden layers (``projector_options.hidden_norm=false``), and with a
    standardised output, each dimension at zero mean and unit variance over the batch
    (``projector_options.last_bn=true``).
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
