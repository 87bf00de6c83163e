"""The study's budget across processes: claim the next trial atomically, heartbeat it.

Every process that runs trials of a study (one search, the `--jobs` children, an `opttune
worker` on another machine) decides "is there room for one more trial?" and asks Optuna for it
while holding one lock per study, so that `--n-trials` is the study's total and never exceeded:
an fcntl lock on a file next to an SQLite store, a PostgreSQL advisory lock (MySQL: GET_LOCK)
on a server. Trials of dead processes are failed and queued again under the same lock, so two
processes never both queue the same retry.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from tuner.study import optuna_adapter, studies, trial_attrs
from tuner.study.locations import sqlite_path

if sys.platform == "win32":  # the study lock's file lock, as each system offers one
    import msvcrt
else:
    import fcntl

POLL_SECONDS = 1.0  # how often an idle process looks again while others finish the budget


@dataclass(frozen=True)
class Claim:
    """The answer to "may I run one more trial?"."""

    trial: optuna.Trial | None  # the claimed trial, RUNNING and owned by this process
    done: int  # trials that count towards the budget
    running: int  # trials running in other processes
    wait: bool = False  # no room now, but a running trial may still fail and run again


def study_lock(study: optuna.Study) -> AbstractContextManager[None]:
    """One lock per study, shared by every process that opens the same store (a fresh
    context manager on each call)."""
    storage = optuna_adapter.backend_of(study)
    url = str(getattr(storage, "url", ""))
    key = f"opttune:{study.study_name}"
    path = sqlite_path(url)
    if path is not None:
        return _file_lock(path.with_name(path.name + ".lock"))
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        return _server_lock(engine, "SELECT pg_advisory_lock(hashtext(:key))",
                            "SELECT pg_advisory_unlock(hashtext(:key))", key)
    if engine is not None and engine.dialect.name in ("mysql", "mariadb"):
        short = "opttune:" + hashlib.sha1(key.encode()).hexdigest()  # GET_LOCK takes 64 chars
        return _server_lock(engine, "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)",
                            short)
    return _thread_lock()  # other databases: one process at a time is all we can promise


_THREAD_LOCK = threading.Lock()


@contextmanager
def _thread_lock() -> Iterator[None]:
    with _THREAD_LOCK:
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        if sys.platform == "win32":
            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s: keep waiting
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released by the kernel if we die
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def _server_lock(engine: sqlalchemy.engine.Engine, lock_sql: str, unlock_sql: str,
                 key: str) -> Iterator[None]:
    """A session-level lock on a connection of its own: the server frees it if we die."""

    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(lock_sql), {"key": key})
        conn.commit()  # hold the lock, not an open transaction
        try:
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text(unlock_sql), {"key": key})
                conn.commit()
            except Exception:
                conn.invalidate()  # never hand a connection that may hold the lock back
                raise


def claim_next(study: optuna.Study, *, target: int, recover: Callable[[], None]) -> Claim:
    """Under the study's lock: recover dead trials, count, and ask for a trial if there is room.

    RUNNING trials of other processes count as taken, so the budget is never exceeded; if one
    of them dies its parameters are queued again and a later claim picks them up. What a claim
    gets: an interrupted trial's re-run first, then the next family's defaults trial (queued
    only now, so that the store never holds trials that will not run), then a sampled trial.
    """
    with study_lock(study):
        recover()
        trials = study.get_trials(deepcopy=False)
        done = studies.counted(trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if done + len(running) < target:
            studies.queue_next_defaults(study, trials)
            with warnings.catch_warnings():  # we run the heartbeat ourselves (see heartbeat)
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                _prefer_retries(study)
                trial = study.ask()
            try:
                studies.set_owner(study, trial, studies.owner_record())
                optuna_adapter.record_heartbeat(study, trial)  # stale-detectable from birth
            except BaseException:  # Ctrl-C right after ask: never leave it RUNNING
                trial_attrs.set_fail_reason(trial, "interrupted")
                studies.requeue(study, study.tell(trial, state=TrialState.FAIL))
                raise
            return Claim(trial=trial, done=done, running=len(running))
        heartbeats = optuna_adapter.heartbeats_enabled(study)
        wait = done < target and any(_may_come_back(t, heartbeats) for t in running)
        return Claim(trial=None, done=done, running=len(running), wait=wait)


def _prefer_retries(study: optuna.Study) -> None:
    """Make `ask` pop an interrupted trial's re-run before other queued trials.

    Optuna pops queued trials lowest number first, so a re-run (queued when its trial was
    killed) would wait behind trials queued earlier (the defaults trials that studies made
    before defaults were queued lazily still hold) and, with a small budget, never run.
    """
    optuna_adapter.set_waiting_order(study, _retries_first)


def _retries_first(trial: FrozenTrial) -> tuple[bool, int]:
    return trial_attrs.retry_of(trial) is None, trial.number


def _may_come_back(trial: FrozenTrial, heartbeats: bool) -> bool:
    """Whether a running trial could still fail and need a re-run we should wait for.

    Only trials whose death we can notice: another process on this machine (its pid), or any
    machine's when the store keeps heartbeats. A trial of unknown origin is not waited for.
    """
    owner = trial_attrs.owner(trial)
    if owner is None:
        return False
    if owner.get("host") == socket.gethostname():
        return bool(owner.get("pid") != os.getpid())
    return heartbeats


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> AbstractContextManager[None]:
    """A context that records the trial's heartbeat while it trains (server stores only)."""
    return optuna_adapter.heartbeat(study, trial)
