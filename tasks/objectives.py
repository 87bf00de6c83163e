"""The losses a task may name, and the objective each implies: its name and direction.

Apart from :mod:`tasks.losses` (which computes them, with torch) so that reading a study's
objective, which every command does, loads no torch.

Classification (``cross_entropy``): the objective is accuracy (``val_acc``, maximised).
Regression (``mse``): the mean squared error per target element (``val_mse``, minimised).
"""

from __future__ import annotations

from typing import Literal

LOSSES: tuple[str, ...] = ("cross_entropy", "mse")
# Which way the objective goes; defined here, beside the loss that decides it, because tasks sit
# below the study. tuner.study.direction holds what follows from it (comparisons, wording).
Direction = Literal["maximize", "minimize"]


def objective(loss: str) -> tuple[str, Direction]:
    """(metric, direction) of a task with this loss."""
    return ("val_acc", "maximize") if loss == "cross_entropy" else ("val_mse", "minimize")
