"""A study home written by release 0.1.0 still reads, resumes, and `opttune check` finds it
whole: the stored format (the study's and its trials' user attributes) is a contract that the
typed records of tuner.study.settings, tuner.study.meta and tuner.study.trial_attrs keep.

The home in tests/fixtures/store-0.1.0 was written by the release itself, before those
records existed (its README says how); it is copied for each test, never changed in place.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest

from tuner.search.runner import resume
from tuner.study.locations import sqlite_path
from tuner.study.meta import StudyMeta, mlflow_ids_of, settings_of
from tuner.study.recovery import check
from tuner.study.trial_record import read_trial

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "store-0.1.0"
STUDY = "release"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(FIXTURE, copy, ignore=shutil.ignore_patterns("README.md"))
    _relocate_artifacts(copy)
    return copy


def _relocate_artifacts(home: Path) -> None:
    """MLflow keeps each experiment's artifact location as an absolute URI into the home the
    fixture was written in; point it at the copy, so that a resume's plots land there."""
    study = _load(home)
    written_in = sqlite_path(study.user_attrs["mlflow"]["tracking_uri"])
    assert written_in is not None
    old, new = written_in.parent.as_uri(), home.resolve().as_uri()
    with sqlite3.connect(home / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = "
                   "replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))


def _load(home: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home / 'opttune.db'}")


def test_its_attributes_read_into_the_typed_records_and_write_back_unchanged(
        home: Path) -> None:
    study = _load(home)
    stored = study.user_attrs
    meta = StudyMeta.from_study(study)
    assert (meta.task, meta.metric, meta.direction) == ("digits-mlp", "val_acc", "maximize")
    assert meta.settings.seed == 0 and meta.settings.n_trials == 2
    assert meta.settings.population == 1 and meta.settings.device == "cpu"
    assert meta.mlflow.experiment_id and meta.mlflow.parent_run_id
    assert not meta.mlflow.tracking_uri_given
    # What a continued study writes back is what the release wrote, key for key.
    assert settings_of(study).to_attrs() == stored["settings"]
    assert mlflow_ids_of(study).to_attrs() == stored["mlflow"]
    assert {k: v for k, v in meta.to_attrs().items() if k != "opttune_version"} == \
        {k: v for k, v in stored.items() if k != "opttune_version"}
    records = [read_trial(t, metric=meta.metric) for t in study.get_trials()]
    assert [(r.state, r.optimizer, r.defaults_trial) for r in records] == [
        ("COMPLETE", "sgd", True), ("COMPLETE", "adam", True)]
    assert all(r.run_id and r.epochs_run == 1 and r.seconds for r in records)


def test_check_finds_it_whole(home: Path) -> None:
    report = check(STUDY, home=home)
    assert report.problems == [] and report.trials == 2 and report.runs == 2


@pytest.mark.slow
def test_it_resumes_and_stays_whole(home: Path) -> None:
    result = resume(STUDY, n_trials=1, home=home)
    assert result.total_counted == 3 and [t.state for t in result.trials] == ["COMPLETE"]
    assert settings_of(_load(home)).n_trials == 3  # the budget, raised for every process
    report = check(STUDY, home=home)
    assert report.problems == [] and report.trials == 3 and report.runs == 3
