"""`opttune benchmark`: which optimizer, measured as Schmidt, Schneider & Hennig (ICML 2021,
"Descending through a Crowded Valley") measured it, with the statistics of MLCommons AlgoPerf
(Dahl et al. 2023) where the paper has none.

Every optimizer gets the same tuning budgets: one-shot (its defaults, no tuning; the paper's
one-shot table, tuner.space.crowded_valley) and N trials of its own search (random search by
default, as in the paper). The learning-rate schedule is a condition: each schedule of
`--schedules` has its own one-shot and tuned cells, and its searches fix it. The best setting
of each optimizer, schedule and budget is trained again with `--seeds` seeds (paired across
optimizers, apart from the tuning seeds; as one population where the model stacks) on
train+validation and scored on the test split; those test scores are the result. Each
search is an ordinary study (``NAME.FAMILY.SCHEDULE``); the benchmark's record (settings,
one-shot validation scores and finished re-runs) is a study of its own name with no trials.
Everything already done is kept, so the same command continues an interrupted benchmark.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict, Unpack

import optuna
from optuna.storages import BaseStorage

from tasks.base import Task
from tasks.registry import get_task
from tuner.errors import OpttuneError
from tuner.jsontypes import JsonObject
from tuner.results.benchmark_cells import read_report
from tuner.results.benchmark_files import write_report_files
from tuner.results.benchmark_profile import TaskProfile, task_profile, write_profile_files
from tuner.results.benchmark_record import BenchmarkIds, BenchmarkRecord, BenchmarkSettings
from tuner.results.benchmark_report import (
    ONESHOT,
    BenchmarkReport,
    chosen_trial,
    families_under,
    family_study,
    parse_budgets,
    trial_source,
    within_budget,
)
from tuner.results.retrain import metric_on_test
from tuner.search.events import NullObserver, Observer
from tuner.search.oneshot_validation import validate_oneshots
from tuner.search.reruns import Rerun, run_reruns
from tuner.search.runner import (
    check_population,
    check_sampler_and_pruner,
    search,
    studies_storage,
)
from tuner.space.crowded_valley import (
    ONESHOT_SOURCES,
    OneshotSource,
    crowded_valley_overrides,
    oneshot_setting,
)
from tuner.space.dsl import Fixed
from tuner.space.searchspace import SCHEDULERS, Space, build_space, task_param_values
from tuner.study import studies, trial_attrs
from tuner.study.locations import Stores, redact, resolve_stores
from tuner.study.meta import BENCHMARK_KIND, SETTINGS_ATTR, is_benchmark
from tuner.study.optuna_adapter import storage_of
from tuner.study.stores import check_store_files
from tuner.study.tracker import Tracker
from tuner.training.devices import check_device_spec

DEFAULT_BUDGETS = "oneshot,small"
DEFAULT_SEEDS = 10  # as the paper re-ran its chosen settings (Schmidt et al. 2021, sec. 3)
SPACES = ("opttune", "crowded-valley")
# Settings a continued benchmark must share with the one it continues; budgets and seeds may
# grow, and the target only changes how the report reads.
_FIXED = ("protocol", "optimizers", "schedules", "space", "oneshot_source", "epochs",
          "sampler", "pruner", "seed", "data_dir", "batch_size")


class BenchmarkOptions(TypedDict, total=False):
    """`benchmark`'s options that `benchmark_tasks` passes on to each task's benchmark."""

    optimizers: Sequence[str] | None
    budgets: str
    seeds: int
    schedules: str
    oneshot: str
    space: str
    epochs: int | None
    sampler: str
    pruner: str
    seed: int
    device: str
    data_dir: str | Path | None
    home: str | Path | None
    storage: str | None
    tracking_uri: str | None
    jobs: int | None
    population: int | None


def benchmark(*, task: str, name: str | None = None, optimizers: Sequence[str] | None = None,
              budgets: str = DEFAULT_BUDGETS, seeds: int = DEFAULT_SEEDS,
              schedules: str = "none", oneshot: str = "paper", space: str = "opttune",
              target: float | None = None, epochs: int | None = None,
              sampler: str = "random", pruner: str = "none", seed: int = 0,
              device: str = "auto", data_dir: str | Path | None = None,
              home: str | Path | None = None, storage: str | None = None,
              tracking_uri: str | None = None, jobs: int | None = None,
              population: int | None = None, observer: Observer | None = None) -> BenchmarkReport:
    """Run (or continue) benchmark `name` of `task` and return its report.

    `population`: trials and re-runs trained at once as one stacked model; by default the
    searches train one trial at a time and each setting's `seeds` re-runs train together."""
    observer = observer or NullObserver()
    plan = parse_budgets(budgets)
    schedule_list = parse_schedules(schedules)
    source = _check_options(seeds=seeds, jobs=jobs, oneshot=oneshot, space=space,
                            target=target, sampler=sampler, pruner=pruner,
                            population=population, device=device)
    task_obj = get_task(task)

    def space_of(families: Sequence[str] | None, schedule: str,
                 params: dict[str, list[str]] | None = None) -> Space:
        return build_space(optimizers=families, scheduler=schedule, params=params,
                           epochs=epochs, defaults_first=False,
                           default_batch_size=task_obj.batch_size,
                           task_params=task_obj.param_specs({}))

    first = space_of(optimizers, schedule_list[0])
    families = list(first.families)
    under = {s: families_under(families, s) for s in schedule_list}
    # Each search's own space, checked before any work: one family, one schedule fixed, and
    # the paper's distributions with --space crowded-valley (a family at a time: the paper's
    # log momentum and muon's linear one could not share one space).
    searched = {(f, s): space_of([f], s, _overrides(space, f))
                for s in schedule_list for f in under[s]}
    _show_spaces(first if space == "opttune" else None, searched, under, observer)
    settings = BenchmarkSettings(
        optimizers=tuple(families), schedules=tuple(schedule_list), space=space,
        oneshot_source=source, epochs=first.epochs, sampler=sampler, pruner=pruner,
        seed=seed, batch_size=task_obj.batch_size,
        data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        budgets=tuple(plan), seeds=seeds, target=target,
        oneshot={s: {f: oneshot_config(first, f, schedule=s, source=source)
                     for f in under[s]} for s in schedule_list})
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    check_store_files(stores)
    return _run(name or f"{task_obj.name}-benchmark", task=task, task_obj=task_obj,
                settings=settings, stores=stores, device=device, jobs=jobs,
                population=population, observer=observer)


def _check_options(*, seeds: int, jobs: int | None, oneshot: str, space: str,
                   target: float | None, sampler: str, pruner: str, population: int | None,
                   device: str) -> OneshotSource:
    """Every option's rule, before any work; the one-shot settings' source, checked."""
    if seeds < 1:
        raise OpttuneError(f"--seeds must be >= 1, but got seeds={seeds}")
    if jobs is not None and jobs < 1:
        raise OpttuneError(f"--jobs must be >= 1 for a benchmark, but got jobs={jobs}")
    if oneshot not in ONESHOT_SOURCES:
        raise OpttuneError(f"--oneshot must be one of {', '.join(ONESHOT_SOURCES)}, but got "
                           f"{oneshot!r}")
    if space not in SPACES:
        raise OpttuneError(f"--space must be one of {', '.join(SPACES)} for a benchmark, but "
                           f"got {space!r}")
    if target is not None and not math.isfinite(target):
        raise OpttuneError(f"--target must be a finite number, but got target={target}")
    check_sampler_and_pruner(sampler, pruner)
    if population is not None:
        check_population(population)
    check_device_spec(device)
    return "paper" if oneshot == "paper" else "torch"


def _show_spaces(every: Space | None, searched: dict[tuple[str, str], Space],
                 under: dict[str, list[str]], observer: Observer) -> None:
    """Every optimizer's space (`every`, one space of them all, or each search's own), and
    which optimizers a schedule leaves out, before any data or store."""
    schedules = list(under)
    families = list(dict.fromkeys(f for f, _ in searched))
    if every is not None:
        observer.space_ready(every)
    else:
        for family in families:
            observer.space_ready(next(v for (f, _), v in searched.items() if f == family))
    left_out = [f for f in families if any(f not in under[s] for s in schedules)]
    if left_out:
        observer.notice(f"{', '.join(left_out)} take(s) no learning-rate schedule: compared "
                        f"under 'none' only" + ("" if "none" in schedules
                                                else " (not among --schedules: no cells)"))


def _run(name: str, *, task: str, task_obj: Task, settings: BenchmarkSettings,
         stores: Stores, device: str, jobs: int | None, population: int | None,
         observer: Observer) -> BenchmarkReport:
    """The benchmark's work, from its record on: searches, one-shot validations, re-runs,
    report files. What a record already holds is not done again."""
    data = task_obj.read_data(data_dir=Path(settings.data_dir) if settings.data_dir else None)
    if data.notice:
        observer.notice(data.notice)
    started = time.perf_counter()
    record, head, tracker = _open_record(name, task_obj, settings, data.source, stores)
    tuned = settings.largest_budget
    searches = [(f, s) for s in settings.schedules for f in settings.families_under(s)]
    # Every search exists, with its budget, before any runs: workers may join any of them.
    for quiet in (True, False):
        for family, schedule in searches if tuned else []:
            _search_family(name, family, schedule, task=task, n_trials=tuned,
                           settings=settings, stores=stores, device=device,
                           jobs=0 if quiet else jobs, population=population or 1,
                           benchmark_run=head.mlflow.run_id,
                           observer=NullObserver() if quiet else observer)
    if tuned and any(b.trials == 0 for b in settings.budgets):
        validate_oneshots(record, head, tracker=tracker, task_obj=task_obj, data=data,
                          device=device)
    todo = _reruns_to_do(record, head)
    run_reruns(todo, record=record, head=head, tracker=tracker, task_obj=task_obj, data=data,
               device=device, jobs=jobs, population=population or settings.seeds,
               observer=observer)
    report = read_report(storage_of(record), name)
    files = write_report_files(report, stores=stores, tracker=tracker,
                               seconds=time.perf_counter() - started)
    return dataclasses.replace(report, files=files)


def parse_schedules(text: str) -> list[str]:
    """``none,cosine`` → the schedules the benchmark compares under, each once, in order."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in SCHEDULERS]
    if not names or unknown:
        raise OpttuneError(f"--schedules takes {', '.join(SCHEDULERS)}, comma-separated, but "
                           f"got {text!r}")
    if len(set(names)) != len(names):
        raise OpttuneError(f"--schedules names one schedule twice, but got {text!r}")
    return names


def _overrides(space: str, family: str) -> dict[str, list[str]]:
    """The space flags of `family`'s searches: none for opttune's space, the paper's
    distributions (tuner.space.crowded_valley) for `crowded-valley`."""
    return crowded_valley_overrides([family]) if space == "crowded-valley" else {}


def oneshot_config(space: Space, family: str, *, schedule: str,
                   source: OneshotSource) -> JsonObject:
    """The setting `family` runs untuned under `schedule`: the one-shot table's values
    (tuner.space.crowded_valley: the paper's, or torch's), the task's batch size and its
    hyperparameter defaults."""
    hyper = dict(oneshot_setting(family, source=source).hyper)
    size = space.batch_size
    if size.default is not None:
        batch = size.default
    elif isinstance(size.dist, Fixed):
        batch = size.dist.value
    else:  # a benchmark's spaces take the task's batch size: never searched, never here
        raise OpttuneError(f"{family}'s one-shot setting needs one batch size, but its space "
                           f"searches {size.dist.show()}")
    return {"optimizer": family, **hyper, "batch_size": int(batch), "epochs": space.epochs,
            "scheduler": schedule, **task_param_values(space.task_params)}


def _open_record(name: str, task_obj: Task, settings: BenchmarkSettings, source: str,
                 stores: Stores) -> tuple[optuna.Study, BenchmarkRecord, Tracker]:
    """The benchmark's record (created with its MLflow experiment and run on first use; a
    continued one is checked against these settings), its fixed part, and the MLflow
    tracker."""
    tracker = Tracker(stores.tracking_uri, stores.artifact_root)
    storage: BaseStorage = studies_storage(stores, create=True)
    if studies.exists(storage, name):
        record = studies.load_study(storage, name)
        if not is_benchmark(record):
            raise OpttuneError(f"{name!r} is a study, not a benchmark; give the benchmark "
                               f"another --name")
        stored = BenchmarkRecord.from_attrs(name, record.user_attrs)
        _check_same(name, stored, task_obj, settings, source)
        if stored.settings != settings:  # more budgets or seeds than before
            record.set_user_attr(SETTINGS_ATTR, settings.to_attrs())
        return record, dataclasses.replace(stored, settings=settings), tracker
    stored_settings = settings.to_attrs()
    experiment = tracker.ensure_experiment(name, tags={"opttune.task": task_obj.ref,
                                                       "opttune.kind": BENCHMARK_KIND})
    run_id = tracker.create_run(experiment, name=name, tags={
        "opttune.role": "benchmark", "benchmark": name},
        params={"task": task_obj.ref, "data_source": source,
                **{k: v for k, v in stored_settings.items() if k != "oneshot"}})
    tracker.finish_run(run_id)
    record = optuna.create_study(study_name=name, storage=storage,
                                 direction=task_obj.direction)
    head = BenchmarkRecord(task=task_obj.ref, settings=settings, data_source=source,
                           metric=metric_on_test(task_obj.metric),
                           direction=task_obj.direction,
                           mlflow=BenchmarkIds(experiment_id=experiment, run_id=run_id,
                                               tracking_uri=redact(stores.tracking_uri)))
    for key, value in head.to_attrs().items():
        record.set_user_attr(key, value)
    return record, head, tracker


def _check_same(name: str, stored: BenchmarkRecord, task_obj: Task,
                settings: BenchmarkSettings, source: str) -> None:
    if stored.task != task_obj.ref:
        raise OpttuneError(f"benchmark {name!r} measures task {stored.task!r}, not "
                           f"{task_obj.ref!r}; give another --name")
    if stored.data_source != source:
        raise OpttuneError(f"benchmark {name!r} ran on data from {stored.data_source!r}, "
                           f"but the data now comes from {source!r}; give its --data-dir, or "
                           f"another --name")
    before, now = stored.settings.to_attrs(), settings.to_attrs()
    changed = [f"{key} {before.get(key)!r} → {now[key]!r}" for key in _FIXED
               if before.get(key) != now[key]]
    if changed:
        raise OpttuneError(f"benchmark {name!r} was started with other settings "
                           f"({'; '.join(changed)}); run it with the same ones to continue "
                           f"it (only --budgets and --seeds may grow, and --target change), "
                           f"or give another --name")


def _search_family(name: str, family: str, schedule: str, *, task: str, n_trials: int,
                   settings: BenchmarkSettings, stores: Stores, device: str, jobs: int | None,
                   population: int, benchmark_run: str, observer: Observer) -> None:
    """Bring `family`'s search under `schedule` up to `n_trials` trials (created, or continued
    where it stopped). The schedule is fixed in it: a condition, not a searched knob."""
    search(task=task, study=family_study(name, family, schedule), n_trials=n_trials,
           optimizers=[family], params=_overrides(settings.space, family), scheduler=schedule,
           epochs=settings.epochs, defaults_first=False,
           sampler=settings.sampler, pruner=settings.pruner, seed=settings.seed,
           device=device, data_dir=settings.data_dir, home=stores.home,
           storage=stores.storage_url,
           tracking_uri=stores.tracking_uri if stores.tracking_uri_given else None, jobs=jobs,
           population=population, benchmark=(name, benchmark_run), observer=observer)


def _reruns_to_do(record: optuna.Study, head: BenchmarkRecord) -> list[Rerun]:
    """Each family's chosen setting per schedule and budget, times the seeds, less what is
    already done (one setting chosen by two budgets is trained once)."""
    storage = storage_of(record)
    settings = head.settings
    todo: dict[str, Rerun] = {}
    for schedule in settings.schedules:
        for family in settings.families_under(schedule):
            trials = (studies.load_study(storage, family_study(record.study_name, family,
                                                               schedule))
                      .get_trials(deepcopy=False) if settings.largest_budget else [])
            for budget in settings.budgets:
                if budget.trials == 0:
                    source, config = ONESHOT, settings.oneshot[schedule][family]
                else:
                    chosen = chosen_trial(trials, budget.trials, head.direction)
                    if chosen is None or len(within_budget(trials, budget.trials)) \
                            < budget.trials:
                        continue  # the report says why (e.g. workers still hold trials)
                    source = trial_source(chosen.number)
                    config = {**(trial_attrs.config(chosen) or {})}  # set before it trained
                for index in range(settings.seeds):
                    rerun = Rerun(family, schedule, source, index, dict(config))
                    if rerun.key not in record.user_attrs:
                        todo.setdefault(rerun.key, rerun)
    return list(todo.values())


def benchmark_tasks(*, tasks: Sequence[str], name: str | None = None,
                    target: float | None = None, observer: Observer | None = None,
                    **options: Unpack[BenchmarkOptions]) -> TaskProfile:
    """`benchmark` on each task in turn (each continuable on its own, named ``NAME-TASK``
    or ``TASK-benchmark``), then their performance profile (tuner.results.benchmark_profile)."""
    if len(tasks) < 2 or len(set(tasks)) != len(tasks):
        raise OpttuneError(f"a benchmark over several tasks needs at least two different "
                           f"--task, but got {', '.join(tasks) or 'none'}")
    if target is not None:
        raise OpttuneError("--target is one task's value; over several tasks each measures "
                           "its time to its own one-shot Adam's median: leave --target out")
    named = {t: get_task(t).name for t in tasks}  # every task known before any runs
    reports = [benchmark(task=t, name=f"{name}-{named[t]}" if name else None,
                         observer=observer, **options) for t in tasks]
    stores = resolve_stores(home=options.get("home"), storage=options.get("storage"),
                            tracking_uri=options.get("tracking_uri"))
    return write_profile_files(task_profile(reports), home=stores.home,
                               tracker=Tracker(stores.tracking_uri, stores.artifact_root))
