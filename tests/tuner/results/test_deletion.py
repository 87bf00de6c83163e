"""`opttune delete`, then a study of the same name again: a fresh study in both stores."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.entities import ViewType
from optuna.trial import TrialState

from tuner.cli.commands import cli


def _search(home: Path, *extra: str) -> None:
    result = CliRunner().invoke(cli, [
        "search", "--task", "digits-mlp", "--study", "again", "--epochs", "1",
        "--optimizers", "adam", "--device", "cpu", "--home", str(home), *extra])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_a_deleted_study_recreated_under_its_name_starts_afresh(home: Path) -> None:
    """Guards delete + re-create: the new study has only its own trials (numbered from 0),
    its own MLflow experiment under the name, and none of the old runs; the old experiment
    stays deleted, renamed aside, with its runs."""
    storage = f"sqlite:///{home / 'opttune.db'}"
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    _search(home, "--n-trials", "2")
    old = optuna.load_study(study_name="again", storage=storage)
    old_ids = old.user_attrs["mlflow"]
    old_runs = {r.info.run_id for r in client.search_runs([old_ids["experiment_id"]])}
    assert len(old_runs) == 3  # the parent and two trials

    deleted = CliRunner().invoke(cli, ["delete", "again", "--yes", "--home", str(home)])
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted study again (2 trials)" in deleted.output

    _search(home, "--n-trials", "1", "--seed", "3")
    new = optuna.load_study(study_name="again", storage=storage)
    assert [(t.number, t.state) for t in new.trials] == [(0, TrialState.COMPLETE)]
    assert new.user_attrs["settings"]["n_trials"] == 1 and new.user_attrs["settings"]["seed"] == 3
    new_ids = new.user_attrs["mlflow"]
    assert new_ids["experiment_id"] != old_ids["experiment_id"]
    assert new_ids["parent_run_id"] not in old_runs
    experiment = client.get_experiment_by_name("again")
    assert experiment is not None and experiment.experiment_id == new_ids["experiment_id"]
    assert experiment.lifecycle_stage == "active"
    new_runs = {r.info.run_id: r for r in client.search_runs([new_ids["experiment_id"]],
                                                          run_view_type=ViewType.ALL)}
    assert set(new_runs) == {new_ids["parent_run_id"], new.trials[0].user_attrs["mlflow_run_id"]}
    assert not set(new_runs) & old_runs  # no old run mixed in
    assert {r.data.tags.get("mlflow.parentRunId") for r in new_runs.values()} == \
        {None, new_ids["parent_run_id"]}

    gone = client.get_experiment(old_ids["experiment_id"])
    assert gone.lifecycle_stage == "deleted" and gone.name.startswith("again (deleted ")
    kept = client.search_runs([gone.experiment_id], run_view_type=ViewType.ALL)
    assert {r.info.run_id for r in kept} == old_runs


@pytest.mark.slow
def test_deleting_a_benchmark_search_or_the_benchmark(home: Path) -> None:
    """One search of a benchmark goes with its own runs, and the benchmark's experiment stays;
    the benchmark goes with its searches and its experiment."""
    runner = CliRunner()
    made = runner.invoke(cli, ["benchmark", "--task", "digits-mlp", "--optimizers", "sgd,adam",
                               "--budgets", "oneshot,1", "--seeds", "1", "--epochs", "1",
                               "--name", "bm", "--device", "cpu", "--home", str(home)])
    assert made.exit_code == 0, made.output
    storage = f"sqlite:///{home / 'opttune.db'}"
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bm")
    assert experiment is not None

    def studies_of(role: str) -> set[str]:
        runs = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`opttune.role` = '{role}'")
        return {r.data.tags["study"] for r in runs}

    assert studies_of("study") == studies_of("trial") == {"bm.sgd.none", "bm.adam.none"}
    one = runner.invoke(cli, ["delete", "bm.sgd.none", "--yes", "--home", str(home)])
    assert one.exit_code == 0, one.output
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"bm", "bm.adam.none"}
    assert studies_of("study") == studies_of("trial") == {"bm.adam.none"}
    assert client.get_experiment(experiment.experiment_id).lifecycle_stage == "active"

    every = runner.invoke(cli, ["delete", "bm", "--yes", "--home", str(home)])
    assert every.exit_code == 0, every.output
    assert optuna.get_all_study_summaries(storage) == []
    assert client.get_experiment(experiment.experiment_id).lifecycle_stage == "deleted"
