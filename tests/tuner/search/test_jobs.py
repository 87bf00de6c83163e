"""`--jobs N` on the SQLite default: N real processes share one study and its budget.

Where a test needs jobs training at the same time, or mid-trial when a signal lands, they
train the gate task (helpers.gate_task): each trial stops after its first reported epoch until
the test opens the gate, so the test knows it from files, not from a clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from helpers.gate_task import GATE_ENV, TASK_REF, gate_env, open_gate, wait_reached
from helpers.processes import alive, children
from helpers.search_process import trial_rows
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from tuner.cli.commands import cli
from tuner.study.stores import open_storage
from tuner.study.studies import counted
from tuner.study.trial_attrs import OWNER_ATTR

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# How long killed or signalled jobs may take to stop: a bound for a failure, never waited out
# when they stop (the clean-up takes about a CPU second; a loaded 2-core machine stretches it).
STOP_BOUND_S = 120


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Trials trained in this process (workers, resumes) use one thread, as each job does:
    two threads on a 2-core machine that other processes share mostly wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pid(ticket: str) -> int:
    """The process that holds a gate ticket (helpers.gate_task names them PID-N)."""
    return int(ticket.split("-")[0])


def _open_when_held(gate: Path, count: int) -> tuple[threading.Thread, list[str]]:
    """A thread that opens `gate` once `count` trials are held at it at the same time, for a
    search that runs in this process; the tickets it saw come back in the list. It opens the
    gate also when it gives up waiting, so that the search ends and the test fails on them."""
    held: list[str] = []

    def run() -> None:
        try:
            held.extend(wait_reached(gate, count))
        except AssertionError:
            pass
        finally:
            open_gate(gate)

    thread = threading.Thread(target=run, name="gate-opener", daemon=True)
    thread.start()
    return thread, held


def _held_trials(db: Path, count: int) -> list[int]:
    """The numbers of the `count` trials held at the gate, as the store shows them: RUNNING
    with one epoch reported (read again while a writer locks the file for a moment)."""
    deadline = time.monotonic() + 60
    while True:
        rows = trial_rows(db)
        held = [n for n, state, seen in rows if state == "RUNNING" and seen >= 1]
        if len(held) >= count:
            assert len(held) == count, rows
            return held
        assert time.monotonic() < deadline, f"not {count} held trials in the store: {rows}"
        time.sleep(0.01)


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
def test_two_jobs_run_exactly_the_budget_in_two_processes(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards `--jobs 2` on SQLite: two processes, neither of them the search's own, train at
    the same time (each holds a trial at the gate while the other does) and together run the
    budget of 8 exactly, each trial once, with nothing failed and both stores agreeing."""
    gate = tmp_path / "gate"
    gate_env(gate)  # creates the folder
    monkeypatch.setenv(GATE_ENV, str(gate))  # the jobs inherit it; this process trains nothing
    opener, held = _open_when_held(gate, 2)
    result = CliRunner().invoke(cli, [
        "search", "--task", TASK_REF, "--study", "par", "--n-trials", "8", "--epochs", "2",
        "--pruner", "none", "--seed", "1", "--device", "cpu", "--home", str(home), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    opener.join()  # it opened the gate: the jobs could not have finished otherwise
    assert "cpu ×2" in result.output
    assert "locked" not in result.output.lower()
    study = _study(home, "par")
    trials = study.get_trials(states=FINISHED)
    assert len(trials) == 8 == counted(study.trials)
    assert len({t.number for t in trials}) == 8
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    owners = {t.system_attrs[OWNER_ATTR]["pid"] for t in trials}
    assert len(owners) == 2 and os.getpid() not in owners  # two processes, not this one
    assert {_pid(ticket) for ticket in held} == owners, held  # and they trained at once
    _assert_stores_agree(home, "par")


@pytest.mark.slow
def test_sigterm_stops_every_job_cleanly_and_resume_finishes(home: Path, tmp_path: Path) -> None:
    """Guards SIGTERM to `--jobs 2` while both jobs are mid-trial (each holds a trial at the
    gate: one epoch reported, one to come): exit 143, both trials FAIL (interrupted) and
    queued once each, no job left, both stores agree; `resume` then runs the budget of 4."""
    gate = tmp_path / "gate"
    command = [sys.executable, "-m", "tuner", "search", "--task", TASK_REF, "--study", "term",
               "--n-trials", "4", "--epochs", "2", "--pruner", "none",
               "--optimizers", "sgd,adam", "--device", "cpu", "--home", str(home), "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=gate_env(gate))
    try:
        wait_reached(gate, 2, proc=proc)  # both jobs are training
        training = _held_trials(home / "opttune.db", 2)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=STOP_BOUND_S)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "Traceback" not in output, output
    study = _study(home, "term")
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert sorted(t.number for t in interrupted) == sorted(training), output  # both jobs'
    assert {t.user_attrs.get("fail_reason") for t in interrupted} == {"interrupted"}
    for owner in {t.system_attrs[OWNER_ATTR]["pid"] for t in interrupted}:
        with pytest.raises(ProcessLookupError):  # no job outlives its parent
            os.kill(owner, 0)
    retries = [t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs]
    assert sorted(retries) == sorted(t.number for t in interrupted)  # each queued once
    _assert_stores_agree(home, "term")

    resumed = CliRunner().invoke(cli, ["resume", "term", "--home", str(home)])
    assert resumed.exit_code == 0, resumed.output
    study = _study(home, "term")
    assert counted(study.trials) == 4 == len(study.get_trials(states=FINISHED))
    _assert_ran_again_once(study, interrupted)
    _assert_stores_agree(home, "term")


@pytest.mark.slow
def test_jobs_0_creates_the_study_for_workers_and_a_worker_runs_it(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, [
        "search", "--task", "digits-mlp", "--study", "later", "--n-trials", "3", "--epochs", "1",
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


@pytest.mark.slow
def test_jobs_stop_by_themselves_when_their_parent_is_killed(home: Path, tmp_path: Path) -> None:
    """Guards the jobs' parent watch: after SIGKILL of `--jobs 2` (which can pass nothing
    on) while each job holds a trial at the gate (one epoch reported, one to come), each job
    notices by itself, marks its trial interrupted and queues it, and exits without a
    traceback on the output it shares with its dead parent; `resume` then runs those trials
    again and leaves nothing RUNNING."""
    gate = tmp_path / "gate"
    command = [sys.executable, "-m", "tuner", "search", "--task", TASK_REF, "--study",
               "orphan", "--n-trials", "2", "--epochs", "2", "--optimizers", "adam",
               "--pruner", "none", "--device", "cpu", "--home", str(home), "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=gate_env(gate))
    jobs: list[int] = []
    try:
        held = wait_reached(gate, 2, proc=proc)
        jobs = children(proc.pid)
        assert sorted(jobs) == sorted(_pid(ticket) for ticket in held)  # each holds a trial
        training = _held_trials(home / "opttune.db", 2)
        proc.kill()
        proc.wait(timeout=30)
        # The jobs (and their MLflow processes) write to the killed search's output: it ends
        # when the last of them has exited. The gate stays closed: a job that did not notice
        # would wait there far past the bound.
        try:
            output = proc.communicate(timeout=STOP_BOUND_S)[0]
        except subprocess.TimeoutExpired:
            pytest.fail(f"a job outlived its parent by {STOP_BOUND_S} s: "
                        f"{[pid for pid in jobs if alive(pid)]} still run")
        deadline = time.monotonic() + 30
        while [pid for pid in jobs if alive(pid)]:  # past closing its files, not yet exited
            assert time.monotonic() < deadline, "a job outlived its parent"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in jobs:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in output, output
    study = _study(home, "orphan")
    assert not study.get_trials(states=(TrialState.RUNNING,))  # they stopped, not died
    stopped = [study.trials[number] for number in training]
    assert {(t.state, t.user_attrs.get("fail_reason")) for t in stopped} == \
        {(TrialState.FAIL, "interrupted")}  # not left to finish: they would be COMPLETE
    retries = [t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs]
    assert sorted(retries) == sorted(training)  # each queued once

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
