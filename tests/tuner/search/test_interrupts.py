"""A second Ctrl-C while a search is already stopping: the clean-up the first one started
(the trial marked interrupted and queued again, its MLflow run and the study's parent run
ended) runs to its end, the process exits as for one Ctrl-C, and resume finishes the study.

Real processes and stores throughout. To catch the clean-up in the act, the test holds the
MLflow SQLite file's write lock (as any other process could) while the first SIGINT lands:
the Optuna side of the clean-up goes through, the MLflow side waits for the lock, and the
second SIGINT arrives while the search is visibly still stopping.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from helpers.search_process import retries_queued, start_search, trial_rows, wait_mid_trial
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.study.recovery import check

STUDY = "twice"


def _load(home: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home / 'opttune.db'}")


def _runs(home: Path) -> list[Any]:
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id], max_results=1000))


def _assert_settled(home: Path) -> None:
    """Nothing RUNNING in either store, and every trial's run ended as its trial did."""
    study = _load(home)
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    runs = {r.info.run_id: r for r in _runs(home)}
    assert not [r.info.run_name for r in runs.values() if r.info.status == "RUNNING"]
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        interrupted = t.user_attrs.get("fail_reason") in ("killed", "interrupted")
        expected = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED",
                    "FAIL": "KILLED" if interrupted else "FAILED"}[t.state.name]
        assert runs[t.user_attrs["mlflow_run_id"]].info.status == expected, t.number
    assert check(STUDY, home=home).problems == []


def _pending(pid: int, signum: int) -> bool:
    """Whether `signum` waits, undelivered, for process `pid` (its /proc status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [int(line.split()[1], 16) for line in status.splitlines()
             if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signum - 1)) for mask in masks)


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` (its /proc status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [caught] = [int(line.split()[1], 16) for line in status.splitlines()
                if line.startswith("SigCgt:")]
    return bool(caught & (1 << (signum - 1)))


def _wait_for(what: str, condition: Any, proc: subprocess.Popen[str],
              timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the search exited before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_second_sigint_during_the_clean_up_waits_for_it(home: Path, tmp_path: Path) -> None:
    db = home / "opttune.db"
    # MLflow's store waits up to a minute for a lock (SQLite's busy timeout, in the URL): the
    # steps below take well under a second, and a loaded machine must not make it give up.
    tracking = f"sqlite:///{home / 'mlflow.db'}?timeout=60"
    proc = start_search(home, STUDY, trials=2, gate=tmp_path / "gate",
                        extra=["--tracking-uri", tracking])
    lock: sqlite3.Connection | None = None
    try:
        number = wait_mid_trial(proc, db, tmp_path / "gate")
        # Another process takes MLflow's write lock: MLflow's writes wait for it.
        lock = sqlite3.connect(home / "mlflow.db", timeout=60, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        proc.send_signal(signal.SIGINT)
        _wait_for("interrupted trial queued again", lambda: retries_queued(db, number) == 1,
                  proc)
        # The Optuna side is done, the MLflow side waits: the search is still stopping.
        assert dict((n, s) for n, s, _ in trial_rows(db))[number] == "FAIL"
        assert _catches(proc.pid, signal.SIGINT)  # opttune's handler, not the default
        proc.send_signal(signal.SIGINT)
        # The kernel has handed the second SIGINT to the search while the lock is held.
        _wait_for("second SIGINT delivered", lambda: not _pending(proc.pid, signal.SIGINT),
                  proc)
        assert proc.poll() is None, "the second SIGINT cut the clean-up short"
        lock.rollback()
        lock.close()
        lock = None
        output, _ = proc.communicate(timeout=60)
    finally:
        if lock is not None:
            lock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, output
    assert "Traceback" not in output and "before any trial ran" not in output, output
    assert "Error: interrupted by SIGINT (asked again while stopping" in output, output
    assert "MLflow:" not in output, output  # every MLflow write waited for the lock and went in

    study = _load(home)
    trial = study.trials[number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    queued = [t for t in study.trials if t.user_attrs.get("retry_of") == number]
    assert len(queued) == 1 and queued[0].state == TrialState.WAITING
    parent = [r for r in _runs(home) if r.data.tags.get("opttune.role") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    _assert_settled(home)

    resumed = CliRunner().invoke(cli, ["resume", STUDY, "--device", "cpu", "--home", str(home),
                                       "--tracking-uri", tracking])
    assert resumed.exit_code == 0, resumed.output
    study = _load(home)
    again = [t for t in study.trials if t.user_attrs.get("retry_of") == number]
    assert len(again) == 1 and again[0].state == TrialState.COMPLETE
    assert again[0].params == trial.params
    assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 2
    _assert_settled(home)


def test_held_signals_wait_for_the_block_and_only_the_first_raises() -> None:
    """In-process, on the real signal machinery: the first SIGINT raises, a SIGTERM and a
    SIGINT after it are only recorded, and the handlers are restored after the block."""
    import os

    from tuner.signals import Interrupted, sigterm_as_interrupt

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    cleaned = False
    with sigterm_as_interrupt(hold_repeats=True) as received:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)  # the handler interrupts the sleep: no test waits this long
            pytest.fail("the first SIGINT did not raise")
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 60
            while len(received) < 3:  # both handlers run, and raise nothing
                assert time.monotonic() < deadline, received
                time.sleep(0.001)
            cleaned = True
    assert cleaned and received == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    stopped = Interrupted(received[0], held=len(received) - 1)
    assert stopped.exit_code == 130 and "asked again while stopping" in str(stopped)
    assert str(Interrupted(signal.SIGTERM)) == "interrupted by SIGTERM"
