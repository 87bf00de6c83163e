"""Retraining a real study's config: the saved model loads with torch and scores as printed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from click.testing import CliRunner
from helpers.small_study import small_study_copy

from tuner.cli.commands import cli
from tuner.errors import OpttuneError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study s1: sgd and adam, 6 trials of 2 epochs (see small_study.py)."""
    return small_study_copy(tmp_path_factory, _mlflow_template, "retrain")


def _score_saved_model(folder: Path) -> float:
    """Rebuild the task's model, load the saved weights, score the test split ourselves."""
    from tasks.registry import get_task
    from tuner.training.loop import evaluate

    record = json.loads((folder / "config.json").read_text())
    task = get_task(record["task"])
    model = task.build_model({})
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    data = task.read_data()
    return evaluate(task, model, data.test_x, data.test_y)[1]


def _study_data(study: optuna.Study) -> Any:
    """The data of the study's task, read as the study read it (its data folder, if any)."""
    from tasks.registry import get_task
    from tuner.study.meta import StudyMeta

    meta = StudyMeta.from_study(study)
    data_dir = meta.settings.data_dir
    return get_task(meta.task).read_data(data_dir=Path(data_dir) if data_dir else None)


def test_retrain_best_saves_a_model_that_scores_as_printed(study_home: Path) -> None:
    """Guards `opttune retrain`: the best trial's exact config trained on train+validation of
    the study's data, a saved model that scores as printed, and its MLflow run."""
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{study_home / 'opttune.db'}")
    best = study.best_trial
    result = CliRunner().invoke(cli, ["retrain", "s1", "--home", str(study_home)])
    assert result.exit_code == 0, result.output
    printed = float(re.search(r"test_acc = ([0-9.]+)", result.stdout).group(1))
    folder = study_home / "models" / f"s1-trial-{best.number}"
    record = json.loads((folder / "config.json").read_text())
    assert record["config"] == best.user_attrs["config"]  # exactly the trial's config
    assert record["trained_on"] == "train+validation"
    # Trained on the study's training and validation splits, scored on its test split: the
    # sample counts of the task's data, read as the study read it.
    data = _study_data(study)
    assert record["data_source"] == data.source
    assert record["train_samples"] == len(data.train_x) + len(data.val_x)
    assert record["test_samples"] == len(data.test_x)
    assert min(len(data.train_x), len(data.val_x), len(data.test_x)) > 0
    assert _score_saved_model(folder) == pytest.approx(printed, abs=5e-5)
    assert record["test"]["test_acc"] == pytest.approx(printed, abs=5e-5)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study_home / 'mlflow.db'}")
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == study.user_attrs["mlflow"]["experiment_id"]
    assert run.data.tags["opttune.role"] == "retrain"
    assert run.data.metrics["test_acc"] == record["test"]["test_acc"]
    assert run.data.params["lr"] == str(best.user_attrs["config"]["lr"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/model.pt", "model/config.json"}


def test_retrain_a_chosen_trial_for_other_epochs_as_json(study_home: Path) -> None:
    result = CliRunner().invoke(cli, ["retrain", "s1", "--trial", "0", "--epochs", "1",
                                      "--format", "json", "--home", str(study_home)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trial"] == 0 and data["config"]["optimizer"] == "sgd"
    assert data["config"]["epochs"] == 1
    assert _score_saved_model(Path(data["folder"])) == pytest.approx(data["test"]["test_acc"])


def test_retrain_never_picks_an_infinite_value(tmp_path_factory: pytest.TempPathFactory,
                                              _mlflow_template: Path) -> None:
    home = small_study_copy(tmp_path_factory, _mlflow_template, "retrain-inf")
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{home / 'opttune.db'}")
    finite = study.best_trial
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=math.inf, params=finite.params,
        distributions=finite.distributions, user_attrs=finite.user_attrs))
    assert study.best_value == math.inf  # Optuna's own pick
    result = CliRunner().invoke(cli, ["retrain", "s1", "--epochs", "1", "--format", "json",
                                      "--home", str(home)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trial"] == finite.number
    assert (home / "models" / f"s1-trial-{finite.number}" / "model.pt").exists()


def test_retrain_refuses_a_trial_that_is_not_there(study_home: Path) -> None:
    from tuner.results.retrain import retrain

    with pytest.raises(OpttuneError, match="--trial 99: study 's1' has trials 0 to 5"):
        retrain("s1", trial=99, home=study_home)
    with pytest.raises(OpttuneError, match="--epochs must be >= 1, but got 0"):
        retrain("s1", epochs=0, home=study_home)
