"""Learning rates that blow up: every such trial is pruned as `diverged`, the study goes on.

SGD with a learning rate of 10 to 1000 on the MNIST MLP turns the loss into inf/NaN within
a few steps. Each trial must end PRUNED with the reason and the step recorded in both
stores (pruned trials rank below every complete one in TPE, so the sampler moves away), and
the best value is never inf or NaN.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.search.runner import search


def test_a_study_of_diverging_learning_rates_runs_to_completion(home: Path) -> None:
    result = CliRunner().invoke(cli, [
        "search", "--task", "mnist-mlp", "--study", "d", "--optimizers", "sgd",
        "--lr", "10:1000", "--batch-size", "512", "--n-trials", "4", "--epochs", "2",
        "--seed", "3",
        "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "No trial of d completed, so there is no best value yet" in text
    assert "(diverged)" in text

    study = optuna.load_study(study_name="d", storage=f"sqlite:///{home / 'opttune.db'}")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4
    for t in trials:
        assert t.state == TrialState.PRUNED, (t.number, t.state, t.user_attrs)
        assert t.params["lr"] >= 10
        assert t.user_attrs["prune_reason"] == "diverged"
        assert isinstance(t.user_attrs["diverged_step"], int) and t.user_attrs["diverged_step"] >= 0
        loss = float(t.user_attrs["diverged_loss"])
        assert not math.isfinite(loss)
        # Only the epochs before the one that diverged are reported (none when it was the
        # first), each finite: Optuna never sees inf or NaN.
        assert sorted(t.intermediate_values) == list(range(t.user_attrs["diverged_epoch"]))
        assert all(math.isfinite(v) for v in t.intermediate_values.values())

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["trial_state"] == "PRUNED"
        assert run.data.tags["prune_reason"] == "diverged"
        assert run.data.tags["diverged_step"] == str(t.user_attrs["diverged_step"])


def test_the_best_value_stays_finite_among_diverging_trials(home: Path) -> None:
    result = search(task="mnist-mlp", study="mixed", optimizers=["sgd"], params={
        "lr": ["0.05,500"]}, batch_size="512", n_trials=4, epochs=1, seed=0, sampler="random",
        home=home)
    assert {(t.config["lr"], t.state) for t in result.all_trials} == {
        (0.05, "COMPLETE"), (500, "PRUNED")}
    assert result.best is not None and result.best.value is not None
    assert math.isfinite(result.best.value) and result.best.config["lr"] == 0.05
    assert all(t.reason == "diverged" for t in result.all_trials if t.state == "PRUNED")
