"""The baseline: the training loop and Optuna study that a course or Optuna's example writes.

Written the way users write it, not as a strawman: a per-sample ``Dataset`` over tensors that
are already normalised (kinder than torchvision's per-sample PIL-to-tensor transform), a
``DataLoader(batch_size, shuffle=True)``, ``zero_grad / backward / step``, validation under
``no_grad`` with a loader, and for the study Optuna's PyTorch example with
optuna-integration's ``MLflowCallback``. Same model, data, batch size and epochs as opttune.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class ArrayDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One sample per __getitem__, as a course writes it (TensorDataset does the same)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def loaders(data: Any, batch_size: int) -> tuple[DataLoader[Any], DataLoader[Any]]:
    train = DataLoader(ArrayDataset(data.train_x, data.train_y), batch_size=batch_size,
                       shuffle=True)
    valid = DataLoader(ArrayDataset(data.val_x, data.val_y), batch_size=batch_size)
    return train, valid


def train_epoch(model: torch.nn.Module, loader: DataLoader[Any],
                optimizer: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor]) -> None:
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()


def accuracy(model: torch.nn.Module, loader: DataLoader[Any]) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=1) == y).sum().item()
    return correct / len(loader.dataset)  # type: ignore[arg-type]


def one_epoch(task: Any, data: Any, *, batch_size: int, lr: float = 1e-3, seed: int = 0) -> float:
    """Build the model and Adam, train one epoch, validate: the unit the bench times."""
    torch.manual_seed(seed)
    model = task.build_model({})
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train, valid = loaders(data, batch_size)
    train_epoch(model, train, optimizer, F.cross_entropy)
    return accuracy(model, valid)


# -- the study: Optuna's PyTorch example, with MLflowCallback ----------------------------------
OPTIMIZERS = ["Adam", "RMSprop", "SGD"]  # opttune families adam, rmsprop, sgd
LR_LOW, LR_HIGH = 1e-5, 1e-1


def make_objective(task: Any, data: Any, *, batch_size: int,
                   epochs: int) -> Callable[[Any], float]:
    import optuna

    train, valid = loaders(data, batch_size)

    def objective(trial: optuna.Trial) -> float:
        optimizer_name = trial.suggest_categorical("optimizer", OPTIMIZERS)
        lr = trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True)
        model = task.build_model({})
        optimizer = getattr(torch.optim, optimizer_name)(model.parameters(), lr=lr)
        score = 0.0
        for epoch in range(epochs):
            train_epoch(model, train, optimizer, F.cross_entropy)
            score = accuracy(model, valid)
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score

    return objective


def run_study(task: Any, data: Any, *, tracking_uri: str, trials: int, epochs: int,
              batch_size: int, seed: int) -> Any:
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    mlflc = MLflowCallback(tracking_uri=tracking_uri, metric_name="accuracy")
    study = optuna.create_study(study_name="handwritten", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())
    study.optimize(make_objective(task, data, batch_size=batch_size, epochs=epochs),
                   n_trials=trials, callbacks=[mlflc])
    return study
