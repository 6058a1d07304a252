"""Stopping a run cleanly at a step boundary when the scheduler asks (preemption, time limit).

SLURM sends a signal (USR2 with submitit's ``--signal=USR2@90``) some time before it kills a
job. Saving the checkpoint inside the signal handler would be wrong: Python runs the handler
between two bytecodes of whatever the trainer was doing, possibly half-way through
``optimizer.step()``. So the handler only raises a flag; the trainer looks at it before each
step, where model, optimiser and step counter agree, saves the checkpoint there and raises
:class:`TrainingStopped`. The caller (the SLURM job) then requeues itself.

Ctrl-C (SIGINT) and SIGTERM take the same way while a run trains
(:func:`interrupts_at_step_boundaries`): a KeyboardInterrupt raised mid-step would leave a
forward pass half-applied (BatchNorm's running statistics and ``num_batches_tracked`` move in
the forward pass), and a checkpoint of that state makes the resumed run differ from an
uninterrupted one. A second Ctrl-C stops at once, keeping the last checkpoint. Outside training
(loading data, evaluating) nothing is half-applied, and SIGTERM raises :class:`Terminated`, a
KeyboardInterrupt, where :func:`terminate_as_interrupt` is in force, so that the command's
cleanup runs for it as for Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any


class TrainingStopped(Exception):
    """Training stopped on request after saving a checkpoint at ``step``; the run can resume.

    ``signal_number``: the signal that asked (SIGINT, SIGTERM), where one did.
    """

    def __init__(self, step: int, reason: str, signal_number: int | None = None) -> None:
        self.step = step
        self.reason = reason
        self.signal_number = signal_number
        super().__init__(f"stopped at step {step} ({reason}); checkpoint saved")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where :func:`terminate_as_interrupt` is in force (a KeyboardInterrupt, so
    every cleanup of Ctrl-C runs for it too)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # the only thread that may set handlers


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the block, SIGTERM raises :class:`Terminated` instead of ending the process on the
    spot (where it would leave status.json "running"). A handler someone else installed is kept."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Handlers that interrupt at once (Python's own for Ctrl-C, the default for SIGTERM, ours): the
# signals :func:`interrupts_at_step_boundaries` may defer. Another handler (submitit's in a
# SLURM job) is somebody's plan for that signal, and is left alone.
_INTERRUPTING = (signal.default_int_handler, signal.SIG_DFL, _raise_terminated)


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


@contextmanager
def interrupts_at_step_boundaries(request: StopRequest) -> Iterator[StopRequest]:
    """For the block, Ctrl-C (SIGINT) and SIGTERM raise ``request`` instead of an exception.

    The trainer reads the flag before each step (``request.requested`` in its ``should_stop``),
    so an interrupted run stops where model, optimiser, buffers and step counter agree. A
    second signal while the flag is up raises at once (KeyboardInterrupt, or :class:`Terminated`
    for SIGTERM): the run then resumes from its last checkpoint. Only the main thread can take
    signals; elsewhere the block runs with the handlers as they are.
    """
    if not _in_main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if request.requested:  # asked twice: no more waiting
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        request.signal_number = signum

    signals = [signum for signum in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(signum) in _INTERRUPTING]
    previous = {signum: signal.signal(signum, handle) for signum in signals}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
