"""Retrain a study's chosen configuration on train+validation and score the test split once.

The trial's exact configuration (its `config` user attribute) is trained by the same loop as
every trial (:func:`tuner.training.loop.fit`), with the trial's own seed, on the training and
validation splits together. The held-out test split, which `search` never touches, is scored
once at the end. The weights and the configuration are saved under ``<home>/models/`` and
logged as a run (with the model as artifacts) in the study's MLflow experiment.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch

from tasks.base import Task
from tasks.data import TaskData
from tasks.registry import get_task
from tuner.errors import OpttuneError, StoreError
from tuner.results.queries import no_best_reason, open_study
from tuner.space.config import TrialConfig
from tuner.space.dsl import ParamValue
from tuner.study import trial_attrs
from tuner.study.locations import Stores
from tuner.study.meta import StudyMeta, study_tracking_uri
from tuner.study.names import folder_name
from tuner.study.studies import best_complete
from tuner.study.tracker import Tracker
from tuner.training.devices import check_device_spec, resolve_device
from tuner.training.loop import DeviceData, Diverged, EpochResult, evaluate, fit
from tuner.training.seeds import trial_seed

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class RetrainResult:
    """What `retrain` trained, how it scored on the test split, and where it saved the model."""

    study: str
    trial: int
    task: str
    config: trial_attrs.FlatConfig  # the flat trial config, epochs as trained
    metric: str  # test_acc or test_mse
    test: dict[str, float]  # {"test_loss": …, metric: …}
    train_samples: int
    test_samples: int
    device: str
    seconds: float
    folder: Path
    model_path: Path
    config_path: Path
    run_id: str


class SavedRecord(TypedDict):
    """config.json beside the saved model: what was trained, on what, and how it scored (and,
    once it is logged, ``mlflow_run_id``)."""

    study: str
    trial: int
    task: str
    config: trial_attrs.FlatConfig
    trained_on: str  # "train+validation"
    seed: int
    data_source: str
    train_samples: int
    test_samples: int
    test: dict[str, float]
    device: str
    seconds: float
    saved: str  # ISO 8601, to the second


def retrain(name: str, *, trial: int | None = None, epochs: int | None = None,
            device: str | None = None, home: str | Path | None = None,
            storage: str | None = None, tracking_uri: str | None = None,
            notice: Callable[[str], None] | None = None) -> RetrainResult:
    """Train trial `trial` (default: the best) of study `name` on train+val; score the test
    split once; save and log the model. `epochs` overrides the trial's epochs."""
    if epochs is not None and epochs < 1:
        raise OpttuneError(f"--epochs must be >= 1, but got {epochs}")
    if device is not None:
        check_device_spec(device)
    stores, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    meta = StudyMeta.from_study(study)
    logged_to = study_tracking_uri(name, meta, tracking_uri)
    if logged_to is not None:  # the model's run goes beside the study's runs
        stores = dataclasses.replace(stores, tracking_uri=logged_to)
    chosen, flat = _choose_trial(study, meta, trial)
    if epochs is not None:
        flat["epochs"] = epochs
    task = get_task(meta.task)
    data_dir = meta.settings.data_dir
    data = task.read_data(data_dir=Path(data_dir) if data_dir else None)
    if data.notice and notice is not None:
        notice(data.notice)
    if data.source != meta.data_source:
        raise OpttuneError(f"study {name!r} was tuned on data from {meta.data_source!r}, but "
                           f"the data now comes from {data.source!r}; retrain on the same data "
                           f"(give the study's --data-dir), or tune a new study on this data")
    dev = resolve_device(device or meta.settings.device)
    seed = trial_seed(chosen.number, seed=meta.settings.seed, pinned=meta.settings.trial_seed)
    started = time.perf_counter()
    model, epochs_log = train_full(task, data, flat, device=dev, seed=seed)
    test = score_test(task, model, data, dev, meta.metric)
    seconds = time.perf_counter() - started
    folder = stores.home / "models" / f"{folder_name(name)}-trial-{chosen.number}"
    record: SavedRecord = {
        "study": name, "trial": chosen.number, "task": meta.task, "config": flat,
        "trained_on": "train+validation", "seed": seed, "data_source": meta.data_source,
        "train_samples": len(data.train_x) + len(data.val_x), "test_samples": len(data.test_x),
        "test": test, "device": dev, "seconds": round(seconds, 3),
        "saved": datetime.now().isoformat(timespec="seconds")}
    run_id = _save_and_log(stores, meta, name, chosen, record, model, epochs_log, folder)
    return RetrainResult(study=name, trial=chosen.number, task=meta.task, config=flat,
                         metric=metric_on_test(meta.metric), test=test,
                         train_samples=record["train_samples"], test_samples=len(data.test_x),
                         device=dev, seconds=seconds, folder=folder,
                         model_path=folder / MODEL_FILE, config_path=folder / CONFIG_FILE,
                         run_id=run_id)


def _choose_trial(study: optuna.Study, meta: StudyMeta,
                  number: int | None) -> tuple[FrozenTrial, trial_attrs.FlatConfig]:
    """Trial `number`, or the best one (the pick of `opttune best`), and its configuration."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        chosen = best_complete(trials, meta.direction)
        if chosen is None:
            raise OpttuneError(f"nothing to retrain: "
                               f"{no_best_reason(study.study_name, trials, metric=meta.metric)}")
    else:
        found = [t for t in trials if t.number == number]
        if not found:
            raise OpttuneError(f"--trial {number}: study {study.study_name!r} has trials 0 to "
                               f"{len(trials) - 1}; see `opttune trials {study.study_name}`")
        chosen = found[0]
    flat = trial_attrs.config(chosen)
    if flat is None:
        raise OpttuneError(f"trial {chosen.number} of study {study.study_name!r} has no "
                           f"configuration (it never started training); choose another --trial")
    return chosen, flat


class RetrainDiverged(OpttuneError):
    """The configuration's loss became NaN or infinite on train+validation."""


def train_full(task: Task, data: TaskData, flat: trial_attrs.FlatConfig, *, device: str,
               seed: int) -> tuple[torch.nn.Module, list[EpochResult]]:
    """fit() on train+validation (the model and its epochs); the model is caught from the
    task's own factory. fit ends on a validation, so a schedule-free optimizer's model comes
    back at its average x: what is scored and saved."""
    built: list[torch.nn.Module] = []

    def build_model(params: Mapping[str, ParamValue]) -> torch.nn.Module:
        built.append(task.build_model(params))
        return built[-1]

    merged = dataclasses.replace(data, train_x=torch.cat([data.train_x, data.val_x]),
                                 train_y=torch.cat([data.train_y, data.val_y]))
    try:
        epochs_log = fit(dataclasses.replace(task, build_model=build_model),
                         DeviceData.from_task_data(merged, device),
                         TrialConfig.from_flat(flat, task_params=list(task.hyperparams)),
                         device=device, seed=seed)
    except Diverged as exc:
        raise RetrainDiverged(f"retraining diverged ({exc}); this configuration is unstable on "
                           f"train+validation, try another --trial") from None
    return built[-1], epochs_log


def score_test(task: Task, model: torch.nn.Module, data: TaskData, device: str,
               metric: str) -> dict[str, float]:
    """The one look at the test split: its loss and metric (``test_acc``, ``test_mse``)."""
    loss, value = evaluate(task, model, data.test_x.to(device), data.test_y.to(device))
    return {"test_loss": loss, metric_on_test(metric): value}


def metric_on_test(metric: str) -> str:
    return "test_" + metric.removeprefix("val_")


def _save_and_log(stores: Stores, meta: StudyMeta, name: str, trial: FrozenTrial,
                  record: SavedRecord, model: torch.nn.Module, epochs_log: list[EpochResult],
                  folder: Path) -> str:
    """Write model.pt and config.json, then log both (and the metrics) as an MLflow run."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / MODEL_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tracker = Tracker(stores.tracking_uri, stores.artifact_root)
    run_id = ""
    try:
        experiment = meta.mlflow.experiment_id
        if not experiment or not tracker.experiment_exists(experiment):
            experiment = tracker.ensure_experiment(name, tags={"opttune.task": meta.task})
        flat = record["config"]
        run_id = tracker.create_run(
            experiment, name=f"retrain · trial {trial.number} · {flat.get('optimizer')}",
            tags={"opttune.role": "retrain", "study": name, "trial_number": str(trial.number),
                  "optimizer": str(flat.get("optimizer")),
                  "source_run_id": trial_attrs.run_id(trial) or ""},
            params={**flat, "trained_on": "train+validation", "seed": record["seed"]})
        for r in epochs_log:
            tracker.log_epoch(run_id, r.epoch, {"train_loss": r.train_loss, "lr": r.lr,
                                                "epoch_seconds": r.seconds})
        tracker.log_epoch(run_id, 0, record["test"])
        logged = {**record, "mlflow_run_id": run_id}
        (folder / CONFIG_FILE).write_text(json.dumps(logged, indent=2) + "\n", encoding="utf-8")
        tracker.log_artifacts(run_id, folder, "model")
        tracker.finish_run(run_id)
    except Exception as exc:
        if run_id:
            try:
                tracker.finish_run(run_id, "FAILED")
            except Exception:
                pass  # the store is failing: the error below says what matters
        raise StoreError(f"the model is saved in {folder}, but logging it to MLflow failed: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         ) from None
    return run_id
