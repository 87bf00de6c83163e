"""The task and its data, loaded once per bench run (and cut down for --quick)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import Settings


@dataclass(frozen=True)
class Loaded:
    task: Any
    data: Any  # tasks.base.TaskData on the CPU
    device_data: Any  # tuner.train.DeviceData
    seconds: float

    @property
    def n_train(self) -> int:
        return len(self.data.train_x)

    @property
    def n_val(self) -> int:
        return len(self.data.val_x)


def load(settings: Settings) -> Loaded:
    import time

    from tasks.data import TaskData
    from tasks.registry import get_task
    from tuner.training.loop import DeviceData

    task = get_task(settings.task)
    start = time.perf_counter()
    full = task.read_data()
    seconds = time.perf_counter() - start
    data = TaskData(full.train_x[:settings.train_limit], full.train_y[:settings.train_limit],
                    full.val_x[:settings.val_limit], full.val_y[:settings.val_limit],
                    full.test_x[:0], full.test_y[:0], source=full.source)
    return Loaded(task, data, DeviceData.from_task_data(data, "cpu"), seconds)


def linear_flops(model: Any, batch: int) -> dict[str, float]:
    """FLOPs of one training step of the model's Linear layers on `batch` samples.

    forward 2·in·out·B; backward 2·in·out·B for the weight gradient, and another 2·in·out·B
    for the input gradient of every layer but the first (the data needs no gradient). Also the
    usual 6·params·B rule of thumb, which charges that first input gradient too.
    """
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    macs = [m.in_features * m.out_features for m in linears]
    forward = 2.0 * sum(macs) * batch
    executed = 3 * forward - (2.0 * macs[0] * batch if macs else 0.0)
    params = sum(p.numel() for p in model.parameters())
    return {"forward": forward, "train_step": executed, "six_n_b": 6.0 * params * batch,
            "params": float(params)}
