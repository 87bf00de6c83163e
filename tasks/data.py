"""A task's data: train, validation and test tensors, and where they came from.

Importing this module does not import torch (``import tasks`` imports it, and every command
does); the splitting and scaling helpers are in :mod:`tasks.tensors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy.typing as npt
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
    def split(cls, x: npt.ArrayLike | torch.Tensor, y: npt.ArrayLike | torch.Tensor, *,
              source: str, val_fraction: float = 0.1, test_fraction: float = 0.2,
              seed: int = 0, notice: str | None = None) -> TaskData:
        """Split one data set into train, validation and test with a fixed seed.

        `x` and `y` may be tensors or numpy arrays; float inputs become float32, integer
        targets ``torch.long`` and float targets float32.
        """
        from tasks.tensors import split_rows  # noqa: PLC0415  (torch: `import tasks` stays light)

        return cls(*split_rows(x, y, val_fraction=val_fraction, test_fraction=test_fraction,
                               seed=seed), source=source, notice=notice)
