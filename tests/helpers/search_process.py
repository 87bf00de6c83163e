"""A real `opttune search` in a process of its own, watched through its SQLite study store
and held mid-trial by the gate task.

The store is read straight from the file (read-only, no Optuna in between), so a test sees
each commit of the search as it lands: which trial is training, and how far it got.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from helpers.gate_task import TASK_REF, gate_env, release, wait_reached

STARTED: list[subprocess.Popen[str]] = []  # killed after each test (see conftest) if running


def start_search(home: Path, study: str, *, trials: int, gate: Path, epochs: int = 2,
                 extra: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """`opttune search` of the gate task (SGD's defaults trial first, then Adam's) on the CPU,
    whose trials each stop after their first epoch until the test releases them (see
    helpers.gate_task); `env` adds to the environment."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--task", TASK_REF, "--study", study,
         "--n-trials", str(trials), "--epochs", str(epochs), "--optimizers", "sgd,adam",
         "--pruner", "none", "--seed", "1", "--device", "cpu", "--home", str(home), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=gate_env(gate, **(env or {})))
    STARTED.append(proc)
    return proc


def kill_started() -> None:
    """Kill what start_search started and a failed test left running (held at its gate)."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def trial_rows(db: Path) -> list[tuple[int, str, int]]:
    """(number, state, epochs reported) of every trial, read straight from the SQLite file."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(
                "SELECT t.number, t.state, (SELECT COUNT(*) FROM trial_intermediate_values v "
                "WHERE v.trial_id = t.trial_id) FROM trials t ORDER BY t.number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or a writer holds the lock
        return []


def retries_queued(db: Path, number: int) -> int:
    """How many WAITING trials re-run trial `number` (user attr retry_of)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            row = con.execute(
                "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE t.state = 'WAITING' AND a.key = 'retry_of' "
                "AND a.value_json = ?", (str(number),)).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0])


def wait_mid_trial(proc: subprocess.Popen[str], db: Path, gate: Path, *, after: int = 0,
                   timeout: float = 120) -> int:
    """Let the first `after` gated trials finish, wait until the next one is held at its gate
    (one epoch reported, more to come), and return its number."""
    for done in range(after):
        release(gate, wait_reached(gate, done + 1, proc=proc, timeout=timeout)[done])
    wait_reached(gate, after + 1, proc=proc, timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:  # the store may be locked by a write for a moment: read it again
        rows = trial_rows(db)
        held = [n for n, state, seen in rows if state == "RUNNING" and seen >= 1]
        if held:
            assert len(held) == 1, rows
            assert len([n for n, state, _ in rows if state == "COMPLETE"]) >= after, rows
            return held[0]
        assert time.monotonic() < deadline, f"no held trial in the store: {rows}"
        time.sleep(0.01)
