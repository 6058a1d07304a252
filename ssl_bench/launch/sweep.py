"""A sweep: the runs one `ssl-bench run` command asks for (each carried out by
``ssl_bench.run.lifecycle.run_entry``, locally or as a SLURM array task)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ssl_bench.config import RunConfig
from ssl_bench.recipes import resolve_config


def resolve_sweep(
    methods: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    overrides: dict[str, Any],
    settings: Sequence[str],
) -> list[RunConfig]:
    """One resolved config per dataset x method x seed, in that nesting order."""
    return [
        resolve_config(method, dataset, {**overrides, "seed": seed}, list(settings))
        for dataset in dict.fromkeys(datasets)
        for method in dict.fromkeys(methods)
        for seed in dict.fromkeys(seeds)
    ]
