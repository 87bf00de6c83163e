"""The one training loop: resident tensors, index-selected batches, validation each epoch.

Data lives on the device for the whole study; each epoch draws one permutation and gathers
each batch with index_select (several times cheaper than ``x[idx]``, and cheaper than a
shuffled copy of the whole set per epoch, which streams it through memory twice), so there
is no per-sample Python and no DataLoader. Losses stay on the device during the epoch as a
list of 0-d tensors; the host reads them once per epoch (and, on CPU where reading is free,
every few steps to stop a diverging run early). `python -m bench` measures these choices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tasks.base import Task
from tasks.data import TaskData
from tasks.losses import loss_function, summed
from tuner.space.config import TrialConfig
from tuner.training import modes, optimizers

_CPU_DIVERGENCE_CHECK = 50  # steps between finiteness checks on CPU, where they cost nothing
_EVAL_CHUNK = 8192


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


def fit(
    task: Task,
    data: DeviceData,
    config: TrialConfig,
    *,
    device: str,
    seed: int = 0,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> list[EpochResult]:
    """Train `task`'s model with `config`; call `on_epoch` after each validation.

    Raises :class:`Diverged` when the loss stops being finite. `on_epoch` may raise (Optuna's
    TrialPruned) to stop early.
    """
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = task.build_model(config.task_params).to(dev)
    n_all = len(data.train_x)
    bs = config.batch_size
    n = _samples_per_epoch(n_all, batch_size=bs, model=model)
    steps_per_epoch = math.ceil(n / bs)
    opt, sched = _optimizer_and_schedule(config, model, dev=dev,
                                         total_steps=steps_per_epoch * config.epochs)
    loss_fn = loss_function(task.loss)
    generator = torch.Generator(device=dev).manual_seed(seed)
    check_every = _CPU_DIVERGENCE_CHECK if dev.type == "cpu" else steps_per_epoch
    sizes = _batch_sizes(n, batch_size=bs, steps=steps_per_epoch, dev=dev)
    results: list[EpochResult] = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        modes.to_train(model, opt)
        perm = torch.randperm(n_all, device=dev, generator=generator)
        losses: list[torch.Tensor] = []
        checked = 0
        lr = opt.param_groups[0]["lr"]
        for step in range(steps_per_epoch):
            idx = perm[step * bs:(step + 1) * bs]
            x = torch.index_select(data.train_x, 0, idx)
            y = torch.index_select(data.train_y, 0, idx)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
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
        val_loss, value = _validate_epoch(task, model, opt, data, perm=perm, batch_size=bs,
                                          steps_per_epoch=steps_per_epoch, epoch=epoch)
        result = EpochResult(epoch, train_loss, val_loss, value, lr, time.perf_counter() - start)
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return results


def _samples_per_epoch(n: int, *, batch_size: int, model: torch.nn.Module) -> int:
    """How many of the `n` training samples each epoch trains on."""
    if n % batch_size == 1 and n > 1 and modes.has_batch_norm(model):
        # BatchNorm cannot normalise a batch of one sample (torch raises in training mode), so
        # the last, one-sample batch of each epoch is dropped: a different sample each epoch,
        # as every epoch draws a new order.
        return n - 1
    return n


def _optimizer_and_schedule(
    config: TrialConfig, model: torch.nn.Module, *, dev: torch.device, total_steps: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The trial's optimizer over `model` and its per-step learning-rate schedule (or None)."""
    opt = optimizers.build(config, model, device_type=dev.type, total_steps=total_steps)
    sched = optimizers.build_scheduler(config.scheduler, opt, total_steps=total_steps)
    return opt, sched


def _batch_sizes(n: int, *, batch_size: int, steps: int, dev: torch.device) -> torch.Tensor:
    """Each step's batch size, to weight the mean loss: the last batch may be short."""
    sizes = torch.full((steps,), float(batch_size), device=dev)
    sizes[-1] = n - batch_size * (steps - 1)
    return sizes


def _validate_epoch(task: Task, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    data: DeviceData, *, perm: torch.Tensor, batch_size: int,
                    steps_per_epoch: int, epoch: int) -> tuple[float, float]:
    """(val loss, objective) after epoch `epoch`; raises Diverged on a non-finite loss."""
    # A schedule-free optimizer is validated (and left, for a saved model) at x.
    modes.to_eval(model, opt, modes.training_batches(data.train_x, perm, batch_size,
                                                     steps_per_epoch))
    val_loss, value = evaluate(task, model, data.val_x, data.val_y)
    if not math.isfinite(val_loss):
        raise Diverged(step=(epoch + 1) * steps_per_epoch, epoch=epoch, loss=val_loss)
    return val_loss, value


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
    """(mean loss, metric) over (x, y): accuracy for classification, the per-element MSE for
    regression (see tasks.losses)."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    metric_sum = torch.zeros((), device=x.device)
    count = 0
    for i in range(0, len(x), _EVAL_CHUNK):
        xb, yb = x[i:i + _EVAL_CHUNK], y[i:i + _EVAL_CHUNK]
        chunk_loss, chunk_metric, n = summed(task.loss, model(xb).float(), yb)
        loss_sum += chunk_loss
        metric_sum += chunk_metric
        count += n
    return float(loss_sum) / count, float(metric_sum) / count
