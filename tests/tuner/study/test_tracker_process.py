"""The tracker in a process of its own: the same runs as in one process, the same errors, and
a process that outlives neither a Ctrl-C's clean-up nor its search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.processes import alive, children
from mlflow import MlflowClient

from tuner.errors import StoreError
from tuner.study.tracker import Tracker
from tuner.study.tracker_process import FORWARDED, RESTARTS, TrackerCallError, TrackerProcess


@pytest.fixture
def process() -> Iterator[TrackerProcess]:
    with TrackerProcess() as started:
        yield started


def _ignored(pid: int) -> set[int]:
    """The signals process `pid` ignores (SigIgn in its /proc status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [mask] = [int(line.split()[1], 16) for line in status.splitlines()
              if line.startswith("SigIgn:")]
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def _uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def test_every_public_method_of_the_tracker_runs_in_the_process() -> None:
    public = {name for name, value in vars(Tracker).items()
              if callable(value) and not name.startswith("_")}
    assert {"start_study", "start_trial", "log_epoch", "end_trial", "trial_runs"} <= public
    assert set(FORWARDED) == public - {"ready", "warm"}  # the process's own
    for name in FORWARDED:
        assert getattr(TrackerProcess, name) is not getattr(Tracker, name)


def test_a_study_tracked_through_the_process_is_what_one_process_logs(
        home: Path, process: TrackerProcess) -> None:
    process.open(_uri(home), home / "mlartifacts", wait=False)
    experiment, parent = process.start_study("s", task="mnist-mlp", data_source="idx",
                                             settings={"seed": 1}, space={"lr": [1e-3, 1]})
    run = process.start_trial(experiment, parent_run_id=parent, study="s", number=0,
                              config={"optimizer": "adam", "lr": 0.01})
    for epoch in range(3):
        process.log_epoch(run, epoch, {"val_acc": 0.5 + epoch / 10, "train_loss": 1.0})
    process.end_trial(run, state="COMPLETE", metrics={"value": 0.7})
    assert [r.run_id for r in process.trial_runs(experiment, study="s")] == [run]

    client = MlflowClient(tracking_uri=_uri(home))  # read back in this process
    logged = client.get_run(run)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"optimizer": "adam", "lr": "0.01"}
    assert logged.data.tags["mlflow.parentRunId"] == parent
    assert logged.data.tags["trial_state"] == "COMPLETE"
    history = client.get_metric_history(run, "val_acc")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert client.get_run(parent).data.params["seed"] == "1"
    space = home / "mlartifacts" / "s" / parent / "artifacts" / "space.json"
    assert space.is_file()  # the artifact went where an in-process tracker puts it


def test_a_store_that_cannot_be_opened_fails_as_in_one_process(
        home: Path, process: TrackerProcess) -> None:
    (home / "bad.db").write_bytes(b"not a database, but more than a header's worth " * 4)
    uri = f"sqlite:///{home / 'bad.db'}"
    with pytest.raises(StoreError) as here:
        Tracker(uri, home / "mlartifacts")
    process.open(uri, home / "mlartifacts", wait=False)  # its error waits for the next call
    with pytest.raises(StoreError) as there:
        process.ready()
    assert str(there.value) == str(here.value)
    assert "is not an SQLite database" in str(there.value)
    with pytest.raises(StoreError):  # and stays: no call runs on a store that did not open
        process.experiment_exists("0")


def test_an_mlflow_error_comes_back_by_name_and_the_process_goes_on(
        home: Path, process: TrackerProcess) -> None:
    process.open(_uri(home), home / "mlartifacts", wait=True)
    with pytest.raises(TrackerCallError) as raised:
        process.log_epoch("0" * 32, 0, {"val_acc": 0.5})  # no such run
    assert type(raised.value).__name__ == "MlflowException"
    assert "0" * 32 in str(raised.value)
    assert process.experiment_exists("0")  # the default experiment: the process still answers


def test_the_process_ignores_ctrl_c_and_sigterm_and_ends_with_its_pipe(
        home: Path, process: TrackerProcess) -> None:
    process.open(_uri(home), home / "mlartifacts", wait=True)
    pid = process._proc.pid
    # Ignored, not handled: the kernel drops an ignored signal when it is sent, so the answer
    # below, after both are sent, comes from a process that can no longer be hit by them.
    assert _ignored(pid) >= {signal.SIGINT, signal.SIGTERM}
    for signum in (signal.SIGINT, signal.SIGTERM):  # the search logs its clean-up through it
        os.kill(pid, signum)
    assert process.experiment_exists("0") and alive(pid)
    process.close()
    assert process._proc.returncode == 0 and not alive(pid)


def test_the_process_ends_when_its_search_is_killed(tmp_path: Path) -> None:
    script = ("import sys, time\n"
              "from tuner.study.tracker_process import TrackerProcess\n"
              "p = TrackerProcess()\n"
              "print(p._proc.pid, flush=True)\n"
              "time.sleep(600)\n")
    search = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert search.stdout is not None
        child = int(search.stdout.readline())
        assert children(search.pid) == [child]
        search.kill()
        search.wait(timeout=30)
        deadline = time.monotonic() + 60  # it may still be importing MLflow
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(child), "the tracker process outlived its search"
    finally:
        if search.poll() is None:
            search.kill()


def test_a_process_that_imported_mlflow_tracks_in_itself() -> None:
    code = ("import sys\nfrom tuner.study import tracker_process as t\nprint(t.wanted())\n"
            "import mlflow\nprint(t.wanted())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["True", "False"]


def test_a_call_cut_short_by_ctrl_c_leaves_every_later_call_its_own_answer(
        home: Path, process: TrackerProcess) -> None:
    process.open(_uri(home), home / "mlartifacts", wait=True)
    pid = process._proc.pid

    def ctrl_c(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    os.kill(pid, signal.SIGSTOP)  # the child cannot answer until it is continued
    previous = signal.signal(signal.SIGALRM, ctrl_c)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            process.experiment_exists("0")  # its answer (True) is left in the pipe
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.kill(pid, signal.SIGCONT)
    assert process.experiment_exists("12345") is False  # not the True left behind
    assert process.experiment_exists("0") is True


@pytest.mark.slow
def test_a_process_that_dies_is_started_again_and_reopens_its_store(
        home: Path, process: TrackerProcess) -> None:
    process.open(_uri(home), home / "mlartifacts", wait=True)
    experiment = process.ensure_experiment("e", tags={})
    pids = []
    for _ in range(RESTARTS):
        pids.append(process._proc.pid)
        os.kill(process._proc.pid, signal.SIGKILL)  # as the kernel's out-of-memory killer
        process._proc.wait(timeout=30)
        assert process.experiment_exists(experiment)  # a new process, the same store
    assert process.restarts == RESTARTS and len(set(pids + [process._proc.pid])) == RESTARTS + 1
    os.kill(process._proc.pid, signal.SIGKILL)
    process._proc.wait(timeout=30)
    with pytest.raises(StoreError, match="the MLflow process ended"):  # no more restarts
        process.experiment_exists(experiment)
