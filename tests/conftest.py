"""Shared pytest fixtures for ssl-bench. Each section is self-contained."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# Before any test module imports torchvision: ssl_bench.data makes that import work on a
# CPU-only torch (ssl_bench._torchvision_compat).
import ssl_bench.data  # noqa: F401

# tests/support/ holds helpers (importable as ``support.*``); make sure that works whatever
# pytest's import mode or rootdir.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


# ============================================================================================
# SLURM: a real single-node cluster (tests/support/local_slurm.py)
# ============================================================================================
#
# ``slurm_cluster`` (session scope) starts the cluster from Debian's packages when none answers
# (installing slurm-wlm/munge/slurmdbd/mariadb-server if needed, as root), yields a
# ``local_slurm.SlurmClusterInfo`` and, at session end, stops only the daemons it started.
# If a cluster already answers (e.g. `python tests/support/local_slurm.py start`), it is used
# and left running. Concurrent pytest sessions on one machine share a cluster started by one
# of them: it stays up while any of them runs, and the last one to finish stops it.
#
# When no cluster can be had (not root, no apt-get, not Debian) the test is skipped with the
# reason. On CI (CI=true) with root and apt-get, or with SSL_BENCH_REQUIRE_SLURM=1, any failure
# to get a cluster FAILS instead.


def _slurm_required() -> bool:
    if os.environ.get("SSL_BENCH_REQUIRE_SLURM", "").lower() in ("1", "true", "yes"):
        return True
    on_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return on_ci and os.geteuid() == 0 and shutil.which("apt-get") is not None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    from support import local_slurm

    try:
        handle = local_slurm.start(session=True)
    except local_slurm.SlurmUnavailable as e:
        if _slurm_required():
            pytest.fail(f"SLURM cluster required here (CI/root/apt-get) but unavailable: {e}", pytrace=False)
        pytest.skip(f"no SLURM cluster: {e}")
    except local_slurm.SlurmStartError as e:
        if _slurm_required():
            raise
        pytest.skip(f"could not start the local SLURM cluster: {e}")

    saved_env = {k: os.environ.get(k) for k in handle.env}
    os.environ.update(handle.env)  # e.g. SLURM_CONF, for sbatch/sacct called by tests/submitit
    info = local_slurm.SlurmClusterInfo(
        partition=handle.partition,
        node=handle.node,
        workdir=tmp_path_factory.mktemp("slurm"),
        started_by_us=handle.started_by_us,
        slurm_conf=handle.slurm_conf,
        log_dir=handle.log_dir,
        handle=handle,
    )
    try:
        yield info
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        # Stops only what this session started (by pid), and not while another live test
        # session still uses it; a cluster that was already running is left alone.
        local_slurm.stop(handle)


# ============================================================================================
# Small generated datasets in real formats
# ============================================================================================


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A 600/200-image Fashion-MNIST-format dataset (class = bar angle) to pass as data_root."""
    from support.fake_data import write_fashion_mnist

    return write_fashion_mnist(tmp_path_factory.mktemp("fashion-data"))


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a loaded 2-core machine the
    second OpenMP thread's spin-waits made tests several times slower; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
