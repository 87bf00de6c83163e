"""`opttune benchmark`: which optimizer, measured as Schmidt, Schneider & Hennig (ICML 2021,
"Descending through a Crowded Valley") measured it.

Every optimizer gets the same tuning budgets: one-shot (its defaults, no tuning) and N trials
of its own search (random search by default, as in the paper). The best setting of each
optimizer and budget is trained again with several seeds on train+validation and scored once
on the test split; those test scores are the result. Each optimizer's search is an ordinary
study (``NAME.family``); the benchmark's record (settings and finished re-runs) is a study of
its own name with no trials. Everything already done is kept, so the same command continues
a benchmark that was interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.errors import OpttuneError
from tuner.results.benchmark_report import (
    ONESHOT,
    BenchmarkReport,
    Budget,
    chosen_trial,
    family_study,
    is_benchmark,
    parse_budgets,
    read_report,
    trial_source,
    within_budget,
)
from tuner.search.events import NullObserver, Observer
from tuner.search.reruns import Rerun, run_reruns
from tuner.study.records import BENCHMARK_KIND, KIND_ATTR
from tuner.study.stores import Stores, check_store_files, redact, resolve_stores

DEFAULT_BUDGETS = "oneshot,small"
# The paper's one-shot settings for the SGD families (PyTorch's SGD has no learning rate of
# its own worth the name); every other family runs its PyTorch defaults.
PAPER_ONESHOT: dict[str, dict[str, float]] = {
    "sgd": {"lr": 1e-2}, "momentum": {"lr": 1e-2, "momentum": 0.99},
    "nesterov": {"lr": 1e-2, "momentum": 0.99}}
# Settings a continued benchmark must share with the one it continues; budgets and seeds may grow.
_FIXED = ("optimizers", "epochs", "sampler", "pruner", "seed", "data_dir", "batch_size")


def benchmark(*, task: str, name: str | None = None, optimizers: Sequence[str] | None = None,
              budgets: str = DEFAULT_BUDGETS, seeds: int = 3, epochs: int | None = None,
              sampler: str = "random", pruner: str = "none", seed: int = 0,
              device: str = "auto", data_dir: str | Path | None = None,
              home: str | Path | None = None, storage: str | None = None,
              tracking_uri: str | None = None, jobs: int | None = None, population: int = 1,
              observer: Observer | None = None) -> BenchmarkReport:
    """Run (or continue) benchmark `name` of `task` and return its report."""
    from tasks.registry import get_task
    from tuner.search.runner import check_population, check_sampler_and_pruner
    from tuner.space.searchspace import build_space
    from tuner.training.devices import check_device_spec

    observer = observer or NullObserver()
    plan = parse_budgets(budgets)
    if seeds < 1:
        raise OpttuneError(f"--seeds must be >= 1, but got seeds={seeds}")
    if jobs is not None and jobs < 1:
        raise OpttuneError(f"--jobs must be >= 1 for a benchmark, but got jobs={jobs}")
    check_sampler_and_pruner(sampler, pruner)
    check_population(population)
    check_device_spec(device)
    task_obj = get_task(task)
    space = build_space(optimizers=optimizers, epochs=epochs, defaults_first=False,
                        default_batch_size=task_obj.batch_size,
                        task_params=task_obj.param_specs({}))
    observer.space_ready(space)  # every optimizer's space, before any data or store
    families = list(space.families)
    name = name or f"{task_obj.name}-benchmark"
    settings: dict[str, Any] = {
        "optimizers": families, "epochs": space.epochs, "sampler": sampler, "pruner": pruner,
        "seed": seed, "batch_size": task_obj.batch_size,
        "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        "budgets": [{"label": b.label, "trials": b.trials} for b in plan], "seeds": seeds,
        "oneshot": {f: oneshot_config(space, f) for f in families}}
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    check_store_files(stores)
    data = task_obj.read_data(data_dir=Path(settings["data_dir"]) if data_dir else None)
    if data.notice:
        observer.notice(data.notice)
    started = time.perf_counter()
    record, tracker = _open_record(name, task_obj, settings, data.source, stores)
    mlflow = record.user_attrs["mlflow"]
    tuned = max(b.trials for b in plan)
    # Every search exists, with its budget, before any runs: workers may join any of them.
    for family in families if tuned else []:
        _search_family(name, family, task=task, n_trials=tuned, settings=settings,
                       stores=stores, device=device, jobs=0, population=population,
                       benchmark_run=mlflow["run_id"], observer=NullObserver())
    for family in families if tuned else []:
        _search_family(name, family, task=task, n_trials=tuned, settings=settings,
                       stores=stores, device=device, jobs=jobs, population=population,
                       benchmark_run=mlflow["run_id"], observer=observer)
    todo = _reruns_to_do(record, plan, families, settings, seeds=seeds)
    run_reruns(todo, record=record, tracker=tracker, task_obj=task_obj, data=data,
               settings=settings, device=device, jobs=jobs, observer=observer)
    from tuner.study.optuna_adapter import storage_of

    report = read_report(storage_of(record), name)
    from tuner.results.benchmark_files import write_report_files

    files = write_report_files(report, stores=stores, tracker=tracker,
                               seconds=time.perf_counter() - started)
    import dataclasses

    return dataclasses.replace(report, files=files)


def oneshot_config(space: Any, family: str) -> dict[str, Any]:
    """The setting `family` runs untuned: its defaults (the paper's for the SGD families),
    the task's batch size, no schedule, the task's hyperparameter defaults."""
    from tuner.space.families import FAMILIES
    from tuner.space.searchspace import task_param_values

    fam = FAMILIES[family]
    hyper = {p.name: p.default for p in fam.params} | PAPER_ONESHOT.get(family, {})
    batch = space.batch_size.default if space.batch_size.default is not None \
        else space.batch_size.dist.value
    return {"optimizer": family, **hyper, "batch_size": int(batch), "epochs": space.epochs,
            "scheduler": "none", **task_param_values(space.task_params)}


def _storage(stores: Stores) -> Any:
    from tuner.search.runner import studies_storage

    return studies_storage(stores, create=True)


def _open_record(name: str, task_obj: Any, settings: dict[str, Any], source: str,
                 stores: Stores) -> tuple[Any, Any]:
    """The benchmark's record (created with its MLflow experiment and run on first use; a
    continued one is checked against these settings) and the MLflow tracker."""
    import optuna

    from tuner.study import records as studies
    from tuner.study.tracker import Tracker

    tracker = Tracker(stores.tracking_uri, stores.artifact_root)
    storage = _storage(stores)
    if studies.exists(storage, name):
        record = studies.load_study(storage, name)
        if not is_benchmark(record):
            raise OpttuneError(f"{name!r} is a study, not a benchmark; give the benchmark "
                               f"another --name")
        _check_same(name, record, task_obj, settings, source)
        if record.user_attrs["settings"] != settings:  # more budgets or seeds than before
            record.set_user_attr("settings", settings)
        return record, tracker
    experiment = tracker.ensure_experiment(name, tags={"opttune.task": task_obj.ref,
                                                       "opttune.kind": BENCHMARK_KIND})
    run_id = tracker.create_run(experiment, name=name, tags={
        "opttune.role": "benchmark", "benchmark": name},
        params={"task": task_obj.ref, "data_source": source,
                **{k: v for k, v in settings.items() if k != "oneshot"}})
    tracker.finish_run(run_id)
    record = optuna.create_study(study_name=name, storage=storage,
                                 direction=task_obj.direction)
    for key, value in {KIND_ATTR: BENCHMARK_KIND, "task": task_obj.ref, "settings": settings,
                       "data_source": source,
                       "objective": {"metric": _test_metric(task_obj.metric),
                                     "direction": task_obj.direction},
                       "mlflow": {"experiment_id": experiment, "run_id": run_id,
                                  "tracking_uri": redact(stores.tracking_uri)}}.items():
        record.set_user_attr(key, value)
    return record, tracker


def _test_metric(metric: str) -> str:
    from tuner.results.retrain import metric_on_test

    return metric_on_test(metric)


def _check_same(name: str, record: Any, task_obj: Any, settings: dict[str, Any],
                source: str) -> None:
    stored = record.user_attrs
    if stored["task"] != task_obj.ref:
        raise OpttuneError(f"benchmark {name!r} measures task {stored['task']!r}, not "
                           f"{task_obj.ref!r}; give another --name")
    if stored["data_source"] != source:
        raise OpttuneError(f"benchmark {name!r} ran on data from {stored['data_source']!r}, "
                           f"but the data now comes from {source!r}; give its --data-dir, or "
                           f"another --name")
    changed = [f"{key} {stored['settings'].get(key)!r} → {settings[key]!r}" for key in _FIXED
               if stored["settings"].get(key) != settings[key]]
    if changed:
        raise OpttuneError(f"benchmark {name!r} was started with other settings "
                           f"({'; '.join(changed)}); run it with the same ones to continue "
                           f"it (only --budgets and --seeds may grow), or give another --name")


def _search_family(name: str, family: str, *, task: str, n_trials: int,
                   settings: dict[str, Any], stores: Stores, device: str, jobs: int | None,
                   population: int, benchmark_run: str, observer: Observer) -> None:
    """Bring `family`'s study up to `n_trials` trials (created, or continued where it stopped)."""
    from tuner.search.runner import search

    search(task=task, study=family_study(name, family), n_trials=n_trials,
           optimizers=[family], epochs=settings["epochs"], defaults_first=False,
           sampler=settings["sampler"], pruner=settings["pruner"], seed=settings["seed"],
           device=device, data_dir=settings["data_dir"], home=stores.home,
           storage=stores.storage_url,
           tracking_uri=stores.tracking_uri if stores.tracking_uri_given else None, jobs=jobs,
           population=population, benchmark=(name, benchmark_run), observer=observer)


def _reruns_to_do(record: Any, plan: Sequence[Budget], families: Sequence[str],
                  settings: dict[str, Any], *, seeds: int) -> list[Rerun]:
    """Each family's chosen setting per budget, times the seeds, less what is already done
    (one setting chosen by two budgets is trained once)."""
    from tuner.study.optuna_adapter import storage_of
    from tuner.study.records import load_study

    storage = storage_of(record)
    direction = record.user_attrs["objective"]["direction"]
    todo: dict[str, Rerun] = {}
    for family in families:
        trials = (load_study(storage, family_study(record.study_name, family))
                  .get_trials(deepcopy=False) if any(b.trials for b in plan) else [])
        for budget in plan:
            if budget.trials == 0:
                source, config = ONESHOT, settings["oneshot"][family]
            else:
                chosen = chosen_trial(trials, budget.trials, direction)
                if chosen is None or len(within_budget(trials, budget.trials)) < budget.trials:
                    continue  # the report says why (e.g. workers still hold trials)
                source, config = trial_source(chosen.number), chosen.user_attrs["config"]
            for index in range(seeds):
                rerun = Rerun(family, source, index, dict(config))
                if rerun.key not in record.user_attrs:
                    todo.setdefault(rerun.key, rerun)
    return list(todo.values())
