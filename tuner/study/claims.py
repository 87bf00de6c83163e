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
from typing import Any

import optuna
from optuna.storages._heartbeat import (
    BaseHeartbeat,
    BaseHeartbeatThread,
    get_heartbeat_thread,
    is_heartbeat_enabled,
)
from optuna.trial import TrialState

from tuner.study import records as studies
from tuner.study.stores import sqlite_path

POLL_SECONDS = 1.0  # how often an idle process looks again while others finish the budget


@dataclass(frozen=True)
class Claim:
    """The answer to "may I run one more trial?"."""

    trial: optuna.Trial | None  # the claimed trial, RUNNING and owned by this process
    done: int  # trials that count towards the budget
    running: int  # trials running in other processes
    wait: bool = False  # no room now, but a running trial may still fail and run again


def _rdb(study: optuna.Study) -> Any:
    """The RDBStorage behind Optuna's cache wrapper."""
    return getattr(study._storage, "_backend", study._storage)


def study_lock(study: optuna.Study) -> AbstractContextManager[None]:
    """One lock per study, shared by every process that opens the same store (a fresh
    context manager on each call)."""
    storage = _rdb(study)
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
def _file_lock(path: Any) -> Iterator[None]:
    with open(path, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

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
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released by the kernel if we die
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def _server_lock(engine: Any, lock_sql: str, unlock_sql: str, key: str) -> Iterator[None]:
    """A session-level lock on a connection of its own: the server frees it if we die."""
    import sqlalchemy

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
    of them dies its parameters are queued again and a later claim picks them up.
    """
    with study_lock(study):
        recover()
        trials = study.get_trials(deepcopy=False)
        done = studies.counted(trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if done + len(running) < target:
            with warnings.catch_warnings():  # we run the heartbeat ourselves (see heartbeat)
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                _prefer_retries(study)
                trial = study.ask()
            storage = study._storage
            try:
                storage.set_trial_system_attr(trial._trial_id, studies.OWNER_ATTR,
                                              studies.owner_record())
                if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
                    storage.record_heartbeat(trial._trial_id)  # stale-detectable from birth
            except BaseException:  # Ctrl-C right after ask: never leave it RUNNING
                storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted")
                study.tell(trial, state=TrialState.FAIL)
                studies.requeue(study, storage.get_trial(trial._trial_id))
                raise
            return Claim(trial=trial, done=done, running=len(running))
        heartbeats = is_heartbeat_enabled(study._storage)
        wait = done < target and any(_may_come_back(t, heartbeats) for t in running)
        return Claim(trial=None, done=done, running=len(running), wait=wait)


def _prefer_retries(study: optuna.Study) -> None:
    """Make `ask` pop an interrupted trial's re-run before other queued trials.

    Optuna pops queued trials lowest number first, so a re-run (queued when its trial was
    killed) would wait behind the queued defaults trials and, with a small budget, never run.
    """
    storage, study_id = study._storage, study._study_id

    def pop() -> int | None:
        waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
        waiting.sort(key=lambda t: ("retry_of" not in t.user_attrs, t.number))
        for t in waiting:
            try:
                if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    return int(t._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    study._pop_waiting_trial_id = pop  # type: ignore[method-assign]


def _may_come_back(trial: Any, heartbeats: bool) -> bool:
    """Whether a running trial could still fail and need a re-run we should wait for.

    Only trials whose death we can notice: another process on this machine (its pid), or any
    machine's when the store keeps heartbeats. A trial of unknown origin is not waited for.
    """
    owner = trial.system_attrs.get(studies.OWNER_ATTR)
    if not isinstance(owner, dict):
        return False
    if owner.get("host") == socket.gethostname():
        return bool(owner.get("pid") != os.getpid())
    return heartbeats


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> BaseHeartbeatThread:
    """A context that records the trial's heartbeat while it trains (server stores only)."""
    return get_heartbeat_thread(trial._trial_id, study._storage)
