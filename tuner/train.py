"""The one training loop: resident tensors, contiguous batches, validation each epoch.

Data lives on the device for the whole study. Each epoch draws one permutation and gathers
the training set into that order once, so every batch is a contiguous slice (a view, no
copy) rather than a per-step gather; there is no per-sample Python and no DataLoader. Losses
stay on the device during the epoch as a list of 0-d tensors (appending is free, an indexed
write per step is not); the host reads them once per epoch (and, on CPU where reading is
free, every few steps to stop a diverging run early). Measured choices: bench/README.md.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tasks.base import Task, TaskData
from tuner import optimizers
from tuner.config import TrialConfig

_CPU_DIVERGENCE_CHECK = 50  # steps between finiteness checks on CPU, where they cost nothing
_EVAL_CHUNK = 8192
# Above this the per-epoch permuted copy of the training set would cost too much memory;
# batches are then gathered step by step instead (the same numbers, a little slower).
_SHUFFLED_COPY_MAX_BYTES = 2 << 30


@dataclass(frozen=True)
class DeviceData:
    """A task's splits moved to the training device once."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    @classmethod
    def from_task_data(cls, data: TaskData, device: str) -> DeviceData:
        return cls(data.train_x.to(device), data.train_y.to(device),
                   data.val_x.to(device), data.val_y.to(device))


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 0-based
    train_loss: float
    val_loss: float
    value: float  # the objective: val accuracy, or val MSE for regression
    lr: float
    seconds: float


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, *, step: int, epoch: int, loss: float) -> None:
        super().__init__(f"diverged: training loss became {loss} at step {step} (epoch {epoch})")
        self.step, self.epoch, self.loss = step, epoch, loss


def _loss_fn(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task.loss == "mse":
        return lambda out, y: torch.nn.functional.mse_loss(out.reshape(y.shape), y)
    return torch.nn.functional.cross_entropy


class _Shuffler:
    """Each epoch's batches in a fresh random order, as contiguous slices when memory allows.

    Gathering the whole set once per epoch into a buffer allocated once is one large copy;
    gathering per step is hundreds of small ones, each with its own dispatch cost.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, seed: int) -> None:
        self.x, self.y, self.n = x, y, len(x)
        self.generator = torch.Generator(device=x.device).manual_seed(seed)
        copy_bytes = x.numel() * x.element_size() + y.numel() * y.element_size()
        self.copy = copy_bytes <= _SHUFFLED_COPY_MAX_BYTES
        self.xs = torch.empty_like(x) if self.copy else x
        self.ys = torch.empty_like(y) if self.copy else y
        self.perm = torch.arange(self.n, device=x.device)

    def shuffle(self) -> None:
        self.perm = torch.randperm(self.n, device=self.x.device, generator=self.generator)
        if self.copy:
            torch.index_select(self.x, 0, self.perm, out=self.xs)
            torch.index_select(self.y, 0, self.perm, out=self.ys)

    def batch(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.copy:
            return self.xs[lo:hi], self.ys[lo:hi]
        idx = self.perm[lo:hi]
        return self.x[idx], self.y[idx]


def fit(
    task: Task,
    data: DeviceData,
    config: TrialConfig,
    *,
    device: str,
    seed: int = 0,
    bf16: bool = False,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> list[EpochResult]:
    """Train `task`'s model with `config`; call `on_epoch` after each validation.

    Raises :class:`Diverged` when the loss stops being finite. `on_epoch` may raise (Optuna's
    TrialPruned) to stop early.
    """
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = task.build_model(config.task_params).to(dev)
    opt = optimizers.build(config, model.parameters(), device_type=dev.type)
    n, bs = len(data.train_x), config.batch_size
    steps_per_epoch = math.ceil(n / bs)
    sched = optimizers.build_scheduler(config.scheduler, opt,
                                       total_steps=steps_per_epoch * config.epochs)
    loss_fn = _loss_fn(task)
    batches = _Shuffler(data.train_x, data.train_y, seed=seed)
    # Entering a disabled autocast still costs a few microseconds per step; skip it entirely.
    autocast: Any = (torch.autocast(dev.type, dtype=torch.bfloat16)
                     if bf16 and dev.type == "cuda" else contextlib.nullcontext())
    check_every = _CPU_DIVERGENCE_CHECK if dev.type == "cpu" else steps_per_epoch
    # Batch sizes, to weight the mean loss: the last batch may be short.
    sizes = torch.full((steps_per_epoch,), float(bs), device=dev)
    sizes[-1] = n - bs * (steps_per_epoch - 1)
    results: list[EpochResult] = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        model.train()
        batches.shuffle()
        losses: list[torch.Tensor] = []
        checked = 0
        lr = opt.param_groups[0]["lr"]
        for step in range(steps_per_epoch):
            x, y = batches.batch(step * bs, (step + 1) * bs)
            with autocast:
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.detach())
            if (step + 1) % check_every == 0:
                _check_finite(losses, checked, epoch, steps_per_epoch)
                checked = step + 1
        if checked < steps_per_epoch:
            _check_finite(losses, checked, epoch, steps_per_epoch)
        train_loss = float((torch.stack(losses).float() * sizes).sum() / n)
        val_loss, value = evaluate(task, model, data.val_x, data.val_y)
        if not math.isfinite(val_loss):
            raise Diverged(step=(epoch + 1) * steps_per_epoch, epoch=epoch, loss=val_loss)
        result = EpochResult(epoch, train_loss, val_loss, value, lr, time.perf_counter() - start)
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return results


def _check_finite(losses: list[torch.Tensor], start: int, epoch: int,
                  steps_per_epoch: int) -> None:
    """Raise Diverged at the first non-finite loss in losses[start:] (one host read)."""
    recent = torch.stack(losses[start:])
    finite = torch.isfinite(recent)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0, 0])
    raise Diverged(step=epoch * steps_per_epoch + start + first, epoch=epoch,
                   loss=float(recent[first]))


@torch.inference_mode()
def evaluate(task: Task, model: torch.nn.Module, x: torch.Tensor,
             y: torch.Tensor) -> tuple[float, float]:
    """(mean loss, metric) over (x, y): accuracy for classification, MSE for regression."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for i in range(0, len(x), _EVAL_CHUNK):
        xb, yb = x[i:i + _EVAL_CHUNK], y[i:i + _EVAL_CHUNK]
        out = model(xb).float()
        if task.loss == "mse":
            loss_sum += torch.nn.functional.mse_loss(out.reshape(yb.shape), yb, reduction="sum")
        else:
            loss_sum += torch.nn.functional.cross_entropy(out, yb, reduction="sum")
            correct += (out.argmax(dim=1) == yb).sum()
    loss = float(loss_sum) / len(x)
    metric = loss if task.loss == "mse" else float(correct) / len(x)
    return loss, metric
