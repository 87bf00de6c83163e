"""A benchmark's re-runs: each chosen setting trained with several seeds on train+validation
and scored on the test split, which is also read after every epoch (the time to target;
nothing is ever chosen by it).

The re-runs of one setting differ only in their seed, so they train as one population (a
stacked model, tuner.training.population) of up to `population` members wherever the model
stacks, and one at a time where it does not (with one notice). A member computes what the
same re-run alone computes, up to float re-association. Groups run one after another, or in
`--jobs` processes.

A re-run is recorded in the benchmark's record only after its MLflow run is finished, so a
killed benchmark loses at most the re-runs in flight; their half-logged runs are deleted
before the benchmark continues, and nothing is logged twice.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, Protocol, TypedDict, runtime_checkable

import optuna
import torch

from tasks.base import Task
from tasks.data import TaskData
from tasks.registry import get_task
from tuner.jsontypes import JsonObject
from tuner.logs import quiet_library_logs
from tuner.results.benchmark_record import BenchmarkRecord, RerunEntry, recorded_runs
from tuner.results.benchmark_report import RERUN_PREFIX, rerun_key
from tuner.search.events import Observer
from tuner.search.jobs import cpu_threads
from tuner.space.config import TrialConfig
from tuner.study.tracker import Tracker
from tuner.training.devices import resolve_device
from tuner.training.loop import DeviceData, Diverged, EpochResult, fit
from tuner.training.population import CannotStack, fit_population
from tuner.training.seeds import rerun_seed


@dataclass(frozen=True)
class Rerun:
    """One re-run to do: a family's chosen setting under a schedule, with seed index `index`."""

    family: str
    schedule: str
    source: str  # "oneshot" or "trial-N"
    index: int
    config: JsonObject  # the flat configuration it trains

    @property
    def key(self) -> str:
        return rerun_key(self.family, self.schedule, self.source, self.index)


class RerunOutcome(TypedDict):
    """What one re-run's training gave: its record's entry, less the run id and source, plus
    each epoch's numbers for MLflow and the notice of a population that could not stack."""

    seed: int
    value: float | None  # the last epoch's test value; None: it diverged
    loss: float | None
    diverged: str | None
    seconds: float
    population: int
    curve: list[tuple[int, float, float]]  # (epoch from 1, test value, seconds so far)
    # (epoch from 0, train loss, test loss, test value, lr, epoch seconds)
    epochs: list[tuple[int, float, float, float, float, float]]
    notice: NotRequired[str | None]


@runtime_checkable
class RerunObserver(Protocol):
    def rerun_end(self, rerun: Rerun, entry: RerunEntry, done: int, total: int) -> None: ...


def groups_of(todo: Sequence[Rerun], population: int) -> list[list[Rerun]]:
    """The re-runs of one setting (family, schedule, source) in groups of up to `population`,
    in the order given."""
    by_setting: dict[tuple[str, str, str], list[Rerun]] = {}
    for rerun in todo:
        by_setting.setdefault((rerun.family, rerun.schedule, rerun.source), []).append(rerun)
    return [same[i:i + population] for same in by_setting.values()
            for i in range(0, len(same), population)]


def run_reruns(todo: Sequence[Rerun], *, record: optuna.Study, head: BenchmarkRecord,
               tracker: Tracker, task_obj: Task, data: TaskData, device: str,
               jobs: int | None, population: int, observer: Observer) -> None:
    """Train, score, log and record every re-run in `todo` (`head`: the record's fixed
    part, read from `record`)."""
    drop_unrecorded_runs(record, tracker, head, role="rerun", prefix=RERUN_PREFIX)
    if not todo:
        return
    groups = groups_of(todo, population)
    done, told = 0, set()  # the notices already given (one per reason)
    seed = head.settings.seed

    def finish(group: list[Rerun], outcomes: list[RerunOutcome]) -> None:
        nonlocal done
        for rerun, outcome in zip(group, outcomes, strict=True):
            done += 1
            notice = outcome.get("notice")
            if notice and notice not in told:
                observer.notice(notice)
                told.add(notice)
            _finish(rerun, outcome, record, head, tracker, observer, done, len(todo))

    if jobs is None or jobs <= 1 or len(groups) == 1:
        dev = resolve_device(device)
        split = rerun_data(data, dev)
        for group in groups:
            finish(group, train_and_score(task_obj, split, group[0].config, device=dev,
                                          seeds=[rerun_seed(seed, r.index) for r in group]))
        return
    spec = _ProcessSpec(task=task_obj.ref, data_dir=head.settings.data_dir, device=device,
                        threads=cpu_threads(jobs) if device in ("auto", "cpu") else 0)
    with ProcessPoolExecutor(max_workers=min(jobs, len(groups)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_process, initargs=(spec,)) as pool:
        futures = {pool.submit(_train_in_process, group[0].config,
                               [rerun_seed(seed, r.index) for r in group]): group
                   for group in groups}
        try:
            for future in as_completed(futures):
                finish(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def rerun_data(data: TaskData, device: str) -> DeviceData:
    """The re-runs' splits on `device`: train+validation to train on, test to score (after
    every epoch, in the place of validation)."""
    return DeviceData(torch.cat([data.train_x, data.val_x]).to(device),
                      torch.cat([data.train_y, data.val_y]).to(device),
                      data.test_x.to(device), data.test_y.to(device))


def train_and_score(task_obj: Task, split: DeviceData, config: JsonObject, *, device: str,
                    seeds: Sequence[int]) -> list[RerunOutcome]:
    """Re-runs of `config`, one per seed, on `split` (rerun_data): as one population where
    the model stacks, else one at a time. A diverged re-run scores nothing and says so (a
    result of the setting, not an error). One outcome per seed, in order."""
    trial = TrialConfig.from_flat(config, task_params=list(task_obj.hyperparams))
    notice = None
    if len(seeds) > 1:
        try:
            members = fit_population(task_obj, split, [trial] * len(seeds), device=device,
                                     seeds=list(seeds))
        except CannotStack as exc:
            notice = f"{config['optimizer']}'s re-runs train one at a time: {exc.reason}"
        else:
            return [_outcome(m.seed, m.epochs, m.stopped, len(seeds)) for m in members]
    outcomes = []
    for seed in seeds:
        epochs: list[EpochResult] = []
        stopped: Diverged | None = None
        try:
            fit(task_obj, split, trial, device=device, seed=seed, on_epoch=epochs.append)
        except Diverged as exc:
            stopped = exc
        outcome = _outcome(seed, epochs, stopped, 1)
        outcome["notice"] = notice
        outcomes.append(outcome)
    return outcomes


def _outcome(seed: int, epochs: Sequence[EpochResult], stopped: BaseException | None,
             population: int) -> RerunOutcome:
    """A re-run's record: the last epoch's test score, unless it diverged."""
    if stopped is not None and not isinstance(stopped, Diverged):
        raise stopped
    elapsed, curve = 0.0, []
    for e in epochs:
        elapsed += e.seconds
        curve.append((e.epoch + 1, e.value, round(elapsed, 4)))
    last = epochs[-1] if epochs and stopped is None else None
    return {"seed": seed, "value": last.value if last else None,
            "loss": last.val_loss if last else None,
            "diverged": str(stopped) if stopped is not None else None,
            "seconds": round(elapsed, 3), "population": population, "curve": curve,
            "epochs": [(e.epoch, e.train_loss, e.val_loss, e.value, e.lr, e.seconds)
                       for e in epochs]}


def _finish(rerun: Rerun, outcome: RerunOutcome, record: optuna.Study, head: BenchmarkRecord,
            tracker: Tracker, observer: Observer, done: int, total: int) -> None:
    """Log the re-run as a finished MLflow run, then record it (in that order: see above)."""
    name = record.study_name
    run_id = tracker.create_run(
        head.mlflow.experiment_id,
        name=f"re-run · {rerun.family} · {rerun.schedule} · {rerun.source} · seed {rerun.index}",
        tags={"opttune.role": "rerun", "benchmark": name,
              "mlflow.parentRunId": head.mlflow.run_id, "optimizer": rerun.family,
              "schedule": rerun.schedule, "source": rerun.source,
              "seed_index": str(rerun.index), "rerun_key": rerun.key},
        params={**rerun.config, "trained_on": "train+validation", "seed": outcome["seed"],
                "population": outcome["population"]})
    for epoch, train_loss, test_loss, value, lr, seconds in outcome["epochs"]:
        tracker.log_epoch(run_id, epoch, {"train_loss": train_loss, "lr": lr,
                                          "epoch_seconds": seconds, head.metric: value,
                                          "test_loss": test_loss})
    if outcome["value"] is None:
        tracker.set_tags(run_id, {"diverged": str(outcome["diverged"])})
    tracker.finish_run(run_id, "FINISHED" if outcome["value"] is not None else "FAILED")
    entry: RerunEntry = {
        "seed": outcome["seed"], "value": outcome["value"], "loss": outcome["loss"],
        "diverged": outcome["diverged"], "seconds": outcome["seconds"],
        "population": outcome["population"], "curve": outcome["curve"], "run_id": run_id,
        "source": rerun.source}
    record.set_user_attr(rerun.key, entry)
    if isinstance(observer, RerunObserver):
        observer.rerun_end(rerun, entry, done, total)


def drop_unrecorded_runs(record: optuna.Study, tracker: Tracker, head: BenchmarkRecord, *,
                         role: str, prefix: str) -> None:
    """Delete the benchmark's runs of `role` that a killed benchmark left without a record
    (an entry whose key starts with `prefix`; it will train them again), so that MLflow never
    shows one re-run or one-shot validation twice."""
    recorded = recorded_runs(record.user_attrs, prefix)
    for run in tracker.runs_with(head.mlflow.experiment_id, role=role,
                                 tags={"benchmark": record.study_name}):
        if run.run_id not in recorded:
            tracker.delete_run(run.run_id)


# -- in a --jobs process ---------------------------------------------------------------------
@dataclass(frozen=True)
class _ProcessSpec:
    """What each --jobs process needs to train re-runs (sent to it once, pickled)."""

    task: str
    data_dir: str | None
    device: str
    threads: int  # torch threads (0: torch's own choice, on an accelerator)


@dataclass(frozen=True)
class _ProcessState:
    task_obj: Task
    device: str
    split: DeviceData


_PROCESS: list[_ProcessState] = []  # this process's one state, once _start_process has run


def _start_process(spec: _ProcessSpec) -> None:
    """Each process reads the task's data once, with its share of the CPU's threads."""
    quiet_library_logs()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    task_obj = get_task(spec.task)
    device = resolve_device(spec.device)
    data = task_obj.read_data(data_dir=Path(spec.data_dir) if spec.data_dir else None)
    _PROCESS.append(_ProcessState(task_obj, device, rerun_data(data, device)))


def _train_in_process(config: JsonObject, seeds: list[int]) -> list[RerunOutcome]:
    state = _PROCESS[-1]
    return train_and_score(state.task_obj, state.split, config, device=state.device,
                           seeds=seeds)
