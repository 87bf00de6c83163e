"""An MLflow tracking server that is down when a search starts: the search refuses at once,
with one line, and leaves nothing behind.

MLflow's HTTP client retries a refused connection for about four minutes; opttune asks the
server once, without retries, before it opens (or creates) anything. The test leaves MLflow's
retry settings at their defaults, so that a search that waited on them would run into the
test's bound (two minutes) instead of passing.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers.sockets import answers, free_port

STUDY = "down-at-start"
REPO = str(Path(__file__).resolve().parents[3])  # run from elsewhere: this checkout's tuner


def _files(folder: Path) -> list[str]:
    """Every path under `folder`, relative to it, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_tracking_server_down_at_start_is_refused_in_one_line_with_nothing_created(
        home: Path, tmp_path: Path) -> None:
    """Guards the start of a search against an unreachable `--tracking-uri http://…`: exit 1
    within seconds (not after MLflow's retries), one `Error:` line naming the server and no
    traceback, no study in the Optuna store, and no file added to the home or the folder the
    search ran in."""
    port = free_port()
    assert not answers(port)  # the subject: nothing listens there
    url = f"http://127.0.0.1:{port}"
    before = _files(home)
    assert before == ["mlflow.db"]  # an untouched home (the fixture's MLflow store)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))

    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--task", "digits-mlp", "--study", STUDY,
         "--n-trials", "1", "--epochs", "1", "--optimizers", "adam", "--device", "cpu",
         "--home", str(home), "--tracking-uri", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env,
        start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=120)  # MLflow's own retries take about 240 s
    finally:
        if proc.poll() is None:  # with its MLflow process, still retrying
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert url in errors[0] and "Connection refused" in errors[0], errors[0]
    assert "Error:" not in output.replace(errors[0], ""), output  # said once, on its line

    # Nothing half-created: the Optuna store, if there, holds no study of that name ...
    db = home / "opttune.db"
    if db.exists():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            names = [row[0] for row in con.execute("SELECT study_name FROM studies")]
        assert STUDY not in names, names
    # ... and no other file or folder appeared (no artifacts, no lock, no stray mlruns/).
    assert set(_files(home)) - {"opttune.db"} == set(before), _files(home)
    assert _files(cwd) == []
