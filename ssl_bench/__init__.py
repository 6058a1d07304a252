"""ssl-bench: a comparative benchmark suite for self-supervised learning in vision."""

from ssl_bench._torchvision_compat import import_torchvision

# timm and our data modules import torchvision; make that import work on CPU-only torch first.
import_torchvision()

__version__ = "0.1.0"
