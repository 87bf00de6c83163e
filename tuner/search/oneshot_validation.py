"""Each one-shot setting scored once on the validation split, for the paper's headline
comparison: the best of all optimizers' one-shot settings, chosen by validation as a user
without a tuning budget would choose (Schmidt, Schneider & Hennig 2021, sec. 4), against each
optimizer tuned.

A one-shot setting trains like a search trial (the training split, validated after every
epoch) with the benchmark's seed. Its validation value (None when it diverged) and its MLflow
run are recorded in the benchmark's record (``oneshot-val:FAMILY:SCHEDULE``) after that run is
finished; a run a killed benchmark left without its record is deleted before it continues.
"""

from __future__ import annotations

import optuna

from tasks.base import Task
from tasks.data import TaskData
from tuner.results.benchmark_record import BenchmarkRecord, OneshotValidation
from tuner.results.benchmark_report import ONESHOT_PREFIX, oneshot_key
from tuner.search.reruns import drop_unrecorded_runs
from tuner.space.config import TrialConfig
from tuner.study.tracker import Tracker
from tuner.training.devices import resolve_device
from tuner.training.loop import DeviceData, Diverged, EpochResult, fit

ROLE = "oneshot-validation"


def validate_oneshots(record: optuna.Study, head: BenchmarkRecord, *, tracker: Tracker,
                      task_obj: Task, data: TaskData, device: str) -> None:
    """Train and validate every one-shot setting not yet recorded (`head`: the record's
    fixed part, read from `record`)."""
    drop_unrecorded_runs(record, tracker, head, role=ROLE, prefix=ONESHOT_PREFIX)
    settings = head.settings
    todo = [(family, schedule) for schedule in settings.schedules
            for family in settings.families_under(schedule)
            if oneshot_key(family, schedule) not in record.user_attrs]
    if not todo:
        return
    dev = resolve_device(device)
    split = DeviceData.from_task_data(data, dev)
    metric = task_obj.metric
    for family, schedule in todo:
        config = settings.oneshot[schedule][family]
        epochs: list[EpochResult] = []
        diverged = None
        try:
            fit(task_obj, split, TrialConfig.from_flat(config,
                                                       task_params=list(task_obj.hyperparams)),
                device=dev, seed=settings.seed, on_epoch=epochs.append)
        except Diverged as exc:
            diverged = str(exc)
        run_id = tracker.create_run(
            head.mlflow.experiment_id, name=f"one-shot · {family} · {schedule} · validation",
            tags={"opttune.role": ROLE, "benchmark": record.study_name,
                  "mlflow.parentRunId": head.mlflow.run_id, "optimizer": family,
                  "schedule": schedule},
            params={**config, "trained_on": "train", "seed": settings.seed})
        for e in epochs:
            tracker.log_epoch(run_id, e.epoch, {"train_loss": e.train_loss, "val_loss":
                                                e.val_loss, metric: e.value, "lr": e.lr})
        if diverged:
            tracker.set_tags(run_id, {"diverged": diverged})
        tracker.finish_run(run_id, "FAILED" if diverged else "FINISHED")
        entry: OneshotValidation = {
            "value": None if diverged or not epochs else epochs[-1].value, "run_id": run_id}
        record.set_user_attr(oneshot_key(family, schedule), entry)
