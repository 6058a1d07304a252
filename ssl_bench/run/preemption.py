"""Stopping a run cleanly at a step boundary when the scheduler asks (preemption, time limit).

SLURM sends a signal (USR2 with submitit's ``--signal=USR2@90``) some time before it kills a
job. Saving the checkpoint inside the signal handler would be wrong: Python runs the handler
between two bytecodes of whatever the trainer was doing, possibly half-way through
``optimizer.step()``. So the handler only raises a flag; the trainer looks at it before each
step, where model, optimiser and step counter agree, saves the checkpoint there and raises
:class:`TrainingStopped`. The caller (the SLURM job) then requeues itself.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any


class TrainingStopped(Exception):
    """Training stopped on request after saving a checkpoint at ``step``; the run can resume."""

    def __init__(self, step: int, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"stopped at step {step} ({reason}); checkpoint saved")


@dataclass
class StopRequest:
    """A flag raised by a signal handler (or by hand) and read at the trainer's step boundaries."""

    signal_number: int | None = None
    previous_handlers: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    @property
    def reason(self) -> str:
        if self.signal_number is None:
            return "not requested"
        try:
            return f"signal {signal.Signals(self.signal_number).name}"
        except ValueError:
            return f"signal {self.signal_number}"

    def request(self, signal_number: int = 0) -> None:
        self.signal_number = signal_number

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Nothing but the flag: no I/O here (a print could re-enter a print the main thread was in).
        self.signal_number = signum

    @contextmanager
    def catching(self, *signals: int) -> Iterator[StopRequest]:
        """Route ``signals`` to this flag for the block; the previous handlers are kept (and
        restored after) so that the caller can still hand the signal on to them."""
        for signum in signals:
            self.previous_handlers[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self.previous_handlers.items():
                signal.signal(signum, handler)

    def forward_to_previous_handler(self) -> None:
        """Call the handler that was installed before ours, as if the signal arrived now.

        In a submitit job that is submitit's own: it calls the job's ``checkpoint()``, requeues
        the job (``scontrol requeue``) and exits. Calling it here, outside signal context and
        after our checkpoint is on disk, keeps its bookkeeping (the bounded timeout count)
        without its timing problem.
        """
        if self.signal_number is None:
            return
        handler = self.previous_handlers.get(self.signal_number)
        if callable(handler):
            handler(self.signal_number, None)
