"""`opttune worker` processes on one study in a real PostgreSQL server on loopback.

The server: $OPTTUNE_TEST_POSTGRES_URL (CI starts one with `.ci/postgres.sh start` and exports
its URL), else this module starts a throwaway one with the same script when PostgreSQL is
installed, else the tests are skipped with the reason. The MLflow store stays an SQLite file
in a home shared by the workers; they find it through the study.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.study import optuna_adapter
from tuner.study.claims import claim_next
from tuner.study.records import OWNER_ATTR, counted

ROOT = Path(__file__).resolve().parents[3]
URL_ENV = "OPTTUNE_TEST_POSTGRES_URL"

# Where a server is promised (CI sets the URL) a missing driver is a failure, not a skip.
if os.environ.get(URL_ENV):
    import psycopg  # noqa: F401
else:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed: "
                                          "pip install -e '.[postgres]'")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Heartbeats every second; a grace long enough that a busy test machine never looks dead.
WORKER_ENV = {"OPTTUNE_HEARTBEAT_INTERVAL": "1", "OPTTUNE_HEARTBEAT_GRACE": "30",
              "OMP_NUM_THREADS": "1"}  # three workers on a small machine: one thread each


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = os.environ.get(URL_ENV)
    if url:  # promised: an unreachable server fails every test of the module, loudly
        import sqlalchemy

        from tuner.study.stores import driver_url

        engine = sqlalchemy.create_engine(driver_url(url), connect_args={"connect_timeout": 10})
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
        yield url
        return
    if shutil.which("bash") is None:
        pytest.skip(f"no PostgreSQL server: set {URL_ENV} to one")
    folder = tempfile.mkdtemp(prefix="opttune-pg-")  # under /tmp: the postgres user reaches it
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OPTTUNE_PG_NO_INSTALL": "1", "OPTTUNE_PG_PORT": str(port)}
    script = str(ROOT / ".ci" / "postgres.sh")
    started = subprocess.run(["bash", script, "start", folder], env=env, capture_output=True,
                             text=True, timeout=180)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        reason = (started.stderr.strip().splitlines() or ["unknown error"])[-1]
        pytest.skip(f"no PostgreSQL server could be started ({reason}); set {URL_ENV} to one")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", script, "stop", folder], env=env, capture_output=True,
                       timeout=120)


def _create(pg_url: str, home: Path, name: str, *extra: str) -> None:
    result = CliRunner().invoke(cli, [
        "search", "--task", "mnist-mlp", "--study", name, "--storage", pg_url,
        "--home", str(home), "--jobs", "0", "--pruner", "none", "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    assert "is ready" in result.output
    assert ":opttune@" not in result.output  # the password is masked


def _workers(pg_url: str, name: str, n: int, cwd: Path,
             **env_vars: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, **WORKER_ENV, **env_vars}
    return [subprocess.Popen([sys.executable, "-m", "tuner", "worker", name, "--storage", pg_url],
                             cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(n)]


def _finish(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=240)[0].decode())
        finally:
            if proc.poll() is None:
                proc.kill()
    return outputs


def _study(pg_url: str, name: str):  # type: ignore[no-untyped-def]
    from tuner.study.records import load_study
    from tuner.study.stores import open_storage

    return load_study(open_storage(pg_url, create=False), name)


def _assert_runs_under_one_parent(home: Path, study) -> dict:  # type: ignore[no-untyped-def]
    """Every trial's MLflow run hangs under the study's one parent; none is left RUNNING."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ids = study.user_attrs["mlflow"]
    runs = client.search_runs([ids["experiment_id"]], max_results=1000)
    trial_runs = {r.info.run_id: r for r in runs if r.data.tags.get("opttune.role") == "trial"}
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs.values()} == \
        {ids["parent_run_id"]}
    ran = [t for t in study.trials if t.state != TrialState.WAITING]
    assert set(trial_runs) == {t.user_attrs["mlflow_run_id"] for t in ran}
    assert not [r for r in trial_runs.values() if r.info.status == "RUNNING"]
    assert client.get_run(ids["parent_run_id"]).info.status != "RUNNING"
    return trial_runs


@pytest.mark.slow
def test_three_workers_share_a_budget_of_twelve(pg_url: str, home: Path, tmp_path: Path) -> None:
    name = f"w3-{uuid.uuid4().hex[:8]}"
    _create(pg_url, home, name, "--n-trials", "12", "--epochs", "1")
    procs = _workers(pg_url, name, 3, tmp_path)
    outputs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    study = _study(pg_url, name)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 12 == counted(study.trials) == len(study.trials)
    assert len({t.number for t in finished}) == 12
    assert len({t.system_attrs[OWNER_ATTR]["pid"] for t in finished}) >= 2  # shared out
    _assert_runs_under_one_parent(home, study)


@pytest.mark.slow
def test_a_killed_workers_trial_fails_and_runs_again_once(pg_url: str, home: Path,
                                                        tmp_path: Path) -> None:
    name = f"kill-{uuid.uuid4().hex[:8]}"
    _create(pg_url, home, name, "--n-trials", "12", "--epochs", "4", "--batch-size", "32")
    procs = _workers(pg_url, name, 3, tmp_path)
    victim = procs[0]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until the victim is training a trial
            mine = [t for t in _study(pg_url, name).get_trials(states=(TrialState.RUNNING,))
                    if t.system_attrs.get(OWNER_ATTR, {}).get("pid") == victim.pid
                    and t.intermediate_values]  # past its first epoch: mid-trial
            if mine:
                break
            assert victim.poll() is None, victim.communicate()[0].decode()
            time.sleep(0.1)
        else:
            pytest.fail("the worker never got to train a trial")
        victim.send_signal(signal.SIGKILL)
    finally:
        outputs = _finish(procs)
    assert victim.returncode == -signal.SIGKILL
    assert [p.returncode for p in procs[1:]] == [0, 0], outputs
    study = _study(pg_url, name)
    killed = study.get_trials(states=(TrialState.FAIL,))
    assert len(killed) == 1 and killed[0].system_attrs[OWNER_ATTR]["pid"] == victim.pid
    assert killed[0].user_attrs["fail_reason"] == "killed"
    again = [t for t in study.trials if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(again) == 1 and again[0].state in FINISHED
    assert again[0].params == killed[0].params
    assert len(study.get_trials(states=FINISHED)) == 12 == counted(study.trials)
    runs = _assert_runs_under_one_parent(home, study)
    assert runs[killed[0].user_attrs["mlflow_run_id"]].info.status == "KILLED"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_silent_trial_of_another_machine_is_failed_by_heartbeat(
        pg_url: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that died (no pid to look at here): its heartbeat stops, the trial is failed
    after the grace period and its parameters run once more."""
    from tuner.study.records import load_study
    from tuner.study.stores import open_storage

    name = f"hb-{uuid.uuid4().hex[:8]}"
    _create(pg_url, home, name, "--n-trials", "3", "--epochs", "1", "--optimizers", "adam")
    monkeypatch.setenv("OPTTUNE_HEARTBEAT_INTERVAL", "1")
    study = load_study(open_storage(pg_url, create=False, heartbeat=True), name)
    # "Another machine" claims a trial as any process does (the adam-defaults trial, queued
    # at claim time), then dies: its owner record names a host that is not this one.
    zombie = claim_next(study, target=3, recover=lambda: None).trial
    assert zombie is not None
    optuna_adapter.set_trial_system_attr(study, zombie, OWNER_ATTR,
                                         {"host": "node-that-died", "pid": 1, "start": None})
    optuna_adapter.record_heartbeat(study, zombie)
    time.sleep(4)  # longer than the grace period below: its heartbeat is now stale

    procs = _workers(pg_url, name, 1, tmp_path, OPTTUNE_HEARTBEAT_GRACE="3")
    outputs = _finish(procs)
    assert procs[0].returncode == 0, outputs
    assert f"trial {zombie.number} was left running by a process that is gone" in outputs[0]
    study = _study(pg_url, name)
    dead = study.trials[zombie.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "killed"
    again = [t for t in study.trials if t.user_attrs.get("retry_of") == zombie.number]
    assert len(again) == 1 and again[0].state in FINISHED
    assert again[0].params == dead.system_attrs["fixed_params"]
    assert counted(study.trials) == 3


@pytest.mark.slow
def test_a_worker_takes_part_in_a_benchmark(pg_url: str, home: Path, tmp_path: Path) -> None:
    """`opttune worker BENCHMARK` on another process joins the benchmark's searches: each
    search still gets exactly its budget, and the worker ran some of the trials."""
    name = f"bm-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **WORKER_ENV}
    bench = subprocess.Popen(
        [sys.executable, "-m", "tuner", "benchmark", "--task", "digits-mlp", "--optimizers",
         "sgd,adam", "--budgets", "oneshot,6", "--seeds", "1", "--epochs", "30", "--name", name,
         "--device", "cpu", "--storage", pg_url, "--home", str(home)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    from tuner.study.records import exists
    from tuner.study.stores import open_storage

    storage = open_storage(pg_url, create=False)
    deadline = time.monotonic() + 180
    while not (exists(storage, f"{name}.adam") or bench.poll() is not None):
        assert time.monotonic() < deadline, "the benchmark never created its searches"
        time.sleep(0.2)
    workers = _workers(pg_url, name, 1, tmp_path)
    (worker_out,) = _finish(workers)
    bench_out = _finish([bench])[0]
    assert bench.returncode == 0, bench_out
    assert workers[0].returncode == 0, worker_out
    by_worker = 0
    for family in ("sgd", "adam"):
        study = _study(pg_url, f"{name}.{family}")
        assert counted(study.trials) == 6 == len(study.get_trials(states=FINISHED))
        by_worker += sum(t.system_attrs[OWNER_ATTR]["pid"] == workers[0].pid
                         for t in study.trials)
    assert by_worker >= 1, worker_out
    assert f"Benchmark {name}" in bench_out
