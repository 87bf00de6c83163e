"""Which configs can share a step: the update rule each optimizer family maps to, the
settings that must be equal, and :func:`group_configs`, which sorts configs into
populations."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tuner.space.config import TrialConfig
from tuner.space.families import FAMILIES
from tuner.training import optimizers
from tuner.training.population._errors import _first_line
from tuner.training.population._updates import ParamGroup, subgroup

# optimizer class (a family's torch_class) → the stacked update rule that implements it.
# Families that map to the same rule share one update: sgd/momentum/nesterov (per-member
# momentum and Nesterov flag), adam/adamw (per-member coupled or decoupled weight decay).
# Rules may mix in one population (see _mixed). Muon's (its Newton-Schulz iteration on
# stacked matrices, AdamW on the other parameters) is in _muon. Schedule-Free (its train/eval
# switch), Prodigy (one step size estimated over all parameters) and Adafactor (host-side
# norms per parameter) have none.
_RULES = {"SGD": "sgd", "Adam": "adam", "AdamW": "adam", "RMSprop": "rmsprop",
          "Adagrad": "adagrad", "NAdam": "nadam", "RAdam": "radam", "lion_pytorch:Lion": "lion",
          "Muon": "muon"}
# Muon's Newton-Schulz settings: the family fixes them at torch's defaults, and members of
# one population run the iteration together, so its rule takes those only.
_MUON_NS = {name: inspect.signature(torch.optim.Muon).parameters[name].default
            for name in ("ns_coefficients", "ns_steps", "eps")}


@dataclass(frozen=True)
class Grouping:
    """Configs sorted into populations: `groups` (indices into the configs, 2 or more each)
    can each train as one population; `alone` maps the others to why (one line)."""

    groups: list[list[int]]
    alone: dict[int, str]



def _torch_group(config: TrialConfig) -> dict[str, object]:
    """Every hyperparameter of the torch optimizer `fit` would build for `config`, torch's
    defaults filled in; raises what that constructor raises for invalid values. A `muon`
    config's is its Muon group with its AdamW side's group under "adamw"."""
    if config.optimizer == "muon":
        return _muon_group(config)
    kwargs = optimizers.optimizer_kwargs(config)
    cls = optimizers.optimizer_class(FAMILIES[config.optimizer])
    group: dict[str, object] = dict(
        cls([torch.zeros(1, requires_grad=True)], **kwargs).param_groups[0])
    group.pop("params")
    return group


def _muon_group(config: TrialConfig) -> dict[str, object]:
    """The two param groups of the optimizer `fit` builds for a `muon` config, read from one
    built (as fit builds it) over three plain matrices: the middle one is hidden."""
    probe = [torch.nn.Parameter(torch.zeros(1, 1)) for _ in range(3)]
    built = optimizers.build(config, probe)
    muon, adamw = (dict[str, object](g) for g in built.param_groups)
    muon.pop("params")
    adamw.pop("params")
    muon["adamw"] = adamw
    return muon


def _unsupported(rule: str, group: ParamGroup) -> str | None:
    """Settings no family uses and no stacked rule implements (a custom fixed value)."""
    checks = [("maximize", False), ("amsgrad", False), ("centered", False), ("dampening", 0),
              ("capturable", False), ("differentiable", False)]
    for key, plain in checks:
        if key in group and group[key] != plain:
            return f"{key}={group[key]!r} has no stacked {rule} rule"
    if isinstance(group["lr"], torch.Tensor):
        return "a tensor learning rate has no stacked rule"
    if rule == "muon":
        for key, default in _MUON_NS.items():
            if group[key] != default:
                return f"{key}={group[key]!r} has no stacked muon rule (it takes {default!r})"
        return _unsupported("adam", subgroup(group, "adamw"))
    return None


def _step_key(config: TrialConfig) -> tuple[tuple[str, str], ...] | str:
    """What must be equal for configs to share a step, or why `config` cannot share any."""
    family = FAMILIES.get(config.optimizer)
    if family is None:
        return f"unknown optimizer {config.optimizer!r}"
    rule = _RULES.get(family.torch_class)
    if rule is None:
        return f"{config.optimizer} ({family.torch_class}) has no stacked update rule"
    try:
        group = _torch_group(config)
    except Exception as exc:  # the same error fit would raise: let fit report it
        return f"its optimizer settings are invalid: {_first_line(exc)}"
    problem = _unsupported(rule, group)
    if problem is not None:
        return problem
    params = json.dumps(config.task_params, sort_keys=True, default=repr)
    # The schedule and the update rule may differ: each member follows its own (see _fit).
    return (("batch size", str(config.batch_size)), ("epochs", str(config.epochs)),
            ("task params", params))


def group_configs(configs: Sequence[TrialConfig], *,
                  max_members: int | None = None) -> Grouping:
    """Sort `configs` into groups that can each share one stacked training step.

    Configs share a step when their task params (the architecture), batch size and epochs
    are equal and their family has a stacked update rule; each member follows its own
    schedule and update rule. Groups keep the configs' order; with `max_members`, a
    larger group is split into near-equal parts. A config alone in its group, or that no
    rule can stack, is in `alone` with the reason. The model itself is checked by
    :func:`stack_check` (it needs the task and data).
    """
    if max_members is not None and max_members < 2:
        raise ValueError(f"max_members must be at least 2 (a population of one gains nothing), "
                         f"but got {max_members}")
    buckets: dict[tuple[tuple[str, str], ...], list[int]] = {}
    alone: dict[int, str] = {}
    for i, config in enumerate(configs):
        key = _step_key(config)
        if isinstance(key, str):
            alone[i] = key
        else:
            buckets.setdefault(key, []).append(i)
    groups: list[list[int]] = []
    for key, members in buckets.items():
        if len(members) == 1:
            alone[members[0]] = ("no other config shares its " + ", ".join(
                f"{name} {value}" for name, value in key))
            continue
        parts = 1 if max_members is None else math.ceil(len(members) / max_members)
        size, extra = divmod(len(members), parts)
        start = 0
        for p in range(parts):
            end = start + size + (1 if p < extra else 0)
            groups.append(members[start:end])
            start = end
    return Grouping(groups, dict(sorted(alone.items())))


def _shared_step_reason(configs: Sequence[TrialConfig]) -> str | None:
    keys = [_step_key(c) for c in configs]
    for i, key in enumerate(keys):
        if isinstance(key, str):
            return f"config {i} ({configs[i].optimizer}) cannot share a step: {key}"
    first = keys[0]
    assert not isinstance(first, str)
    for i, key in enumerate(keys[1:], start=1):
        assert not isinstance(key, str)
        for (name, value), (_, other) in zip(first, key, strict=True):
            if value != other:
                return (f"config {i} cannot share a step with config 0: its {name} is {other}, "
                        f"config 0's is {value} (a population shares task params, batch size "
                        f"and epochs)")
    return None
