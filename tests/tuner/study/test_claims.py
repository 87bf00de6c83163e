"""Claiming trials against the study's budget, with a real second process as the "other"."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import optuna

from tuner.study import optuna_adapter
from tuner.study.claims import claim_next
from tuner.study.records import OWNER_ATTR, fail_stale, stale_trials
from tuner.study.stores import open_storage


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


def test_the_study_lock_holds_off_another_process_until_released(tmp_path: Path) -> None:
    import time

    from tuner.study.claims import study_lock

    url = f"sqlite:///{tmp_path / 'opttune.db'}"
    study = optuna.create_study(study_name="b", storage=open_storage(url, create=True))
    waiter = (f"import optuna, time; from tuner.study.claims import study_lock; "
              f"s = optuna.load_study(study_name='b', storage={url!r}); print('ready', "
              f"flush=True)\nwith study_lock(s): print(time.time(), flush=True)")
    with study_lock(study):
        proc = subprocess.Popen([sys.executable, "-c", waiter], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # it is blocked on the lock now
        released = time.time()
    got = float(proc.stdout.readline())
    proc.wait(timeout=60)
    assert got >= released
    assert (tmp_path / "opttune.db.lock").exists()  # the lock file sits next to the store


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
