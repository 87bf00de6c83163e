"""Tasks for the bench: a built-in task, cut down to fewer samples, or widened.

Child processes name them as ``bench.tasks:LIMITED`` / ``bench.tasks:WIDE`` (a task
reference opttune resolves like any ``module:attr``); the base task, the sample limits and
the width come from environment variables that the parent sets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tasks.base import Task
from tasks.data import TaskData

BASE_ENV = "OPTTUNE_BENCH_TASK"
TRAIN_ENV = "OPTTUNE_BENCH_TRAIN_LIMIT"
VAL_ENV = "OPTTUNE_BENCH_VAL_LIMIT"
WIDTH_ENV = "OPTTUNE_BENCH_WIDTH"


def _limit(env: str) -> int | None:
    raw = os.environ.get(env, "")
    return int(raw) if raw else None


def cut(data: TaskData, train: int | None, val: int | None) -> TaskData:
    return TaskData(data.train_x[:train], data.train_y[:train], data.val_x[:val],
                    data.val_y[:val], data.test_x[:0], data.test_y[:0], source=data.source,
                    notice=data.notice)


def limited(base: Task, train: int | None, val: int | None) -> Task:
    """`base` with at most `train` training and `val` validation samples."""
    if train is None and val is None:
        return base

    def load_data(*, data_dir: Any = None) -> TaskData:
        return cut(base.read_data(data_dir=data_dir), train, val)

    return replace(base, name=f"{base.name}-bench", load_data=load_data)


def widened(base: Task, width: int, *, inputs: int = 784, classes: int = 10) -> Task:
    """`base`'s data with an MLP inputs-width-width/2-classes (the MLP, scaled)."""

    def build(params: Mapping[str, Any]) -> Any:
        from tasks.images import mlp

        return mlp([inputs, width, max(1, width // 2), classes])

    return replace(base, name=f"{base.name}-w{width}", build_model=build)


def _from_env() -> Task:
    from tasks.registry import get_task

    task = limited(get_task(os.environ.get(BASE_ENV, "fashion-mnist-mlp")), _limit(TRAIN_ENV),
                   _limit(VAL_ENV))
    width = _limit(WIDTH_ENV)
    return widened(task, width) if width else task


def __getattr__(name: str) -> Task:  # resolved on use, after the parent set the environment
    if name in ("LIMITED", "WIDE"):
        return _from_env()
    raise AttributeError(name)
