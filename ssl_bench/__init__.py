"""ssl-bench: a comparative benchmark suite for self-supervised learning in vision.

Importing the package imports nothing heavy: ``ssl-bench --help`` needs neither torch nor
submitit. The subpackages that use torchvision (``data``, ``models``) make its import work on a
CPU-only torch first (``ssl_bench._torchvision_compat``).
"""

__version__ = "0.1.0"
