"""`opttune check`: every kind of damage a crash can leave is found, and --fix repairs it.

A real study is run once; each test damages a copy of its two stores the way a kill at an
unlucky moment would (a run left RUNNING after Optuna's tell, a trial whose process is gone,
a run created just before the kill, ...) and checks what `check` reports and repairs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.cli.commands import cli
from tuner.search.runner import resume, search
from tuner.study import optuna_adapter, studies
from tuner.study.recovery import check
from tuner.study.tracker import Tracker
from tuner.study.trial_attrs import OWNER_ATTR

NAME = "c"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    folder = tmp_path_factory.mktemp("check") / "home"
    folder.mkdir()
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    search(task="mnist-mlp", study=NAME, n_trials=3, epochs=1, optimizers=["sgd"], seed=1,
           batch_size="512", pruner="none", home=folder)
    return folder


@pytest.fixture
def stores(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built study's home."""
    home = tmp_path / "home"
    shutil.copytree(built, home)
    return home


def load(home: Path) -> optuna.Study:
    return optuna.load_study(study_name=NAME, storage=f"sqlite:///{home / 'opttune.db'}")


def client(home: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def tracker(home: Path) -> Tracker:
    return Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")


def ids(home: Path) -> dict[str, str]:
    return dict(load(home).user_attrs["mlflow"])


def dead_owner() -> dict[str, Any]:
    """The owner record of a process that has ended."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    owner = studies.owner_record()
    owner.update(pid=int(proc.stdout), start="0")
    return owner


def add_finished(study: optuna.Study, state: TrialState, attrs: dict[str, Any],
                 value: float | None = None) -> int:
    config = {"optimizer": "sgd", "lr": 0.01, "weight_decay": 0.0, "batch_size": 128,
              "epochs": 1, "scheduler": "none"}
    study.add_trial(create_trial(
        state=state, value=value, params={"optimizer": "sgd", "lr": 0.01},
        distributions={"optimizer": CategoricalDistribution(["sgd"]),
                       "lr": FloatDistribution(1e-4, 1.0, log=True)},
        user_attrs={"config": config, **attrs},
        intermediate_values={0: value} if value is not None else None))
    return study.trials[-1].number


def kinds(home: Path, **kwargs: Any) -> list[tuple[str, int | None]]:
    return sorted(((p.kind, p.trial) for p in check(NAME, home=home, **kwargs).problems),
                  key=str)


def test_a_clean_study_has_no_problems(stores: Path) -> None:
    report = check(NAME, home=stores)
    assert report.problems == [] and report.clean
    assert report.trials == 3 and report.runs == 3
    result = CliRunner().invoke(cli, ["check", NAME, "--home", str(stores)])
    assert result.exit_code == 0, result.output
    assert "No problems" in result.output


def test_every_kind_of_crash_damage_is_found_then_fixed(stores: Path) -> None:
    study, mlflow, track = load(stores), client(stores), tracker(stores)
    experiment, parent = ids(stores)["experiment_id"], ids(stores)["parent_run_id"]
    trial0 = study.trials[0]
    # Killed between Optuna's tell and MLflow's end: a finished trial's run still RUNNING.
    mlflow.update_run(trial0.user_attrs["mlflow_run_id"], status="RUNNING")
    mlflow.set_tag(trial0.user_attrs["mlflow_run_id"], "trial_state", "RUNNING")
    # SIGKILL mid-trial: RUNNING in Optuna (owner gone) and in MLflow.
    stale = study.ask()
    optuna_adapter.set_trial_system_attr(study, stale, OWNER_ATTR, dead_owner())
    stale.suggest_categorical("optimizer", ["sgd"])
    stale.suggest_float("lr", 1e-4, 1.0, log=True)
    stale_run = track.start_trial(experiment, parent_run_id=parent, study=NAME,
                                  number=stale.number, config={"optimizer": "sgd"})
    stale.set_user_attr("mlflow_run_id", stale_run)
    # A FAIL trial whose run says FINISHED.
    failed = add_finished(study, TrialState.FAIL, {"fail_reason": "ValueError: boom"})
    failed_run = track.start_trial(experiment, parent_run_id=parent, study=NAME, number=failed,
                                   config={"optimizer": "sgd"})
    track.end_trial(failed_run, state="COMPLETE")
    # A finished trial with no run at all (MLflow was down, or a kill before create_run).
    lonely = add_finished(study, TrialState.COMPLETE, {}, value=0.5)
    # A run created just before a kill, whose id never reached any trial.
    orphan = track.start_trial(experiment, parent_run_id=parent, study=NAME, number=999,
                               config={"optimizer": "sgd"})
    # An interrupted trial marked FAIL, killed before its parameters were queued again.
    interrupted = add_finished(study, TrialState.FAIL, {"fail_reason": "interrupted"})
    track.end_trial(track.start_trial(experiment, parent_run_id=parent, study=NAME,
                                      number=interrupted, config={"optimizer": "sgd"}),
                    state="KILLED")
    # The parent left RUNNING by a search that is gone.
    mlflow.update_run(parent, status="RUNNING")
    mlflow.set_tag(parent, "opttune.owner", json.dumps(dead_owner()))

    assert kinds(stores) == sorted([
        ("run-status", 0), ("stale-trial", stale.number), ("run-status", failed),
        ("trial-without-run", lonely), ("run-without-trial", None),
        ("not-requeued", interrupted), ("parent-running", None)], key=str)
    cli_result = CliRunner().invoke(cli, ["check", NAME, "--home", str(stores)])
    assert cli_result.exit_code == 1
    assert "--fix" in cli_result.output and "stale-trial" in cli_result.output
    as_json = CliRunner().invoke(cli, ["check", NAME, "--format", "json", "--home", str(stores)])
    assert as_json.exit_code == 1
    document = json.loads(as_json.output)
    assert document["fixed"] is False and len(document["problems"]) == 7
    assert {"kind": "stale-trial", "trial": stale.number, "run_id": stale_run} in [
        {k: p[k] for k in ("kind", "trial", "run_id")} for p in document["problems"]]

    fixed = CliRunner().invoke(cli, ["check", NAME, "--fix", "--home", str(stores)])
    assert fixed.exit_code == 0, fixed.output
    assert "Repaired 7 problem(s)" in fixed.output
    assert kinds(stores) == []  # and a second check finds nothing left

    study = load(stores)
    assert study.trials[0].state == TrialState.COMPLETE  # a finished trial is never touched
    status = {r.info.run_id: r for r in mlflow.search_runs([experiment], max_results=100)}
    assert status[trial0.user_attrs["mlflow_run_id"]].info.status == "FINISHED"
    assert status[trial0.user_attrs["mlflow_run_id"]].data.tags["trial_state"] == "COMPLETE"
    gone = study.trials[stale.number]
    assert gone.state == TrialState.FAIL and gone.user_attrs["fail_reason"] == "killed"
    assert status[stale_run].info.status == "KILLED"
    for number in (stale.number, interrupted):
        retry = [t for t in study.trials if t.user_attrs.get("retry_of") == number]
        assert len(retry) == 1 and retry[0].state == TrialState.WAITING
        assert optuna_adapter.enqueued_params(retry[0]) == study.trials[number].params
    assert status[failed_run].info.status == "FAILED"
    assert status[failed_run].data.tags["fail_reason"] == "ValueError: boom"
    assert status[orphan].info.status == "KILLED"
    assert "opttune.orphan" in status[orphan].data.tags
    logged = [r for r in status.values() if r.data.tags.get("trial_number") == str(lonely)]
    assert len(logged) == 1 and logged[0].info.status == "FINISHED"
    assert logged[0].data.params["lr"] == "0.01"
    assert [m.value for m in mlflow.get_metric_history(logged[0].info.run_id, "val_acc")] == [0.5]
    assert mlflow.get_run(parent).info.status == "KILLED"


def test_a_live_trial_is_left_alone(stores: Path) -> None:
    study, track = load(stores), tracker(stores)
    live = study.ask()  # this test process owns it, and is alive
    optuna_adapter.set_trial_system_attr(study, live, OWNER_ATTR,
                                         studies.owner_record())
    run = track.start_trial(ids(stores)["experiment_id"], parent_run_id="", study=NAME,
                            number=live.number, config={"optimizer": "sgd"})
    report = check(NAME, home=stores, fix=True)
    assert report.problems == [] and report.running == [live.number]
    assert load(stores).trials[live.number].state == TrialState.RUNNING
    assert client(stores).get_run(run).info.status == "RUNNING"


def test_a_run_created_before_the_kill_is_matched_by_trial_number(stores: Path) -> None:
    """Killed between MLflow's create_run and recording its id: the run is the trial's."""
    study, track = load(stores), tracker(stores)
    stale = study.ask()
    optuna_adapter.set_trial_system_attr(study, stale, OWNER_ATTR, dead_owner())
    stale.suggest_categorical("optimizer", ["sgd"])
    run = track.start_trial(ids(stores)["experiment_id"], parent_run_id="", study=NAME,
                            number=stale.number, config={"optimizer": "sgd"})
    assert kinds(stores) == [("stale-trial", stale.number)]
    check(NAME, home=stores, fix=True)
    assert kinds(stores) == []
    assert client(stores).get_run(run).info.status == "KILLED"


def test_a_trial_killed_right_after_ask_is_stale_after_the_grace_period(
        stores: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = load(stores)
    study.ask()  # no owner record: the process died before writing it
    assert kinds(stores) == []  # young: it may be another process that is just starting
    monkeypatch.setattr(studies, "UNOWNED_GRACE_S", -1)
    assert kinds(stores) == [("stale-trial", 3)]


def test_a_missing_experiment_is_recreated_with_every_trial_logged(stores: Path) -> None:
    client(stores).delete_experiment(ids(stores)["experiment_id"])
    assert kinds(stores)[0] == ("no-experiment", None)
    check(NAME, home=stores, fix=True)
    assert kinds(stores) == []
    experiment = ids(stores)["experiment_id"]
    runs = client(stores).search_runs([experiment])
    assert sorted(r.data.tags.get("trial_number", "parent") for r in runs) == \
        ["0", "1", "2", "parent"]


def test_resume_repairs_a_run_left_running_for_a_finished_trial(stores: Path) -> None:
    run_id = load(stores).trials[1].user_attrs["mlflow_run_id"]
    client(stores).update_run(run_id, status="RUNNING")
    notes: list[str] = []

    class Notes:
        def notice(self, text: str) -> None:
            notes.append(text)

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    resume(NAME, n_trials=1, home=stores, observer=Notes())  # type: ignore[arg-type]
    assert client(stores).get_run(run_id).info.status == "FINISHED"
    assert any("trial 1 is COMPLETE but its MLflow run" in n for n in notes), notes
    assert kinds(stores) == []


def test_check_of_an_unknown_study_names_the_known_ones(stores: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "nope", "--home", str(stores)])
    assert result.exit_code == 1
    assert "Error: no study named 'nope'" in result.output and NAME in result.output
    assert "Traceback" not in result.output
