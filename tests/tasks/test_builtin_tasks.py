"""The built-in tasks: each learns in a 2-trial, 1-epoch search on real data, offline.

"Learns" means its best validation score beats a trivial predictor: the majority class for
classification, the mean of the validation targets for regression.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from helpers.services import missing

from tasks.idx import read_idx, write_idx
from tasks.registry import get_task
from tuner.cli.commands import cli
from tuner.search.runner import SearchResult, search

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def majority_rate(task_ref: str, **kwargs: object) -> float:
    val_y = get_task(task_ref).read_data(**kwargs).val_y  # type: ignore[arg-type]
    return float(val_y.bincount().max()) / len(val_y)


def two_trials(task: str, home: Path, **kwargs: object) -> SearchResult:
    """A 2-trial, 1-epoch search: the SGD and the SGD-with-momentum defaults trials."""
    return search(task=task, n_trials=2, epochs=1, seed=0, home=home, **kwargs)  # type: ignore[arg-type]


def test_digits_mlp_learns(home: Path) -> None:
    result = two_trials("digits-mlp", home)
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.study == "digits-mlp" and result.metric == "val_acc"
    assert result.best is not None and result.best.value is not None
    assert result.best.value > majority_rate("digits-mlp") + 0.2  # 1,797 digits: ~0.15 → >0.5


@pytest.mark.slow
def test_diabetes_mlp_minimises_val_mse_below_the_mean_predictor(home: Path) -> None:
    """One optimizer family, so that `compare` has a group of two trials to pick from."""
    runner = CliRunner()
    out = runner.invoke(cli, ["search", "--task", "diabetes-mlp", "--n-trials", "2", "--epochs",
                              "1", "--optimizers", "momentum", "--pruner", "none", "--seed", "0",
                              "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert "val_mse, lower is better" in out.output

    val_y = get_task("diabetes-mlp").read_data().val_y
    mean_predictor_mse = float(val_y.var(unbiased=False))
    study = optuna.load_study(study_name="diabetes-mlp", storage=f"sqlite:///{home}/opttune.db")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    values = {t.number: float(t.value) for t in done if t.value is not None}
    assert len(values) == 2 and len(set(values.values())) == 2
    lowest = min(values, key=values.__getitem__)
    assert study.best_trial.number == lowest
    assert values[lowest] < 0.9 * mean_predictor_mse
    assert f"Best: trial {lowest}, val_mse=" in out.output
    assert study.best_trial.user_attrs["config"]["hidden"] == 64  # the task's knobs recorded

    best = json.loads(runner.invoke(cli, ["best", "diabetes-mlp", "--format", "json",
                                          "--home", str(home)]).output)
    assert (best["number"], best["direction"]) == (lowest, "minimize")
    compare = json.loads(runner.invoke(cli, ["compare", "diabetes-mlp", "--format", "json",
                                             "--home", str(home)]).output)
    [group] = compare["studies"][0]["groups"]
    assert (group["best_trial"], group["best"]) == (lowest, values[lowest])
    gain = values[0] - values[lowest]  # trial 0 is the PyTorch-defaults trial
    assert group["gain_over_default"] == pytest.approx(gain) and gain >= 0


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 6,000 training and 1,000 test images of the real Fashion-MNIST, as IDX files
    in a --data-dir (a full 54,000-image epoch is too slow for the test suite)."""
    if not SYSTEM_FASHION.is_dir():
        missing(f"{SYSTEM_FASHION} not installed (apt-get install dataset-fashion-mnist)")
    folder = tmp_path_factory.mktemp("fashion-subset")
    for stem, n in (("train-images-idx3-ubyte", 6000), ("train-labels-idx1-ubyte", 6000),
                    ("t10k-images-idx3-ubyte", 1000), ("t10k-labels-idx1-ubyte", 1000)):
        write_idx(folder / stem, np.ascontiguousarray(read_idx(SYSTEM_FASHION / f"{stem}.gz")[:n]))
    return folder


@pytest.mark.slow
def test_fashion_mnist_cnn_learns(home: Path, fashion_subset: Path) -> None:
    result = two_trials("fashion-mnist-cnn", home, data_dir=fashion_subset)
    assert result.data_source.startswith(f"data dir {fashion_subset}") or \
        str(fashion_subset) in result.data_source
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.best is not None and result.best.value is not None
    assert result.best.value > majority_rate("fashion-mnist-cnn", data_dir=fashion_subset) + 0.2


def test_tasks_lists_each_builtin_with_data_model_size_and_metric() -> None:
    out = CliRunner().invoke(cli, ["tasks", "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = {row["name"]: row for row in json.loads(out.output)}
    expected = {"fashion-mnist-cnn": ("val_acc", "maximize", 20490),
                "digits-mlp": ("val_acc", "maximize", 64 * 64 + 64 + 64 * 10 + 10),
                "diabetes-mlp": ("val_mse", "minimize", 10 * 64 + 64 + 64 * 64 + 64 + 64 + 1),
                "mnist-mlp": ("val_acc", "maximize", 235146)}
    for name, (metric, direction, parameters) in expected.items():
        row = rows[name]
        assert (row["metric"], row["direction"], row["parameters"]) == \
            (metric, direction, parameters)
        assert row["data"] and row["model"] and row["summary"]
    assert rows["diabetes-mlp"]["hyperparams"] == {"hidden": "64", "dropout": "0"}

    table = CliRunner().invoke(cli, ["tasks"])
    assert table.exit_code == 0, table.output
    for text in ("params", "diabetes-mlp", "20.5k", "4.93k", "val_mse (min)"):
        assert text in table.output


def test_builtin_data_shapes_fit_their_models() -> None:
    """Shapes, dtypes and standardisation of the scikit-learn tasks (no study needed)."""
    digits = get_task("digits-mlp").read_data()
    assert digits.train_x.shape[1:] == (64,) and digits.train_y.dtype.is_floating_point is False
    assert len(digits.train_x) + len(digits.val_x) + len(digits.test_x) == 1797
    diabetes = get_task("diabetes-mlp").read_data()
    assert diabetes.train_y.dtype.is_floating_point
    assert abs(float(diabetes.train_y.mean())) < 1e-5
    assert abs(float(diabetes.train_y.std()) - 1) < 1e-4
    assert len(diabetes.train_x) + len(diabetes.val_x) + len(diabetes.test_x) == 442
