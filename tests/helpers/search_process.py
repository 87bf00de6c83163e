"""A real `opttune search` in a process of its own, watched through its SQLite study store.

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


def start_search(home: Path, study: str, *, trials: int, epochs: int,
                 extra: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """`opttune search` on mnist-mlp (SGD's defaults trial first, then Adam's) on the CPU."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--task", "mnist-mlp", "--study", study,
         "--n-trials", str(trials), "--epochs", str(epochs), "--optimizers", "sgd,adam",
         "--pruner", "none", "--seed", "1", "--device", "cpu", "--home", str(home), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=None if env is None else dict(env))


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


def wait_mid_trial(proc: subprocess.Popen[str], db: Path, *, epochs: int, after: int = 0,
                   timeout: float = 180) -> int:
    """Wait until a trial has reported an epoch (but not its last) while at least `after`
    trials are complete; return its number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"search ended early ({proc.returncode}):\n"
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        rows = trial_rows(db)
        done = [n for n, state, _ in rows if state == "COMPLETE"]
        training = [n for n, state, seen in rows if state == "RUNNING" and 0 < seen < epochs]
        if training and len(done) >= after:
            return training[0]
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no trial was mid-flight in time")
