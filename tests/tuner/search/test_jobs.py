"""`--jobs N` on the SQLite default: N real processes share one study and its budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from helpers.processes import alive, children
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from tuner.cli.commands import cli
from tuner.study.records import OWNER_ATTR, counted
from tuner.study.stores import open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _study(home: Path, name: str) -> optuna.Study:
    # open_storage waits for a search that is still creating the store's tables
    storage = open_storage(f"sqlite:///{home / 'opttune.db'}", create=True)
    return optuna.load_study(study_name=name, storage=storage)


def _runs(home: Path, name: str) -> tuple[object, list]:
    """(the study's parent run, its trial runs) from the MLflow store."""
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("opttune.role") == "study"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("opttune.role") == "trial"]


def _assert_ran_again_once(study: optuna.Study, stopped: list[FrozenTrial]) -> None:
    """Each stopped trial's parameters ran again in exactly one finished trial."""
    for trial in stopped:
        again = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
        assert len(again) == 1 and again[0].state in FINISHED
        assert again[0].params == trial.params


def _assert_stores_agree(home: Path, name: str) -> None:
    """Every trial has one run under the study's one parent, and nothing is left RUNNING."""
    study = _study(home, name)
    parent, runs = _runs(home, name)
    assert study.user_attrs["mlflow"]["parent_run_id"] == parent.info.run_id
    assert parent.info.status != "RUNNING"
    trials = [t for t in study.trials if t.state != TrialState.WAITING]
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert sorted(int(r.data.tags["trial_number"]) for r in runs) == \
        sorted(t.number for t in trials)
    assert {r.info.run_id for r in runs} == {t.user_attrs["mlflow_run_id"] for t in trials}
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_two_jobs_run_exactly_the_budget_in_two_processes(home: Path) -> None:
    result = CliRunner().invoke(cli, [
        "search", "--task", "mnist-mlp", "--study", "par", "--n-trials", "8", "--epochs", "2",
        "--pruner", "none", "--seed", "1", "--device", "cpu", "--home", str(home), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "cpu ×2" in result.output
    assert "locked" not in result.output.lower()
    study = _study(home, "par")
    trials = study.get_trials(states=FINISHED)
    assert len(trials) == 8 == counted(study.trials)
    assert len({t.number for t in trials}) == 8
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    owners = {t.system_attrs[OWNER_ATTR]["pid"] for t in trials}
    assert len(owners) == 2 and os.getpid() not in owners  # two processes, not this one
    _assert_stores_agree(home, "par")


@pytest.mark.slow
def test_sigterm_stops_every_job_cleanly_and_resume_finishes(home: Path) -> None:
    command = [sys.executable, "-m", "tuner", "search", "--task", "mnist-mlp", "--study", "term",
               "--n-trials", "4", "--epochs", "4", "--batch-size", "32", "--pruner", "none",
               "--optimizers", "sgd,adam", "--device", "cpu", "--home", str(home), "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until both jobs are training
            if (home / "opttune.db").exists():
                try:
                    running = _study(home, "term").get_trials(states=(TrialState.RUNNING,))
                except KeyError:
                    running = []
                if len(running) == 2 and all("mlflow_run_id" in t.user_attrs for t in running):
                    break
            assert proc.poll() is None, proc.communicate()[0].decode()
            time.sleep(0.2)
        else:
            pytest.fail("the two jobs never trained at the same time")
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=90)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output
    study = _study(home, "term")
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert interrupted, output  # both jobs' trials, unless one had just finished
    assert {t.user_attrs.get("fail_reason") for t in interrupted} == {"interrupted"}
    for owner in {t.system_attrs[OWNER_ATTR]["pid"] for t in interrupted}:
        with pytest.raises(ProcessLookupError):  # no job outlives its parent
            os.kill(owner, 0)
    retries = [t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs]
    assert sorted(retries) == sorted(t.number for t in interrupted)  # each queued once
    _assert_stores_agree(home, "term")

    resumed = subprocess.run([sys.executable, "-m", "tuner", "resume", "term", "--home",
                              str(home)], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})  # a busy machine
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = _study(home, "term")
    assert counted(study.trials) == 4 == len(study.get_trials(states=FINISHED))
    _assert_ran_again_once(study, interrupted)
    _assert_stores_agree(home, "term")


@pytest.mark.slow
def test_jobs_0_creates_the_study_for_workers_and_a_worker_runs_it(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, [
        "search", "--task", "mnist-mlp", "--study", "later", "--n-trials", "3", "--epochs", "1",
        "--optimizers", "adam", "--home", str(home), "--jobs", "0"])
    assert result.exit_code == 0, result.output
    assert "is ready: 0 of 3 trials done" in result.output
    assert f"opttune worker later --home {home}" in result.output
    study = _study(home, "later")
    assert study.user_attrs["settings"]["n_trials"] == 3
    assert not [t for t in study.trials if t.state != TrialState.WAITING]  # nothing ran

    result = runner.invoke(cli, ["worker", "later", "--home", str(home)])
    assert result.exit_code == 0, result.output
    study = _study(home, "later")
    assert counted(study.trials) == 3 == len(study.trials)
    _assert_stores_agree(home, "later")

    # A raised budget reaches every worker through the study.
    result = runner.invoke(cli, ["resume", "later", "--home", str(home), "--n-trials", "2",
                                 "--jobs", "0"])
    assert result.exit_code == 0, result.output
    assert _study(home, "later").user_attrs["settings"]["n_trials"] == 5


def test_a_worker_for_an_unknown_study_says_which_exist(home: Path) -> None:
    (home / "opttune.db").touch()
    result = CliRunner().invoke(cli, ["worker", "nope", "--home", str(home)])
    assert result.exit_code == 1
    assert "Error: no study named 'nope'" in result.output
    assert "Traceback" not in result.output


def test_too_many_jobs_for_the_devices_fail_before_any_work(home: Path) -> None:
    result = CliRunner().invoke(cli, [
        "search", "--task", "mnist-mlp", "--home", str(home), "--jobs", "3",
        "--devices", "cpu", "--device", "cpu"])
    assert result.exit_code == 1
    assert "give --device or --devices, not both" in result.output
    assert not (home / "opttune.db").exists()


def _early_in_a_trial(home: Path, name: str, proc: subprocess.Popen[bytes]) -> list[int]:
    """Wait until both jobs run and a trial has reported its first epochs (several are left);
    the numbers of the trials running then."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0].decode()
        try:
            running = _study(home, name).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # not created yet
            running = []
        if len(children(proc.pid)) == 2 and any(0 < len(t.intermediate_values) < 10
                                                 for t in running):
            return [t.number for t in running]
        time.sleep(0.1)
    pytest.fail("no job was early in a trial while both ran")


@pytest.mark.slow
def test_jobs_stop_by_themselves_when_their_parent_is_killed(home: Path) -> None:
    """Guards the jobs' parent watch: after SIGKILL of `--jobs 2` (which can pass nothing
    on), each job notices within seconds, marks its trial interrupted and queues it, and
    exits; `resume` then runs those trials again and leaves nothing RUNNING."""
    command = [sys.executable, "-m", "tuner", "search", "--task", "digits-mlp", "--study",
               # Trials long enough (40 epochs) that none ends in the second or so a job
               # takes to notice its parent is gone.
               "orphan", "--n-trials", "2", "--epochs", "40", "--optimizers", "adam",
               "--pruner", "none", "--device", "cpu", "--home", str(home), "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    jobs: list[int] = []
    try:
        training = _early_in_a_trial(home, "orphan", proc)
        jobs = children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in jobs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in jobs if alive(pid)], "a job outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in jobs:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    study = _study(home, "orphan")
    assert not study.get_trials(states=(TrialState.RUNNING,))  # they stopped, not died
    stopped = [study.trials[number] for number in training]
    assert stopped and {(t.state, t.user_attrs.get("fail_reason")) for t in stopped} == \
        {(TrialState.FAIL, "interrupted")}  # not left to finish: they would be COMPLETE
    retries = [t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs]
    assert set(training) <= set(retries) and len(retries) == len(set(retries))

    resumed = CliRunner().invoke(cli, ["resume", "orphan", "--home", str(home)])
    assert resumed.exit_code == 0, resumed.output
    study = _study(home, "orphan")
    assert counted(study.trials) == 2 == len(study.get_trials(states=FINISHED))
    _assert_ran_again_once(study, stopped)
    _assert_stores_agree(home, "orphan")


@pytest.mark.slow
def test_four_workers_racing_for_a_budget_of_five_run_exactly_five(home: Path) -> None:
    """Guards the budget claim across processes on SQLite: four `opttune worker` processes
    started at once on a study of five trials run exactly five, each trial once, and all
    exit 0."""
    created = CliRunner().invoke(cli, [
        "search", "--task", "digits-mlp", "--study", "race", "--n-trials", "5", "--epochs", "1",
        "--optimizers", "sgd,adam", "--device", "cpu", "--home", str(home), "--jobs", "0"])
    assert created.exit_code == 0, created.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # four processes on a shared machine
    workers = [subprocess.Popen([sys.executable, "-m", "tuner", "worker", "race", "--home",
                                 str(home)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env) for _ in range(4)]
    try:
        outputs = [w.communicate(timeout=300)[0].decode() for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
        assert "locked" not in output.lower(), output
    study = _study(home, "race")
    assert len(study.trials) == 5 == counted(study.trials)
    assert [t.number for t in study.get_trials(states=FINISHED)] == [0, 1, 2, 3, 4]
    owners = {t.system_attrs[OWNER_ATTR]["pid"] for t in study.trials}
    assert owners <= {w.pid for w in workers}
    _assert_stores_agree(home, "race")
