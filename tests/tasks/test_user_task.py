"""A user's own task, written from the README alone: it runs, resumes, logs to MLflow, and
its mistakes stop with one clear error line."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from tasks.base import Task
from tasks.checks import check_data, check_model
from tasks.data import TaskData
from tasks.registry import get_task
from tuner.cli.commands import cli
from tuner.errors import SpaceError, TaskError
from tuner.space.diff import describe_diff
from tuner.space.searchspace import parse_task_params

ROOT = Path(__file__).resolve().parents[2]


def readme_task() -> str:
    """The first Python block of the README's "Tune your own model" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Tune your own model", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's 'Tune your own model' section has no Python example"
    return match.group(1)


def error_line(result: Result) -> str:
    """The single `Error: …` line of a failed command (and no traceback)."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.slow
def test_readme_task_runs_resumes_from_elsewhere_and_shows_in_mlflow(
        tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "my_task.py").write_text(readme_task())
    runner = CliRunner()
    monkeypatch.chdir(tmp_path / "project")
    first = runner.invoke(cli, ["search", "--task", "my_task.py:task", "--n-trials", "2",
                                "--epochs", "1", "--seed", "0", "--home", str(home)])
    assert first.exit_code == 0, first.output
    assert "Study spirals" in first.output
    assert "(task)" in first.output and "32,64,128" in first.output  # the space shows them

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = runner.invoke(cli, ["resume", "spirals", "--n-trials", "1", "--home", str(home)])
    assert again.exit_code == 0, again.output

    study = optuna.load_study(study_name="spirals", storage=f"sqlite:///{home}/opttune.db")
    assert study.user_attrs["task"] == f"{(tmp_path / 'project' / 'my_task.py').resolve()}:task"
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3
    for trial in done:
        assert trial.user_attrs["config"]["hidden"] in (32, 64, 128)
        assert 0 <= trial.user_attrs["config"]["dropout"] <= 0.3

    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    experiment = client.get_experiment_by_name("spirals")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert "hidden" in child.data.params and "dropout" in child.data.params
        assert "val_acc" in child.data.metrics


def test_param_overrides_the_task_hyperparameters(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "my_task.py"
    path.write_text(readme_task())
    from tuner.search.runner import search

    result = search(task=f"{path}:task", study="narrow", n_trials=1, epochs=1, seed=0,
                    optimizers=["adam"], task_params={"hidden": "8", "dropout": "0,0.1"},
                    home=home)
    assert result.trials[0].config["hidden"] == 8  # fixed by the override, still an int
    assert result.trials[0].config["dropout"] == 0  # the first choice is the defaults trial's
    study = optuna.load_study(study_name="narrow", storage=f"sqlite:///{home}/opttune.db")
    assert '"hidden": {"kind": "fixed", "value": 8' in study.user_attrs["space"]


def test_task_hyperparameters_parse_into_the_space() -> None:
    params = parse_task_params({"hidden": "32,64,128", "dropout": "0:0.3", "act": "relu,tanh",
                                "scale": "1e-3:1:log", "depth": "2"})
    assert params["hidden"].dist.values == (32, 64, 128) and params["hidden"].default == 32
    assert all(isinstance(v, int) for v in params["hidden"].dist.values)
    assert (params["dropout"].dist.low, params["dropout"].dist.high) == (0.0, 0.3)
    assert params["dropout"].dist.log is False and params["dropout"].default is None
    assert params["scale"].dist.log is True
    assert params["act"].dist.values == ("relu", "tanh")
    assert params["depth"].dist.value == 2
    with pytest.raises(SpaceError, match="clashes with opttune's own 'lr'"):
        parse_task_params({"lr": "0.1"})
    with pytest.raises(SpaceError, match="must be Python identifiers"):
        parse_task_params({"hidden-size": "64"})
    with pytest.raises(SpaceError, match="LOW < HIGH"):
        parse_task_params({"dropout": "0.5:0"})
    old, new = parse_task_params({"hidden": "32,64"}), parse_task_params({"hidden": "64"})
    from tuner.space.searchspace import build_space

    assert "task.hidden changed: 32,64 -> 64 (fixed)" in describe_diff(
        build_space(task_params={"hidden": "32,64"}), build_space(task_params={"hidden": "64"}))
    assert old != new


# --- mistakes: one clear line each --------------------------------------------------------


def search_error(args: list[str], home: Path) -> str:
    result = CliRunner().invoke(cli, ["search", *args, "--n-trials", "1", "--epochs", "1",
                                      "--home", str(home)])
    line = error_line(result)
    assert not (home / "opttune.db").exists()  # nothing was created
    return line


def test_cli_errors_name_the_problem(tmp_path: Path) -> None:
    home = tmp_path / "home"
    example = readme_task()
    broken = tmp_path / "broken.py"
    broken.write_text(example.replace("def build_model(params):", "def build_model(params)"))
    assert f"Error: importing task file {broken} failed at line" in \
        search_error(["--task", f"{broken}:task"], home)

    mine = tmp_path / "mine.py"
    mine.write_text(example)
    assert search_error(["--task", f"{mine}:nn"], home) == (
        f"Error: nn in {mine} is a module, not a tasks.Task: wrap the model factory and data "
        f"in Task(name=…, load_data=…, build_model=…); see the README's 'Tune your own model'")
    assert f"Error: load_data() in {mine} returned a value of type TaskData, not a tasks.Task" \
        in search_error(["--task", f"{mine}:load_data"], home)

    assert "Error: --param width=8: task 'spirals' has no hyperparameter 'width'; its " \
           "hyperparameters are hidden, dropout" in \
        search_error(["--task", f"{mine}:task", "--param", "width=8"], home)

    one_output = tmp_path / "one_output.py"
    one_output.write_text(example.replace("nn.Linear(hidden, 2),", "nn.Linear(hidden, 1),"))
    line = search_error(["--task", f"{one_output}:task"], home)
    # Word for word what the README shows.
    assert line == ("Error: task 'spirals': the labels go up to 1 (2 classes), but the model "
                    "outputs 1 score(s) per sample; its last layer needs 2 outputs")
    assert line.removeprefix("Error: ") in " ".join((ROOT / "README.md").read_text().split())

    wrong_input = tmp_path / "wrong_input.py"
    wrong_input.write_text(example.replace("nn.Linear(2, hidden)", "nn.Linear(3, hidden)"))
    line = search_error(["--task", f"{wrong_input}:task"], home)
    assert "the model fails on a batch of inputs of shape (2, 2) (float32): RuntimeError" in line
    assert "its first layer must take samples of shape (2,)" in line

    unknown_param = tmp_path / "unknown_param.py"
    unknown_param.write_text(example.replace('params["hidden"]', 'params["width"]'))
    assert "build_model({'hidden': 32, 'dropout': 0.15}) failed: KeyError: 'width'" in \
        search_error(["--task", f"{unknown_param}:task"], home)

    regression = tmp_path / "regression.py"
    regression.write_text(example.replace('loss="cross_entropy"', 'loss="mse"').replace(
        ".long()", ".float()"))
    assert "for the mse loss the model must output one value per target (shape (2,) or " \
           "(2, 1) for this batch), but it outputs shape (2, 2)" in \
        search_error(["--task", f"{regression}:task"], home)


def test_data_checks() -> None:
    task = Task(name="t", load_data=print, build_model=lambda p: torch.nn.Linear(3, 2))
    x = torch.randn(20, 3)

    def error(data: object, of: Task = task) -> str:
        with pytest.raises(TaskError) as info:
            check_data(of, data)
        return str(info.value)

    good = TaskData.split(x, (x[:, 0] > 0).long(), source="s")
    check_data(task, good)
    check_model(task, good, {})
    assert "must return a tasks.TaskData" in error((x, x))
    assert "the cross_entropy loss needs integer class labels of shape (N,), but train_y is " \
           "float32" in error(TaskData.split(x, x[:, 0], source="s"))
    mse = Task(name="t", load_data=print, build_model=print, loss="mse")
    assert "the mse loss needs float targets, but train_y is int64" in error(good, mse)
    nan = x.clone()
    nan[3, 1] = float("nan")
    assert "contains NaN or infinite values" in error(
        TaskData.split(nan, (x[:, 0] > 0).long(), source="s", test_fraction=0, val_fraction=0))
    y = (x[:, 0] > 0).long()
    short = TaskData(x, y[:5], x, y, x, y, source="s")
    assert "train_x has 20 samples but train_y has 5" in error(short)
    empty = TaskData(x, y, x[:0], y[:0], x, y, source="s")
    assert "the val split is empty" in error(empty)


def test_the_example_file_works_with_generated_data_and_a_csv(tmp_path: Path) -> None:
    task = get_task(f"{ROOT / 'examples' / 'my_task.py'}:task")
    data = task.read_data()
    assert len(data.train_x) + len(data.val_x) + len(data.test_x) == 3000
    check_model(task, data, task.default_params())
    rows = ["x1,x2,label"] + [f"{i / 10},{-i / 10},{i % 2}" for i in range(30)]
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    from_csv = task.read_data(data_dir=tmp_path)
    assert from_csv.source.startswith(str(tmp_path / "points.csv"))
    assert len(from_csv.train_x) + len(from_csv.val_x) + len(from_csv.test_x) == 30
    assert from_csv.train_y.dtype == torch.long
