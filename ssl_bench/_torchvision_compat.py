"""Make ``import torchvision`` work on a CPU-only torch.

The torchvision wheels on PyPI are CUDA builds. Next to a CPU torch their compiled extension
fails to load, and ``import torchvision`` raises ``operator torchvision::nms does not exist``
while registering fake kernels for the detection ops. ssl-bench needs transforms, models and
datasets, not those ops, so on exactly that failure we declare the two missing operator schemas
and import again. Anywhere torchvision imports normally (every CUDA install) this is a no-op.
"""

from __future__ import annotations

import sys

_MISSING_OP_MESSAGE = "operator torchvision::nms does not exist"
# Kept alive for the life of the process: dropping the Library object would unregister the ops.
_schema_library = None


def import_torchvision():
    """Import torchvision, declaring its detection-op schemas first if the CPU torch lacks them."""
    global _schema_library
    try:
        import torchvision
    except RuntimeError as error:
        if _MISSING_OP_MESSAGE not in str(error):
            raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _schema_library = torch.library.Library("torchvision", "DEF")
        _schema_library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _schema_library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


def patched() -> bool:
    """Whether this process needed the schema declarations (False where torchvision is whole)."""
    return _schema_library is not None
