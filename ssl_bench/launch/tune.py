"""`ssl-bench tune`: the same trial budget for every method, every choice made on validation data.

For each method, Optuna's TPE sampler (seeded, so a repeated command proposes the same trials)
draws values for the parameters of the method's search space, which is recipe data: a row's
``search`` table maps a ``--set`` key to ``[low, high, "log" | "linear"]``, e.g.
``search = { base_lr = [0.05, 2.0, "log"], weight_decay = [1e-6, 1e-3, "log"] }``. Each trial is
an ordinary run (its own run directory, resumable, listed by ``ssl-bench table``) of the trial
seed; its score is the validation top-1 of the linear probe chosen on the validation split
(``linear_choice.val_top1`` of its record): the test split plays no part in any choice. A run
that fails scores 0; the provenance counts the trials that diverged (a non-finite loss) and
those that failed otherwise. The trial seed must not be one of ``--final-seeds``: a final run of
the trial seed would be the selected trial itself, and the reported mean would include the run
that won the selection (the command refuses the overlap). The best trial's values are written,
with their provenance (budget, space, sampler, split, every trial's values, score and outcome,
the trial and final seeds, the code hash), as a recipe table ``<results>/tune/<dataset>.toml``
whose rows ``--set`` can reproduce; ``--final-seeds`` then runs the best values over those seeds.

Trials go out in rounds: each round asks every method's study for ``parallel`` trials (Optuna's
ask-and-tell interface), runs them all, then tells each study its scores, so a round's trials are
independent of each other and later rounds learn from earlier ones. Locally a round's runs go one
after another in this process; with the SLURM executor a round is one job array (every method's
trials of that round, one task each) that the command waits for. The proposals do not depend on
where trials ran: with the same seed, budget and ``parallel``, both executors propose the same
values. TPE's first ``n_startup_trials`` (10) trials of a study are drawn at random from the space,
so a budget of 10 or less is a seeded random search; the same draws go to every method, which
makes the budgets equal to the value. Pruning is not used: every trial is an ordinary finished
run, resumable and comparable in ``ssl-bench table``, which a pruned one would not be.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_bench.config import RunConfig
from ssl_bench.errors import UsageError, is_divergence
from ssl_bench.launch.executor import Executor, LocalExecutor
from ssl_bench.recipes import load_recipe_table, recipe_row, recipe_table_for, resolve_config

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


FINISHED, DIVERGED, FAILED = "finished", "diverged", "failed"


def trial_outcome(config: RunConfig, results_dir: Path) -> tuple[float, str]:
    """The validation top-1 of the trial's chosen linear probe and ``finished``; 0 and ``diverged``
    (a non-finite loss) or ``failed`` for a trial that did not finish."""
    from ssl_bench.run.record import Run

    run = Run.of(results_dir, config)
    record = run.read_result()
    if record is not None and record["status"] == "finished":
        return float(record["linear_choice"]["val_top1"]), FINISHED
    error = str((record or {}).get("error") or run.read_status().get("error") or "")
    return 0.0, DIVERGED if is_divergence(error) else FAILED


@dataclass
class _MethodStudy:
    """One method's Optuna study, its space and its trials so far."""

    method: str
    space: list[Dimension]
    study: Any  # optuna.Study
    trials: list[dict[str, Any]]


def tune_methods(
    methods: Sequence[str],
    dataset: str,
    budget: int,
    results_dir: Path,
    overrides: dict[str, Any],
    settings: Sequence[str],
    executor: Executor,
    *,
    parallel: int = 1,
    sampler_seed: int = 0,
    final_seeds: Sequence[int] = (),
) -> dict[str, dict[str, Any]]:
    """``budget`` trials per method in rounds of ``parallel``; per method the best values and provenance."""
    import optuna

    from ssl_bench.provenance import code_hash

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [
        _MethodStudy(
            method,
            search_space(method, dataset),
            optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed)),
            [],
        )
        for method in methods
    ]
    while (done := len(studies[0].trials)) < budget:
        batch = []
        for entry in studies:
            for _ in range(min(parallel, budget - done)):
                trial = entry.study.ask()
                values = {d.key: trial.suggest_float(d.key, d.low, d.high, log=d.log) for d in entry.space}
                batch.append((entry, trial, values, _trial_config(entry.method, dataset, overrides, settings, values)))
        executor.execute([config for *_, config in batch], results_dir)
        for entry, trial, values, config in batch:
            score, outcome = trial_outcome(config, results_dir)
            entry.study.tell(trial, score)
            entry.trials.append(
                {**values, "val_top1": score, "outcome": outcome, "identity_hash": config.identity_hash()}
            )
            shown = f"{score:.2f}% on validation" if outcome == FINISHED else f"{outcome} (scores 0)"
            print(f"[tune {entry.method}] trial {len(entry.trials)}/{budget}: {json.dumps(values)} -> {shown}")
    results = {}
    for entry in studies:
        trials = entry.trials
        best = max(range(len(trials)), key=lambda i: (trials[i]["val_top1"], -i))
        outcomes = [trial["outcome"] for trial in trials]
        print(
            f"[tune {entry.method}] {len(trials)} trials: {outcomes.count(FINISHED)} finished, "
            f"{outcomes.count(DIVERGED)} diverged (non-finite loss), {outcomes.count(FAILED)} failed otherwise"
        )
        results[entry.method] = {
            "values": {d.key: trials[best][d.key] for d in entry.space},
            "provenance": {
                "budget": budget,
                "parallel": parallel,
                "sampler": f"optuna {optuna.__version__} TPESampler(seed={sampler_seed})",
                "space": {d.key: [d.low, d.high, "log" if d.log else "linear"] for d in entry.space},
                "selection_split": "val",
                "score": SCORE,
                "best_score": trials[best]["val_top1"],
                "trial_seed": overrides.get("seed", 0),
                "final_seeds": list(final_seeds),
                "finished_trials": outcomes.count(FINISHED),
                "diverged_trials": outcomes.count(DIVERGED),
                "failed_trials": outcomes.count(FAILED),
                "code_hash": code_hash(),
                "trials": trials,
            },
        }
    return results


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
    from ssl_bench.store.atomic import atomic_write_text

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
    executor: Executor | None = None,
    parallel: int = 1,
    final_seeds: Sequence[int] = (),
    progress: bool = True,
    command: str = "ssl-bench tune",
) -> Path:
    """Tune every method with the same budget, write ``<results_dir>/tune/<dataset>.toml``, then
    run the best values over ``final_seeds`` (with the same executor); returns the TOML's path.

    ``executor`` runs each round's configurations (ssl_bench.launch.executor; default: here, one
    after another). A failed trial is recorded in its run directory and scores 0.
    """
    if budget < 1:
        raise UsageError(f"--budget must be positive, got {budget}")
    if parallel < 1:
        raise UsageError(f"--parallel must be positive, got {parallel}")
    trial_seed = overrides.get("seed", 0)
    if trial_seed in final_seeds:
        raise UsageError(
            f"the trial seed {trial_seed} (--seed) is one of --final-seeds: the final run of that seed would be "
            "the selected trial itself; tune on a seed outside the final seeds (e.g. --seed 100)"
        )
    load_recipe_table(recipe_table_for(dataset).name)
    for method in methods:  # every space checked before the first trial trains
        search_space(method, dataset)
    results_dir = Path(results_dir)
    if executor is None:
        executor = LocalExecutor(progress=progress)

    results = tune_methods(
        methods, dataset, budget, results_dir, overrides, settings, executor, parallel=parallel, final_seeds=final_seeds
    )
    path = results_dir / "tune" / f"{dataset}.toml"
    write_tuned_table(path, dataset, results, command)
    print(f"tuned values and provenance: {path}")
    if final_seeds:
        executor.execute(
            [
                _trial_config(method, dataset, {**overrides, "seed": seed}, settings, results[method]["values"])
                for method in methods
                for seed in final_seeds
            ],
            results_dir,
        )
    return path
