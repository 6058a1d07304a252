"""One process per run directory at a time: an advisory lock on ``<run dir>/run.lock``.

Two identical commands on one results directory would otherwise both train the same run,
writing the same checkpoint and records. The first to arrive takes the lock; the second says
which process holds it and waits, then finds the work done (a finished run is reused, an
interrupted one resumed). The lock is ``flock(2)`` on the file, so the kernel releases it when
its holder exits in any way (SIGKILL, a node's job ending): a stale lock file left by a dead
holder is simply taken over. The file itself stays; it only names the last holder (process id,
host, since when), for the message of whoever waits.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_FILE = "run.lock"


@contextmanager
def hold_run_dir(run_dir: Path, *, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block, waiting (with one line to ``log``) while another process has it.

    A file system without ``flock`` (some network mounts) runs the block unlocked, with a line saying so.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            _acquire(handle, path, log)
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log(f"ssl-bench: warning: cannot lock {path} ({error.strerror}); not guarding against a second command")
            yield
            return
        _write_holder(handle)
        yield  # closing the file releases the lock


def _acquire(handle: IO[str], path: Path, log: Callable[[str], None]) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"{path.parent} is in use by {describe_holder(path)}; waiting for it to finish")
        fcntl.flock(handle, fcntl.LOCK_EX)  # Ctrl-C still interrupts the wait
        log(f"{path.parent} is free now; going on")


def _write_holder(handle: IO[str]) -> None:
    handle.seek(0)
    handle.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    handle.write(json.dumps(holder) + "\n")
    handle.flush()


def describe_holder(path: Path) -> str:
    """'PID 1234 on host node1 (since 2024-05-01 12:00:00)', as the lock file names it."""
    try:
        holder = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["since"])))
        return f"PID {int(holder['pid'])} on host {holder['host']} (since {since})"
    except (OSError, ValueError, TypeError, KeyError):  # written a moment from now, or not by us
        return "another process"
