"""Experiment trackers: ``ssl-bench run --logger tensorboard|wandb|mlflow``.

:mod:`ssl_bench.track.fanout` says what is logged and keeps the trackers' ids for resumed runs;
one module per library (:mod:`~ssl_bench.track.tensorboard`, :mod:`~ssl_bench.track.wandb`,
:mod:`~ssl_bench.track.mlflow`) talks to it through the library's own API. Importing this
package imports none of them.
"""

from ssl_bench.track.base import TRACKER_NAMES, check_installed

__all__ = ["TRACKER_NAMES", "check_installed"]
