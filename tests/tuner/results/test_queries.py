"""Reading a real study back: every number must agree with the Optuna store read directly."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers.small_study import small_study_copy

from tuner.errors import OpttuneError, StudyNotFoundError
from tuner.results import queries as inspect


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study s1: sgd and adam, 6 trials of 2 epochs (see small_study.py)."""
    return small_study_copy(tmp_path_factory, _mlflow_template, "inspect")


def _direct(home: Path) -> optuna.Study:
    return optuna.load_study(study_name="s1", storage=f"sqlite:///{home / 'opttune.db'}")


def test_list_studies_agrees_with_the_store(study_home: Path) -> None:
    study = _direct(study_home)
    trials = study.get_trials()
    [row] = inspect.list_studies(home=study_home)
    assert row["study"] == "s1" and row["task"] == "mnist-mlp"
    assert row["trials"] == len(trials) == 6
    for label, state in (("complete", "COMPLETE"), ("pruned", "PRUNED"), ("failed", "FAIL"),
                         ("running", "RUNNING")):
        assert row[label] == sum(t.state.name == state for t in trials)
    assert row["best_value"] == study.best_value
    assert row["best_trial"] == study.best_trial.number
    assert row["data_source"] == study.user_attrs["data_source"]
    last = max(t.datetime_complete for t in trials)
    assert row["last_activity"] == last.isoformat(timespec="seconds")


def test_an_empty_home_lists_no_studies(tmp_path: Path) -> None:
    assert inspect.list_studies(home=tmp_path) == []
    assert not (tmp_path / "opttune.db").exists()  # looking creates nothing


def test_trial_rows_agree_with_the_store(study_home: Path) -> None:
    trials = {t.number: t for t in _direct(study_home).get_trials()}
    rows = inspect.trial_rows("s1", home=study_home)
    assert [r["number"] for r in rows] == sorted(trials)
    for r in rows:
        t = trials[r["number"]]
        assert (r["state"], r["value"]) == (t.state.name, t.value)
        config = t.user_attrs["config"]
        assert r["optimizer"] == config["optimizer"] == t.params["optimizer"]
        assert r["params"]["lr"] == config["lr"]
        assert r["epochs_run"] == len(t.intermediate_values)
        assert r["run_id"] == t.user_attrs["mlflow_run_id"]
        assert r["seconds"] == t.user_attrs["seconds"]
    # The defaults trials ran weight_decay 0, which Optuna's params cannot hold (log range).
    defaults = [r for r in rows if r["defaults_trial"]]
    assert {r["optimizer"] for r in defaults} == {"sgd", "adam"}
    assert all(r["params"]["weight_decay"] == 0.0 for r in defaults)


def test_trial_rows_filter_sort_and_limit(study_home: Path) -> None:
    trials = _direct(study_home).get_trials()
    complete = inspect.trial_rows("s1", states=["complete"], home=study_home)
    assert len(complete) == sum(t.state.name == "COMPLETE" for t in trials)
    both = inspect.trial_rows("s1", states=["complete,pruned"], home=study_home)
    assert len(both) == 6
    by_value = inspect.trial_rows("s1", sort="value", limit=3, home=study_home)
    best_three = sorted((t.value for t in trials if t.value is not None), reverse=True)[:3]
    assert [r["value"] for r in by_value] == best_three
    slowest = inspect.trial_rows("s1", sort="duration", limit=1, home=study_home)[0]
    assert slowest["seconds"] == max(t.user_attrs["seconds"] for t in trials)
    with pytest.raises(OpttuneError, match="--state must be among .* but got 'done-ish'"):
        inspect.trial_rows("s1", states=["done-ish"], home=study_home)
    with pytest.raises(OpttuneError, match="--sort must be one of"):
        inspect.trial_rows("s1", sort="colour", home=study_home)


def test_best_trial_is_optunas_best_with_a_rerun_command(study_home: Path) -> None:
    study = _direct(study_home)
    best = inspect.best_trial("s1", home=study_home)
    assert best["number"] == study.best_trial.number
    assert best["value"] == study.best_value
    assert best["run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    config = study.best_trial.user_attrs["config"]
    command = best["command"]
    assert command.startswith("opttune search --task mnist-mlp --study s1-best "
                              f"--optimizers {config['optimizer']} ")
    assert f"--lr {config['lr']!r}" in command
    assert "--no-defaults --n-trials 1" in command and "--epochs 2" in command


def test_compare_per_family_agrees_with_the_store(study_home: Path) -> None:
    trials = _direct(study_home).get_trials()
    result = inspect.compare(["s1"], home=study_home)
    [study] = result["studies"]
    assert result["by"] == "optimizer" and study["metric"] == "val_acc"
    groups = {g["optimizer"]: g for g in study["groups"]}
    assert list(groups) == ["sgd", "adam"]  # every family that ran, in the space's order
    for family, g in groups.items():
        mine = [t for t in trials if t.params["optimizer"] == family]
        values = [t.value for t in mine if t.state.name == "COMPLETE"]
        assert g["trials"] == len(mine)
        assert g["complete"] == len(values)
        assert g["pruned"] == sum(t.state.name == "PRUNED" for t in mine)
        assert g["best"] == max(values)
        assert g["median"] == pytest.approx(float(np.median(values)))
        q1, q3 = np.percentile(values, [25, 75])
        assert (g["q1"], g["q3"]) == (pytest.approx(q1), pytest.approx(q3))
        assert g["iqr"] == pytest.approx(q3 - q1)
        [default] = [t for t in mine if t.user_attrs.get("defaults_trial")]
        assert (g["default_trial"], g["default_value"]) == (default.number, default.value)
        assert g["gain_over_default"] == pytest.approx(max(values) - default.value)
        assert g["mean_seconds"] == pytest.approx(
            statistics.fmean(t.user_attrs["seconds"] for t in mine))


def test_compare_by_another_categorical_and_refusals(study_home: Path) -> None:
    result = inspect.compare(["s1", "s1"], by="batch_size", home=study_home)
    assert len(result["studies"]) == 2
    [group] = result["studies"][0]["groups"]
    assert group["batch_size"] == 128 and group["trials"] == 6
    with pytest.raises(OpttuneError, match="lr takes continuous values"):
        inspect.compare(["s1"], by="lr", home=study_home)
    with pytest.raises(OpttuneError, match="have no 'colour'; group by one of"):
        inspect.compare(["s1"], by="colour", home=study_home)


def test_export_writes_one_record_per_trial(study_home: Path, tmp_path: Path) -> None:
    trials = {t.number: t for t in _direct(study_home).get_trials()}
    written = inspect.export_study("s1", tmp_path / "out.json", home=study_home)
    assert written["records"] == 6
    document = json.loads((tmp_path / "out.json").read_text())
    assert [r["number"] for r in document["trials"]] == sorted(trials)
    for r in document["trials"]:
        t = trials[r["number"]]
        assert r["value"] == t.value and r["state"] == t.state.name
        assert r["intermediate"] == {str(k): v for k, v in t.intermediate_values.items()}
    inspect.export_study("s1", tmp_path / "out.csv", home=study_home)
    with (tmp_path / "out.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    for r in rows:
        t = trials[int(r["number"])]
        assert float(r["value"]) == t.value
        assert float(r["val_acc_epoch_1"]) == t.intermediate_values[0]
        assert float(r["lr"]) == t.user_attrs["config"]["lr"]
    with pytest.raises(OpttuneError, match=r"-o must end in .csv or .json, but got 'out.xlsx'"):
        inspect.export_study("s1", "out.xlsx", home=study_home)


def test_unknown_study_lists_the_known_ones(study_home: Path) -> None:
    with pytest.raises(StudyNotFoundError, match="no study named 'nope'.*known studies: s1"):
        inspect.best_trial("nope", home=study_home)
