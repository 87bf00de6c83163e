"""Splitting and scaling a data set's tensors, for task files (and :meth:`TaskData.split`).

Apart from :mod:`tasks.data` because they need torch, and ``import tasks`` (which every
command does, if only to read a study's objective) must not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import numpy.typing as npt

# Six tensors: train x and y, validation x and y, test x and y.
Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
               torch.Tensor]


def split_rows(x: npt.ArrayLike | torch.Tensor, y: npt.ArrayLike | torch.Tensor, *,
               val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Split one data set into train, validation and test rows with a fixed seed (see
    :meth:`tasks.data.TaskData.split`)."""
    xt, yt = as_tensor(x), as_tensor(y, labels=True)
    if len(xt) != len(yt):
        raise ValueError(f"x and y must have one row per sample, but x has {len(xt)} rows "
                         f"and y has {len(yt)}")
    order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(len(xt) * test_fraction)))
    n_val = max(1, int(round(len(xt) * val_fraction)))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return xt[train], yt[train], xt[val], yt[val], xt[test], yt[test]


def as_tensor(values: npt.ArrayLike | torch.Tensor, *, labels: bool = False) -> torch.Tensor:
    """Float inputs become float32; with `labels`, integer (or bool) targets ``torch.long``."""
    tensor = torch.as_tensor(values)
    if tensor.is_floating_point():
        return tensor.float()
    if labels and not tensor.is_complex():
        return tensor.long()  # integer (or bool) targets are class labels
    return tensor


def standardize(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scale each feature to mean 0, std 1 with the training split's statistics only."""
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays 0
    return tuple((t - mean) / std for t in (train, *others))


def split_train_val(
    x: torch.Tensor, y: torch.Tensor, *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split train into train/validation with a fixed seed, the same for every trial."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]
