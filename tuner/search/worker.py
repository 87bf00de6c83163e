"""Joining a study from any process or machine: `opttune worker NAME`, and each `--jobs` process.
A benchmark's name joins each of its searches in turn.

A worker needs nothing but the study's name and store: the task, space, data source and
settings are read from the study, the MLflow store from it too (unless `--tracking-uri` says
otherwise), and trials run until the study's budget is met, counted over every process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO

import optuna

from tuner.errors import OpttuneError, StoreError
from tuner.logs import quiet_library_logs
from tuner.results.benchmark_record import BenchmarkSettings
from tuner.search import runner
from tuner.search.events import Observer, StudyStart, TrialOutcome
from tuner.search.session import SearchResult
from tuner.signals import Interrupted
from tuner.space.searchspace import Space
from tuner.study import studies, tracker_process
from tuner.study.locations import redact, resolve_stores, sqlite_path
from tuner.study.meta import SETTINGS_ATTR, StudyMeta, is_benchmark, study_tracking_uri
from tuner.study.optuna_adapter import storage_of
from tuner.study.settings import MlflowIds
from tuner.study.tracker import Tracker


def work(name: str, *, home: str | Path | None = None, storage: str | None = None,
         tracking_uri: str | None = None, device: str | None = None, jobs: int | None = None,
         devices: str | list[str] | None = None, trials_per_device: int = 1,
         timeout: float | None = None, population: int | None = None,
         observer: Observer | None = None) -> SearchResult:
    """Run trials of study `name` until its budget is met.
    `population` overrides the study's stored population for this worker (None keeps it)."""
    stores = resolve_stores(home=home, storage=storage, tracking_uri=tracking_uri)
    with contextlib.ExitStack() as stack:
        # MLflow imports in a process of its own while the study is read (see runner)
        process = stack.enter_context(tracker_process.TrackerProcess()) \
            if tracker_process.wanted() else None
        storage_obj = runner.studies_storage(stores, create=False)
        found = studies.load_study(storage_obj, name)
        if is_benchmark(found):
            stack.close()
            return _work_on_benchmark(found, functools.partial(
                work, home=home, storage=storage, tracking_uri=tracking_uri, device=device,
                jobs=jobs, devices=devices, trials_per_device=trials_per_device,
                timeout=timeout, population=population, observer=observer))
        meta = StudyMeta.from_study(found)
        stored = study_tracking_uri(name, meta, tracking_uri, always=True)
        if stored is not None:
            stores = replace(stores, tracking_uri=stored)
        if meta.mlflow.experiment_id:
            _check_experiment_file(name, stores.tracking_uri)
        tracker = runner.open_tracker(process, stores, wait=True)
        _check_experiment(name, tracker, meta.mlflow)
        # Each worker its own sampler seed: processes started together must not sample alike.
        return runner.continue_study(name, stores=stores, storage_obj=storage_obj,
                                     device=device, jobs=jobs, devices=devices,
                                     trials_per_device=trials_per_device, timeout=timeout,
                                     population=population, observer=observer,
                                     seed_salt=os.getpid(), tracker=tracker)


def _work_on_benchmark(record: optuna.Study,
                       work_on: Callable[[str], SearchResult]) -> SearchResult:
    """`opttune worker BENCHMARK`: each of the benchmark's searches in turn (`work_on` one),
    until each has its budget (the benchmark command creates them all before it runs any);
    the last one's result."""
    name = record.study_name
    settings = BenchmarkSettings.from_attrs(name, record.user_attrs.get(SETTINGS_ATTR))
    names = [n for n in settings.search_studies(name) if studies.exists(storage_of(record), n)]
    if not names:
        raise OpttuneError(f"benchmark {name!r} has no searches (its budgets are one-shot "
                           f"only, or it has not started them yet); nothing to run")
    result = work_on(names[0])
    for search in names[1:]:
        result = work_on(search)
    return result


def _check_experiment_file(name: str, tracking_uri: str) -> None:
    """A study's MLflow store that is a file must be here (MLflow would create an empty one)."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise StoreError(f"the MLflow store of study {name!r} is not here: {path} does not "
                         f"exist; give the study's MLflow store with --tracking-uri (a file "
                         f"on a shared disk, or an MLflow or database server)")


def _check_experiment(name: str, tracker: Tracker, ids: MlflowIds) -> None:
    """Runs must hang under the study's parent run: refuse an MLflow store without it."""
    experiment = ids.experiment_id
    if experiment and not tracker.experiment_exists(experiment):
        raise StoreError(f"the MLflow store {redact(tracker.tracking_uri)} has no experiment "
                         f"{experiment} of study {name!r}; give the study's MLflow store with "
                         f"--tracking-uri")


# -- one process of `--jobs` ------------------------------------------------------------------
class PipeObserver:
    """Sends what a job's trials do to the process that started it, one JSON line each."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def send(self, event: str, **data: object) -> None:
        try:
            self.out.write(json.dumps({"event": event, **data}, default=str) + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # the parent is gone: the watchdog stops us

    def notice(self, text: str) -> None:
        self.send("notice", text=text)

    def space_ready(self, space: Space) -> None:
        pass  # the parent showed the space once for all jobs

    def study_start(self, info: StudyStart) -> None:
        pass  # the parent announced the study once for all jobs

    def trial_start(self, number: int, config: Mapping[str, object], index: int,
                    total: int) -> None:
        self.send("trial_start", number=number, config=config, index=index, total=total)

    def epoch_end(self, number: int, epoch: int, epochs: int, value: float,
                  train_loss: float) -> None:
        self.send("epoch_end", number=number, epoch=epoch, epochs=epochs, value=value,
                  train_loss=train_loss)

    def trial_end(self, outcome: TrialOutcome, best: TrialOutcome | None) -> None:
        self.send("trial_end", outcome=asdict(outcome), best=asdict(best) if best else None)


def child_main() -> None:
    """Entry of a `--jobs` process: its spec comes on stdin, its events go to stdout."""
    spec = json.loads(sys.stdin.readline())
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the event stream
    _stop_with_parent()
    observer = PipeObserver(events)
    import torch  # noqa: PLC0415  (a spawned job: torch loads once stdout goes to stderr)

    quiet_library_logs()
    torch.set_num_threads(int(spec["threads"]))
    if spec["device"].startswith("cuda"):
        torch.cuda.set_device(torch.device(spec["device"]))  # nothing lands on cuda:0 by default
    stores = resolve_stores(home=spec["home"], storage=spec["storage"],
                            tracking_uri=spec["tracking_uri"])
    code = 0
    try:
        runner.continue_study(spec["name"], stores=stores, device=spec["device"],
                              timeout=spec["timeout"], population=spec.get("population"),
                              observer=observer,
                              seed_salt=os.getpid())  # unlike any other job's, on any machine
    except Interrupted as exc:
        code = exc.exit_code
    except OpttuneError as exc:
        observer.send("error", message=f"job {int(spec['index']) + 1} ({spec['device']}): "
                                       f"{exc}")
        code = 1
    try:
        events.close()  # flushes what the parent has not been sent yet
    except OSError:  # the parent is gone (killed): nobody reads it, and we stop all the same
        pass
    sys.exit(code)


def _stop_with_parent() -> None:
    """A job whose parent died stops cleanly (SIGTERM: its trial is marked and re-queued)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="opttune-parent-watch", daemon=True).start()
