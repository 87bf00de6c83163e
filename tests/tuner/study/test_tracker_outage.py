"""The MLflow tracking server goes down mid-study: the study goes on, and `opttune check
--fix` brings MLflow in line once the server is back.

Real processes throughout: an `mlflow server` over its own SQLite store, killed (SIGKILL)
while a trial trains (held after its first epoch by the gate task), and restarted on the same
store and port; an `opttune search` in a process of its own, logging to it. Optuna's record
is primary: every trial finishes in the study store while MLflow is away; the trials MLflow
missed (a run left RUNNING, a trial with no run at all, the study's parent run) are repaired
from the study store afterwards.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from helpers.gate_task import open_gate
from helpers.search_process import start_search, trial_rows, wait_mid_trial
from helpers.servers import mlflow_server, stop_group
from helpers.sockets import answers, free_port
from mlflow import MlflowClient

from tuner.cli.commands import cli
from tuner.study.recovery import check

STUDY = "outage"
TRIALS = 3

# MLflow's HTTP client retries a refused connection for about four minutes by default. The
# search is told to give up at once (each call fails fast), or after 12 s of retries (0, 4
# and 8 s apart): long enough that the trial loop stops waiting on MLflow for a while.
NO_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
SLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
PAUSED = "the study goes on without it"


def _runs(client: MlflowClient) -> tuple[Any, dict[int, Any]]:
    """(the study's parent run, its trial runs by trial number), read through the server."""
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("opttune.role") == "study"]
    assert len(parents) == 1
    trials: dict[int, Any] = {}
    for r in runs:
        if r.data.tags.get("opttune.role") == "trial":
            number = int(r.data.tags["trial_number"])
            assert number not in trials, f"two runs for trial {number}"
            trials[number] = r
    return parents[0], trials


@pytest.mark.slow
@pytest.mark.parametrize("retries", [NO_RETRIES, SLOW_RETRIES], ids=["fails-fast", "retries"])
def test_a_server_outage_mid_study_is_repaired_by_check_fix(
        tmp_path: Path, _mlflow_template: Path, retries: dict[str, str]) -> None:
    home = tmp_path / "home"
    folder = tmp_path / "server"
    folder.mkdir()
    shutil.copy(_mlflow_template, folder / "server.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "server.log"
    db = home / "opttune.db"

    with mlflow_server(folder / "server.db", folder / "artifacts", port, log) as server:
        gate = tmp_path / "gate"
        proc = start_search(home, STUDY, trials=TRIALS, gate=gate, extra=["--tracking-uri", url],
                            env=retries)
        try:
            caught = wait_mid_trial(proc, db, gate, after=1)
            stop_group(server, kill=True)  # the server dies mid-trial, without a word
            gone = time.monotonic() + 15  # its killed workers let go of the port in a moment
            while answers(port) and time.monotonic() < gone:
                time.sleep(0.1)
            assert not answers(port)
            open_gate(gate)  # the trial goes on, with MLflow gone
            output, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert "MLflow: " in output, output  # the outage was seen, and reported as a notice
    # Retried calls are waited for once; then MLflow is skipped, not waited on per call.
    flowing = " ".join(output.split())  # the display wraps its lines
    assert flowing.count(PAUSED) == (1 if retries is SLOW_RETRIES else 0), output

    # The study went on: every trial finished in the Optuna store.
    states = {n: state for n, state, _ in trial_rows(db)}
    assert states == {n: "COMPLETE" for n in range(TRIALS)}, states
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    complete = {t.number: t for t in study.trials}
    assert caught in complete and caught < TRIALS - 1  # a later trial started with MLflow down
    assert "mlflow_run_id" in complete[0].user_attrs  # logged while the server was up
    assert "mlflow_run_id" not in complete[TRIALS - 1].user_attrs

    with mlflow_server(folder / "server.db", folder / "artifacts", port, log):
        client = MlflowClient(tracking_uri=url)
        parent, runs = _runs(client)
        assert runs[0].info.status == "FINISHED"
        assert runs[caught].info.status == "RUNNING"  # its end never reached the server
        assert TRIALS - 1 not in runs
        assert parent.info.status == "RUNNING"

        found = check(STUDY, home=home, tracking_uri=url)
        kinds = {(p.kind, p.trial) for p in found.problems}
        assert {("run-status", caught), ("trial-without-run", TRIALS - 1),
                ("parent-running", None)} <= kinds, found.problems

        fixed = CliRunner().invoke(cli, ["check", STUDY, "--fix", "--home", str(home),
                                         "--tracking-uri", url])
        assert fixed.exit_code == 0, fixed.output
        assert check(STUDY, home=home, tracking_uri=url).problems == []

        parent, runs = _runs(client)
        assert parent.info.status != "RUNNING"
        assert sorted(runs) == list(range(TRIALS))
        for number, t in complete.items():
            run = runs[number]
            assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
            assert run.data.metrics["value"] == pytest.approx(t.value)
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        relogged = runs[TRIALS - 1]
        assert relogged.data.tags["opttune.logged_by"].startswith("opttune check")
        history = client.get_metric_history(relogged.info.run_id, "val_acc")
        assert [(m.step, m.value) for m in history] == sorted(
            complete[TRIALS - 1].intermediate_values.items())
