"""Kill a real search mid-trial (SIGKILL, SIGINT, SIGTERM) and check both stores afterwards.

Modelled on Optuna's own storage tests: a real process, a real SQLite study store and a real
MLflow store; the signal lands while a trial is training (the gate task holds the trial
after its first reported epoch until the signal has landed). Afterwards every trial that had
finished is intact, nothing is left RUNNING in either store, and the interrupted trial's
parameters run again exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from helpers.gate_task import TASK_REF, gate_env
from helpers.search_process import start_search, wait_mid_trial
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.study.recovery import check

STUDY = "k"


def load(home: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home / 'opttune.db'}")


def mlflow_runs(home: Path) -> list[Any]:
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id], max_results=1000))


def snapshot(study: optuna.Study) -> dict[int, tuple[str, float | None, dict[str, Any]]]:
    return {t.number: (t.state.name, t.value, dict(t.params))
            for t in study.get_trials(deepcopy=False) if t.state.is_finished()}


def assert_nothing_running(home: Path) -> None:
    study = load(home)
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    statuses = {r.info.run_name: r.info.status for r in mlflow_runs(home)}
    assert "RUNNING" not in statuses.values(), statuses


def assert_consistent(home: Path) -> None:
    """Each trial's MLflow run has the status its trial's state calls for."""
    runs = {r.info.run_id: r for r in mlflow_runs(home)}
    for t in load(home).get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        run = runs[t.user_attrs["mlflow_run_id"]]
        interrupted = t.user_attrs.get("fail_reason") in ("killed", "interrupted")
        expected = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED",
                    "FAIL": "KILLED" if interrupted else "FAILED"}[t.state.name]
        assert run.info.status == expected, (t.number, t.state, run.info.status)
        assert run.data.tags["trial_state"] in (t.state.name, "KILLED")


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_repairs_both_stores(home: Path, tmp_path: Path) -> None:
    proc = start_search(home, STUDY, trials=3, gate=tmp_path / "gate")
    killed = wait_mid_trial(proc, home / "opttune.db", tmp_path / "gate", after=1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    before = load(home)
    finished_before = snapshot(before)
    victim = before.trials[killed]
    assert victim.state == TrialState.RUNNING  # what Optuna alone would leave forever
    assert finished_before and all(s == "COMPLETE" for s, _, _ in finished_before.values())

    result = CliRunner().invoke(cli, ["resume", STUDY, "--n-trials", "1", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert f"trial {killed} was left running" in result.output

    after = load(home)
    for number, record in finished_before.items():
        assert snapshot(after)[number] == record  # every finished trial intact
    gone = after.trials[killed]
    assert gone.state == TrialState.FAIL and gone.user_attrs["fail_reason"] == "killed"
    retries = [t for t in after.trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == victim.params
    assert retries[0].user_attrs.get("defaults_trial") is True  # it was Adam's defaults trial
    runs = {r.info.run_id: r for r in mlflow_runs(home)}
    assert runs[victim.user_attrs["mlflow_run_id"]].info.status == "KILLED"
    assert_nothing_running(home)
    assert_consistent(home)

    assert check(STUDY, home=home).problems == []


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_mark_the_trial_and_exit_nonzero(home: Path, tmp_path: Path,
                                                            signum: int, code: int) -> None:
    proc = start_search(home, STUDY, trials=3, gate=tmp_path / "gate")
    interrupted = wait_mid_trial(proc, home / "opttune.db", tmp_path / "gate")
    finished_before = snapshot(load(home))
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, output
    assert "Traceback" not in output
    assert f"Error: interrupted by {signal.Signals(signum).name}" in output

    study = load(home)
    for number, record in finished_before.items():
        assert snapshot(study)[number] == record
    trial = study.trials[interrupted]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "interrupted"
    queued = [t for t in study.trials if t.user_attrs.get("retry_of") == interrupted]
    assert len(queued) == 1 and queued[0].state == TrialState.WAITING
    assert queued[0].system_attrs["fixed_params"] == trial.params
    assert_nothing_running(home)
    assert_consistent(home)
    assert check(STUDY, home=home).problems == []
    parent = [r for r in mlflow_runs(home) if r.data.tags.get("opttune.role") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"


@pytest.mark.slow
def test_sigterm_to_a_worker_marks_its_trial_and_resume_runs_it_again(home: Path,
                                                                      tmp_path: Path) -> None:
    """Guards `opttune worker` under SIGTERM: exit 143 with one error line, its trial FAIL
    (interrupted) and queued once with the same parameters, both stores consistent; `resume`
    then runs the queued trial and leaves nothing RUNNING."""
    created = CliRunner().invoke(cli, [
        "search", "--task", TASK_REF, "--study", STUDY, "--n-trials", "1", "--epochs", "2",
        "--optimizers", "adam", "--pruner", "none", "--device", "cpu",
        "--home", str(home), "--jobs", "0"])
    assert created.exit_code == 0, created.output
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "worker", STUDY, "--home",
                             str(home)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=gate_env(tmp_path / "gate"))
    try:
        interrupted = wait_mid_trial(proc, home / "opttune.db", tmp_path / "gate")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, output
    assert "Error: interrupted by SIGTERM" in output and "Traceback" not in output

    study = load(home)
    trial = study.trials[interrupted]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    queued = [t for t in study.trials if t.user_attrs.get("retry_of") == interrupted]
    assert len(queued) == 1 and queued[0].state == TrialState.WAITING
    assert queued[0].system_attrs["fixed_params"] == trial.params
    assert_nothing_running(home)
    assert_consistent(home)

    result = CliRunner().invoke(cli, ["resume", STUDY, "--home", str(home)])
    assert result.exit_code == 0, result.output
    study = load(home)
    again = [t for t in study.trials if t.user_attrs.get("retry_of") == interrupted]
    assert len(again) == 1 and again[0].state == TrialState.COMPLETE
    assert again[0].params == trial.params
    assert_nothing_running(home)
    assert_consistent(home)
    assert check(STUDY, home=home).problems == []
