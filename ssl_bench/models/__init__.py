"""Backbones by name and the projector / predictor heads."""

from ssl_bench._torchvision_compat import import_torchvision

# timm and torchvision's models import torchvision; make that import work on CPU-only torch first.
import_torchvision()
