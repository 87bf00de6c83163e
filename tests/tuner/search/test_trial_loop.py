"""A trial whose training raises an ordinary error: FAIL in both stores, and the study goes on;
three such failures in a row stop the study with one clear error.

A user task (a file written by the test, loaded like any user's task) wraps the digits MLP in
a model that raises ValueError when it trains on a batch of 32: trials that draw batch size
32 fail, those that draw 16 train normally.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.search.runner import search
from tuner.study.recovery import check

TASK_FILE = '''
import torch

from tasks.base import Task
from tasks.registry import get_task

DIGITS = get_task("digits-mlp")


class Picky(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if self.training and x.shape[0] == 32:
            raise ValueError("this model refuses batches of 32")
        return self.inner(x)


picky = Task(name="picky", load_data=DIGITS.load_data,
             build_model=lambda params: Picky(DIGITS.build_model(params)), batch_size=16,
             hyperparams=DIGITS.hyperparams)
'''
REASON = "ValueError: this model refuses batches of 32"


def _task_ref(folder: Path) -> str:
    path = folder / "picky_task.py"
    path.write_text(textwrap.dedent(TASK_FILE))
    return f"{path}:picky"


def _runs(home: Path, name: str) -> dict[str, Any]:
    """The MLflow runs of study `name`, by run id."""
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id],
                                                        max_results=1000)}


# The batch size of each trial, queued before the study runs: two failures, a success that
# resets the count, two failures again (four in all, never three in a row), then a success.
BATCH_SIZES = [32, 32, 16, 32, 32, 16]


@pytest.mark.slow
def test_a_trial_that_raises_fails_in_both_stores_and_the_study_goes_on(
        home: Path, tmp_path: Path) -> None:
    """Guards the FAIL path of an ordinary error: Optuna state FAIL with fail_reason, its
    MLflow run FAILED with the reason, later trials still run, and failures that are not three
    in a row never stop the study (batch sizes queued: fail, fail, ok, fail, fail, ok; a count
    of failures that the ok trial did not reset would stop the study at trial 3)."""
    args: dict[str, Any] = dict(
        task=_task_ref(tmp_path), study="p", batch_size="16,32", scheduler="none",
        optimizers=["adam"], n_trials=len(BATCH_SIZES), epochs=1, sampler="random", seed=2,
        defaults_first=False, device="cpu", home=home)
    search(**args, jobs=0)  # creates the study and runs nothing
    storage = f"sqlite:///{home / 'opttune.db'}"
    queued = optuna.load_study(study_name="p", storage=storage)
    assert queued.trials == []
    for size in BATCH_SIZES:
        queued.enqueue_trial({"batch_size": size})
    result = search(**args)  # the same study: runs the queued trials, in order
    study = optuna.load_study(study_name="p", storage=storage)
    states = [(t.state, t.user_attrs["config"]["batch_size"]) for t in study.trials]
    fail, done = TrialState.FAIL, TrialState.COMPLETE
    assert states == [(fail if size == 32 else done, size) for size in BATCH_SIZES]
    assert result.total_counted == len(BATCH_SIZES)  # a failed trial counts towards the budget
    assert result.best is not None and result.best.number in (2, 5)

    runs = _runs(home, "p")
    for trial in study.trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        if trial.state == fail:
            assert trial.user_attrs["fail_reason"] == REASON
            assert trial.value is None
            assert run.info.status == "FAILED"
            assert run.data.tags["fail_reason"] == REASON
            assert run.data.tags["trial_state"] == "FAIL"
        else:
            assert "fail_reason" not in trial.user_attrs
            assert run.info.status == "FINISHED"
    parents = [r for r in runs.values() if r.data.tags.get("opttune.role") == "study"]
    assert [r.info.status for r in parents] == ["FINISHED"]


@pytest.fixture(scope="module")
def three_failures(tmp_path_factory: pytest.TempPathFactory,
                   _mlflow_template: Path) -> tuple[Path, Result]:
    """`opttune search` of a task whose every trial raises, with a budget of 10."""
    folder = tmp_path_factory.mktemp("three-failures")
    home = folder / "home"
    home.mkdir()
    shutil.copy(_mlflow_template, home / "mlflow.db")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPTTUNE_NO_DOWNLOAD", "1")
        result = CliRunner().invoke(cli, [
            "search", "--task", _task_ref(folder), "--study", "f", "--batch-size", "32",
            "--optimizers", "sgd,adam", "--n-trials", "10", "--epochs", "1", "--device", "cpu",
            "--home", str(home)])
    return home, result


@pytest.mark.slow
def test_three_failures_in_a_row_stop_the_study_with_one_error(
        three_failures: tuple[Path, Result]) -> None:
    """Guards the stop after three errors in a row: exit 1 with one `Error:` line naming the
    count and the last error, no traceback, and no fourth trial started."""
    home, result = three_failures
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: 3 trials in a row failed; the last with: {REASON}"], \
        result.output
    assert "Traceback" not in result.output
    study = optuna.load_study(study_name="f", storage=f"sqlite:///{home / 'opttune.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert {t.user_attrs["fail_reason"] for t in study.trials} == {REASON}
    runs = _runs(home, "f")
    assert sorted(runs[t.user_attrs["mlflow_run_id"]].info.status for t in study.trials) == \
        ["FAILED"] * 3


@pytest.mark.slow
def test_three_failures_in_a_row_leave_nothing_running(
        three_failures: tuple[Path, Result]) -> None:
    """Guards that a study stopped by errors closes its MLflow parent run like any other end,
    so that `opttune check` finds nothing to repair."""
    home, _ = three_failures
    runs = _runs(home, "f")
    assert not [r.info.run_name for r in runs.values() if r.info.status == "RUNNING"]
    assert check("f", home=home).problems == []
