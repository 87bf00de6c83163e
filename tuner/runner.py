"""Running a study: the one code path behind `opttune search`, `resume` and `tuner.search`.

Order matters for "bad input fails before any work": flags, space, task, device and data are
all checked before a store is opened or created; then trials run one after another with
ask/tell, so that the budget is the study's total and an interrupted trial can be marked and
queued again before the process exits.
"""

from __future__ import annotations

import gc
import math
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner import study as studies
from tuner.config import TrialConfig
from tuner.errors import OpttuneError, StoreError
from tuner.events import NullObserver, Observer, TrialOutcome
from tuner.space import DEFAULTS_ATTR, Space
from tuner.stores import Stores, redact, resolve_stores


class Interrupted(Exception):
    """The search was stopped by SIGINT or SIGTERM after marking everything cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


@dataclass
class SearchResult:
    study: str
    metric: str
    direction: str
    device: str
    data_source: str
    stores: Stores
    trials: list[TrialOutcome] = field(default_factory=list)  # run in this call
    all_trials: list[TrialOutcome] = field(default_factory=list)  # the whole study
    best: TrialOutcome | None = None
    total_counted: int = 0
    target: int = 0


@dataclass
class Session:
    """Everything a run of trials needs, resolved and checked."""

    name: str
    task: Any
    space: Space
    meta: studies.StudyMeta
    data: Any
    device: str
    stores: Stores
    settings: dict[str, Any]


def search(
    *,
    task: str,
    study: str | None = None,
    n_trials: int = 20,
    timeout: float | None = None,
    optimizers: Sequence[str] | None = None,
    params: Mapping[str, Sequence[str]] | None = None,
    batch_size: str | None = None,
    epochs: int | None = None,
    scheduler: str | None = None,
    space_file: str | Path | None = None,
    defaults_first: bool = True,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
    home: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    allow_changed_space: bool = False,
    observer: Observer | None = None,
) -> SearchResult:
    """Create the study `study` (or continue it) and run trials until it has `n_trials`."""
    from tuner import sampling
    from tuner.devices import check_device_spec
    from tuner.spacefile import load_space_file
    from tuner.space import build_space

    observer = observer or NullObserver()
    if n_trials < 1:
        raise OpttuneError(f"n_trials must be >= 1, but got n_trials={n_trials}")
    if sampler not in sampling.SAMPLERS:
        raise OpttuneError(f"--sampler must be one of {', '.join(sampling.SAMPLERS)}, "
                           f"but got {sampler!r}")
    if pruner not in sampling.PRUNERS:
        raise OpttuneError(f"--pruner must be one of {', '.join(sampling.PRUNERS)}, "
                           f"but got {pruner!r}")
    check_device_spec(device)
    file_values = load_space_file(Path(space_file)) if space_file else None
    from tasks.registry import get_task

    task_obj = get_task(task)
    space = build_space(optimizers=optimizers, params=params, batch_size=batch_size,
                        epochs=epochs, scheduler=scheduler, file_values=file_values,
                        default_batch_size=task_obj.batch_size, defaults_first=defaults_first)
    name = study or default_study_name(task_obj.ref or task)
    settings = {"sampler": sampler, "pruner": pruner, "seed": seed, "device": device,
                "n_trials": n_trials,
                "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None}
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    return _prepare_and_run(name=name, task_obj=task_obj, space=space, settings=settings,
                            stores=stores, target=n_trials, timeout=timeout,
                            allow_changed_space=allow_changed_space, observer=observer,
                            must_exist=False)


def resume(
    name: str,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    home: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    observer: Observer | None = None,
) -> SearchResult:
    """Continue study `name` with its stored task, space and settings.

    `n_trials` more trials are run (default: up to the study's stored budget).
    """
    from tasks.registry import get_task
    from tuner.devices import check_device_spec

    observer = observer or NullObserver()
    if n_trials is not None and n_trials < 1:
        raise OpttuneError(f"--n-trials must be >= 1, but got {n_trials}")
    if device is not None:
        check_device_spec(device)
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    storage_obj = studies_storage(stores, create=False)
    study = studies.load_study(storage_obj, name)
    meta = studies.StudyMeta.from_study(study)
    settings = dict(meta.settings)
    if device is not None:
        settings["device"] = device
    done = studies.counted(study.get_trials(deepcopy=False))
    target = done + n_trials if n_trials is not None else int(settings.get("n_trials", done))
    task_obj = get_task(meta.task)
    return _prepare_and_run(name=name, task_obj=task_obj, space=meta.space, settings=settings,
                            stores=stores, target=target, timeout=timeout,
                            allow_changed_space=False, observer=observer, must_exist=True,
                            storage_obj=storage_obj)


def default_study_name(task_ref: str) -> str:
    """A study's default name is its task's name (its attribute name for module:attr)."""
    return task_ref.rpartition(":")[2] if ":" in task_ref else task_ref


def studies_storage(stores: Stores, *, create: bool) -> Any:
    from tuner.stores import open_storage

    return open_storage(stores.storage_url, create=create)


def _prepare_and_run(*, name: str, task_obj: Any, space: Space, settings: dict[str, Any],
                     stores: Stores, target: int, timeout: float | None,
                     allow_changed_space: bool, observer: Observer, must_exist: bool,
                     storage_obj: Any = None) -> SearchResult:
    from tuner import sampling
    from tuner.devices import resolve_device
    from tuner.train import DeviceData

    device = resolve_device(settings.get("device") or "auto")
    data_dir = settings.get("data_dir")
    task_data = task_obj.load_data(data_dir=Path(data_dir) if data_dir else None)
    if task_data.notice:
        observer.notice(task_data.notice)
    _check_task(task_obj, task_data)

    if storage_obj is None:
        storage_obj = studies_storage(stores, create=True)
    from tuner.tracking import Tracker

    tracker = Tracker(stores.tracking_uri, stores.artifact_root)
    seed = settings.get("seed")
    families = list(space.families)
    pruner = sampling.make_pruner(settings["pruner"], epochs=space.epochs)

    if studies.exists(storage_obj, name):
        probe = studies.load_study(storage_obj, name)
        meta = studies.StudyMeta.from_study(probe)
        _check_same_study(name, meta, task_obj, space, task_data.source, allow_changed_space)
        n_before = len(probe.trials)
        sampler = sampling.make_sampler(settings["sampler"], families=families,
                                        seed=None if seed is None else seed + n_before)
        study = studies.load_study(storage_obj, name, sampler=sampler, pruner=pruner)
        if allow_changed_space and meta.space != space:
            study.set_user_attr("space", studies.StudyMeta(
                meta.task, space, meta.data_source, meta.metric, meta.direction,
                meta.settings, meta.mlflow).user_attrs()["space"])
            meta = studies.StudyMeta.from_study(study)
        if not must_exist and settings.get("n_trials") != meta.settings.get("n_trials"):
            study.set_user_attr("settings", {**meta.settings, "n_trials": target})
    else:
        if must_exist:
            raise StoreError(f"study {name!r} disappeared from the store")
        experiment_id = tracker.ensure_experiment(name, tags={"opttune.task": task_obj.ref})
        parent = tracker.create_parent(experiment_id, study=name, params={
            "task": task_obj.ref, "data_source": task_data.source, **{
                k: v for k, v in settings.items() if v is not None}}, tags={"study": name})
        tracker.log_text(parent, _space_text(space), "space.json")
        meta = studies.StudyMeta(
            task=task_obj.ref, space=space, data_source=task_data.source,
            metric=task_obj.metric, direction=task_obj.direction, settings=settings,
            mlflow={"experiment_id": experiment_id, "parent_run_id": parent,
                    "tracking_uri": redact(stores.tracking_uri)})
        sampler = sampling.make_sampler(settings["sampler"], families=families, seed=seed)
        study = studies.create_study(storage_obj, name, meta, sampler=sampler, pruner=pruner)

    session = Session(name=name, task=task_obj, space=meta.space, meta=meta,
                      data=DeviceData.from_task_data(task_data, device), device=device,
                      stores=stores, settings=settings)
    from tuner.trials import TrialRunner

    runner = TrialRunner(session=session, study=study, tracker=tracker, observer=observer)
    return runner.run(target=target, timeout=timeout)


def _space_text(space: Space) -> str:
    import json

    return json.dumps(space.to_dict(), indent=2, sort_keys=True)


def _check_same_study(name: str, meta: studies.StudyMeta, task_obj: Any, space: Space,
                      source: str, allow_changed_space: bool) -> None:
    if meta.task != task_obj.ref:
        raise OpttuneError(f"study {name!r} tunes task {meta.task!r}, not {task_obj.ref!r}; "
                           f"choose another --study name")
    if meta.data_source != source:
        raise OpttuneError(f"study {name!r} was run on data from {meta.data_source!r}, but the "
                           f"data now comes from {source!r}; a study never mixes data sources "
                           f"(give the same --data-dir, or start a new --study)")
    if meta.space != space and not allow_changed_space:
        from tuner.spacediff import describe_diff

        raise OpttuneError(f"the search space of study {name!r} differs from the stored one: "
                           f"{describe_diff(meta.space, space)}; run `opttune resume {name}` "
                           f"to keep the stored space, pass --allow-changed-space to continue "
                           f"with the new one, or choose another --study name")


def _check_task(task_obj: Any, data: Any) -> None:
    """One forward pass and loss on two samples, so a broken task fails before any study."""
    import torch

    from tuner.train import _loss_fn

    try:
        defaults = {}
        model = task_obj.build_model(defaults)
        with torch.no_grad():
            out = model(data.train_x[:2])
            loss = _loss_fn(task_obj)(out, data.train_y[:2])
        if not math.isfinite(float(loss)):
            raise ValueError(f"the loss of an untrained model is {float(loss)}")
    except Exception as exc:
        raise OpttuneError(f"task {task_obj.name!r} does not work: its model's output on a "
                           f"batch of shape {tuple(data.train_x[:2].shape)} does not fit the "
                           f"{task_obj.loss} loss against targets of shape "
                           f"{tuple(data.train_y[:2].shape)} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        gc.collect()


@contextmanager
def signals_as_interrupts() -> Iterator[list[int]]:
    """Turn SIGTERM into KeyboardInterrupt so both stop a trial the same clean way."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield received
        return
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
