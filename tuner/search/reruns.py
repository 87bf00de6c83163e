"""A benchmark's re-runs: each chosen setting trained with several seeds on train+validation
and scored once on the test split (the `retrain` path), one after another or in `--jobs`
processes.

A re-run is recorded in the benchmark's record only after its MLflow run is finished, so a
killed benchmark loses at most the re-runs in flight; their half-logged runs are deleted
before the benchmark continues, and nothing is logged twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tuner.results.benchmark_report import rerun_key
from tuner.search.events import Observer


@dataclass(frozen=True)
class Rerun:
    """One re-run to do: a family's chosen setting, trained with seed index `index`."""

    family: str
    source: str  # "oneshot" or "trial-N"
    index: int
    config: dict[str, Any]

    @property
    def key(self) -> str:
        return rerun_key(self.family, self.source, self.index)


@runtime_checkable
class RerunObserver(Protocol):
    def rerun_end(self, rerun: Rerun, entry: dict[str, Any], done: int, total: int) -> None: ...


def run_reruns(todo: Sequence[Rerun], *, record: Any, tracker: Any, task_obj: Any, data: Any,
               settings: dict[str, Any], device: str, jobs: int | None,
               observer: Observer) -> None:
    """Train, score, log and record every re-run in `todo`."""
    from tuner.training.devices import resolve_device

    _drop_unrecorded_runs(record, tracker)
    if not todo:
        return
    metric = record.user_attrs["objective"]["metric"]
    done = 0
    if jobs is None or jobs <= 1 or len(todo) == 1:
        dev = resolve_device(device)
        for rerun in todo:
            outcome = train_and_score(task_obj, data, rerun.config, device=dev,
                                      seed=_seed(settings, rerun), metric=metric)
            done += 1
            _finish(rerun, outcome, record, tracker, settings, observer, done, len(todo))
        return
    from tuner.search.jobs import cpu_threads

    spec = {"task": task_obj.ref, "data_dir": settings.get("data_dir"), "device": device,
            "metric": metric, "threads": cpu_threads(jobs) if device in ("auto", "cpu") else 0}
    import multiprocessing

    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_process, initargs=(spec,)) as pool:
        futures = {pool.submit(_train_in_process, rerun.config, _seed(settings, rerun)): rerun
                   for rerun in todo}
        try:
            for future in as_completed(futures):
                done += 1
                _finish(futures[future], future.result(), record, tracker, settings, observer,
                        done, len(todo))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def train_and_score(task_obj: Any, data: Any, config: dict[str, Any], *, device: str,
                    seed: int, metric: str) -> dict[str, Any]:
    """One re-run: train on train+validation, score the test split once. A diverged re-run
    scores nothing and says so (it is a result of the setting, not an error)."""
    from tuner.results.retrain import RetrainDiverged, score_test, train_full

    started = time.perf_counter()
    try:
        model, epochs = train_full(task_obj, data, config, device=device, seed=seed)
    except RetrainDiverged as exc:
        return {"seed": seed, "value": None, "loss": None, "diverged": str(exc).split(";")[0],
                "seconds": round(time.perf_counter() - started, 3), "epochs": []}
    test = score_test(task_obj, model, data, device, metric.removeprefix("test_"))
    return {"seed": seed, "value": test[metric], "loss": test["test_loss"], "diverged": None,
            "seconds": round(time.perf_counter() - started, 3),
            "epochs": [[e.epoch, e.train_loss, e.lr, e.seconds] for e in epochs]}


def _seed(settings: dict[str, Any], rerun: Rerun) -> int:
    from tuner.training.seeds import rerun_seed

    return rerun_seed(settings.get("seed"), rerun.index)


def _finish(rerun: Rerun, outcome: dict[str, Any], record: Any, tracker: Any,
            settings: dict[str, Any], observer: Observer, done: int, total: int) -> None:
    """Log the re-run as a finished MLflow run, then record it (in that order: see above)."""
    mlflow = record.user_attrs["mlflow"]
    name = record.study_name
    run_id = tracker.create_run(
        mlflow["experiment_id"],
        name=f"re-run · {rerun.family} · {rerun.source} · seed {rerun.index}",
        tags={"opttune.role": "rerun", "benchmark": name, "mlflow.parentRunId": mlflow["run_id"],
              "optimizer": rerun.family, "source": rerun.source, "seed_index": str(rerun.index),
              "rerun_key": rerun.key},
        params={**rerun.config, "trained_on": "train+validation", "seed": outcome["seed"]})
    for epoch, train_loss, lr, seconds in outcome["epochs"]:
        tracker.log_epoch(run_id, epoch, {"train_loss": train_loss, "lr": lr,
                                          "epoch_seconds": seconds})
    metric = record.user_attrs["objective"]["metric"]
    if outcome["value"] is not None:
        tracker.log_epoch(run_id, 0, {metric: outcome["value"], "test_loss": outcome["loss"]})
    else:
        tracker.set_tags(run_id, {"diverged": outcome["diverged"]})
    tracker.finish_run(run_id, "FINISHED" if outcome["value"] is not None else "FAILED")
    entry = {k: outcome[k] for k in ("seed", "value", "loss", "diverged", "seconds")}
    entry |= {"run_id": run_id, "source": rerun.source}
    record.set_user_attr(rerun.key, entry)
    if isinstance(observer, RerunObserver):
        observer.rerun_end(rerun, entry, done, total)


def _drop_unrecorded_runs(record: Any, tracker: Any) -> None:
    """Delete re-run runs that a killed benchmark left without a record (it will train them
    again), so that MLflow never shows one re-run twice."""
    mlflow = record.user_attrs["mlflow"]
    recorded = {v.get("run_id") for k, v in record.user_attrs.items() if k.startswith("rerun:")}
    for run in tracker.runs_with(mlflow["experiment_id"], role="rerun",
                                 tags={"benchmark": record.study_name}):
        if run.run_id not in recorded:
            tracker.delete_run(run.run_id)


# -- in a --jobs process ---------------------------------------------------------------------
_PROCESS: dict[str, Any] = {}


def _start_process(spec: dict[str, Any]) -> None:
    """Each process reads the task's data once, with its share of the CPU's threads."""
    from pathlib import Path

    import torch

    from tasks.registry import get_task
    from tuner.logs import quiet_library_logs
    from tuner.training.devices import resolve_device

    quiet_library_logs()
    if spec["threads"]:
        torch.set_num_threads(int(spec["threads"]))
    task_obj = get_task(spec["task"])
    _PROCESS.update(spec, task_obj=task_obj, device=resolve_device(spec["device"]),
                    data=task_obj.read_data(
                        data_dir=Path(spec["data_dir"]) if spec["data_dir"] else None))


def _train_in_process(config: dict[str, Any], seed: int) -> dict[str, Any]:
    return train_and_score(_PROCESS["task_obj"], _PROCESS["data"], config,
                           device=_PROCESS["device"], seed=seed, metric=_PROCESS["metric"])
