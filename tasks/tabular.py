"""Built-in regression task: an MLP predicting diabetes progression (scikit-learn's data).

The data ship inside scikit-learn (no download): 442 patients, 10 baseline measurements
(age, sex, BMI, blood pressure, six blood serum values), and a measure of disease progression
one year later. Features and target are standardised with the training split's statistics,
so a validation MSE of 1.0 is what predicting the mean scores; lower is better.

torch is imported inside the functions that build a model or read data, not at the top:
the registry imports this module to find a task by its name, and a search imports torch
only once its MLflow process has started, so that the two imports overlap
(tuner.search.runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from tasks.base import Task
from tasks.data import TaskData
from tuner.space.dsl import ParamValue

if TYPE_CHECKING:
    import torch

DIABETES_SOURCE = "scikit-learn load_diabetes (442 patients, shipped with scikit-learn)"


def load_diabetes_data() -> TaskData:
    """Split 60/20/20 into train/val/test with a fixed seed; standardise x and y."""
    # scikit-learn: a second to import, and the registry loads this module for every task.
    from sklearn.datasets import load_diabetes  # noqa: PLC0415

    from tasks.tensors import standardize  # noqa: PLC0415  (torch: see the module docstring)

    x, y = load_diabetes(return_X_y=True)
    data = TaskData.split(x, y, source=DIABETES_SOURCE, val_fraction=0.2, test_fraction=0.2)
    train_x, val_x, test_x = standardize(data.train_x, data.val_x, data.test_x)
    train_y, val_y, test_y = standardize(data.train_y, data.val_y, data.test_y)
    return replace(data, train_x=train_x, val_x=val_x, test_x=test_x, train_y=train_y,
                   val_y=val_y, test_y=test_y)


def regression_mlp(inputs: int, hidden: int, dropout: float) -> torch.nn.Module:
    """inputs → hidden → hidden → 1, ReLU, optional dropout after each hidden layer."""
    from torch import nn  # noqa: PLC0415  (torch: see the module docstring)

    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 1),
    )


def _diabetes_model(params: Mapping[str, ParamValue]) -> torch.nn.Module:
    return regression_mlp(10, int(params.get("hidden", 64)), float(params.get("dropout", 0.0)))


DIABETES_MLP = Task(
    name="diabetes-mlp", summary="regression MLP: diabetes progression after one year",
    data="scikit-learn diabetes, 10 features (442 patients: 266 train / 88 val / 88 test)",
    model="MLP 10-hidden-hidden-1, ReLU, dropout after each hidden layer",
    load_data=load_diabetes_data, build_model=_diabetes_model, loss="mse", batch_size=8,
    hyperparams={"hidden": "64", "dropout": "0"}, ref="diabetes-mlp")
