"""What a task's loss computes: the training loss and the validation sums, in one place, so
that training, validation and the task checks always agree (the objective's name and
direction, which need no torch, are in :mod:`tasks.objectives`).

Classification (``cross_entropy``): one score per class, integer labels; the objective is
accuracy (``val_acc``, maximised). Regression (``mse``): one output per target, float targets;
the objective is the mean squared error per target element (``val_mse``, minimised), the
same mean the training loss takes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def loss_function(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss: a mean over the batch (over every target element for MSE)."""
    if loss == "mse":
        return lambda out, y: torch.nn.functional.mse_loss(out.reshape(y.shape), y)
    return torch.nn.functional.cross_entropy


def summed(loss: str, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                     int]:
    """For validation in chunks: (summed loss, summed metric, count the sums are over).

    Dividing both sums by the count gives the mean loss and the metric: accuracy over samples
    for classification; for MSE, loss and metric are the same per-element mean.
    """
    if loss == "mse":
        total = torch.nn.functional.mse_loss(out.reshape(y.shape), y, reduction="sum")
        return total, total, y.numel()
    total = torch.nn.functional.cross_entropy(out, y, reduction="sum")
    return total, (out.argmax(dim=1) == y).sum().float(), len(y)
