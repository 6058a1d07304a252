"""Backbones by name and the recipe projectors; the torchvision import fix for CPU-only torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import ssl_bench
from ssl_bench.errors import UsageError
from ssl_bench.models.backbones import build_backbone
from ssl_bench.models.heads import build_projector


@pytest.mark.parametrize(
    "name, dim, size",
    [("tiny_convnet", 256, 28), ("resnet18_cifar", 512, 32), ("resnet18", 512, 64), ("resnet10t", 512, 32)],
)
def test_backbones_give_flat_representations(name, dim, size):
    model, feature_dim = build_backbone(name)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert feature_dim == dim
    assert out.shape == (2, dim)


def test_cifar_stem_keeps_small_images_at_full_resolution():
    model, _ = build_backbone("resnet18_cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    plain, _ = build_backbone("resnet18")
    assert plain.conv1.kernel_size == (7, 7)


def test_unknown_backbone_is_a_usage_error_with_suggestion():
    with pytest.raises(UsageError, match="did you mean 'resnet18'"):
        build_backbone("resnet181")


def test_projector_is_linear_bn_relu_blocks_then_linear_without_bias():
    projector = build_projector(512, [2048, 2048, 128])
    kinds = [type(m) for m in projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    linears = [m for m in projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 2048), (2048, 2048), (2048, 128)]
    assert linears[0].bias is not None and linears[-1].bias is None
    assert isinstance(build_projector(512, []), nn.Identity)


def test_torchvision_fix_is_a_no_op_where_torchvision_imports(tmp_path):
    """With a torchvision that imports normally, import_torchvision returns it untouched."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("MARK = 'the importable one'\n")
    compat_file = Path(ssl_bench.__file__).with_name("_torchvision_compat.py")
    # Load the compat module on its own: importing the ssl_bench package would import the
    # real torchvision first.
    script = tmp_path / "check.py"
    script.write_text(
        textwrap.dedent(
            f"""
        import importlib.util, sys
        sys.path.insert(0, {str(tmp_path)!r})
        spec = importlib.util.spec_from_file_location("compat", {str(compat_file)!r})
        compat = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compat)
        print(compat.import_torchvision().MARK, compat.patched())
        """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "the importable one False"


def test_torchvision_works_after_the_fix():
    import torchvision
    from torchvision.transforms import v2

    assert torchvision.models.resnet18 is not None
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    assert v2.RandomHorizontalFlip(p=1.0)(image).shape == (3, 8, 8)


def test_zero_init_residual_starts_every_residual_branch_at_zero():
    zeroed, _ = build_backbone("resnet18_cifar", zero_init_residual=True)
    plain, _ = build_backbone("resnet18_cifar")
    last_bns = [
        block.bn2.weight for stage in (zeroed.layer1, zeroed.layer2, zeroed.layer3, zeroed.layer4) for block in stage
    ]
    assert len(last_bns) == 8 and all(bool((w == 0).all()) for w in last_bns)
    assert bool((plain.layer1[0].bn2.weight == 1).all())
    with pytest.raises(UsageError, match="no residual branches"):
        build_backbone("tiny_convnet", zero_init_residual=True)


def test_projector_layout_options():
    bare = build_projector(8, [16, 4], hidden_norm=False, last_bias=True)
    assert [type(m) for m in bare] == [nn.Linear, nn.ReLU, nn.Linear]
    assert bare[0].bias is not None and bare[2].bias is not None
    moco = build_projector(8, [16, 4], hidden_bias=False, last_bn=True)
    assert [type(m) for m in moco] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert moco[0].bias is None and moco[3].bias is None and not moco[4].affine


@pytest.mark.parametrize(
    "settings, linears, norms, standardised",
    [
        (["projector="], 0, 0, False),
        (["projector=16"], 1, 0, False),
        (["projector=32,16"], 2, 1, False),
        (["projector=32,32,16"], 3, 2, False),
        (["projector=32,32,16", "projector_options.hidden_norm=false"], 3, 0, False),
        (["projector=32,16", "projector_options.last_bn=true"], 2, 2, True),
    ],
)
def test_projector_variants_through_set(settings, linears, norms, standardised):
    """The studies' projector variants (none, linear, MLP depths, hidden norm, standardised output)."""
    from ssl_bench.recipes import resolve_config
    from ssl_bench.train.assemble import build_method

    config = resolve_config("vicreg", "fashion-mnist", settings=["backbone=tiny_convnet", *settings])
    torch.manual_seed(0)
    method = build_method(config)
    modules = list(method.projector.modules())
    assert sum(isinstance(m, nn.Linear) for m in modules) == linears
    assert sum(isinstance(m, nn.BatchNorm1d) for m in modules) == norms
    out = method(torch.randn(8, 3, 28, 28), torch.randn(8, 3, 28, 28))
    assert out.embedding.shape == (8, config.projector[-1] if config.projector else method.feature_dim)
    if not config.projector:
        assert torch.equal(out.embedding, out.representation)
    if standardised:  # per-dimension zero mean, unit (biased) variance over the batch, in training
        z = out.embedding.detach()
        assert torch.allclose(z.mean(dim=0), torch.zeros(z.shape[1]), atol=1e-5)
        assert torch.allclose(z.var(dim=0, unbiased=False), torch.ones(z.shape[1]), atol=1e-3)
