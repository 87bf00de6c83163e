"""A task whose training diverges under some seeds and not others: a digits MLP whose output
layer's bias is NaN when a coin drawn under the model's seed (the generator `fit` seeds before
it builds the model) falls below one half. Which seeds diverge is known before any training:
:func:`diverges`. Refer to it by :data:`TASK_REF`, as a user would to their own task."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tasks.base import Task
from tasks.digits import load_digits_data
from tasks.images import mlp

TASK_REF = f"{Path(__file__).resolve()}:UNSTABLE"


def _coin() -> bool:
    return bool(torch.rand(()) < 0.5)


def diverges(seed: int) -> bool:
    """Whether a model built under `seed` diverges (the same draw `_build` makes)."""
    torch.manual_seed(seed)
    return _coin()


def _build(params: Mapping[str, Any]) -> torch.nn.Module:
    broken = _coin()
    model = mlp([64, int(params.get("hidden", 16)), 10])
    if broken:
        with torch.no_grad():
            model[-1].bias.fill_(math.nan)
    return model


UNSTABLE = Task(name="unstable", load_data=load_digits_data, build_model=_build, batch_size=64,
                summary="digits MLP that diverges under some seeds (tests only)",
                data="scikit-learn digits", model="MLP 64-16-10", hyperparams={"hidden": "16"})
