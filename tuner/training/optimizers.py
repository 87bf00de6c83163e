"""A trial configuration → the torch optimizer and learning-rate schedule, as torch defines them.

Adam's weight decay stays coupled (L2 added to the gradient) and AdamW's decoupled, because
each family maps onto its own torch class; SGD's momentum and Nesterov are torch's own.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Any

import torch

from tuner.errors import SpaceError
from tuner.space.config import TrialConfig
from tuner.space.families import FAMILIES

# Optimizers with a fused kernel (one kernel for all parameters) on these device types. On
# CPU too: with it a whole training step of the MLP is 1.1-1.2x faster than with foreach or
# torch's CPU default for-loop at batch 64-256 (`python -m bench`, the "loop" rows).
_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}
_FUSED_DEVICES = {"cpu", "cuda"}
IMPLEMENTATIONS = ("auto", "fused", "foreach", "for-loop")


def optimizer_kwargs(config: TrialConfig) -> dict[str, Any]:
    """The keyword arguments of the torch optimizer for `config` (without params)."""
    family = FAMILIES.get(config.optimizer)
    if family is None:
        raise SpaceError(f"unknown optimizer {config.optimizer!r}; known: {', '.join(FAMILIES)}")
    unknown = set(config.hyper) - set(family.param_names)
    if unknown:
        raise SpaceError(f"{config.optimizer} has no {', '.join(sorted(unknown))}; it takes "
                         f"{', '.join(family.param_names)}")
    kwargs: dict[str, Any] = dict(family.fixed)
    hyper = dict(config.hyper)
    if "beta1" in hyper or "beta2" in hyper:
        defaults = {p.name: p.default for p in family.params}
        kwargs["betas"] = (hyper.pop("beta1", defaults.get("beta1", 0.9)),
                           hyper.pop("beta2", defaults.get("beta2", 0.999)))
    kwargs.update(hyper)
    return kwargs


def build(config: TrialConfig, params: Iterable[torch.nn.Parameter], *,
          device_type: str = "cpu", implementation: str = "auto") -> torch.optim.Optimizer:
    """Build the torch optimizer for `config` over `params`.

    `implementation` "auto" takes torch's fused kernel where the family and device have one,
    else its foreach (multi-tensor) kernel; "fused", "foreach" and "for-loop" force one (for
    the benchmark); a forced "fused" falls back to foreach where there is none.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, but got "
                         f"{implementation!r}")
    family = FAMILIES[config.optimizer] if config.optimizer in FAMILIES else None
    kwargs = optimizer_kwargs(config)
    assert family is not None
    # Any: each torch class has its own keywords (fused, foreach, betas …), checked below.
    cls: Any = getattr(torch.optim, family.torch_class)
    accepted = inspect.signature(cls).parameters
    params = list(params)
    fusable = family.torch_class in _FUSED and "fused" in accepted and (
        device_type in _FUSED_DEVICES or implementation == "fused")
    if implementation in ("auto", "fused") and fusable:
        try:
            optimizer: torch.optim.Optimizer = cls(params, **kwargs, fused=True)
            return optimizer
        except (RuntimeError, ValueError):  # e.g. parameters of a dtype with no fused kernel
            pass
    if "foreach" in accepted:
        kwargs["foreach"] = implementation != "for-loop"
    optimizer = cls(params, **kwargs)
    return optimizer


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *,
                    total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step learning-rate schedule over `total_steps` optimizer steps, or None."""
    total = max(1, total_steps)
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if name == "step":
        # x0.1 at half and three quarters of training, the classic step schedule.
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[total // 2, (3 * total) // 4], gamma=0.1)
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        # cycle_momentum would overwrite the tuned momentum/beta1 (and give plain SGD momentum).
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total,
                                                   cycle_momentum=False)
    if name == "warmup":
        warm = max(1, total // 20)  # linear warm-up over 5% of the steps, then cosine decay

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise SpaceError(f"unknown scheduler {name!r}; choose from none, cosine, step, onecycle, "
                     f"warmup")
