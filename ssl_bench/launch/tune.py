"""`ssl-bench tune`: the same trial budget for every method, every choice made on validation data.

For each method, Optuna's TPE sampler (seeded, so a repeated command proposes the same trials)
draws values for the parameters of the method's search space, which is recipe data: a row's
``search`` table maps a ``--set`` key to ``[low, high, "log" | "linear"]``, e.g.
``search = { base_lr = [0.05, 2.0, "log"], weight_decay = [1e-6, 1e-3, "log"] }``. Each trial is
an ordinary run (its own run directory, resumable, listed by ``ssl-bench table``) of the trial
seed; its score is the validation top-1 of the linear probe chosen on the validation split
(``linear_choice.val_top1`` of its record): the test split plays no part in any choice. A run
that fails scores 0. The best trial's values are written, with their provenance (budget, space,
sampler, split, every trial's values and score), as a recipe table ``<results>/tune/<dataset>.toml``
whose rows ``--set`` can reproduce; ``--final-seeds`` then runs the best values over those seeds.

Trials run one after another in this process; pruning is not used (the runs are short at CPU
scale, and a pruned trial would not be an ordinary finished run).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_bench.config import RunConfig, load_recipe_table, recipe_row, recipe_table_for, resolve_config
from ssl_bench.errors import UsageError

SCALES = ("log", "linear")
SCORE = "linear probe top-1 (%) on the validation split"


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a --set key and its range."""

    key: str
    low: float
    high: float
    log: bool


def search_space(method: str, dataset: str) -> list[Dimension]:
    """The method's search space in the recipe of ``dataset`` (its row's ``search`` table)."""
    table = recipe_table_for(dataset)
    row = recipe_row(method, table)
    if not row.search:
        raise UsageError(
            f"{method} has no search space in experiments/recipes/{table.name}.toml: give its row "
            '`search = { base_lr = [low, high, "log"], ... }`'
        )
    dimensions = []
    for key, spec in row.search.items():
        if not (isinstance(spec, list) and len(spec) == 3 and spec[2] in SCALES):
            raise UsageError(f'search.{key} of {method} must be [low, high, "log" | "linear"], got {spec!r}')
        low, high = float(spec[0]), float(spec[1])
        if not 0 < low < high if spec[2] == "log" else not low < high:
            raise UsageError(f"search.{key} of {method}: need low < high (and low > 0 on a log scale), got {spec!r}")
        dimensions.append(Dimension(key, low, high, spec[2] == "log"))
    return dimensions


def _trial_config(
    method: str, dataset: str, overrides: dict[str, Any], settings: Sequence[str], values: dict[str, float]
) -> RunConfig:
    return resolve_config(
        method, dataset, overrides, [*settings, *(f"{key}={value!r}" for key, value in values.items())]
    )


def _score(config: RunConfig, results_dir: Path, progress: bool) -> float:
    from ssl_bench.run.lifecycle import run_entry
    from ssl_bench.run.record import read_result
    from ssl_bench.run.rundir import RunDir

    try:
        run_entry(config, results_dir, progress=progress)
    except UsageError:
        raise
    except Exception:  # recorded as failed by run_entry; the trial scores 0
        return 0.0
    record = read_result(RunDir.for_config(results_dir, config))
    if record is None or record["status"] != "finished":
        return 0.0
    return float(record["linear_choice"]["val_top1"])


def tune_method(
    method: str,
    dataset: str,
    budget: int,
    results_dir: Path,
    overrides: dict[str, Any],
    settings: Sequence[str],
    *,
    sampler_seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``budget`` trials of ``method``; returns the best values and the provenance."""
    import optuna

    space = search_space(method, dataset)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed))
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        values = {d.key: trial.suggest_float(d.key, d.low, d.high, log=d.log) for d in space}
        config = _trial_config(method, dataset, overrides, settings, values)
        score = _score(config, results_dir, progress)
        trials.append({**values, "val_top1": score, "identity_hash": config.identity_hash()})
        print(f"[tune {method}] trial {len(trials)}/{budget}: {json.dumps(values)} -> {score:.2f}% on validation")
        return score

    study.optimize(objective, n_trials=budget)
    best = max(range(len(trials)), key=lambda i: (trials[i]["val_top1"], -i))
    return {
        "values": {d.key: trials[best][d.key] for d in space},
        "provenance": {
            "budget": budget,
            "sampler": f"optuna {optuna.__version__} TPESampler(seed={sampler_seed})",
            "space": {d.key: [d.low, d.high, "log" if d.log else "linear"] for d in space},
            "selection_split": "val",
            "score": SCORE,
            "best_score": trials[best]["val_top1"],
            "trial_seed": overrides.get("seed", 0),
            "trials": trials,
        },
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def write_tuned_table(path: Path, dataset: str, results: dict[str, dict[str, Any]], command: str) -> None:
    """The chosen values per method, each with its provenance, as a TOML file (written atomically)."""
    from ssl_bench.run.rundir import atomic_write_text

    lines = [f"# Written by: {command}", f"# Values chosen on the validation split of {dataset}.", ""]
    for method, result in results.items():
        lines.append(f"[{method}]")
        lines += [f"{json.dumps(key)} = {_toml_value(value)}" for key, value in result["values"].items()]
        lines += ["", f"[{method}.provenance]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in result["provenance"].items()]
        lines.append("")
    atomic_write_text(path, "\n".join(lines))


def tune(
    methods: Sequence[str],
    dataset: str,
    budget: int,
    results_dir: str | Path,
    overrides: dict[str, Any],
    settings: Sequence[str],
    *,
    final_seeds: Sequence[int] = (),
    progress: bool = True,
    command: str = "ssl-bench tune",
) -> Path:
    """Tune every method with the same budget, write ``<results_dir>/tune/<dataset>.toml``, then
    run the best values over ``final_seeds``; returns the TOML's path."""
    if budget < 1:
        raise UsageError(f"--budget must be positive, got {budget}")
    load_recipe_table(recipe_table_for(dataset).name)
    for method in methods:  # every space checked before the first trial trains
        search_space(method, dataset)
    results_dir = Path(results_dir)
    results = {
        method: tune_method(method, dataset, budget, results_dir, overrides, settings, progress=progress)
        for method in methods
    }
    path = results_dir / "tune" / f"{dataset}.toml"
    write_tuned_table(path, dataset, results, command)
    print(f"tuned values and provenance: {path}")
    if final_seeds:
        from ssl_bench.launch.sweep import sweep_entries
        from ssl_bench.run.lifecycle import run_entry

        configs = [
            _trial_config(method, dataset, {**overrides, "seed": seed}, settings, results[method]["values"])
            for method in methods
            for seed in final_seeds
        ]
        for config in sweep_entries(configs):
            run_entry(config, results_dir, progress=progress)
    return path
