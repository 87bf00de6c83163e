"""The task protocol: a task supplies a model, data and a metric, never a training loop.

Importing this module does not import torch, so that listing tasks and the CLI's help stay
instant; tasks import torch inside their functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TaskData:
    """Train, validation and test tensors (on the CPU) and where they came from.

    The test split is only for `retrain`; `search` never touches it.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    notice: str | None = None


@dataclass(frozen=True)
class Task:
    """A model factory, data, a loss and a metric with its direction.

    `loss` is "cross_entropy" (classification: metric accuracy, maximised) or "mse"
    (regression: metric mean squared error, minimised). `hyperparams` are task-specific knobs
    added to the search space as name → DSL string (e.g. ``{"hidden": "128,256"}``); the
    model factory receives their values.
    """

    name: str
    summary: str
    data: str
    model: str
    load_data: Callable[..., TaskData]
    build_model: Callable[[Mapping[str, Any]], torch.nn.Module]
    loss: str = "cross_entropy"
    batch_size: int = 128
    hyperparams: dict[str, str] = field(default_factory=dict)
    ref: str = ""  # how to find the task again (a built-in name, module:attr or file.py:attr)

    def __post_init__(self) -> None:
        if self.loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss must be 'cross_entropy' or 'mse', but got {self.loss!r}")

    @property
    def metric(self) -> str:
        """The objective's name as logged: val_acc (maximised) or val_mse (minimised)."""
        return "val_acc" if self.loss == "cross_entropy" else "val_mse"

    @property
    def direction(self) -> str:
        return "maximize" if self.loss == "cross_entropy" else "minimize"


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


def data_dir_arg(data_dir: str | Path | None) -> Path | None:
    return None if data_dir is None else Path(data_dir).expanduser()
