"""Claiming trials against the study's budget, with a real second process as the "other"."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tuner.study import optuna_adapter
from tuner.study.claims import claim_next
from tuner.study.stores import open_storage
from tuner.study.studies import fail_stale, stale_trials
from tuner.study.trial_attrs import OWNER_ATTR


def test_claims_stop_at_the_budget_wait_for_live_trials_and_refill_dead_ones(
        tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'opttune.db'}", create=True)
    study = optuna.create_study(study_name="b", storage=storage)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    recovered: list[int] = []

    def recover() -> None:
        for trial in stale_trials(study):
            fail_stale(study, trial)
            recovered.append(trial.number)

    try:
        theirs = study.ask()  # a trial that another live process on this machine runs
        optuna_adapter.set_trial_system_attr(study, theirs, OWNER_ATTR, {
            "host": socket.gethostname(), "pid": other.pid, "start": None})

        claim = claim_next(study, target=2, recover=recover)
        assert claim.trial is not None and (claim.done, claim.running) == (0, 1)
        assert claim.trial.number == 1
        study.tell(claim.trial, 1.0)

        claim = claim_next(study, target=2, recover=recover)
        assert claim.trial is None and claim.wait  # full, but theirs may still die

        other.kill()
        other.wait()
        claim = claim_next(study, target=2, recover=recover)
        assert recovered == [0]  # failed once, under the lock
        assert claim.trial is not None and claim.trial.number == 2
        assert study.trials[2].user_attrs["retry_of"] == 0  # its parameters, once more
        study.tell(claim.trial, 2.0)

        claim = claim_next(study, target=2, recover=recover)
        assert claim.trial is None and not claim.wait and claim.done == 2
        assert recovered == [0]
    finally:
        other.kill()
        other.wait()


LOCKS = Path("/proc/locks")
DEADLINE_S = 60.0  # how long a wait for an event may take before the test fails


def flock_lines(path: Path) -> list[list[str]]:
    """The kernel's entries in /proc/locks for the file at `path`: its holders, and the
    requests blocked on it (``->`` first), each split into fields after the ordinal."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return [fields for line in LOCKS.read_text().splitlines()
            if inode in (fields := line.split()[1:])]


def printed(proc: subprocess.Popen[str]) -> bool:
    """Whether the process has written to its stdout pipe (or closed it), without reading."""
    assert proc.stdout is not None
    return bool(select.select([proc.stdout], [], [], 0)[0])


@pytest.mark.skipif(not LOCKS.exists(), reason="needs Linux's /proc/locks to see the waiter")
def test_the_study_lock_holds_off_another_process_until_released(tmp_path: Path) -> None:
    """While this process holds the study lock, another process's study_lock waits in the
    kernel for it (seen in /proc/locks, not guessed from a sleep) and does not get in; it gets
    in only after the release, which it proves by reading what was written just before."""
    from tuner.study.claims import study_lock

    url = f"sqlite:///{tmp_path / 'opttune.db'}"
    study = optuna.create_study(study_name="b", storage=open_storage(url, create=True))
    lock_file, released = tmp_path / "opttune.db.lock", tmp_path / "released"
    waiter = (f"import optuna, pathlib; from tuner.study.claims import study_lock; "
              f"s = optuna.load_study(study_name='b', storage={url!r}); print('ready', "
              f"flush=True)\nwith study_lock(s): print('got', pathlib.Path({str(released)!r})"
              f".read_text() if pathlib.Path({str(released)!r}).exists() else 'early', "
              f"flush=True)")
    proc: subprocess.Popen[str] | None = None
    try:
        with study_lock(study):
            proc = subprocess.Popen([sys.executable, "-c", waiter], stdout=subprocess.PIPE,
                                    text=True)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            # Wait for the kernel to show it blocked on our lock; a lock that let it through
            # would let it print, and a lock on another file (or none) would never show it.
            deadline = time.monotonic() + DEADLINE_S
            while ["->", "FLOCK", "ADVISORY", "WRITE", str(proc.pid)] not in \
                    [fields[:5] for fields in flock_lines(lock_file)]:
                assert not printed(proc), f"in (or dead) while we hold it: {proc.stdout.read()!r}"
                assert time.monotonic() < deadline, "the waiter never blocked on the lock file"
                time.sleep(0.02)
            assert ["FLOCK", "ADVISORY", "WRITE", str(os.getpid())] in \
                [fields[:4] for fields in flock_lines(lock_file)]  # and we are its holder
            assert not printed(proc)
            released.write_text("after release")  # the last thing done while holding it
        out, _ = proc.communicate(timeout=DEADLINE_S)
        assert out.splitlines() == ["got after release"]
        assert proc.returncode == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert lock_file.exists()  # the lock file sits next to the store


def test_a_re_run_is_claimed_before_other_queued_trials(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'opttune.db'}", create=True)
    study = optuna.create_study(study_name="r", storage=storage)
    study.enqueue_trial({"x": 1.0})  # e.g. a defaults trial still waiting
    study.enqueue_trial({"x": 2.0}, user_attrs={"retry_of": 0})  # an interrupted trial's re-run

    first = claim_next(study, target=5, recover=lambda: None)
    assert first.trial is not None
    assert first.trial.user_attrs.get("retry_of") == 0
    assert first.trial.suggest_float("x", 0.0, 3.0) == 2.0
    study.tell(first.trial, 0.0)

    second = claim_next(study, target=5, recover=lambda: None)
    assert second.trial is not None and second.trial.suggest_float("x", 0.0, 3.0) == 1.0
