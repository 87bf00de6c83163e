"""`opttune worker` processes on one study in a real PostgreSQL server on loopback.

The server: $OPTTUNE_TEST_POSTGRES_URL (CI starts one with `.ci/postgres.sh start` and exports
its URL), else this module starts a throwaway one with the same script when PostgreSQL is
installed, else the tests are skipped with the reason (in CI, where every service is
promised, they fail instead: helpers.services). The MLflow store stays an SQLite file in a home
shared by the workers; they find it through the study.

The workers train the gate task (helpers.gate_task): each trial stops after its first reported
epoch until the test opens the gate, so a test knows from files, not from a clock, that several
workers hold trials at once, or that the one it kills is mid-trial.
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
from helpers.gate_task import GATE_ENV, TASK_REF, open_gate, wait_reached
from helpers.services import missing, require_module
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.study import optuna_adapter
from tuner.study.claims import claim_next
from tuner.study.studies import counted
from tuner.study.trial_attrs import OWNER_ATTR

ROOT = Path(__file__).resolve().parents[3]
URL_ENV = "OPTTUNE_TEST_POSTGRES_URL"

# Where a server is promised (CI, or a URL given) a missing driver fails instead of skipping.
require_module("psycopg", "the postgres extra is not installed: pip install -e '.[postgres]'",
               promised=bool(os.environ.get(URL_ENV)))
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Heartbeats every second; a grace long enough that a busy test machine never looks dead.
WORKER_ENV = {"OPTTUNE_HEARTBEAT_INTERVAL": "1", "OPTTUNE_HEARTBEAT_GRACE": "30",
              "OMP_NUM_THREADS": "1"}  # three workers on a small machine: one thread each


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = os.environ.get(URL_ENV)
    if url:  # promised: an unreachable server fails every test of the module, loudly
        import sqlalchemy

        from tuner.study.locations import driver_url

        engine = sqlalchemy.create_engine(driver_url(url), connect_args={"connect_timeout": 10})
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
        yield url
        return
    if shutil.which("bash") is None:
        missing(f"no PostgreSQL server: set {URL_ENV} to one")
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
        missing(f"no PostgreSQL server could be started ({reason}); set {URL_ENV} to one")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", script, "stop", folder], env=env, capture_output=True,
                       timeout=120)


def _create(pg_url: str, home: Path, name: str, *extra: str, task: str = TASK_REF) -> None:
    """Create study `name` (of the gate task unless told) for workers to run."""
    result = CliRunner().invoke(cli, [
        "search", "--task", task, "--study", name, "--storage", pg_url,
        "--home", str(home), "--jobs", "0", "--pruner", "none", "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    assert "is ready" in result.output
    assert ":opttune@" not in result.output  # the password is masked


def _workers(pg_url: str, name: str, n: int, cwd: Path, gate: Path | None = None,
             **env_vars: str) -> list[subprocess.Popen[bytes]]:
    """`n` workers of study `name`; with `gate`, their gated trials wait there (see module)."""
    env = {**os.environ, **WORKER_ENV, **env_vars}
    if gate is not None:
        gate.mkdir(parents=True, exist_ok=True)
        env[GATE_ENV] = str(gate)
    return [subprocess.Popen([sys.executable, "-m", "tuner", "worker", name, "--storage", pg_url],
                             cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(n)]


def _pid(ticket: str) -> int:
    """The process that holds a gate ticket (helpers.gate_task names them PID-N)."""
    return int(ticket.split("-")[0])


def _wait_held_by(gate: Path, pid: int, procs: list[subprocess.Popen[bytes]]) -> str:
    """Wait until process `pid` holds a trial at the gate (others may hold theirs there too,
    each one at most: a held trial stops its process); its ticket."""
    count = 1
    while True:
        tickets = wait_reached(gate, count, proc=procs)
        mine = [t for t in tickets if _pid(t) == pid]
        if mine:
            return mine[0]
        count = len(tickets) + 1


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
    from tuner.study.stores import open_storage
    from tuner.study.studies import load_study

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
    """Three workers on one study of twelve trials: all three train at once (each holds a
    trial at the gate), together they run exactly twelve, each once, all exit 0, and every
    trial's run hangs under the study's one parent."""
    name = f"w3-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    _create(pg_url, home, name, "--n-trials", "12", "--epochs", "2")
    procs = _workers(pg_url, name, 3, tmp_path, gate)
    try:
        held = wait_reached(gate, 3, proc=procs)
    finally:
        open_gate(gate)
        outputs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert {_pid(t) for t in held} == {p.pid for p in procs}  # three at once, one each
    study = _study(pg_url, name)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 12 == counted(study.trials) == len(study.trials)
    assert len({t.number for t in finished}) == 12
    assert {t.system_attrs[OWNER_ATTR]["pid"] for t in finished} == {p.pid for p in procs}
    _assert_runs_under_one_parent(home, study)


@pytest.mark.slow
def test_a_killed_workers_trial_fails_and_runs_again_once(pg_url: str, home: Path,
                                                        tmp_path: Path) -> None:
    """SIGKILL of one of three workers while it is mid-trial (one epoch reported, held at the
    gate): the other two exit 0, its trial fails as `killed` with its run KILLED, its
    parameters run again exactly once, and the budget of twelve is met."""
    name = f"kill-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    _create(pg_url, home, name, "--n-trials", "12", "--epochs", "2")
    procs = _workers(pg_url, name, 3, tmp_path, gate)
    victim = procs[0]
    try:
        _wait_held_by(gate, victim.pid, procs)
        mine = [t for t in _study(pg_url, name).get_trials(states=(TrialState.RUNNING,))
                if t.system_attrs.get(OWNER_ATTR, {}).get("pid") == victim.pid]
        assert len(mine) == 1 and mine[0].intermediate_values  # mid-trial
        victim.send_signal(signal.SIGKILL)
        victim.wait()  # gone, not a zombie: the others see its pid free
    finally:
        open_gate(gate)
        outputs = _finish(procs)
    assert victim.returncode == -signal.SIGKILL
    assert [p.returncode for p in procs[1:]] == [0, 0], outputs
    study = _study(pg_url, name)
    killed = study.get_trials(states=(TrialState.FAIL,))
    assert len(killed) == 1 and killed[0].system_attrs[OWNER_ATTR]["pid"] == victim.pid
    assert killed[0].number == mine[0].number
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
    from tuner.study.optuna_adapter import stale_trial_ids, trial_id
    from tuner.study.stores import GRACE_ENV, open_storage
    from tuner.study.studies import load_study

    name = f"hb-{uuid.uuid4().hex[:8]}"
    _create(pg_url, home, name, "--n-trials", "3", "--epochs", "1", "--optimizers", "adam",
            task="digits-mlp")
    monkeypatch.setenv("OPTTUNE_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv(GRACE_ENV, "3")  # the worker's grace below: judged alike here
    study = load_study(open_storage(pg_url, create=False, heartbeat=True), name)
    # "Another machine" claims a trial as any process does (the adam-defaults trial, queued
    # at claim time), then dies: its owner record names a host that is not this one.
    zombie = claim_next(study, target=3, recover=lambda: None).trial
    assert zombie is not None
    optuna_adapter.set_trial_system_attr(study, zombie, OWNER_ATTR,
                                         {"host": "node-that-died", "pid": 1, "start": None})
    optuna_adapter.record_heartbeat(study, zombie)
    deadline = time.monotonic() + 60
    while trial_id(zombie) not in stale_trial_ids(study):  # the store's own clock says when
        assert time.monotonic() < deadline, "the silent trial's heartbeat never went stale"
        time.sleep(0.1)

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
    search still gets exactly its budget, and the worker ran some of the trials (it holds one
    at the gate while the benchmark holds its own there)."""
    name = f"bm-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, **WORKER_ENV, GATE_ENV: str(gate)}
    bench = subprocess.Popen(
        [sys.executable, "-m", "tuner", "benchmark", "--task", TASK_REF, "--optimizers",
         "sgd,adam", "--budgets", "oneshot,6", "--seeds", "1", "--epochs", "2", "--name", name,
         "--device", "cpu", "--storage", pg_url, "--home", str(home)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    from tuner.study.stores import open_storage
    from tuner.study.studies import exists

    workers: list[subprocess.Popen[bytes]] = []
    try:
        storage = open_storage(pg_url, create=False)
        deadline = time.monotonic() + 180
        while not (exists(storage, f"{name}.adam.none") or bench.poll() is not None):
            assert time.monotonic() < deadline, "the benchmark never created its searches"
            time.sleep(0.2)
        workers = _workers(pg_url, name, 1, tmp_path, gate)
        _wait_held_by(gate, workers[0].pid, [bench, *workers])
    finally:
        open_gate(gate)
        worker_outs = _finish(workers)
        bench_out = _finish([bench])[0]
    (worker_out,) = worker_outs
    assert bench.returncode == 0, bench_out
    assert workers[0].returncode == 0, worker_out
    by_worker = 0
    for family in ("sgd", "adam"):
        study = _study(pg_url, f"{name}.{family}.none")
        assert counted(study.trials) == 6 == len(study.get_trials(states=FINISHED))
        by_worker += sum(t.system_attrs[OWNER_ATTR]["pid"] == workers[0].pid
                         for t in study.trials)
    assert by_worker >= 1, worker_out
    assert f"Benchmark {name}" in bench_out
