"""Running a study: the one code path behind `opttune search`, `resume` and `tuner.search`.

Order matters for "bad input fails before any work": flags, space, task, device and data are
all checked before a store is opened or created; then trials run one after another with
ask/tell, so that the budget is the study's total and an interrupted trial can be marked and
queued again before the process exits.

Importing this module loads neither torch nor MLflow: flags are refused at once, and a
search starts its MLflow process (tuner.study.tracker_process) before it imports torch with
the trial loop, so that the two imports overlap.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.pruners import BasePruner
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

from tasks.registry import get_task
from tuner.errors import OpttuneError, StoreError
from tuner.search import pruning, sampling
from tuner.search.events import NullObserver, Observer
from tuner.search.jobs import plan_slots, run_jobs
from tuner.search.session import SearchResult
from tuner.space.diff import describe_diff
from tuner.space.families import check_installed
from tuner.space.files import load_space_file
from tuner.space.searchspace import Space, build_space, task_param_values
from tuner.study import studies, tracker_process
from tuner.study.locations import Stores, is_server_url, redact, resolve_stores, sqlite_path
from tuner.study.meta import StudyMeta, set_settings, set_space, study_tracking_uri
from tuner.study.names import check_study_name
from tuner.study.settings import MlflowIds, StudySettings
from tuner.study.space_conflicts import optuna_conflicts, recorded_distributions
from tuner.study.stores import check_store_files, open_storage
from tuner.study.tracker import Tracker
from tuner.study.tracker_process import TrackerProcess
from tuner.training.devices import check_device_spec, resolve_device

if TYPE_CHECKING:
    from tasks.base import Task
    from tasks.data import TaskData


def search(
    *,
    task: str,
    study: str | None = None,
    n_trials: int = 20,
    timeout: float | None = None,
    optimizers: Sequence[str] | None = None,
    params: Mapping[str, Sequence[str]] | None = None,
    task_params: Mapping[str, str] | None = None,
    batch_size: str | None = None,
    epochs: int | None = None,
    scheduler: str | None = None,
    space_file: str | Path | None = None,
    defaults_first: bool = True,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = None,
    trial_seed: int | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
    home: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    allow_changed_space: bool = False,
    jobs: int | None = None,
    devices: str | Sequence[str] | None = None,
    trials_per_device: int = 1,
    population: int = 1,
    benchmark: tuple[str, str] | None = None,
    observer: Observer | None = None,
) -> SearchResult:
    """Create the study `study` (or continue it) and run trials until it has `n_trials`.

    `trial_seed` trains every trial with that one seed instead of the study's per-trial
    seeds: the way to re-run one trial exactly (see `opttune best`).
    `jobs` trials run at once in as many processes, on `devices` (`trials_per_device` per
    device); `jobs=0` only creates the study (or sets its budget) for workers to run.
    `population` trials train at once as one stacked model where they can (results do not
    depend on it; see tuner.training.population); stored, so resume and workers reuse it.
    `benchmark` (its name and MLflow run) makes the study one of a benchmark's: its runs go
    to the benchmark's experiment, under the benchmark's run.
    """
    observer = observer or NullObserver()
    slots = _check_flags_and_plan_slots(
        study=study, n_trials=n_trials, sampler=sampler, pruner=pruner, population=population,
        device=device, jobs=jobs, devices=devices, trials_per_device=trials_per_device)
    task_obj, space = _task_and_space(
        task, space_file=space_file, optimizers=optimizers, params=params,
        task_params=task_params, batch_size=batch_size, epochs=epochs, scheduler=scheduler,
        defaults_first=defaults_first)
    observer.space_ready(space)  # shown before any data is read or store is touched
    settings = _search_settings(sampler=sampler, pruner=pruner, seed=seed, trial_seed=trial_seed,
                                device=device, n_trials=n_trials, population=population,
                                data_dir=data_dir, benchmark=benchmark)
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    check_store_files(stores)  # a damaged store fails now, before the data is read
    return _prepare_and_run(name=study or task_obj.name, task_obj=task_obj, space=space,
                            settings=settings, stores=stores, target=n_trials, timeout=timeout,
                            allow_changed_space=allow_changed_space, observer=observer,
                            must_exist=False, slots=slots)


def _check_flags_and_plan_slots(*, study: str | None, n_trials: int, sampler: str, pruner: str,
                                population: int, device: str, jobs: int | None,
                                devices: str | Sequence[str] | None,
                                trials_per_device: int) -> list[str] | None:
    """Refuse bad flags of :func:`search` before any file is read; then the `--jobs` slots."""
    if n_trials < 1:
        raise OpttuneError(f"n_trials must be >= 1, but got n_trials={n_trials}")
    check_sampler_and_pruner(sampler, pruner)
    check_population(population)
    check_device_spec(device)
    if study is not None:
        check_study_name(study)
    return plan_slots(jobs=jobs, device=device, devices=devices,
                      trials_per_device=trials_per_device)


def _task_and_space(task: str, *, space_file: str | Path | None,
                    optimizers: Sequence[str] | None,
                    params: Mapping[str, Sequence[str]] | None,
                    task_params: Mapping[str, str] | None, batch_size: str | None,
                    epochs: int | None, scheduler: str | None,
                    defaults_first: bool) -> tuple[Task, Space]:
    """The task named `task` and the search space the flags and `space_file` give for it."""
    file_values = load_space_file(Path(space_file)) if space_file else None
    task_obj = get_task(task)
    space = build_space(optimizers=optimizers, params=params, batch_size=batch_size,
                        epochs=epochs, scheduler=scheduler, file_values=file_values,
                        default_batch_size=task_obj.batch_size, defaults_first=defaults_first,
                        task_params=task_obj.param_specs(task_params))
    return task_obj, space


def _search_settings(*, sampler: str, pruner: str, seed: int | None, trial_seed: int | None,
                     device: str, n_trials: int, population: int,
                     data_dir: str | Path | None,
                     benchmark: tuple[str, str] | None) -> StudySettings:
    """The settings a new study stores (`data_dir` made absolute, so resume finds it)."""
    benchmark_name, benchmark_run_id = benchmark if benchmark is not None else (None, None)
    return StudySettings(
        sampler=sampler, pruner=pruner, seed=seed, trial_seed=trial_seed, device=device,
        n_trials=n_trials, population=population,
        data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        benchmark=benchmark_name, benchmark_run_id=benchmark_run_id)


def resume(
    name: str,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    home: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    jobs: int | None = None,
    devices: str | Sequence[str] | None = None,
    trials_per_device: int = 1,
    population: int | None = None,
    observer: Observer | None = None,
) -> SearchResult:
    """Continue study `name` with its stored task, space and settings.

    `n_trials` more trials are run (default: up to the study's stored budget, which `n_trials`
    raises for every process of the study); `jobs`, `devices`, `trials_per_device` as in
    :func:`search`; `population` overrides the stored one for this run (None keeps it).
    """
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    check_store_files(stores)
    storage_obj = studies_storage(stores, create=False)
    meta = StudyMeta.from_study(studies.load_study(storage_obj, name))
    logged_to = study_tracking_uri(name, meta, tracking_uri)
    if logged_to is not None:  # where the study's runs are, not this home's default
        stores = dataclasses.replace(stores, tracking_uri=logged_to)
    return continue_study(name, stores=stores, n_trials=n_trials, timeout=timeout,
                          device=device, jobs=jobs, devices=devices,
                          trials_per_device=trials_per_device, population=population,
                          observer=observer, storage_obj=storage_obj)


def continue_study(name: str, *, stores: Stores, n_trials: int | None = None,
                   timeout: float | None = None, device: str | None = None,
                   jobs: int | None = None, devices: str | Sequence[str] | None = None,
                   trials_per_device: int = 1, population: int | None = None,
                   observer: Observer | None = None, storage_obj: BaseStorage | None = None,
                   seed_salt: int = 0, tracker: Tracker | None = None) -> SearchResult:
    """:func:`resume` on resolved stores; also how workers and `--jobs` processes join a
    study (`seed_salt` gives each process its own sampler seed; `tracker`, one they opened
    on the study's MLflow store)."""
    observer = observer or NullObserver()
    if n_trials is not None and n_trials < 1:
        raise OpttuneError(f"--n-trials must be >= 1, but got {n_trials}")
    if population is not None:
        check_population(population)
    if device is not None:
        check_device_spec(device)
        if devices:
            raise OpttuneError(f"give --device or --devices, not both (got --device {device})")
    check_store_files(stores)
    if storage_obj is None:
        storage_obj = studies_storage(stores, create=False)
    study = studies.load_study(storage_obj, name)
    meta = StudyMeta.from_study(study)
    settings = meta.settings
    if device is not None:
        settings = dataclasses.replace(settings, device=device)
    if population is not None:  # for this run (and its --jobs processes) only, like --device
        settings = dataclasses.replace(settings, population=population)
    # Without --devices, --jobs uses the study's device (or the override) on this machine.
    slots = plan_slots(jobs=jobs, device=None if devices else settings.device,
                       devices=devices, trials_per_device=trials_per_device)
    done = studies.counted(study.get_trials(deepcopy=False))
    stored_budget = settings.n_trials if settings.n_trials is not None else done
    target = done + n_trials if n_trials is not None else stored_budget
    task_obj = get_task(meta.task)
    return _prepare_and_run(name=name, task_obj=task_obj, space=meta.space, settings=settings,
                            stores=stores, target=target, timeout=timeout,
                            allow_changed_space=False, observer=observer, must_exist=True,
                            storage_obj=storage_obj, slots=slots, seed_salt=seed_salt,
                            tracker=tracker)


def studies_storage(stores: Stores, *, create: bool) -> RDBStorage:
    """The Optuna storage of the study store of `stores`."""
    # Heartbeats where processes on other machines may die unseen (a server database).
    return open_storage(stores.storage_url, create=create,
                        heartbeat=is_server_url(stores.storage_url))


def _prepare_and_run(*, name: str, task_obj: Task, space: Space, settings: StudySettings,
                     stores: Stores, target: int, timeout: float | None,
                     allow_changed_space: bool, observer: Observer, must_exist: bool,
                     storage_obj: BaseStorage | None = None, slots: list[str] | None = None,
                     seed_salt: int = 0, tracker: Tracker | None = None) -> SearchResult:
    """Open both stores, create or load the study, and run its trials here or in jobs.

    `tracker`: one opened by the caller (a worker's); else MLflow is tracked through a
    process of its own started now, whose import overlaps torch's (or in this process when
    MLflow is imported here already)."""
    check_installed(list(space.families))  # a stored space's package may have gone since
    run = functools.partial(
        _prepare_and_run_with, name=name, task_obj=task_obj, space=space, settings=settings,
        stores=stores, target=target, timeout=timeout, allow_changed_space=allow_changed_space,
        observer=observer, must_exist=must_exist, storage_obj=storage_obj, slots=slots,
        seed_salt=seed_salt)
    if tracker is not None or not tracker_process.wanted():
        return run(tracker=tracker)
    with tracker_process.TrackerProcess() as process:
        return run(tracker=process)


def _prepare_and_run_with(*, name: str, task_obj: Task, space: Space, settings: StudySettings,
                          stores: Stores, target: int, timeout: float | None,
                          allow_changed_space: bool, observer: Observer, must_exist: bool,
                          storage_obj: BaseStorage | None, slots: list[str] | None,
                          seed_salt: int, tracker: Tracker | None) -> SearchResult:
    # torch (over a second to import): now that the MLflow process imports alongside.
    from tuner.search import trial_loop  # noqa: PLC0415  (heavy: see the module docstring)

    device = _trial_device(settings, slots)
    data_dir = settings.data_dir
    task_data = task_obj.read_data(data_dir=Path(data_dir) if data_dir else None)
    if task_data.notice:
        observer.notice(task_data.notice)
    _check_task(task_obj, task_data, space)
    tracker, storage_obj = _open_stores(stores, tracker=tracker, storage_obj=storage_obj)
    pruner = pruning.make_pruner(settings.pruner, epochs=space.epochs)

    if studies.exists(storage_obj, name):
        study, meta = _load_existing_study(
            name=name, task_obj=task_obj, space=space, settings=settings, target=target,
            source=task_data.source, allow_changed_space=allow_changed_space,
            storage_obj=storage_obj, pruner=pruner, seed_salt=seed_salt)
    else:
        if must_exist:
            raise StoreError(f"study {name!r} disappeared from the store")
        study, meta = _create_new_study(
            name=name, task_obj=task_obj, space=space, settings=settings, stores=stores,
            source=task_data.source, storage_obj=storage_obj, pruner=pruner, tracker=tracker)

    tracker.ready()
    if slots is not None and len(slots) != 1:
        if isinstance(tracker, TrackerProcess):
            tracker.close()  # each job tracks its own trials

        return run_jobs(name=name, stores=stores, slots=slots, target=target, timeout=timeout,
                        study=study, meta=meta, observer=observer,
                        population=settings.population,
                        announced=[task_data.notice] if task_data.notice else [])
    return trial_loop.run_here(name=name, task=task_obj, meta=meta, task_data=task_data,
                               device=device, stores=stores, settings=settings, study=study,
                               tracker=tracker, observer=observer, target=target,
                               timeout=timeout)


def _trial_device(settings: StudySettings, slots: list[str] | None) -> str:
    """The device trials run on in this process."""
    # slots: None, trials run here one by one; [d], here on d; else in len(slots) processes.
    if slots is None:
        return resolve_device(settings.device)
    return slots[0] if len(slots) == 1 else "cpu"


def _open_stores(stores: Stores, *, tracker: Tracker | None,
                 storage_obj: BaseStorage | None) -> tuple[Tracker, BaseStorage]:
    """The opened tracker and Optuna storage, in the order that fails best."""
    # Refuse a bad store before the other one is created; a server store (which creates no
    # file when it fails) is opened before an SQLite one.
    check_store_files(stores)
    server_first = sqlite_path(stores.tracking_uri) is None
    if server_first:
        tracker = open_tracker(tracker, stores, wait=True)
    if storage_obj is None:
        storage_obj = studies_storage(stores, create=True)
    if not server_first:  # opens while the study is read; its errors come before any trial
        tracker = open_tracker(tracker, stores, wait=False)
    assert tracker is not None
    return tracker, storage_obj


def _load_existing_study(*, name: str, task_obj: Task, space: Space, settings: StudySettings,
                         target: int, source: str, allow_changed_space: bool,
                         storage_obj: BaseStorage, pruner: BasePruner,
                         seed_salt: int) -> tuple[optuna.Study, StudyMeta]:
    """Load study `name` after checking it is this one, updating its space and budget."""
    probe = studies.load_study(storage_obj, name)
    meta = StudyMeta.from_study(probe)
    _check_same_study(name, meta, task_obj, space, source, allow_changed_space,
                      probe.get_trials(deepcopy=False))
    n_before = len(probe.trials)
    sampler = sampling.make_sampler(settings.sampler, families=list(space.families),
                                    seed=_sampler_seed(settings.seed, n_before, seed_salt),
                                    searched=space.searched(), population=settings.population)
    study = studies.load_study(storage_obj, name, sampler=sampler, pruner=pruner)
    if allow_changed_space and meta.space != space:
        set_space(study, space)
        meta = StudyMeta.from_study(study)
    if target != meta.settings.n_trials:  # the budget every process works to
        set_settings(study, dataclasses.replace(meta.settings, n_trials=target))
    return study, meta


def _create_new_study(*, name: str, task_obj: Task, space: Space, settings: StudySettings,
                      stores: Stores, source: str, storage_obj: BaseStorage,
                      pruner: BasePruner, tracker: Tracker) -> tuple[optuna.Study, StudyMeta]:
    """Start the study's MLflow parent run, then create study `name` in the store."""
    experiment_id, parent = tracker.start_study(
        name, task=task_obj.ref, data_source=source,
        settings=settings.to_attrs(), space=space.to_dict())
    meta = StudyMeta(
        task=task_obj.ref, space=space, data_source=source,
        metric=task_obj.metric, direction=task_obj.direction, settings=settings,
        mlflow=MlflowIds(experiment_id=experiment_id, parent_run_id=parent,
                         tracking_uri=redact(stores.tracking_uri),
                         tracking_uri_given=stores.tracking_uri_given))
    sampler = sampling.make_sampler(settings.sampler, families=list(space.families),
                                    seed=settings.seed, searched=space.searched(),
                                    population=settings.population)
    study = studies.create_study(storage_obj, name, meta, sampler=sampler, pruner=pruner)
    return study, meta


def open_tracker(tracker: Tracker | None, stores: Stores, *, wait: bool) -> Tracker:
    """The study's tracker: `tracker` opened on the study's MLflow store if it is an unopened
    process, as it is if it is open, else one in this process."""
    if isinstance(tracker, TrackerProcess) and not tracker.opened:
        tracker.open(stores.tracking_uri, stores.artifact_root, wait=wait)
        return tracker
    return tracker or Tracker(stores.tracking_uri, stores.artifact_root)


def check_sampler_and_pruner(sampler: str, pruner: str) -> None:
    """Refuse an unknown --sampler or --pruner."""
    if sampler not in sampling.SAMPLERS:
        raise OpttuneError(f"--sampler must be one of {', '.join(sampling.SAMPLERS)}, "
                           f"but got {sampler!r}")
    if pruner not in pruning.PRUNERS:
        raise OpttuneError(f"--pruner must be one of {', '.join(pruning.PRUNERS)}, "
                           f"but got {pruner!r}")


def check_population(population: int) -> None:
    if population < 1:
        raise OpttuneError(f"--population must be >= 1, but got {population}")


def _sampler_seed(seed: int | None, n_before: int, salt: int) -> int | None:
    """A continued study's sampler seed: new draws after `n_before` trials, and different
    draws in each process that joins it (`salt`)."""
    if seed is None:
        return None
    return (seed + n_before + 1_000_003 * salt) % 2**32


def _check_same_study(name: str, meta: StudyMeta, task_obj: Task, space: Space,
                      source: str, allow_changed_space: bool,
                      trials: Sequence[FrozenTrial] = ()) -> None:
    if meta.task != task_obj.ref:
        raise OpttuneError(f"study {name!r} tunes task {meta.task!r}, not {task_obj.ref!r}; "
                           f"choose another --study name")
    if meta.data_source != source:
        raise OpttuneError(f"study {name!r} was run on data from {meta.data_source!r}, but the "
                           f"data now comes from {source!r}; a study never mixes data sources "
                           f"(give the same --data-dir, or start a new --study)")
    if meta.space != space and not allow_changed_space:
        raise OpttuneError(f"the search space of study {name!r} differs from the stored one: "
                           f"{describe_diff(meta.space, space)}; run `opttune resume {name}` "
                           f"to keep the stored space, pass --allow-changed-space to continue "
                           f"with the new one, or choose another --study name")
    if meta.space != space:
        conflicts = optuna_conflicts(recorded_distributions(trials), space)
        if conflicts:  # Optuna would refuse at the first trial, with a cryptic error
            raise OpttuneError(f"study {name!r} cannot continue with this space, even with "
                               f"--allow-changed-space: it changes {'; '.join(conflicts)}, and "
                               f"a study keeps one choice list and one range scale per "
                               f"parameter (range bounds may move, values may be fixed or "
                               f"freed); choose another --study name for this space")


def _check_task(task_obj: Task, data: TaskData, space: Space) -> None:
    """One forward pass and loss on two samples (with the task hyperparameters' defaults),
    so that a broken task fails with its precise reason before any study is touched."""
    from tasks.checks import check_model  # noqa: PLC0415  (heavy: torch; see the module docstring)

    try:
        check_model(task_obj, data, task_param_values(space.task_params))
    finally:
        gc.collect()
