"""A trial configuration → the optimizer and learning-rate schedule, as their sources define them.

Adam's weight decay stays coupled (L2 added to the gradient) and AdamW's decoupled, because
each family maps onto its own torch class; SGD's momentum and Nesterov are torch's own. The
recent families are their authors' classes: torch's Muon (with AdamW, see
:mod:`tuner.training.muon`) and Adafactor, and the packages schedulefree, lion-pytorch and
prodigyopt.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import math
from collections.abc import Callable, Iterable

import torch

from tuner.errors import SpaceError
from tuner.space.config import TrialConfig
from tuner.space.families import FAMILIES, Family, OptimizerArg, missing_package_message
from tuner.training.muon import MuonWithAdamW, split_params

# Optimizers with a fused kernel (one kernel for all parameters) on these device types. On
# CPU too: with it a whole training step of the MLP is 1.1-1.2x faster than with foreach or
# torch's CPU default for-loop at batch 64-256 (`python -m bench`, the "loop" rows).
_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}
_FUSED_DEVICES = {"cpu", "cuda"}
IMPLEMENTATIONS = ("auto", "fused", "foreach", "for-loop")
# Schedules with a warm-up phase: with them Prodigy runs with the safeguard its authors
# advise for warm-up (prodigyopt README, "Scheduler": safeguard_warmup=True).
_WARMING = frozenset({"warmup", "onecycle"})


def optimizer_class(family: Family) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer class of `family`: ``torch.optim``'s, or its package's. Typed as what it
    is called as: each class takes its own keywords (fused, foreach, betas …)."""
    module, sep, name = family.torch_class.rpartition(":")
    try:
        cls = getattr(torch.optim if not sep else importlib.import_module(module), name)
    except ImportError:
        raise SpaceError(missing_package_message(family)) from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise TypeError(f"{family.torch_class} is not a torch optimizer class")
    return cls


def optimizer_kwargs(config: TrialConfig, *,
                     total_steps: int | None = None) -> dict[str, OptimizerArg]:
    """The keyword arguments of the optimizer class for `config` (without params).

    `total_steps` (the trial's optimizer steps) turns schedulefree's warm-up fraction into
    steps; without it a warm-up fraction above 0 raises ValueError.
    """
    family = FAMILIES.get(config.optimizer)
    if family is None:
        raise SpaceError(f"unknown optimizer {config.optimizer!r}; known: {', '.join(FAMILIES)}")
    unknown = set(config.hyper) - set(family.param_names)
    if unknown:
        raise SpaceError(f"{config.optimizer} has no {', '.join(sorted(unknown))}; it takes "
                         f"{', '.join(family.param_names)}")
    kwargs: dict[str, OptimizerArg] = dict(family.fixed)
    hyper = dict(config.hyper)
    if "beta1" in hyper or "beta2" in hyper:
        defaults = {p.name: p.default for p in family.params}
        kwargs["betas"] = (hyper.pop("beta1", defaults.get("beta1", 0.9)),
                           hyper.pop("beta2", defaults.get("beta2", 0.999)))
    if "decay" in hyper:  # Adafactor's beta2_t = 1 - t^beta2_decay, decay = -beta2_decay
        kwargs["beta2_decay"] = -hyper.pop("decay")
    if "warmup" in hyper:  # schedulefree's warm-up, from a fraction to steps
        warmup = hyper.pop("warmup")
        if warmup > 0 and total_steps is None:
            raise ValueError(f"{config.optimizer}'s warmup is a fraction of the trial's steps "
                             f"(got warmup={warmup}): build it with total_steps")
        # int(), as the authors' AlgoPerf submission rounds its warm-up
        kwargs["warmup_steps"] = int(warmup * total_steps) if warmup > 0 and total_steps else 0
    if config.optimizer == "prodigy" and config.scheduler in _WARMING:
        kwargs["safeguard_warmup"] = True
    kwargs.update(hyper)
    return kwargs


def build(config: TrialConfig, params: Iterable[torch.nn.Parameter] | torch.nn.Module, *,
          device_type: str = "cpu", implementation: str = "auto",
          total_steps: int | None = None) -> torch.optim.Optimizer:
    """Build the optimizer for `config` over `params` (or a model's parameters).

    `implementation` "auto" takes torch's fused kernel where the family and device have one,
    else its foreach (multi-tensor) kernel; "fused", "foreach" and "for-loop" force one (for
    the benchmark); a forced "fused" falls back to foreach where there is none. The `muon`
    family splits the parameters by :func:`tuner.training.muon.split_params` (give the
    model, so that its embeddings are told apart); `total_steps` is the trial's number of
    optimizer steps (schedulefree's warm-up is a fraction of them).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, but got "
                         f"{implementation!r}")
    family = FAMILIES.get(config.optimizer)
    kwargs = optimizer_kwargs(config, total_steps=total_steps)
    assert family is not None
    if not family.schedule and config.scheduler != "none":
        raise SpaceError(f"{family.name} takes no learning-rate schedule (its averaging "
                         f"replaces one), but got scheduler {config.scheduler!r}; use none")
    if family.name == "muon":
        return _build_muon(config, params, kwargs, device_type=device_type,
                           implementation=implementation)
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    cls = optimizer_class(family)
    accepted = inspect.signature(cls).parameters
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
    with contextlib.redirect_stdout(io.StringIO()):  # prodigyopt prints as it is built
        optimizer = cls(params, **kwargs)
    return optimizer


def _build_muon(config: TrialConfig, params: Iterable[torch.nn.Parameter] | torch.nn.Module,
                kwargs: dict[str, OptimizerArg], *, device_type: str,
                implementation: str) -> torch.optim.Optimizer:
    """torch's Muon on the hidden matrices, AdamW (built as the adamw family is) on the rest,
    with the Muon authors' AdamW settings and one weight decay for both."""
    hidden, rest = split_params(params)
    adam_beta1, adam_beta2 = _numbers(kwargs.pop("adam_betas"))
    adam_eps, adam_lr = _number(kwargs.pop("adam_eps")), _number(kwargs.pop("adam_lr", 3e-4))
    muon = optimizer_class(FAMILIES[config.optimizer])(hidden, **kwargs) if hidden else None
    adamw = None
    if rest:
        side = TrialConfig("adamw", {"lr": adam_lr, "beta1": adam_beta1,
                                     "beta2": adam_beta2, "eps": adam_eps,
                                     "weight_decay": _number(kwargs.get("weight_decay", 0.1))},
                           config.batch_size, config.epochs, config.scheduler)
        adamw = build(side, rest, device_type=device_type, implementation=implementation)
    return MuonWithAdamW(muon, adamw)


def _number(arg: OptimizerArg) -> float:
    if isinstance(arg, tuple):
        raise TypeError(f"expected a number, but got {arg!r}")
    return arg


def _numbers(arg: OptimizerArg) -> tuple[float, ...]:
    if not isinstance(arg, tuple):
        raise TypeError(f"expected a tuple of numbers, but got {arg!r}")
    return arg


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
