"""The MLflow tracker process of a search is SIGKILLed mid-study: the search starts it again
and loses nothing.

A search logs to MLflow through a child process (tuner.study.tracker_process), restarted up
to three times when it dies. Real processes throughout: `opttune search` of the gate task
in a process of its own, its tracker child found through /proc and killed while trial 1 is
held after its first epoch (that epoch's metrics already in MLflow, so that nothing is in
flight), then trial 1 and 2 let go on. Every trial then has its one finished run with every
epoch's metrics, as if the tracker had never died.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers.gate_task import open_gate, release, wait_reached
from helpers.processes import alive, children
from helpers.search_process import start_search, wait_mid_trial
from mlflow import MlflowClient

from tuner.study.recovery import check

STUDY = "tracker-killed"
TRIALS = 3
EPOCHS = 2


def _trackers(search_pid: int) -> list[int]:
    """The search's live tracker children (by their command line)."""
    found = []
    for pid in children(search_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if b"tuner.study.tracker_process" in cmdline:
            found.append(pid)
    return found


def _run_id_of(db: Path, number: int) -> str | None:
    """Trial `number`'s MLflow run id, read straight from the study's SQLite store."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        row = con.execute(
            "SELECT a.value_json FROM trial_user_attributes a JOIN trials t "
            "ON a.trial_id = t.trial_id WHERE t.number = ? AND a.key = 'mlflow_run_id'",
            (number,)).fetchone()
    return None if row is None else str(json.loads(row[0]))


def _epoch_logged(mlflow_db: Path, run_id: str, step: int) -> bool:
    """Whether run `run_id` has metrics at `step` in the MLflow SQLite store."""
    try:
        with sqlite3.connect(f"file:{mlflow_db}?mode=ro", uri=True, timeout=5) as con:
            row = con.execute("SELECT COUNT(*) FROM metrics WHERE run_uuid = ? AND step = ?",
                              (run_id, step)).fetchone()
    except sqlite3.OperationalError:  # a writer holds the lock for a moment
        return False
    return int(row[0]) > 0


def _wait(condition: Any, what: str, timeout: float = 60) -> Any:
    """Wait until `condition()` is truthy (an event in a store or /proc); fail after
    `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_killed_tracker_process_is_restarted_and_no_run_is_lost(
        home: Path, tmp_path: Path) -> None:
    """Guards TrackerProcess's restart: a search whose MLflow process is SIGKILLed between
    calls exits 0, a new tracker process takes over, every trial is COMPLETE with exactly
    one FINISHED run holding both epochs' metrics, the parent run is finished, and `opttune
    check` finds nothing to repair."""
    db = home / "opttune.db"
    mlflow_db = home / "mlflow.db"
    gate = tmp_path / "gate"
    proc = start_search(home, STUDY, trials=TRIALS, gate=gate, epochs=EPOCHS)
    try:
        held = wait_mid_trial(proc, db, gate, after=1)  # trial 0 done; trial 1 at the gate
        run_id = _run_id_of(db, held)
        assert run_id, "the held trial has no MLflow run"
        # Its first epoch is in MLflow: the tracker has nothing in flight when it dies.
        _wait(lambda: _epoch_logged(mlflow_db, run_id, 0), "the held trial's epoch 0 in MLflow")

        trackers = _trackers(proc.pid)
        assert len(trackers) == 1, trackers  # the subject: the search's one tracker process
        killed = trackers[0]
        os.kill(killed, signal.SIGKILL)
        _wait(lambda: not alive(killed), "the tracker process to die")

        # The next MLflow call (the held trial's epoch 1) starts a new tracker: by the time
        # trial 2 is held at its gate, trial 2's run was created through it.
        tickets = wait_reached(gate, 2, proc=proc)
        release(gate, tickets[-1])
        wait_reached(gate, 3, proc=proc)
        revived = _trackers(proc.pid)
        assert len(revived) == 1 and revived[0] != killed, (killed, revived)
        open_gate(gate)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    assert [(t.number, t.state.name) for t in trials] == \
        [(n, "COMPLETE") for n in range(TRIALS)], trials
    metric = study.user_attrs["objective"]["metric"]

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("opttune.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", parents
    trial_runs = [r for r in runs if r.data.tags.get("opttune.role") == "trial"]
    assert sorted(int(r.data.tags["trial_number"]) for r in trial_runs) == list(range(TRIALS))
    by_id = {r.info.run_id: r for r in trial_runs}
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]  # the trial's run is the one in MLflow
        assert int(run.data.tags["trial_number"]) == t.number
        assert run.info.status == "FINISHED", (t.number, run.info.status)
        assert run.data.tags["trial_state"] == "COMPLETE"
        history = client.get_metric_history(run.info.run_id, metric)
        assert sorted(m.step for m in history) == list(range(EPOCHS)), (t.number, history)
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == \
            [t.intermediate_values[e] for e in range(EPOCHS)]
        assert run.data.metrics["value"] == t.value

    found = check(STUDY, home=home)
    assert found.trials == TRIALS and found.problems == [], found.problems
