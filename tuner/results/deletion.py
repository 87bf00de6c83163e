"""Deleting a study: its trials leave the Optuna store, its MLflow experiment is marked deleted.

MLflow keeps a deleted experiment (restorable, and out of the UI's list); a new study of the
same name later gets a fresh experiment. Retrained models under ``<home>/models/`` stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import optuna

from tuner.results.benchmark_record import stored_search_studies
from tuner.results.queries import open_study
from tuner.study.locations import Stores, redact, sqlite_path
from tuner.study.meta import SETTINGS_ATTR, is_benchmark, mlflow_ids_of, settings_of
from tuner.study.optuna_adapter import storage_of
from tuner.study.studies import study_names
from tuner.study.tracker import Tracker


class Preview(TypedDict):
    """What deleting a study removes."""

    study: str
    trials: int
    running: int  # of its trials, RUNNING now
    experiment_id: str | None


class Deleted(Preview):
    """What was deleted: the study, and what became of its MLflow runs or experiment
    ('deleted', 'not found', or why MLflow could not be reached)."""

    mlflow: str


def preview(name: str, *, home: str | Path | None = None, storage: str | None = None,
            tracking_uri: str | None = None) -> Preview:
    """What deleting `name` would remove (for the confirmation question)."""
    _, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    return _describe(study)


def _describe(study: optuna.Study) -> Preview:
    trials = study.get_trials(deepcopy=False)
    return {"study": study.study_name, "trials": len(trials),
            "running": sum(t.state.name == "RUNNING" for t in trials),
            "experiment_id": mlflow_ids_of(study).experiment_id or None}


def delete_study(name: str, *, home: str | Path | None = None, storage: str | None = None,
                 tracking_uri: str | None = None) -> Deleted:
    """Remove study `name` from the Optuna store and mark its MLflow experiment deleted."""
    stores, study = open_study(name, home=home, storage=storage, tracking_uri=tracking_uri)
    info = _describe(study)
    benchmark = is_benchmark(study)
    of_benchmark = not benchmark and settings_of(study).benchmark  # read before it goes
    if benchmark:  # the benchmark, with its searches (a first protocol's too: NAME.FAMILY)
        stored = set(study_names(storage_of(study)))
        for search in stored_search_studies(name, study.user_attrs.get(SETTINGS_ATTR)):
            if search in stored:
                optuna.delete_study(study_name=search, storage=storage_of(study))
    optuna.delete_study(study_name=name, storage=storage_of(study))
    if of_benchmark:
        # One search of a benchmark: its runs go, the benchmark's experiment stays.
        mlflow = _delete_runs(stores, info["experiment_id"], name)
    else:
        mlflow = _delete_experiment(stores, info["experiment_id"])
    return {**info, "mlflow": mlflow}


def _delete_runs(stores: Stores, experiment_id: str | None, name: str) -> str:
    """Mark the study's parent and trial runs deleted; 'deleted', 'not found' or why not."""
    try:
        tracker = Tracker(stores.tracking_uri, stores.artifact_root)
        runs = [r for role in ("study", "trial") for r in
                tracker.runs_with(experiment_id or "", role=role, tags={"study": name})]
        for run in runs:
            tracker.delete_run(run.run_id)
        return "deleted" if runs else "not found"
    except Exception as exc:
        return f"not reachable ({type(exc).__name__}: {redact(str(exc)).splitlines()[0]})"


def _delete_experiment(stores: Stores, experiment_id: str | None) -> str:
    """'deleted', 'not found', or why MLflow could not be reached (the study is gone anyway)."""
    if not experiment_id:
        return "not found"
    path = sqlite_path(stores.tracking_uri)
    if path is not None and not path.exists():
        return "not found"
    try:
        tracker = Tracker(stores.tracking_uri, stores.artifact_root)
        return "deleted" if tracker.delete_experiment(experiment_id) else "not found"
    except Exception as exc:
        return f"not reachable ({type(exc).__name__}: {redact(str(exc)).splitlines()[0]})"
