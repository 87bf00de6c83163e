"""Train and evaluation modes of a model and its optimizer, switched together.

A schedule-free optimizer (Defazio et al. 2024, Meta's ``schedulefree``) trains at one
point (y) and must be evaluated, and saved, at another (x, its average): its ``train()``
and ``eval()`` move the model's parameters between the two, and "should be called at the
same place you call model.train() and model.eval()" (the schedulefree README). Every
validation, test score and saved model in opttune follows :func:`to_eval`, so a
schedule-free model is always evaluated and saved at x. Other optimizers have no modes.

BatchNorm keeps running statistics of the activations it saw in training, at y. The
schedulefree README's recipe, followed by :func:`to_eval`: switch the optimizer to x, run up
to 50 training batches through the model in training mode without gradients (the running
statistics are then those of x), then evaluate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch

# The schedulefree README's recipe runs 50 batches to refresh BatchNorm's statistics at x.
RECALIBRATION_BATCHES = 50
_BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
                torch.nn.SyncBatchNorm, torch.nn.LazyBatchNorm1d, torch.nn.LazyBatchNorm2d,
                torch.nn.LazyBatchNorm3d)


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(module, _BATCH_NORMS) for module in model.modules())


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` has train and eval modes (torch's own optimizers have none)."""
    return callable(getattr(optimizer, "train", None)) and \
        callable(getattr(optimizer, "eval", None))


def to_train(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The model and its optimizer in training mode (a schedule-free one at y)."""
    model.train()
    if is_schedule_free(optimizer):
        optimizer.train()  # type: ignore[attr-defined]


def to_eval(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            batches: Iterable[torch.Tensor] = ()) -> None:
    """The optimizer in evaluation mode (a schedule-free one's parameters at x), and, for a
    schedule-free model with BatchNorm, its statistics refreshed on up to 50 of `batches`
    (training inputs). Leaves the model in training mode: ``evaluate`` switches it."""
    if not is_schedule_free(optimizer):
        return
    optimizer.eval()  # type: ignore[attr-defined]
    if not has_batch_norm(model):
        return
    model.train()
    with torch.no_grad():
        for x in itertools.islice(batches, RECALIBRATION_BATCHES):
            model(x)


def training_batches(x: torch.Tensor, perm: torch.Tensor, batch_size: int,
                     steps: int) -> Iterator[torch.Tensor]:
    """The inputs of an epoch's first `steps` batches, in the epoch's order (`perm`), drawn
    as the loop draws them."""
    for step in range(steps):
        yield torch.index_select(x, 0, perm[step * batch_size:(step + 1) * batch_size])
