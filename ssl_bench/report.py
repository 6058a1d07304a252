"""Tables printed at the end of a command."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ssl_bench.train import RunResult


def format_run_table(results: list["RunResult"]) -> str:
    """Markdown table of what `ssl-bench run` just ran."""
    rows = [
        {
            "method": r.method,
            "status": r.status,
            "epochs": r.epochs_done,
            "final loss": None if r.final_loss is None else round(r.final_loss, 4),
            "train time (s)": round(r.train_seconds, 1),
            "samples/s": None if r.samples_per_second is None else round(r.samples_per_second),
            "run directory": str(r.run_dir),
        }
        for r in results
    ]
    return pd.DataFrame(rows).to_markdown(index=False)
