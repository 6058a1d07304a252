"""Errors the command line reports as one line (exit status 2) instead of a traceback."""

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """Bad input from the user: unknown name, invalid value, missing dataset, ..."""


NON_FINITE_LOSS = "non-finite loss"  # how a NonFiniteLossError's message, and so a run record's error, says it


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; carries the step and the loss terms for the run record."""

    def __init__(self, step: int, terms: dict[str, float]) -> None:
        self.step = step
        self.terms = terms
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        super().__init__(f"{NON_FINITE_LOSS} at step {step}: {shown}")


def is_divergence(error: str) -> bool:
    """Whether a run's recorded error says that its loss went non-finite (the run diverged)."""
    return NON_FINITE_LOSS in error


def unknown_name_message(kind: str, name: str, known: Iterable[str], listing: str | None = None) -> str:
    """'unknown method 'vicrg'; did you mean 'vicreg'? (known: ...)' for any kind of name."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} ({listing or 'known: ' + ', '.join(known)})"
