"""`opttune dashboard`: a real optuna-dashboard on 127.0.0.1 only, read through its HTTP API,
stopped by SIGTERM to opttune alone; and the errors that come before any server starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from helpers.processes import children
from helpers.small_study import small_study_copy
from helpers.sockets import answers, free_port, listening_addresses

from tuner.cli.commands import cli
from tuner.study.stores import open_storage


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study s1: sgd and adam, 6 trials of 2 epochs (see small_study.py)."""
    return small_study_copy(tmp_path_factory, _mlflow_template, "dashboard")


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        body = response.read()
        return json.loads(body) if path.startswith("/api/") else body.decode()


@pytest.fixture
def dashboard(study_home: Path) -> Iterator[dict[str, Any]]:
    """`opttune dashboard s1 --port P` as a real process; its whole group is killed if a test
    fails before stopping it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tuner", "dashboard", "s1", "--port",
                                str(port), "--home", str(study_home)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not answers(port):
            assert process.poll() is None, f"opttune dashboard exited: {process.communicate()}"
            assert time.monotonic() < deadline, "optuna-dashboard did not answer in 120 s"
            time.sleep(0.2)
        yield {"port": port, "process": process}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_dashboard_serves_the_study_and_stops_with_opttune(dashboard: dict[str, Any],
                                                           study_home: Path) -> None:
    port, process = dashboard["port"], dashboard["process"]
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{study_home / 'opttune.db'}")

    listed = {s["study_name"]: s for s in _get(port, "/api/studies")["study_summaries"]}
    assert set(listed) == {"s1"} and listed["s1"]["directions"] == ["maximize"]
    study_id = listed["s1"]["study_id"]
    detail = _get(port, f"/api/studies/{study_id}")
    assert detail["name"] == "s1"
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in study.trials] == list(range(6))
    for trial in study.trials:
        shown = served[trial.number]
        assert shown["state"].upper() == trial.state.name
        assert {p["name"] for p in shown["params"]} == set(trial.params)
        assert shown.get("values") == (None if trial.value is None else
                                       [pytest.approx(trial.value)])
        assert {v["step"]: v["value"] for v in shown["intermediate_values"]} == \
            pytest.approx(trial.intermediate_values)  # the per-epoch curve the pruner judged
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]
    assert "<div id=\"dashboard\">" in _get(port, f"/dashboard/studies/{study_id}")

    # The printed page is the study's, and the store URL is on no command line.
    printed = process.stdout.readline() + process.stdout.readline()
    assert f"http://127.0.0.1:{port}/dashboard/studies/{study_id}\n" in printed
    (server,) = children(process.pid)
    argv = Path(f"/proc/{server}/cmdline").read_bytes().decode().split("\0")
    assert "opttune.db" not in " ".join(argv)
    config = Path(argv[argv.index("--from-config") + 1])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert listening_addresses(port) == ["127.0.0.1"]  # bound to loopback, and only there

    # SIGTERM to opttune alone (not its group): it stops the server itself, and exits 0.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, process.communicate()
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)
    assert not answers(port) and listening_addresses(port) == []
    assert not config.parent.exists()  # the private config folder is removed


def _store_with(home: Path, *names: str) -> None:
    storage = open_storage(f"sqlite:///{home / 'opttune.db'}", create=True)
    for name in names:
        optuna.create_study(study_name=name, storage=storage)


def _error(*args: str) -> str:
    result = CliRunner().invoke(cli, ["dashboard", *args])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return result.output


def test_a_missing_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    output = _error("--home", str(tmp_path / "T"), "--port", str(free_port()))
    assert f"Error: there is no study store at {tmp_path / 'T' / 'opttune.db'}" in output
    assert "run `opttune search` first" in output
    assert not (tmp_path / "T").exists()


def test_an_unknown_study_names_the_known(home: Path) -> None:
    _store_with(home, "other")
    output = _error("nope", "--home", str(home), "--port", str(free_port()))
    assert "Error: no study named 'nope'" in output and "known studies: other" in output


def test_a_busy_port_is_an_error(home: Path) -> None:
    _store_with(home, "s1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        output = _error("s1", "--home", str(home), "--port", str(port))
    assert f"Error: port {port} on 127.0.0.1 is already in use" in output
    assert "choose another with --port" in output


def test_a_port_out_of_range_is_an_error(home: Path) -> None:
    _store_with(home, "s1")
    assert "--port must be between 1 and 65535, but got 70000" in \
        _error("--home", str(home), "--port", "70000")


def test_without_optuna_dashboard_the_error_names_the_extra(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _store_with(home, "s1")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # `import` now fails
    output = _error("s1", "--home", str(home))
    assert "needs the optuna-dashboard package" in output
    assert "pip install 'opttune[dashboard]'" in output


def _fake_plan(code: str) -> Any:
    """A plan whose "server" is `code` run by this Python (it gets `--from-config FILE`)."""
    from tuner.results.dashboard_server import DashboardPlan

    port = free_port()
    return DashboardPlan(command=[sys.executable, "-c", code], port=port,
                         storage_url="postgresql://me:s3cret@db.example/optuna",
                         url=f"http://127.0.0.1:{port}/dashboard", study=None,
                         storage="postgresql://me:***@db.example/optuna", version="0")


def test_a_server_that_stops_by_itself_is_an_error_with_its_last_messages() -> None:
    """Guards the failure path: the store URL reaches the server only in its 0600 config file;
    a server that exits is an error with its exit code and its log, passwords masked."""
    from tuner.errors import OpttuneError
    from tuner.results.dashboard_server import serve

    code = ("import os, stat, sys; path = sys.argv[sys.argv.index('--from-config') + 1]; "
            "print(oct(stat.S_IMODE(os.stat(path).st_mode))); print(open(path).read()); "
            "sys.exit(3)")
    with pytest.raises(OpttuneError) as info:
        serve(_fake_plan(code), ready=lambda: pytest.fail("it never answered"))
    message = str(info.value)
    assert message.startswith("optuna-dashboard stopped by itself with exit code 3")
    assert "0o600" in message and "[optuna_dashboard]" in message
    assert 'storage = "postgresql://me:***@db.example/optuna"' in message
    assert "s3cret" not in message


def test_a_server_that_never_answers_is_stopped_after_the_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the bounded start: no answer within the wait is an error, and the server is
    stopped by serve: once serve has raised, the process it started no longer exists (not
    even as a zombie: serve reaped it), ended by serve's SIGTERM.

    The server's pid comes from the process object serve creates (its subprocess.Popen is
    watched here), not from anything the server prints, so a server that has not even started
    Python when the wait ends is judged the same. No bound on the test's time: a serve that
    kept waiting would fail the `match` (the fake server never stops by itself)."""
    from tuner.errors import OpttuneError
    from tuner.results import dashboard_server
    from tuner.results.dashboard_server import serve

    started: list[subprocess.Popen[Any]] = []

    class Watched(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(dashboard_server.subprocess, "Popen", Watched)
    try:
        with pytest.raises(OpttuneError, match=r"did not answer on 127\.0\.0\.1:\d+ within 1 s"):
            serve(_fake_plan("import time; time.sleep(600)"), start_timeout=1.0)
        (server,) = started
        assert not Path(f"/proc/{server.pid}").exists()  # gone and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(server.pid, 0)
        assert server.returncode == -signal.SIGTERM  # stopped by serve, not by itself
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
