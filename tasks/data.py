"""A task's data: train, validation and test tensors, and the splitting and scaling helpers
that task files use to make them.

Importing this module does not import torch; its functions import it when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TaskData:
    """Train, validation and test tensors (on the CPU) and where they came from.

    Inputs (``*_x``) have one sample per row, any shape after that; targets (``*_y``) are
    integer class labels (``torch.long``, shape ``(N,)``) for cross entropy, float values for
    MSE. The validation split is what a search scores; the test split is only for `retrain`
    (it may be empty when there is none).
    `source` says where the data came from (stored with the study; a study never mixes
    sources); `notice` is shown to the user when the data is, say, a fallback subset.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    notice: str | None = None

    @classmethod
    def split(cls, x: Any, y: Any, *, source: str, val_fraction: float = 0.1,
              test_fraction: float = 0.2, seed: int = 0, notice: str | None = None) -> TaskData:
        """Split one data set into train, validation and test with a fixed seed.

        `x` and `y` may be tensors or numpy arrays; float inputs become float32, integer
        targets ``torch.long`` and float targets float32.
        """
        import torch

        xt, yt = _as_tensor(x), _as_tensor(y, labels=True)
        if len(xt) != len(yt):
            raise ValueError(f"x and y must have one row per sample, but x has {len(xt)} rows "
                             f"and y has {len(yt)}")
        order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, int(round(len(xt) * test_fraction)))
        n_val = max(1, int(round(len(xt) * val_fraction)))
        test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        return cls(xt[train], yt[train], xt[val], yt[val], xt[test], yt[test], source=source,
                   notice=notice)


def _as_tensor(values: Any, *, labels: bool = False) -> torch.Tensor:
    import torch

    tensor = torch.as_tensor(values)
    if tensor.is_floating_point():
        return tensor.float()
    if labels and not tensor.is_complex():
        return tensor.long()  # integer (or bool) targets are class labels
    return tensor


def standardize(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scale each feature to mean 0, std 1 with the training split's statistics only."""
    import torch

    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays 0
    return tuple((t - mean) / std for t in (train, *others))


def split_train_val(
    x: torch.Tensor, y: torch.Tensor, *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split train into train/validation with a fixed seed, the same for every trial."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]
