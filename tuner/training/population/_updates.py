"""Per-member optimizer updates over stacked (K, ...) parameters: the state every rule
keeps and sheds as members leave (:class:`_Update`), and per-member scalars broadcast
over a stack (:class:`_Table`), and the member's settings they read (its param group). The
rules themselves are in ``_batched`` and ``_fused``."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import torch

# One member's param group (without "params") of the optimizer `fit` builds for it. torch
# holds a group's values untyped; the rules read each through the functions below, which
# check its kind and return it as torch holds it (an int stays an int: the same arithmetic).
ParamGroup: TypeAlias = Mapping[str, object]


def num(group: ParamGroup, key: str) -> float:
    value = group[key]
    if isinstance(value, (int, float)):
        return value
    raise TypeError(f"param group {key} must be a number, but got {value!r}")


def flag(group: ParamGroup, key: str, *, default: bool | None = None) -> bool:
    value = group[key] if default is None else group.get(key, default)
    if isinstance(value, int):  # bool, or 0/1
        return bool(value)
    raise TypeError(f"param group {key} must be True or False, but got {value!r}")


def numbers(group: ParamGroup, key: str) -> tuple[float, ...]:
    value = group[key]
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value):
        return tuple(value)
    raise TypeError(f"param group {key} must be a tuple of numbers, but got {value!r}")


def betas(group: ParamGroup) -> tuple[float, float]:
    beta1, beta2 = numbers(group, "betas")
    return beta1, beta2


def word(group: ParamGroup, key: str) -> str | None:
    value = group[key]
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"param group {key} must be a word or None, but got {value!r}")


def subgroup(group: ParamGroup, key: str) -> ParamGroup:
    """A group held inside another (a muon member's AdamW side, under "adamw")."""
    value = group[key]
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"param group {key} must be a param group, but got {value!r}")


class _Table:
    """Per-member scalars (rows × K, computed in double as torch computes its scalars),
    moved to the device once per step and viewed as (K, 1, …) to broadcast over a stack."""

    def __init__(self, rows: Sequence[Sequence[float]]) -> None:
        self._host = torch.tensor(rows, dtype=torch.float64)
        self._views: dict[tuple[torch.dtype, torch.device, int], list[torch.Tensor]] = {}

    def like(self, p: torch.Tensor) -> list[torch.Tensor]:
        key = (p.dtype, p.device, p.dim())
        views = self._views.get(key)
        if views is None:
            # float32 arithmetic, as torch applies a Python-float scalar to float32 tensors.
            dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            if p.device.type == "cuda":
                # A plain copy to a GPU waits for every kernel queued before it, once a step;
                # from pinned memory it does not (torch keeps the pinned block until it is
                # copied).
                table = self._host.to(dtype=dtype).pin_memory().to(p.device, non_blocking=True)
            else:
                table = self._host.to(device=p.device, dtype=dtype)
            views = list(table.view(*table.shape, *([1] * (p.dim() - 1))).unbind(0))
            self._views[key] = views
        return views


class _Update(abc.ABC):
    """Optimizer state over stacked (K, …) parameters and one step for all members."""

    states: tuple[str, ...] = ()

    def __init__(self, groups: Sequence[ParamGroup], params: Sequence[torch.Tensor]) -> None:
        self.groups = list(groups)
        self.t = 0  # steps taken: members start together, so they all share the count
        self.data = [p.detach() for p in params]
        self.state = {name: [self._initial(name, p) for p in self.data] for name in self.states}
        self._refresh()

    def _initial(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(p, memory_format=torch.contiguous_format)

    def _refresh(self) -> None:  # noqa: B027  (a hook: most updates derive nothing)
        """Recompute what depends on the members present."""

    def keep(self, rows: torch.Tensor, positions: Sequence[int],
             params: Sequence[torch.Tensor]) -> None:
        self.groups = [self.groups[i] for i in positions]
        self.data = [p.detach() for p in params]
        self.state = {name: [t.index_select(0, rows) for t in tensors]
                      for name, tensors in self.state.items()}
        self._refresh()

    @abc.abstractmethod
    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        """One optimizer step of every member, at the members' learning rates `lrs`."""

    def step_members(self, grads: Sequence[torch.Tensor | None],
                     lrs: Sequence[Sequence[float]]) -> None:
        """One step of every member, given each member's learning rates: one per param
        group of the optimizer ``fit`` builds for it, in its order. A rule whose members
        have one group (every rule but muon's) steps at the first."""
        self.step(grads, [member[0] for member in lrs])



def _accumulator(groups: Sequence[ParamGroup], p: torch.Tensor) -> torch.Tensor:
    """Adagrad's starting sums: each member's initial_accumulator_value."""
    start = _Table([[float(num(g, "initial_accumulator_value")) for g in groups]]).like(p)[0]
    return torch.zeros_like(p, memory_format=torch.contiguous_format).add_(start)
