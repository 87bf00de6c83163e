"""An opttune task of your own: copy this file, change the data and the model, and run

    opttune search --task examples/my_task.py:task --n-trials 20
    opttune search --task examples/my_task.py:task --data-dir DIR   # your points.csv instead

It tells two interleaved spirals apart with a small MLP. The data are generated here (or read
from DIR/points.csv, columns x1,x2,label, when you pass --data-dir DIR), the width and dropout
of the network are searched along with the optimizer, and opttune does all the training: a
task never has a training loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks import Task, TaskData


def load_data(*, data_dir: Path | None = None) -> TaskData:
    """All the data as tensors: inputs of shape (N, 2), integer labels of shape (N,)."""
    if data_dir is not None:
        table = torch.as_tensor(np.loadtxt(data_dir / "points.csv", delimiter=",", skiprows=1))
        x, y = table[:, :2].float(), table[:, 2].long()
        source = f"{data_dir / 'points.csv'} ({len(x)} points)"
    else:
        x, y = two_spirals(n=1500, noise=0.03, seed=0)
        source = "generated: two spirals, 3,000 points, seed 0"
    # 70% train, 10% validation (what the search scores), 20% test (only for retrain).
    return TaskData.split(x, y, source=source, val_fraction=0.1, test_fraction=0.2, seed=0)


def two_spirals(*, n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points on each of two spirals, one the other turned half a circle; label = spiral."""
    gen = torch.Generator().manual_seed(seed)
    angle = 0.5 + torch.rand(n, generator=gen) * 3 * math.pi
    arm = torch.stack([angle * torch.cos(angle), angle * torch.sin(angle)], dim=1) / 10
    x = torch.cat([arm, -arm]) + noise * torch.randn(2 * n, 2, generator=gen)
    y = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    return x, y


def build_model(params: Mapping[str, Any]) -> nn.Module:
    """A fresh model per trial; `params` holds this trial's values of `hyperparams`."""
    hidden, dropout = int(params["hidden"]), float(params["dropout"])
    return nn.Sequential(
        nn.Linear(2, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 2),  # one score per class, for the cross-entropy loss
    )


task = Task(
    name="spirals",  # the study's default name
    load_data=load_data,
    build_model=build_model,
    loss="cross_entropy",  # metric val_acc, maximised; "mse" → val_mse, minimised
    hyperparams={"hidden": "32,64,128", "dropout": "0:0.3"},  # first choice is the default
    batch_size=64,
    summary="MLP telling two interleaved spirals apart",
    data="two spirals, 2-D points (3,000 generated, or DIR/points.csv)",
    model="MLP 2-hidden-hidden-2, ReLU, dropout",
)
