"""A terminal's Ctrl-C on `search --jobs 2`: SIGINT to the whole foreground process group.

Real processes throughout: the search runs in a process group of its own (as a terminal's
foreground job does), both its jobs hold a trial of the gate task after its first epoch, and
the test sends SIGINT to the group, as the terminal would. The jobs run in sessions of their
own, so the search passes the signal on once; each job marks its trial interrupted and queues
it again. Every process the search started is then gone, both stores are clean, and `resume`
finishes the budget exactly.
"""

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
from helpers.gate_task import TASK_REF, gate_env, wait_reached
from helpers.processes import alive, children
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.study.recovery import check
from tuner.study.studies import counted

STUDY = "jobs-ctrl-c"
TRIALS = 4
JOBS = 2


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, theirs, …), read through /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children(todo.pop())
        found += below
        todo += below
    return found


def _study(home: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home / 'opttune.db'}")


def _as_in_a_terminal() -> None:
    """A search started from a terminal takes Ctrl-C; one started by a shell's `&` (a CI
    script that backgrounds the suite, say) inherits SIGINT ignored, and so would this one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_a_group_wide_ctrl_c_stops_every_job_cleanly_and_resume_finishes(
        home: Path, tmp_path: Path) -> None:
    """Guards --jobs against a terminal's Ctrl-C (SIGINT to the parent's group): exit 130 with
    one `Error: interrupted by SIGINT` line and no traceback, no process of the search left,
    both held trials FAIL (interrupted) and queued again once each, nothing RUNNING in either
    store, `check` clean; `resume` then runs the budget of 4 counted trials exactly."""
    gate = tmp_path / "gate"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--task", TASK_REF, "--study", STUDY,
         "--jobs", str(JOBS), "--n-trials", str(TRIALS), "--epochs", "2",
         "--optimizers", "sgd,adam", "--pruner", "none", "--seed", "1", "--device", "cpu",
         "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=gate_env(gate),
        start_new_session=True, preexec_fn=_as_in_a_terminal)
    started: list[int] = []
    try:
        wait_reached(gate, JOBS, proc=proc)  # both jobs hold a trial: both are busy
        started = _descendants(proc.pid)
        jobs = children(proc.pid)
        assert len(jobs) == JOBS, jobs  # the subject: the two job processes (and below them)
        assert len(started) > JOBS, started  # each job's MLflow tracker process too
        os.killpg(os.getpgid(proc.pid), signal.SIGINT)  # what a terminal's Ctrl-C does
        output, _ = proc.communicate(timeout=120)
        deadline = time.monotonic() + 60  # the jobs end before their parent; theirs with them
        while [pid for pid in started if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not [pid for pid in started if alive(pid)], "a process outlived the search"
    assert proc.returncode == 128 + signal.SIGINT, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: interrupted by SIGINT"), output

    study = _study(home)
    trials = study.get_trials(deepcopy=False)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == JOBS, trials  # the two held trials, and nothing else finished
    assert {t.user_attrs.get("fail_reason") for t in interrupted} == {"interrupted"}
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.COMPLETE,
                                                 TrialState.PRUNED)], trials
    for t in interrupted:
        again = [r for r in trials if r.user_attrs.get("retry_of") == t.number]
        assert len(again) == 1 and again[0].state == TrialState.WAITING, (t.number, again)
    assert counted(trials) == 0

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trial_runs = [r for r in runs if r.data.tags.get("opttune.role") == "trial"]
    assert sorted(r.info.run_id for r in trial_runs) == \
        sorted(t.user_attrs["mlflow_run_id"] for t in interrupted)
    assert {r.info.status for r in trial_runs} == {"KILLED"}
    assert not [r for r in runs if r.info.status == "RUNNING"], runs  # the parent neither

    found = check(STUDY, home=home)
    assert found.trials == len(trials) and found.problems == [], found.problems

    resumed = CliRunner().invoke(cli, ["resume", STUDY, "--home", str(home)])  # no gate here
    assert resumed.exit_code == 0, resumed.output
    study = _study(home)
    trials = study.get_trials(deepcopy=False)
    assert counted(trials) == TRIALS, trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == TRIALS and len({t.number for t in finished}) == TRIALS
    for t in interrupted:  # each interrupted trial's parameters ran again, exactly once
        again = [r for r in trials if r.user_attrs.get("retry_of") == t.number]
        assert len(again) == 1 and again[0].state == TrialState.COMPLETE
        assert again[0].params == t.params
    assert check(STUDY, home=home).problems == []
