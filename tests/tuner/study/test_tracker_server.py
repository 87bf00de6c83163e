"""A real MLflow tracking server: every run, metric and artifact goes to it, none to local disk.

The many-machine recipe sends each worker's runs to `--tracking-uri http://host:5000`. The
server owns the artifact store (here its proxied `mlflow-artifacts:` store, in a folder of
its own); the study's experiment must not point at a path on whichever machine created it.
Everything is read back through the server's REST API, as from another machine.

The server runs on 127.0.0.1 with one worker and MLflow's job runner off, on a copy of the
session's migrated MLflow database: it answers in 12 to 30 s on two shared cores, where a
fresh database and MLflow's defaults take a minute and a half.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result
from helpers.servers import mlflow_server
from helpers.sockets import free_port
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.study.tracker import Tracker, is_tracking_server
from tuner.study.trial_attrs import OWNER_ATTR

START_SECONDS = 180  # the longest we wait for the server to answer


def test_only_http_uris_are_tracking_servers() -> None:
    for uri in ("http://127.0.0.1:5000", "https://mlflow.example.org", "HTTP://host:5000"):
        assert is_tracking_server(uri)
    for uri in ("sqlite:////tmp/mlflow.db", "file:///tmp/mlruns", "postgresql://u@h/db",
                "/tmp/mlruns", "databricks"):
        assert not is_tracking_server(uri)


def test_a_local_store_keeps_its_artifacts_under_the_home(home: Path) -> None:
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")
    experiment_id = tracker.ensure_experiment("local", tags={})
    experiment = tracker.client.get_experiment(experiment_id)
    assert experiment.artifact_location == (home / "mlartifacts" / "local").resolve().as_uri()
    run = tracker.create_run(experiment_id, name="r", tags={}, params={})
    tracker.log_text(run, "{}", "space.json")
    assert (home / "mlartifacts" / "local" / run / "artifacts" / "space.json").is_file()


# -- against a real server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           _mlflow_template: Path) -> Iterator[dict[str, Any]]:
    """`mlflow server` on 127.0.0.1 as a real process group; always stopped after."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(_mlflow_template, folder / "server.db")
    artifacts = folder / "artifacts"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with mlflow_server(folder / "server.db", artifacts, port, folder / "server.log",
                       start_seconds=START_SECONDS):
        yield {"url": url, "artifacts": artifacts, "folder": folder,
               "start_seconds": time.monotonic() - started}


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _study(home: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{home / 'opttune.db'}")


def _runs(client: MlflowClient, name: str) -> tuple[Any, Any, list[Any]]:
    """(the experiment, the parent run, the trial runs) of study `name`, from the server."""
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no experiment {name!r} on the server"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("opttune.role") == "study"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    return experiment, parents[0], [r for r in runs if r.data.tags.get("opttune.role") == "trial"]


def _no_local_artifacts(home: Path) -> None:
    """Nothing of MLflow's on the client: no artifact folder, no tracking database."""
    local = [p for p in (home / "mlartifacts").rglob("*") if p.is_file()] \
        if (home / "mlartifacts").exists() else []
    assert local == []
    assert not (home / "mlflow.db").exists()


def _assert_logged_to_server(server: dict[str, Any], home: Path, name: str,
                             trials: int) -> tuple[MlflowClient, Any]:
    """The study's runs on the server agree with its trials; its artifacts are the server's."""
    client = MlflowClient(tracking_uri=server["url"])
    study = _study(home, name)
    assert study.user_attrs["mlflow"]["tracking_uri"] == server["url"]
    experiment, parent, children = _runs(client, name)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert experiment.experiment_id == study.user_attrs["mlflow"]["experiment_id"]
    assert parent.info.run_id == study.user_attrs["mlflow"]["parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["task"] == "digits-mlp" and parent.data.params["device"] == "cpu"

    finished = [t for t in study.trials if t.state != TrialState.WAITING]
    assert len(finished) == trials and all(t.state == TrialState.COMPLETE for t in finished)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"]
                                                for t in finished}
    for t in finished:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["trial_number"] == str(t.number)
        assert run.data.params["optimizer"] == t.params["optimizer"]
        assert float(run.data.params["lr"]) == pytest.approx(t.user_attrs["config"]["lr"])
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [(m.step, m.value) for m in history] == [(0, t.value)]
        assert run.data.metrics["value"] == t.value
    progress = client.get_metric_history(parent.info.run_id, "trial_value")
    assert sorted((m.step, m.value) for m in progress) == sorted(
        (t.number, t.value) for t in finished)

    # The parent's artifacts, through the server's artifact proxy and in its store.
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"space.json", "plots"} <= listed
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "plots")] == [
        "plots/study_plots.html"]
    fetched = Path(client.download_artifacts(parent.info.run_id, "space.json",
                                             str(home.parent / f"{name}-fetched")))
    assert json.loads(fetched.read_text()) == json.loads(study.user_attrs["space"])
    stored = server["artifacts"] / experiment.experiment_id / parent.info.run_id / "artifacts"
    assert (stored / "space.json").is_file() and (stored / "plots" / "study_plots.html").is_file()
    _no_local_artifacts(home)
    return client, study


@pytest.fixture(scope="module")
def searched(server: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Study s1 of two one-epoch trials, logged to the server from a fresh home."""
    home = tmp_path_factory.mktemp("client") / "home"
    result = _invoke("search", "--task", "digits-mlp", "--study", "s1", "--n-trials", "2",
                     "--epochs", "1", "--seed", "0", "--device", "cpu",
                     "--tracking-uri", server["url"], "--home", str(home))
    assert result.exit_code == 0, result.output
    assert "View run" not in result.output  # MLflow's own links stay off the console
    return home


@pytest.mark.slow
def test_a_search_logs_runs_and_artifacts_to_the_server(server: dict[str, Any],
                                                         searched: Path) -> None:
    print(f"the MLflow server answered after {server['start_seconds']:.1f} s")
    _assert_logged_to_server(server, searched, "s1", trials=2)
    assert (searched / "opttune.db").is_file()  # the study store is local, as asked


@pytest.mark.slow
def test_two_jobs_log_to_the_server(server: dict[str, Any],
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("jobs") / "home"
    result = _invoke("search", "--task", "digits-mlp", "--study", "j2", "--n-trials", "2",
                     "--epochs", "1", "--seed", "0", "--pruner", "none", "--device", "cpu",
                     "--jobs", "2", "--tracking-uri", server["url"], "--home", str(home))
    assert result.exit_code == 0, result.output
    assert "cpu ×2" in result.output
    _, study = _assert_logged_to_server(server, home, "j2", trials=2)
    owners = {t.system_attrs[OWNER_ATTR]["pid"] for t in study.trials
              if t.state == TrialState.COMPLETE}
    assert os.getpid() not in owners  # the trials ran in the job processes


@pytest.mark.slow
def test_retrain_logs_the_model_to_the_server(server: dict[str, Any], searched: Path) -> None:
    import torch

    result = _invoke("retrain", "s1", "--epochs", "1", "--device", "cpu", "--format", "json",
                     "--tracking-uri", server["url"], "--home", str(searched))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    client = MlflowClient(tracking_uri=server["url"])
    experiment = client.get_experiment_by_name("s1")
    assert experiment is not None
    run = client.get_run(record["run_id"])
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["opttune.role"] == "retrain"
    assert run.data.tags["trial_number"] == str(record["trial"])
    assert run.data.metrics["test_acc"] == pytest.approx(record["test"]["test_acc"])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {
        "model/model.pt", "model/config.json"}
    fetched = Path(client.download_artifacts(run.info.run_id, "model/model.pt",
                                             str(searched.parent / "fetched-model")))
    remote = torch.load(fetched, weights_only=True)
    local = torch.load(Path(record["model_path"]), weights_only=True)
    assert remote.keys() == local.keys() and remote
    assert all(torch.equal(remote[k], local[k]) for k in local)
    stored = (server["artifacts"] / experiment.experiment_id / run.info.run_id / "artifacts"
              / "model" / "model.pt")
    assert stored.is_file()
    _no_local_artifacts(searched)
