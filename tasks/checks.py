"""Checks that a task's data and model fit together, with one precise message per problem.

They run before any study is opened or trial trained, so that a user's task fails in a second
with the reason ("the model outputs 5 scores, the labels go up to 9") rather than deep inside
the first trial's traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Protocol

import torch

from tasks.data import TaskData
from tasks.losses import loss_function
from tuner.errors import TaskError
from tuner.space.dsl import ParamValue


class CheckedTask(Protocol):
    """What the checks read of a task (tasks.base.Task has it; typed here as a protocol so
    that the checks, which Task calls, need not import Task)."""

    @property
    def name(self) -> str: ...

    @property
    def loss(self) -> str: ...

    @property
    def build_model(self) -> Callable[[Mapping[str, ParamValue]], torch.nn.Module]: ...


_SPLITS = ("train", "val", "test")


def check_data(task: CheckedTask, data: object) -> None:
    """Raise TaskError unless `data` is a TaskData of tensors that fit `task`'s loss."""
    who = f"task {task.name!r}"
    if not isinstance(data, TaskData):
        raise TaskError(f"{who}: load_data must return a tasks.TaskData (train, val and test "
                        f"tensors), but it returned a {type(data).__name__}")
    for split in _SPLITS:
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        for name, value in ((f"{split}_x", x), (f"{split}_y", y)):
            if not isinstance(value, torch.Tensor):
                raise TaskError(f"{who}: TaskData.{name} must be a torch.Tensor, but it is a "
                                f"{type(value).__name__} (torch.as_tensor converts arrays)")
        if len(x) == 0 and split != "test":  # search never reads test; retrain does
            raise TaskError(f"{who}: the {split} split is empty; train and val each need at "
                            f"least one sample")
        if len(x) != len(y):
            raise TaskError(f"{who}: {split}_x has {len(x)} samples but {split}_y has {len(y)}; "
                            f"inputs and targets need one row per sample")
        if len(x) and x.shape[1:] != data.train_x.shape[1:]:
            raise TaskError(f"{who}: {split}_x has samples of shape {tuple(x.shape[1:])} but "
                            f"train_x has {tuple(data.train_x.shape[1:])}; all splits must match")
        if len(y):
            _check_targets(who, task.loss, split, y)
        for name, value in ((f"{split}_x", x), (f"{split}_y", y)):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise TaskError(f"{who}: {name} contains NaN or infinite values; clean or "
                                f"impute them in load_data")


def _check_targets(who: str, loss: str, split: str, y: torch.Tensor) -> None:
    if loss == "cross_entropy":
        if y.is_floating_point() or y.is_complex() or y.ndim != 1:
            raise TaskError(
                f"{who}: the cross_entropy loss needs integer class labels of shape (N,), but "
                f"{split}_y is {str(y.dtype).replace('torch.', '')} of shape {tuple(y.shape)}; "
                f"convert labels with .long(), or use loss='mse' for regression")
        if len(y) and int(y.min()) < 0:
            raise TaskError(f"{who}: class labels must be 0, 1, 2, …, but {split}_y contains "
                            f"{int(y.min())}")
    elif not y.is_floating_point():
        raise TaskError(f"{who}: the mse loss needs float targets, but {split}_y is "
                        f"{str(y.dtype).replace('torch.', '')}; convert them with .float(), or "
                        f"use loss='cross_entropy' for class labels")


def check_model(task: CheckedTask, data: TaskData, params: Mapping[str, ParamValue]) -> None:
    """Build the model with `params`, run two training samples through it and the loss."""
    who = f"task {task.name!r}"
    try:
        model = task.build_model(dict(params))
    except Exception as exc:
        raise TaskError(f"{who}: build_model({dict(params)}) failed: {_describe(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise TaskError(f"{who}: build_model must return a torch.nn.Module, but it returned "
                        f"a {type(model).__name__}")
    x, y = data.train_x[:2], data.train_y[:2]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise TaskError(f"{who}: the model fails on a batch of inputs of shape {tuple(x.shape)} "
                        f"({str(x.dtype).replace('torch.', '')}): {_describe(exc)}; its first "
                        f"layer must take samples of shape {tuple(x.shape[1:])}") from None
    if not isinstance(out, torch.Tensor):
        raise TaskError(f"{who}: the model must return one tensor, but it returned a "
                        f"{type(out).__name__}")
    if task.loss == "cross_entropy":
        _check_class_scores(who, data, out)
    elif out.numel() != y.numel() or out.shape[0] != len(y):
        raise TaskError(f"{who}: for the mse loss the model must output one value per target "
                        f"(shape {tuple(y.shape)}"
                        + (f" or {(len(y), 1)}" if y.ndim == 1 else "")
                        + f" for this batch), but it outputs shape {tuple(out.shape)}")
    with torch.no_grad():
        loss = float(loss_function(task.loss)(out.float(), y))
    if not math.isfinite(loss):
        raise TaskError(f"{who}: the {task.loss} loss of the untrained model is {loss} on the "
                        f"first two samples; check the model's initialisation and the data")


def _check_class_scores(who: str, data: TaskData, out: torch.Tensor) -> None:
    n = len(data.train_y[:2])
    if out.ndim != 2 or out.shape[0] != n:
        raise TaskError(f"{who}: for the cross_entropy loss the model must output one row of "
                        f"class scores per sample, shape ({n}, n_classes), but it outputs shape "
                        f"{tuple(out.shape)}")
    top = max(int(y.max()) for y in (data.train_y, data.val_y, data.test_y) if len(y))
    if top >= out.shape[1]:
        raise TaskError(f"{who}: the labels go up to {top} ({top + 1} classes), but the model "
                        f"outputs {out.shape[1]} score(s) per sample; its last layer needs "
                        f"{top + 1} outputs")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
