"""Eight `--jobs` processes on one SQLite study store: the budget is met exactly, every job
runs trials, and SQLite's single writer never shows as "database is locked".

The trials are the gate task's (a digits MLP, as digits-mlp, that waits after its first
epoch until the test lets it go on): the test waits until eight trials are held at once, one
per job, so that all eight processes are proven to be working the study together (without
the gate, on a busy machine, the first jobs to finish importing torch could run the whole
budget before the last ones claim a trial); then it opens the gate, and the eight processes
report, tell and claim against the one store at the same moment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers.gate_task import TASK_REF, gate_env, open_gate, wait_reached
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.study.recovery import check
from tuner.study.studies import counted
from tuner.study.trial_attrs import OWNER_ATTR

STUDY = "eight"
JOBS = 8
TRIALS = 16


@pytest.mark.slow
def test_eight_jobs_on_one_sqlite_store_run_exactly_the_budget(
        home: Path, tmp_path: Path) -> None:
    """Guards --jobs 8 on SQLite: exit 0, exactly 16 finished trials (counted, no number
    twice), eight distinct owner processes, no "database is locked" anywhere in the output,
    and the MLflow store agreeing (one finished run per trial, nothing RUNNING)."""
    gate = tmp_path / "gate"
    env = gate_env(gate, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # 8 processes, 2 cores
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--task", TASK_REF, "--study", STUDY,
         "--jobs", str(JOBS), "--n-trials", str(TRIALS), "--epochs", "2",
         "--optimizers", "adam", "--pruner", "none", "--device", "cpu", "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        held = wait_reached(gate, JOBS, proc=proc, timeout=280)  # one trial in each job
        assert len({ticket.split("-")[0] for ticket in held}) == JOBS, held
        open_gate(gate)
        output, _ = proc.communicate(timeout=280)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert "locked" not in output.lower(), output
    assert f"cpu ×{JOBS}" in output, output

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home / 'opttune.db'}")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == TRIALS == counted(trials), trials
    assert sorted(t.number for t in trials) == list(range(TRIALS))  # none twice, none lost
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    owners = {t.system_attrs[OWNER_ATTR]["pid"] for t in trials}  # every trial has an owner
    assert len(owners) == JOBS and os.getpid() not in owners and proc.pid not in owners
    assert owners == {int(ticket.split("-")[0]) for ticket in held}  # the gated processes

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trial_runs = [r for r in runs if r.data.tags.get("opttune.role") == "trial"]
    assert sorted(r.info.run_id for r in trial_runs) == \
        sorted(t.user_attrs["mlflow_run_id"] for t in trials)  # one run per trial
    assert {r.info.status for r in trial_runs} == {"FINISHED"}
    parents = [r for r in runs if r.data.tags.get("opttune.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", parents
    assert check(STUDY, home=home).problems == []
