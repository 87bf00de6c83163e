"""Built-in demo task: an MLP on scikit-learn's 8x8 handwritten digits (seconds per study).

1,797 digits of 8x8 pixels with values 0–16 ship inside scikit-learn (no download); a whole
study of a few trials runs in seconds on a laptop CPU.

torch is imported inside the functions that build a model or read data, not at the top:
the registry imports this module to find a task by its name, and a search imports torch
only once its MLflow process has started, so that the two imports overlap
(tuner.search.runner).
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.base import Task
from tasks.data import TaskData
from tasks.images import mlp
from tuner.space.dsl import ParamValue

if TYPE_CHECKING:
    import torch

DIGITS_SOURCE = "scikit-learn load_digits (1,797 8x8 digits, shipped with scikit-learn)"


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as `load_digits(return_X_y=True)` gives them (float64 pixels,
    int labels), read straight from the file scikit-learn ships: importing scikit-learn
    costs more than a short study's training."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as handle:
                table = np.loadtxt(handle, delimiter=",")
            return table[:, :-1], table[:, -1].astype(int)
    # Another layout: let scikit-learn read it (a second to import, so only then).
    from sklearn.datasets import load_digits  # noqa: PLC0415

    x, y = load_digits(return_X_y=True)
    return x, y


def load_digits_data() -> TaskData:
    """Split 70/10/20 into train/val/test with a fixed seed; normalise with train statistics."""
    x, y = read_digits()
    data = TaskData.split(x, y, source=DIGITS_SOURCE, val_fraction=0.1, test_fraction=0.2)
    # One mean and std over all pixels: per-pixel scaling would blow up the border pixels
    # that are always 0 in training.
    mean, std = data.train_x.mean(), data.train_x.std()
    return replace(data, train_x=(data.train_x - mean) / std,
                   val_x=(data.val_x - mean) / std, test_x=(data.test_x - mean) / std)


def _digits_model(params: Mapping[str, ParamValue]) -> torch.nn.Module:
    return mlp([64, int(params.get("hidden", 64)), 10])


DIGITS_MLP = Task(
    name="digits-mlp", summary="MLP on 8x8 handwritten digits: a study in seconds",
    data="scikit-learn digits, 8x8 (1,797: 1,258 train / 180 val / 359 test)",
    model="MLP 64-hidden-10, ReLU",
    load_data=load_digits_data, build_model=_digits_model, batch_size=16,
    hyperparams={"hidden": "64"}, ref="digits-mlp")
