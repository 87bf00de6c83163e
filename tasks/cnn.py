"""Built-in convolutional task: a small CNN on Fashion-MNIST (Unit 7 of the course).

torch is imported inside the functions that build a model or read data, not at the top:
the registry imports this module to find a task by its name, and a search imports torch
only once its MLflow process has started, so that the two imports overlap
(tuner.search.runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.base import Task
from tasks.data import TaskData
from tasks.images import FASHION_DATA, load_idx_task_data
from tuner.space.dsl import ParamValue

if TYPE_CHECKING:
    import torch


def load_image_task_data(dataset: str, *, data_dir: Path | None = None) -> TaskData:
    """The normalised images as (N, 1, 28, 28): one grey channel, as convolutions expect."""
    flat = load_idx_task_data(dataset, data_dir=data_dir)
    return replace(flat, train_x=flat.train_x.view(-1, 1, 28, 28),
                   val_x=flat.val_x.view(-1, 1, 28, 28), test_x=flat.test_x.view(-1, 1, 28, 28))


def cnn(channels: int = 16, classes: int = 10) -> torch.nn.Module:
    """Two 3x3 convolutions (channels, then 2x channels), each halving the image by max
    pooling (28 → 14 → 7), then one linear layer to the class scores."""
    from torch import nn  # noqa: PLC0415  (torch: see the module docstring)

    # Pooling before the ReLU gives the same result (ReLU is monotone) on a quarter of the
    # values, which matters on a CPU.
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * channels * 7 * 7, classes),
    )


def _cnn_factory(params: Mapping[str, ParamValue]) -> torch.nn.Module:
    return cnn(int(params.get("channels", 16)))


def _fashion(*, data_dir: Path | None = None) -> TaskData:
    return load_image_task_data("fashion-mnist", data_dir=data_dir)


FASHION_MNIST_CNN = Task(
    name="fashion-mnist-cnn", summary="small convolutional network on Fashion-MNIST",
    data=FASHION_DATA,
    model="CNN: conv 3x3 (channels), pool, conv 3x3 (2 x channels), pool, linear; ReLU",
    load_data=_fashion, build_model=_cnn_factory, batch_size=128,
    hyperparams={"channels": "16"}, ref="fashion-mnist-cnn")
