"""Hyperparameter search with Optuna: each trial is a normal training run of the base config.

    run_search(load_config("run.yaml"), load_space("lr-grid"), trials=4)

A space maps dotted config fields to a distribution (YAML):

    train.lr: {low: 1.0e-5, high: 1.0e-4, log: true}   # float range
    train.epochs: {low: 1, high: 4, type: int}          # whole numbers
    model.pooling: {choices: [cls, mean]}               # categorical

Trials report the validation metric after every evaluation, so a pruner can stop poor trials
early. The study lives in an Optuna RDB storage (SQLite by default, PostgreSQL to share one study
between machines). A trial that crashes is recorded as failed with its error; the search goes on.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bertfit.config import RunConfig, override, save_config
from bertfit.errors import BertfitError
from bertfit.metrics import greater_is_better

log = logging.getLogger(__name__)

SPACE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "lr-grid": {"train.lr": {"choices": [1e-5, 2e-5, 3e-5, 5e-5]}},
    "lr-range": {"train.lr": {"low": 1e-5, "high": 1e-4, "log": True}},
}
SAMPLERS = ("auto", "tpe", "random", "grid")
PRUNERS = ("median", "asha", "none")


@dataclass(frozen=True)
class Parameter:
    name: str  # dotted config field, e.g. train.lr
    kind: str  # float | int | choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    storage: str
    out_dir: Path
    best_value: float | None
    best_params: dict[str, Any] | None
    best_config: Path | None  # best.yaml, absent when no trial completed
    table: Path  # results.csv
    states: dict[str, int]  # trial state -> count


def load_space(spec: str | Path) -> list[Parameter]:
    """A preset name (lr-grid, lr-range) or a YAML file mapping dotted fields to distributions."""
    if str(spec) in SPACE_PRESETS:
        raw = SPACE_PRESETS[str(spec)]
    else:
        path = Path(spec)
        if not path.is_file():
            raise BertfitError(f"space: {spec} is not a file or a preset ({', '.join(SPACE_PRESETS)})")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict) or not raw:
        raise BertfitError(f"space: {spec}: expected a mapping of dotted fields to distributions")
    return [_parameter(name, value, str(spec)) for name, value in raw.items()]


def _parameter(name: str, value: Any, source: str) -> Parameter:
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, dict):
        raise BertfitError(f"{source}: {name}: expected {{choices: [...]}} or {{low: A, high: B}}, got {value!r}")
    if "choices" in value:
        if not value["choices"]:
            raise BertfitError(f"{source}: {name}: choices is empty")
        return Parameter(name, "choice", choices=tuple(value["choices"]))
    try:
        low, high = float(value["low"]), float(value["high"])
    except (KeyError, TypeError, ValueError):
        raise BertfitError(f"{source}: {name}: a range needs numbers low and high, got {value!r}") from None
    kind = value.get("type", "float")
    if kind not in ("float", "int") or low >= high or (value.get("log") and low <= 0):
        raise BertfitError(f"{source}: {name}: need type float or int, low < high, and low > 0 when log is true")
    return Parameter(name, kind, low, high, bool(value.get("log", False)))


def _suggest(trial: Any, space: list[Parameter]) -> dict[str, Any]:
    values = {}
    for p in space:
        if p.kind == "choice":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return values


def _sampler(name: str, space: list[Parameter], seed: int | None) -> Any:
    import optuna

    if name == "auto":  # a space of finite choices is searched exhaustively; ranges need a model
        name = "grid" if all(p.kind == "choice" for p in space) else "tpe"
    if name == "grid":
        if any(p.kind != "choice" for p in space):
            raise BertfitError("sampler: grid needs a list of choices for every parameter of the space")
        return optuna.samplers.GridSampler({p.name: list(p.choices) for p in space}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":  # waits for two finished trials and one evaluation before judging
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class StudySettings:
    """Where the study lives and how it samples and prunes (see run_search)."""

    storage: str | None = None  # Optuna storage URL (default: sqlite:///OUTPUT_DIR/search.db)
    study_name: str | None = None  # study to create or join (default: the config's name, else 'search')
    sampler: str = "auto"  # auto (grid for all-choice spaces, else tpe), tpe, random, grid
    pruner: str = "median"  # median, asha (successive halving) or none
    seed: int | None = None  # sampler seed (default: unseeded, so several machines differ)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS or self.pruner not in PRUNERS:
            raise BertfitError(f"sampler: must be one of {', '.join(SAMPLERS)}, and pruner one of {', '.join(PRUNERS)}")


def run_search(config: RunConfig, space: list[Parameter], trials: int, **settings: Any) -> SearchResult:
    """Run `trials` more trials of the study (created, or joined when it exists) and write its tables.

    `settings` are the fields of StudySettings (storage, study_name, sampler, pruner, seed).
    """
    import optuna

    study_settings = StudySettings(**settings)
    if trials < 1:
        raise BertfitError(f"trials: must be at least 1, got {trials}")
    if config.data.holds_out_none:
        raise BertfitError("data.validation_fraction 0 holds out no rows, and trials are compared on validation scores: "
                           "hold some out (e.g. data.validation_fraction 0.2) or give data.validation")
    study_name = study_settings.study_name or config.name or "search"
    out_dir = Path(config.output_dir) / study_name
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = _storage_url(study_settings.storage or f"sqlite:///{Path(config.output_dir) / 'search.db'}")
    override(config, {p.name: p.choices[0] if p.choices else p.low for p in space})  # bad field names fail now
    direction = "maximize" if greater_is_better(config.train.metric) else "minimize"
    sampler = _sampler(study_settings.sampler, space, study_settings.seed)
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True,
                                    sampler=sampler, pruner=_pruner(study_settings.pruner))
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as error:
        raise BertfitError(f"storage: cannot open the study at {storage}: {error}") from None
    except Exception as error:  # SQLAlchemy connection errors: server down, wrong password, missing driver
        raise BertfitError(f"storage: cannot connect to {storage}: {type(error).__name__}: {error}") from None
    study.optimize(lambda trial: _objective(trial, config, space, out_dir), n_trials=trials, catch=(Exception,))
    return _write_results(study, config, storage, out_dir)


def _storage_url(url: str) -> str:
    """postgresql://... means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _objective(trial: Any, config: RunConfig, space: list[Parameter], out_dir: Path) -> float:
    import optuna

    from bertfit.training.recipe import train

    params = _suggest(trial, space)
    metric = config.train.metric
    trial_config = override(config, params, name=f"trial-{trial.number:04d}", output_dir=str(out_dir))
    trial.set_user_attr("run_dir", str(out_dir / trial_config.name))

    def report(state: Any, record: dict[str, Any]) -> None:
        trial.report(record[f"eval/{metric}"], state.step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"step {state.step}: eval/{metric}={record[f'eval/{metric}']:.4f}")

    try:
        result = train(trial_config, overwrite=True, on_eval=report)
    except optuna.TrialPruned:
        log.info("trial %d pruned", trial.number)
        raise
    except Exception as error:
        trial.set_user_attr("error", f"{type(error).__name__}: {error}")
        log.warning("trial %d failed: %s: %s", trial.number, type(error).__name__, error)
        raise
    if result.interrupted:
        trial.study.stop()  # Ctrl-C: finish this trial as failed and start no more
        raise BertfitError("interrupted")
    return result.validation[metric]


def _write_results(study: Any, config: RunConfig, storage: str, out_dir: Path) -> SearchResult:
    """results.csv (every trial of the study, from every machine) and best.yaml (the best trial's config)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    table = out_dir / "results.csv"
    with open(table, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["trial", "state", config.train.metric, *names, "seconds", "run_dir", "error"])
        for t in trials:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                             *(t.params.get(n, "") for n in names), seconds,
                             t.user_attrs.get("run_dir", ""), t.user_attrs.get("error", "")])
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_value = best_params = best_config = None
    if completed:
        best = study.best_trial
        best_value, best_params = best.value, dict(best.params)
        best_config = out_dir / "best.yaml"
        save_config(override(config, best_params, name=f"{study.study_name}-best"), best_config)
    log.info("study %s: %s; best %s", study.study_name, states, best_value)
    return SearchResult(study.study_name, storage, out_dir, best_value, best_params, best_config, table, states)
