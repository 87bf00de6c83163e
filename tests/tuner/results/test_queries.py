"""Reading a real study back: every number must agree with the Optuna store read directly."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers.small_study import small_study_copy

from tuner.errors import OpttuneError, StudyNotFoundError
from tuner.results import queries
from tuner.results.export import export_study
from tuner.results.summaries import to_json_data
from tuner.study.trial_record import read_trial


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study s1: sgd and adam, 6 trials of 2 epochs (see small_study.py)."""
    return small_study_copy(tmp_path_factory, _mlflow_template, "inspect")


def _direct(home: Path) -> optuna.Study:
    return optuna.load_study(study_name="s1", storage=f"sqlite:///{home / 'opttune.db'}")


def test_list_studies_agrees_with_the_store(study_home: Path) -> None:
    study = _direct(study_home)
    trials = study.get_trials()
    [row] = queries.list_studies(home=study_home).studies
    assert row.study == "s1" and row.task == "mnist-mlp"
    assert row.trials == len(trials) == 6
    for label, state in (("complete", "COMPLETE"), ("pruned", "PRUNED"), ("failed", "FAIL"),
                         ("running", "RUNNING")):
        assert getattr(row, label) == sum(t.state.name == state for t in trials)
    assert row.best_value == study.best_value
    assert row.best_trial == study.best_trial.number
    assert row.data_source == study.user_attrs["data_source"]
    last = max(t.datetime_complete for t in trials)
    assert row.last_activity == last.isoformat(timespec="seconds")


def test_an_empty_home_lists_no_studies(tmp_path: Path) -> None:
    assert queries.list_studies(home=tmp_path).studies == []
    assert not (tmp_path / "opttune.db").exists()  # looking creates nothing


def test_trial_rows_agree_with_the_store(study_home: Path) -> None:
    trials = {t.number: t for t in _direct(study_home).get_trials()}
    rows = queries.list_trials("s1", home=study_home).trials
    assert [r.number for r in rows] == sorted(trials) == list(range(6))
    for r in rows:
        t = trials[r.number]
        assert (r.state, r.value) == (t.state.name, t.value)
        config = t.user_attrs["config"]
        assert r.optimizer == config["optimizer"] == t.params["optimizer"]
        assert r.params["lr"] == config["lr"]
        assert r.config == config  # the flat config, exactly as the trial stored it
        assert r.epochs_run == len(t.intermediate_values)
        assert r.run_id == t.user_attrs["mlflow_run_id"]
        assert r.seconds == t.user_attrs["seconds"]
    # The defaults trials ran weight_decay 0, which Optuna's params cannot hold (log range).
    defaults = [r for r in rows if r.defaults_trial]
    assert {r.optimizer for r in defaults} == {"sgd", "adam"}
    assert all(r.params["weight_decay"] == 0.0 for r in defaults)


def test_the_display_reads_trials_with_the_same_reader(study_home: Path) -> None:
    from tuner.search.events import outcome_of

    trials = _direct(study_home).get_trials()
    assert len(trials) == 6
    for t in trials:
        outcome = outcome_of(t)
        record = read_trial(t, metric="val_acc")
        assert (outcome.number, outcome.state, outcome.value, outcome.run_id) == \
            (record.number, record.state, record.value, record.run_id)
        assert outcome.config == record.config == t.user_attrs["config"]
        assert outcome.history == [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        assert outcome.seconds == record.seconds == t.user_attrs["seconds"]
        assert outcome.reason == (record.reason or ("defaults" if record.defaults_trial
                                                    else None))


def test_trial_rows_filter_sort_and_limit(study_home: Path) -> None:
    trials = _direct(study_home).get_trials()
    complete = queries.list_trials("s1", states=["complete"], home=study_home).trials
    assert len(complete) == sum(t.state.name == "COMPLETE" for t in trials)
    both = queries.list_trials("s1", states=["complete,pruned"], home=study_home).trials
    assert len(both) == 6
    by_value = queries.list_trials("s1", sort="value", limit=3, home=study_home).trials
    best_three = sorted((t.value for t in trials if t.value is not None), reverse=True)[:3]
    assert [r.value for r in by_value] == best_three
    slowest = queries.list_trials("s1", sort="duration", limit=1, home=study_home).trials[0]
    assert slowest.seconds == max(t.user_attrs["seconds"] for t in trials)
    with pytest.raises(OpttuneError, match="--state must be among .* but got 'done-ish'"):
        queries.list_trials("s1", states=["done-ish"], home=study_home)
    with pytest.raises(OpttuneError, match="--sort must be one of"):
        queries.list_trials("s1", sort="colour", home=study_home)


def test_best_trial_is_optunas_best_with_a_rerun_command(study_home: Path) -> None:
    study = _direct(study_home)
    best = queries.best_trial("s1", home=study_home)
    assert best.trial.number == study.best_trial.number
    assert best.trial.value == study.best_value
    assert best.trial.run_id == study.best_trial.user_attrs["mlflow_run_id"]
    config = study.best_trial.user_attrs["config"]
    command = best.command
    assert command.startswith("opttune search --task mnist-mlp --study s1-best "
                              f"--optimizers {config['optimizer']} ")
    assert f"--lr {config['lr']!r}" in command
    assert "--no-defaults --n-trials 1" in command and "--epochs 2" in command


def test_compare_per_family_agrees_with_the_store(study_home: Path) -> None:
    trials = _direct(study_home).get_trials()
    result = queries.compare(["s1"], home=study_home)
    [study] = result.studies
    assert result.by == "optimizer" and study.metric == "val_acc"
    groups = {g.key: g for g in study.groups}
    assert list(groups) == ["sgd", "adam"]  # every family that ran, in the space's order
    for family, g in groups.items():
        mine = [t for t in trials if t.params["optimizer"] == family]
        values = [t.value for t in mine if t.state.name == "COMPLETE"]
        assert g.trials == len(mine)
        assert g.complete == len(values)
        assert g.pruned == sum(t.state.name == "PRUNED" for t in mine)
        assert g.best == max(values)
        assert g.median == pytest.approx(float(np.median(values)))
        q1, q3 = np.percentile(values, [25, 75])
        assert g.q1 == pytest.approx(q1) and g.q3 == pytest.approx(q3)
        assert g.iqr == pytest.approx(q3 - q1)
        [default] = [t for t in mine if t.user_attrs.get("defaults_trial")]
        assert (g.default_trial, g.default_value) == (default.number, default.value)
        assert g.gain_over_default == pytest.approx(max(values) - default.value)
        assert g.mean_seconds == pytest.approx(
            statistics.fmean(t.user_attrs["seconds"] for t in mine))


def test_compare_by_another_categorical_and_refusals(study_home: Path) -> None:
    result = queries.compare(["s1", "s1"], by="batch_size", home=study_home)
    assert len(result.studies) == 2
    [group] = result.studies[0].groups
    assert (group.by, group.key, group.trials) == ("batch_size", 128, 6)
    with pytest.raises(OpttuneError, match="lr takes continuous values"):
        queries.compare(["s1"], by="lr", home=study_home)
    with pytest.raises(OpttuneError, match="have no 'colour'; group by one of"):
        queries.compare(["s1"], by="colour", home=study_home)


def test_export_writes_one_record_per_trial(study_home: Path, tmp_path: Path) -> None:
    trials = {t.number: t for t in _direct(study_home).get_trials()}
    written = export_study("s1", tmp_path / "out.json", home=study_home)
    assert (written.records, written.path) == (6, tmp_path / "out.json")
    document = json.loads((tmp_path / "out.json").read_text())
    assert [r["number"] for r in document["trials"]] == sorted(trials)
    for r in document["trials"]:
        t = trials[r["number"]]
        assert r["value"] == t.value and r["state"] == t.state.name
        assert r["intermediate"] == {str(k): v for k, v in t.intermediate_values.items()}
    export_study("s1", tmp_path / "out.csv", home=study_home)
    with (tmp_path / "out.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    for r in rows:
        t = trials[int(r["number"])]
        assert float(r["value"]) == t.value
        assert float(r["val_acc_epoch_1"]) == t.intermediate_values[0]
        assert float(r["lr"]) == t.user_attrs["config"]["lr"]
    with pytest.raises(OpttuneError, match=r"-o must end in .csv or .json, but got 'out.xlsx'"):
        export_study("s1", "out.xlsx", home=study_home)


def test_the_search_summary_agrees_with_compare(study_home: Path) -> None:
    study = _direct(study_home)
    summary = queries.search_summary("s1", home=study_home)
    assert summary.trials == 6 and summary.best is not None
    assert summary.best.number == study.best_trial.number
    values = sorted((t.value for t in study.get_trials()
                     if t.state.name == "COMPLETE" and t.value is not None), reverse=True)
    assert [r.value for r in summary.top] == values[:5]
    [compared] = queries.compare(["s1"], home=study_home).studies
    assert summary.families == compared.groups


def test_a_value_of_inf_is_never_the_best(study_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "copy"
    shutil.copytree(study_home, home)
    study = _direct(home)
    finite = study.best_trial
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=math.inf, params=finite.params,
        distributions=finite.distributions, user_attrs=finite.user_attrs))
    assert study.best_value == math.inf  # Optuna's own pick
    assert queries.best_trial("s1", home=home).trial.number == finite.number
    summary = queries.search_summary("s1", home=home)
    assert summary.best is not None and summary.best.number == finite.number
    assert summary.top[0].number == finite.number
    assert len(summary.top) == 5  # s1's five complete trials; the infinite one is left out
    assert all(r.value is not None and math.isfinite(r.value) for r in summary.top)
    family = finite.params["optimizer"]
    [group] = [g for g in summary.families if g.key == family]
    assert (group.best, group.best_trial) == (finite.value, finite.number)
    assert group.median is not None and math.isfinite(group.median)


def test_a_study_without_a_finite_value_has_no_best(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'opttune.db'}"
    study = optuna.create_study(study_name="all-inf", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE,
                                              value=math.inf))
    with pytest.raises(OpttuneError, match="no complete trial of study 'all-inf' has a "
                                           "finite value"):
        queries.best_trial("all-inf", storage=storage)
    optuna.create_study(study_name="empty", storage=storage)
    with pytest.raises(OpttuneError, match="study 'empty' has no complete trial yet"):
        queries.best_trial("empty", storage=storage)


def test_json_data_renames_and_flattens_as_documented(study_home: Path) -> None:
    best = queries.best_trial("s1", home=study_home)
    data = to_json_data(best)
    assert data["number"] == best.trial.number and "trial" not in data  # the trial inline
    listed = to_json_data(queries.list_trials("s1", home=study_home))
    assert isinstance(listed, list) and len(listed) == 6  # the list alone, no title
    [compared] = to_json_data(queries.compare(["s1"], home=study_home))["studies"]
    assert [g["optimizer"] for g in compared["groups"]] == ["sgd", "adam"]
    assert all("by" not in g and "key" not in g for g in compared["groups"])


def test_unknown_study_lists_the_known_ones(study_home: Path) -> None:
    with pytest.raises(StudyNotFoundError, match="no study named 'nope'.*known studies: s1"):
        queries.best_trial("nope", home=study_home)


def test_compare_says_why_a_family_shows_no_gain(home: Path) -> None:
    """sgd's lr range leaves out its default: no defaults trial, no gain, and the reason; adam,
    at its defaults, shows its gain."""
    from tuner.results.queries import compare
    from tuner.search.runner import search

    for name, optimizers, lr in (("honest", ["sgd"], "1e-2:1e-1"), ("plain", ["adam"], None)):
        search(task="digits-mlp", study=name, optimizers=optimizers,
               params={"lr": [lr]} if lr else None, n_trials=2, epochs=1, seed=0,
               device="cpu", home=home)
    sgd, adam = (compare([name], home=home).studies[0].groups[0] for name in ("honest", "plain"))
    assert sgd.key == "sgd" and sgd.complete == 2 and sgd.default_trial is None
    assert sgd.gain_over_default is None
    assert sgd.no_gain_reason == ("the space leaves out its default lr, so no trial ran its "
                                  "PyTorch defaults")
    assert adam.key == "adam" and adam.default_trial == 0 and adam.default_state == "COMPLETE"
    assert adam.gain_over_default is not None and adam.no_gain_reason is None
